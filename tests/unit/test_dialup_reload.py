"""The dial-up service across a config reload: users read anew, L2TP connections removed and
changed while our LAC is dialed in (the in-memory lab of test_dialup)."""

from __future__ import annotations

import ipaddress

from test_dialup import LNS, Lab, lab, log

from gateway.config import load_config_text
from gateway.dialup.service import HostChange
from gateway.ike.v2 import fromconfig
from gateway.ppp.auth import nt_hash

POOL = ipaddress.IPv4Network("10.9.0.0/24")


def reconfigure(lb: Lab, text: str, going: tuple[str, ...] = (), coming: tuple[str, ...] = ()) -> None:
    lb.hq.dialup.host_changes.clear()
    lb.hq.dialup.reconfigure(load_config_text(text).config, going, coming, lb.now)
    lb.pump()


def test_new_users_apply_to_the_next_login_and_a_session_up_stays() -> None:
    lb = lab()
    reconfigure(lb, LNS.replace(nt_hash("branch-password").hex(), nt_hash("new-password").hex())
                       .replace("password: branch-password", "password: new-password"))
    lb.advance(5)
    assert [s["user"] for s in lb.hq.dialup.describe(lb.now)] == ["branch1"]
    lb.hq.dialup.kick("branch1", lb.now)
    lb.pump()
    lb.advance(30)  # the LAC dials again with the password it has: refused now
    assert len(log(lb.branch, "ppp.up")) == 1
    assert lb.hq.dialup.auth_failures["mschapv2"] >= 1


def test_a_removed_lns_says_goodbye_and_gives_back_its_address_and_routes() -> None:
    lb = lab()
    lines = len(lb.hq.dialup.log)
    without = LNS.split("connections:")[0] + "connections: {}\n"
    reconfigure(lb, without, going=("dialin",))
    assert not lb.hq.dialup.serves("dialin") and lb.hq.dialup.sessions == {} and lb.hq.dialup.peers == {}
    assert lb.hq.dialup.pools["dialin"].in_use == 0  # the client's address and the LNS's own
    changes = lb.hq.dialup.host_changes
    assert HostChange("route_del", POOL) in changes
    assert HostChange("address_del", ipaddress.IPv4Network("10.9.0.1/32")) in changes
    assert lb.hq.engine.links == {}
    assert len(lb.hq.dialup.log) > lines and log(lb.hq, "ppp.down")
    # the StopCCN went through the SAs still up: the LAC knows its tunnel is gone
    assert [t["reason"] for t in log(lb.branch, "l2tp.tunnel_down")] == ["stopccn"]


def test_a_changed_lns_comes_back_with_its_new_settings() -> None:
    lb = lab()
    changed = LNS.replace("l2tp: {role: lns,", "l2tp: {dns: [10.1.0.54], role: lns,")
    cfg = load_config_text(changed).config
    reconfigure(lb, changed, going=("dialin",), coming=("dialin",))
    assert HostChange("route_add", POOL, ipaddress.IPv4Address("10.9.0.1")) in lb.hq.dialup.host_changes
    # what the daemon does next: the connection's IPsec goes, and comes back with the LAC
    lb.hq.ike.remove_config("dialin", lb.now, "changed in the config")
    lb.hq.ike.add_config(fromconfig.peer_config("dialin", cfg.connections["dialin"], cfg))
    lb.pump()
    lb.advance(40)
    ups = log(lb.branch, "ppp.up")
    assert len(ups) == 2 and ups[-1]["dns"] == "10.1.0.54", ups
    assert [s["state"] for s in lb.hq.dialup.describe(lb.now)] == ["up"]
    assert str(lb.hq.dialup.local_address["dialin"]) == "10.9.0.1"
