"""The reload plan: what a SIGHUP changes, what it leaves alone, what waits for a restart."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.reload import Changed, NeedsRestart, auth_files, fingerprints, plan


def base() -> dict[str, Any]:
    return {
        "gateway": {"public_interface": "wan0", "public_address": "192.0.2.1"},
        "pools": {"rw": {"subnet": "10.9.0.0/24", "dns": ["10.1.0.53"]}},
        "connections": {
            "branch1": {"remote": "198.51.100.1", "local_subnets": ["10.1.0.0/24"],
                        "remote_subnets": ["10.2.0.0/24"], "auth": {"method": "psk", "psk": "first-psk"}},
            "roadwarrior": {"remote": "%any", "local_subnets": ["10.1.0.0/24"], "pool": "rw",
                            "auth": {"method": "psk", "psk": "rw-psk", "remote_id": "rw@example.net"}},
            "manual1": {"remote": "198.51.100.9", "local_subnets": ["10.1.0.0/24"],
                        "remote_subnets": ["10.5.0.0/24"], "keying": "manual",
                        "manual": {"outbound": {"spi": 0x1001, "algorithm": "aes128gcm16",
                                                "encryption_key": "0x" + "11" * 20},
                                   "inbound": {"spi": 0x2001, "algorithm": "aes128gcm16",
                                               "encryption_key": "0x" + "22" * 20}}},
        },
        "users": {"alice": {"nt_hash": "0x" + "aa" * 16}},
    }


def config(data: dict[str, Any]) -> Config:
    """The model alone: the checks across keys would read the files a config names."""
    return Config.model_validate(data)


def test_the_same_config_changes_nothing() -> None:
    p = plan(config(base()), config(base()))
    assert p.unchanged == ("branch1", "roadwarrior", "manual1")
    assert p.empty and not p.restart and p.going == () and p.coming == ()


def test_an_added_connection_leaves_the_others_unchanged() -> None:
    new = base()
    new["connections"]["branch2"] = {"remote": "203.0.113.7", "local_subnets": ["10.1.0.0/24"],
                                     "remote_subnets": ["10.3.0.0/24"], "ike": {"start": "start"},
                                     "auth": {"method": "psk", "psk": "second-psk"}}
    p = plan(config(base()), config(new))
    assert p.added == ("branch2",) and p.coming == ("branch2",)
    assert p.removed == () and p.changed == () and p.going == ()
    assert p.unchanged == ("branch1", "roadwarrior", "manual1")
    assert p.config.connections["branch2"].ike.start == "start"


def test_removed_and_changed_connections_name_the_keys_never_the_values() -> None:
    new = base()
    del new["connections"]["manual1"]
    new["connections"]["branch1"]["auth"]["psk"] = "second-psk"
    new["connections"]["branch1"]["proposals"] = {"esp": ["aes128gcm16"]}
    p = plan(config(base()), config(new))
    assert p.removed == ("manual1",)
    assert p.changed == (Changed("branch1", ("proposals", "auth")),)
    assert p.going == ("manual1", "branch1") and p.coming == ("branch1",)
    assert "second-psk" not in repr(p) and "first-psk" not in repr(p)


def test_a_changed_manual_key_changes_the_connection() -> None:
    new = base()
    new["connections"]["manual1"]["manual"]["inbound"]["encryption_key"] = "0x" + "33" * 20
    assert plan(config(base()), config(new)).changed == (Changed("manual1", ("manual",)),)


def test_writing_a_default_out_is_no_change() -> None:
    new = base()
    new["connections"]["branch1"]["mode"] = "tunnel"
    new["connections"]["branch1"]["dpd"] = {"interval": "30s"}
    assert plan(config(base()), config(new)).changed == ()


def test_a_changed_pool_changes_the_connections_that_use_it() -> None:
    new = base()
    new["pools"]["rw"]["subnet"] = "10.8.0.0/24"
    p = plan(config(base()), config(new))
    assert p.pools_changed == ("rw",)
    assert p.changed == (Changed("roadwarrior", ("pools.rw",)),)
    assert str(p.config.pools["rw"].subnet) == "10.8.0.0/24"


def test_a_pool_in_use_keeps_its_running_definition_until_a_restart() -> None:
    new = base()
    new["pools"]["rw"]["subnet"] = "10.8.0.0/24"
    p = plan(config(base()), config(new), pools_in_use={"rw": 3})
    assert p.pools_changed == () and p.changed == ()
    assert str(p.config.pools["rw"].subnet) == "10.9.0.0/24"
    assert p.restart == (NeedsRestart("pools.rw", "3 address(es) leased: the running pool stays until a "
                                                  "restart"),)


def test_pools_and_users_added_removed_changed() -> None:
    new = base()
    new["pools"]["guests"] = {"subnet": "10.7.0.0/24"}
    new["users"]["bob"] = {"password": "bob-password"}
    new["users"]["alice"]["max_sessions"] = 2
    p = plan(config(base()), config(new))
    assert (p.pools_added, p.pools_removed, p.pools_changed) == (("guests",), (), ())
    assert (p.users_added, p.users_removed, p.users_changed) == (("bob",), (), ("alice",))
    assert p.changed == () and not p.empty
    del new["users"]["alice"]
    assert plan(config(base()), config(new)).users_removed == ("alice",)


def test_a_user_password_change_is_seen() -> None:
    new = base()
    new["users"]["alice"]["nt_hash"] = "0x" + "bb" * 16
    assert plan(config(base()), config(new)).users_changed == ("alice",)


def test_settings_the_running_daemon_is_built_on_wait_for_a_restart() -> None:
    new = base()
    new["gateway"]["public_address"] = "192.0.2.2"
    new["dataplane"] = {"tun_mtu": 1300}
    new["metrics"] = {"listen": "127.0.0.1:9999"}
    new["control"] = {"socket": "/run/other.sock"}
    new["edge"] = {"nftables": False}
    new["logging"] = {"level": "debug"}
    new["connections"]["branch2"] = {"remote": "203.0.113.7", "local_subnets": ["10.1.0.0/24"],
                                     "remote_subnets": ["10.3.0.0/24"],
                                     "auth": {"method": "psk", "psk": "second-psk"}}
    old = config(base())
    p = plan(old, config(new))
    assert [r.key for r in p.restart] == ["gateway.public_address", "dataplane.tun_mtu", "edge.nftables",
                                          "control.socket", "metrics.listen", "logging.level"]
    assert {r.reason for r in p.restart} == {"needs a restart; the running value stays"}
    for section in ("gateway", "dataplane", "edge", "control", "metrics", "logging"):
        assert getattr(p.config, section) == getattr(old, section)
    assert p.added == ("branch2",) and p.unchanged == ("branch1", "roadwarrior", "manual1")


def test_global_ike_settings_apply_live() -> None:
    new = base()
    new["ike"] = {"retransmit_tries": 3}
    p = plan(config(base()), config(new))
    assert p.ike_settings and not p.restart and p.changed == ()
    assert p.config.ike.retransmit_tries == 3


def test_authentication_files_are_compared_by_content(tmp_path: Path) -> None:
    (tmp_path / "branch1.psk").write_text("first file psk\n")
    data = base()
    data["connections"]["branch1"]["auth"] = {"method": "psk", "psk_file": "branch1.psk"}
    cfg = config(data)
    assert auth_files(cfg.connections["branch1"]) == ("branch1.psk",)
    assert auth_files(cfg.connections["manual1"]) == ()
    before = fingerprints(cfg, tmp_path)
    assert set(before) == {"branch1"}
    assert plan(cfg, cfg, running_files=before, new_files=fingerprints(cfg, tmp_path)).changed == ()
    (tmp_path / "branch1.psk").write_text("second file psk\n")
    after = fingerprints(cfg, tmp_path)
    p = plan(cfg, cfg, running_files=before, new_files=after)
    assert p.changed == (Changed("branch1", ("auth files",)),)
    assert b"second file psk" not in after["branch1"] and len(after["branch1"]) == 32
    (tmp_path / "branch1.psk").unlink()
    assert fingerprints(cfg, tmp_path)["branch1"] != after["branch1"]


def test_certificate_files_are_all_named() -> None:
    data = base()
    data["connections"]["branch1"]["auth"] = {"method": "cert", "cert": "/etc/gw/gw.pem",
                                              "key": "/etc/gw/gw.key", "ca": ["/etc/gw/ca.pem", "ca2.pem"]}
    cfg = config(data)
    assert auth_files(cfg.connections["branch1"]) == ("/etc/gw/gw.pem", "/etc/gw/gw.key", "/etc/gw/ca.pem",
                                                      "ca2.pem")


def test_an_l2tp_server_uses_its_pool() -> None:
    data = base()
    data["connections"]["lns"] = {"remote": "%any",
                                  "auth": {"method": "psk", "psk": "l2tp-psk", "remote_id": "%any"},
                                  "l2tp": {"role": "lns", "pool": "rw"}}
    new = copy.deepcopy(data)
    new["pools"]["rw"]["dns"] = ["10.1.0.54"]
    new["connections"]["lns"]["l2tp"]["hello_interval"] = "30s"
    p = plan(config(data), config(new))
    assert p.changed == (Changed("roadwarrior", ("pools.rw",)), Changed("lns", ("l2tp", "pools.rw")))


def test_a_changed_policy_waits_for_a_restart() -> None:
    new = base()
    new["policy"] = {"predefined": "secure-server", "connection": "branch1"}
    old = config(base())
    p = plan(old, config(new))
    assert [r.key for r in p.restart] == ["policy"] and "running policy stays" in p.restart[0].reason
    assert p.config.policy is None and p.empty  # nothing else changed
