"""Dial-in end to end: our LAC in client namespaces against our LNS at HQ, for real.

Two remote users sit behind one home NAT (appliance.lab.dialup.HomeNetwork: 10.99.0.11 and
.12 masqueraded to 203.0.113.2); each runs `gateway run` with an `l2tp: {role: lac}`
connection.  HQ runs `gateway run` as the LNS with a pool (10.3.0.0/24) and a users
section.  IKEv1 Main Mode floats to 4500 (NAT), ESP transport mode carries L2TP, PPP
authenticates and IPCP hands out addresses; then real traffic: the clients reach the HQ
LAN host (10.1.0.10) and the HQ LAN host reaches the clients' PPP addresses.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import NETNS, assert_lab_gone, lab, lab_prefix, tcp_exchange, wait_for

from appliance.lab.dialup import POOL, HomeNetwork, lac_config, lns_config
from appliance.lab.gateways import LabGateway
from appliance.lab.topology import Site, Topology, run
from gateway.ppp.auth import nt_hash, salted_hash

pytestmark = [*NETNS]

PREFIX = lab_prefix("e2dl")
PSK = "dialin-group-key-51f0"
PASSWORDS = {"alice": "alice-Passw0rd", "bob": "bob-pap-secret", "carol": "carol-chap-secret"}
HQ_LAN_HOST = "10.1.0.10"
CAROL_ADDRESS = "10.3.0.77"


def users() -> dict[str, dict[str, Any]]:
    """Alice as an NT hash (MS-CHAPv2), Bob as a salted hash (PAP), Carol in clear (CHAP-MD5
    needs it) with a static address."""
    return {
        "alice": {"nt_hash": nt_hash(PASSWORDS["alice"]).hex(), "max_sessions": 1},
        "bob": {"password_hash": salted_hash(PASSWORDS["bob"])},
        "carol": {"password": PASSWORDS["carol"], "address": CAROL_ADDRESS},
    }


class DialinLab:
    """The topology, the home NAT with two clients, and our LNS at HQ (module-wide)."""

    def __init__(self, topology: Topology, home: HomeNetwork, hq: LabGateway, workdir: Path) -> None:
        self.topology = topology
        self.home = home
        self.hq = hq
        self.workdir = workdir

    def dial(self, client: Site, user: str, method: str, password: str | None = None) -> LabGateway:
        config = lac_config(client, remote=self.topology.hq.gw_public, psk=PSK, user=user,
                            password=password or PASSWORDS[user], method=method,
                            remote_subnets=[self.topology.hq.lan_subnet], redial_min="1s", redial_max="4s")
        return LabGateway.start(client, self.workdir, f"{client.name}-{user}", config)

    def dial_on_demand(self, client: Site, user: str, idle: int) -> LabGateway:
        """A LAC that stays on hook until traffic for the HQ LAN needs it."""
        config = lac_config(client, remote=self.topology.hq.gw_public, psk=PSK, user=user,
                            password=PASSWORDS[user], method="mschapv2",
                            remote_subnets=[self.topology.hq.lan_subnet])
        conn = config["connections"]["hq"]
        conn["ike"] = {"start": "none"}
        conn["demand_dial"] = {"idle_timeout": idle, "queue": 8}
        return LabGateway.start(client, self.workdir, f"{client.name}-{user}-demand", config)

    def ping(self, namespace: str, address: str, count: int = 3, wait: int = 2) -> bool:
        proc = run(["ip", "netns", "exec", namespace, "ping", "-n", "-c", str(count), "-i", "0.2", "-W",
                    str(wait), address], check=False)
        return proc.returncode == 0


@pytest.fixture(scope="module")
def dialin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DialinLab]:
    workdir = tmp_path_factory.mktemp("dialin")
    with lab(PREFIX) as topology:
        home = HomeNetwork(topology)
        home.up()
        hq = LabGateway.start(topology.hq, workdir, "hq", lns_config(topology.hq, psk=PSK, users=users()))
        try:
            yield DialinLab(topology, home, hq, workdir)
        except BaseException:
            print(hq.log_tail(60))
            raise
        finally:
            hq.stop()
    assert_lab_gone(PREFIX)


def ppp_up(gw: LabGateway, timeout: float = 20.0) -> dict[str, str]:
    """The fields of the LAC's ``ppp.up`` log line, once it is there."""
    found = wait_for(lambda: re.search(r"ppp\.up (.*)", gw.log_text()), bool, timeout=timeout)
    assert found is not None, f"no ppp.up:\n{gw.log_tail(40)}"
    return dict(field.split("=", 1) for field in found.group(1).split() if "=" in field)


def hq_sessions(d: DialinLab) -> list[dict[str, Any]]:
    return list(d.hq.request("sessions")["sessions"])


def cli(gw: LabGateway, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "gateway", *args, "-s", str(gw.socket)], capture_output=True,
                          text=True, timeout=20, check=False)
    return proc.stdout + proc.stderr


def test_client_gets_an_address_and_reaches_the_hq_lan(dialin: DialinLab) -> None:
    d = dialin
    client = d.home.clients[0]
    with d.dial(client, "alice", "mschapv2") as alice:
        up = ppp_up(alice)
        assert up["method"] == "mschapv2" and up["dns"] == "10.1.0.53", up
        address = up["address"]
        assert address.startswith(POOL.rsplit(".", 2)[0] + "."), up  # from the LNS's pool
        assert d.ping(client.gw_ns, HQ_LAN_HOST), alice.log_tail(30)
        assert d.ping(d.topology.hq.lan_ns, address), d.hq.log_tail(30)  # and the way back
        reply = tcp_exchange(d.topology, d.topology.hq.lan_ns, HQ_LAN_HOST, client.gw_ns, "dial-in TCP")
        assert "dial-in TCP" in reply, reply
        (session,) = hq_sessions(d)
        assert session["user"] == "alice" and session["address"] == address and session["state"] == "up"
        assert session["peer"].startswith(d.home.public + ":"), session  # seen through the NAT
        assert session["packets_in"] >= 6 and session["packets_out"] >= 6, session
        listing = cli(d.hq, "sessions")
        assert "alice" in listing and address in listing, listing
        for secret in PASSWORDS.values():
            assert secret not in d.hq.log_text() + alice.log_text() + listing


def test_two_clients_behind_one_nat_at_once(dialin: DialinLab) -> None:
    d = dialin
    one, two = d.home.clients
    with d.dial(one, "bob", "pap") as bob, d.dial(two, "carol", "chap-md5") as carol:
        bob_up, carol_up = ppp_up(bob), ppp_up(carol)
        assert bob_up["method"] == "pap" and carol_up["method"] == "chap-md5"
        assert carol_up["address"] == CAROL_ADDRESS  # her static address
        assert bob_up["address"] != carol_up["address"]
        sessions = {s["user"]: s for s in wait_for(lambda: hq_sessions(d), lambda s: len(s) == 2, timeout=10)}
        assert set(sessions) == {"bob", "carol"}, sessions
        # Inside IPsec both speak L2TP from 203.0.113.2:1701; what keeps them apart is the
        # IPsec tunnel each arrived through (the NAT gave each its own outer UDP port).
        assert {s["peer"] for s in sessions.values()} == {f"{d.home.public}:1701"}, sessions
        tunnels = {s["tunnel"] for s in sessions.values()}
        assert len(tunnels) == 2 and all(f"@{d.home.public}:" in t for t in tunnels), tunnels
        for client, up in ((one, bob_up), (two, carol_up)):
            assert d.ping(client.gw_ns, HQ_LAN_HOST), f"{client.name}:\n{d.hq.log_tail(30)}"
            assert d.ping(d.topology.hq.lan_ns, up["address"]), d.hq.log_tail(30)
        # Ending one user's session leaves the other's alone, though both come from one address.
        assert "closing 1 session(s) of bob" in cli(d.hq, "kick", "bob")
        assert wait_for(lambda: hq_sessions(d), lambda s: sessions["bob"]["session"] not in
                        [x["session"] for x in s], timeout=10)
        (still,) = [s for s in hq_sessions(d) if s["user"] == "carol"]
        assert still["session"] == sessions["carol"]["session"] and still["state"] == "up", still
        assert d.ping(two.gw_ns, HQ_LAN_HOST), carol.log_tail(30)
        assert d.ping(d.topology.hq.lan_ns, carol_up["address"])


def test_wrong_password_is_refused_logged_and_counted(dialin: DialinLab) -> None:
    d = dialin
    one, two = d.home.clients
    before = d.hq.request("status")["dialup"]["auth_failures"].get("mschapv2", 0)
    with d.dial(one, "alice", "mschapv2") as alice, \
            d.dial(two, "alice", "mschapv2", password="not-alices-password") as mallory:
        ppp_up(alice)
        failed = wait_for(lambda: re.search(r"ppp\.auth_failed .*", mallory.log_text()), bool, timeout=20)
        assert failed is not None, mallory.log_tail(40)
        assert "E=691" in failed.group(0), failed.group(0)  # the LAC says why, in MS-CHAPv2's terms
        hq_line = wait_for(lambda: re.search(r"WARNING ppp\.auth_failed .*", d.hq.log_text()), bool,
                           timeout=10)
        assert hq_line is not None, d.hq.log_tail(30)
        assert "user=alice" in hq_line.group(0) and "method=mschapv2" in hq_line.group(0)
        assert d.home.public in hq_line.group(0), hq_line.group(0)  # who tried
        status = d.hq.request("status")["dialup"]
        assert status["auth_failures"]["mschapv2"] > before, status
        text = cli(d.hq, "status")
        assert re.search(r"authentication failures: .*mschapv2=\d+", text), text
        # The real alice, behind the same NAT, keeps her session and her traffic.
        assert d.ping(one.gw_ns, HQ_LAN_HOST), alice.log_tail(30)
        assert [s["user"] for s in hq_sessions(d) if s["state"] == "up"] == ["alice"]
        assert "not-alices-password" not in d.hq.log_text() + mallory.log_text() + json.dumps(status)


def test_a_demand_dial_lac_dials_for_traffic_and_hangs_up_when_idle(dialin: DialinLab) -> None:
    """No SA at first; one ping dials IKEv1, L2TP and PPP, and is answered (the packet that
    dialed waited and went first); idle, everything goes (PPP, L2TP, IPsec at both ends);
    the next ping dials again."""
    d = dialin
    client = d.home.clients[0]
    with d.dial_on_demand(client, "alice", idle=3) as alice:
        time.sleep(1.0)
        assert alice.request("sas")["ike_sas"] == [], alice.log_tail()
        [row] = alice.request("status")["demand"]
        assert row["state"] == "idle"
        assert d.ping(client.gw_ns, HQ_LAN_HOST, count=1, wait=8), alice.log_tail(40)
        log = alice.log_text()
        assert "demand.up connection=hq" in log and "delivered=1" in log, log
        [row] = alice.request("status")["demand"]
        assert row["state"] == "up" and row["connects"] == 1, row
        assert any(s["user"] == "alice" for s in hq_sessions(d))

        def down() -> tuple[bool, bool]:
            return (not alice.request("sas")["ike_sas"],
                    not any(s["user"] == "alice" for s in hq_sessions(d)))
        assert wait_for(down, lambda v: v == (True, True), timeout=12) == (True, True), alice.log_tail(40)
        log = alice.log_text()
        assert "demand.idle_hangup connection=hq" in log, log
        [row] = alice.request("status")["demand"]
        assert row["state"] == "idle" and row["idle_disconnects"] == 1, row

        assert d.ping(client.gw_ns, HQ_LAN_HOST, count=1, wait=8), alice.log_tail(40)
        assert alice.request("status")["drops"] == {}  # the StopCCN's ack came in before the SAs went
        [row] = alice.request("status")["demand"]
        assert row["connects"] == 2 and row["failures"] == 0, row
