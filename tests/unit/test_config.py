"""Configuration: every error named by file, line and key; secrets never shown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, load_config_text

GOOD = """\
gateway:
  public_interface: wan0
  public_address: 192.0.2.1
connections:
  branch1:
    remote: 198.51.100.1
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.2.0.0/24]
    keying: manual
    manual:
      outbound: {spi: 0x1001, algorithm: aes256-sha256,
                 encryption_key: 0x000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f,
                 integrity_key: 0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff}
      inbound:  {spi: 0x2001, algorithm: aes128gcm16,
                 encryption_key: "00010203 04050607 08090a0b 0c0d0e0f 01020304"}
"""


def issues(text: str, name: str = "hq.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, name)
    return [str(i) for i in info.value.issues]


def test_good_config_loads_with_typed_values() -> None:
    loaded = load_config_text(GOOD)
    conn = loaded.config.connections["branch1"]
    assert str(conn.local_subnets[0]) == "10.1.0.0/24"
    assert conn.manual is not None and conn.manual.outbound.spi == 0x1001
    assert conn.manual.inbound.encryption_key is not None
    assert len(conn.manual.inbound.encryption_key) == 20
    assert loaded.warnings == []


def test_errors_name_file_line_and_key() -> None:
    text = GOOD.replace("remote: 198.51.100.1", "remote: not_a_host!")
    assert issues(text) == ["hq.yaml:6 connections.branch1.remote: not an IP address or host name (or %any)"]


def test_every_error_is_reported_at_once() -> None:
    text = (GOOD.replace("public_address: 192.0.2.1", "public_address: 192.0.2.300")
                .replace("[10.2.0.0/24]", "[10.2.0.1/24]")
                .replace("keying: manual", "keying: manual\n    colour: blue"))
    got = issues(text)
    assert got[0] == "hq.yaml:3 gateway.public_address: not an IPv4 address"
    assert any(i.startswith("hq.yaml:8 connections.branch1.remote_subnets.0: not an IPv4 subnet")
               for i in got)
    assert "hq.yaml:10 connections.branch1.colour: unknown key" in got
    assert len(got) == 3


def test_key_length_is_checked_against_the_algorithm() -> None:
    text = GOOD.replace('"00010203 04050607 08090a0b 0c0d0e0f 01020304"', "0x0001")
    got = issues(text)
    assert len(got) == 1
    assert got[0].startswith("hq.yaml:15 connections.branch1.manual.inbound.encryption_key: "
                             "aes128gcm16 needs 20 octets including the 4-octet salt")


def test_unknown_algorithm_and_reserved_spi() -> None:
    text = GOOD.replace("algorithm: aes256-sha256", "algorithm: aes999").replace("spi: 0x2001", "spi: 7")
    got = issues(text)
    assert any("manual.inbound.spi: SPI must be between 256" in i for i in got)
    # Cross-key rules run only once every value is well-formed: fix the SPI, see the rest.
    got = issues(GOOD.replace("algorithm: aes256-sha256", "algorithm: aes999"))
    assert got == ["hq.yaml:11 connections.branch1.manual.outbound.algorithm: unknown ESP "
                   "encryption 'aes999' (known: aes128gcm16, aes256gcm16, aes128, aes192, aes256, "
                   "3des, null)"]


def test_ah_over_udp_is_refused() -> None:
    text = GOOD.replace("keying: manual", "keying: manual\n    protocol: ah\n    encapsulation: udp")
    got = issues(text)
    assert any("connections.branch1.encapsulation: AH cannot be UDP-encapsulated" in i for i in got)


def test_ike_connection_needs_auth() -> None:
    text = """\
gateway: {public_interface: wan0, public_address: 192.0.2.1}
connections:
  vpn:
    remote: vpn.example.net
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.9.0.0/16]
"""
    assert issues(text) == ["hq.yaml:3 connections.vpn.auth: IKE keying needs an auth section (psk or cert)"]


def test_ike_tunnel_needs_subnets_and_known_proposals() -> None:
    text = """\
gateway: {public_interface: wan0, public_address: 192.0.2.1}
connections:
  vpn:
    remote: 198.51.100.1
    auth: {method: psk, psk: not-a-good-secret-but-long}
    proposals:
      ike: [aes256-sha256]
"""
    got = issues(text)
    assert "hq.yaml:3 connections.vpn.local_subnets: a tunnel needs at least one local subnet" in got
    assert any("connections.vpn.proposals.ike.0: 'aes256-sha256': an IKE proposal needs a DH group" in i
               for i in got), got


def test_cert_auth_files_must_load(tmp_path) -> None:
    text = f"""\
gateway: {{public_interface: wan0, public_address: 192.0.2.1}}
connections:
  vpn:
    remote: 198.51.100.1
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.2.0.0/24]
    auth: {{method: cert, cert: {tmp_path}/missing.crt, key: {tmp_path}/k.pem, ca: [{tmp_path}/ca.crt]}}
"""
    got = issues(text)
    assert len(got) == 1 and "connections.vpn.auth.cert: cannot load certificate" in got[0], got


def test_weak_algorithm_is_a_warning() -> None:
    text = GOOD.replace("algorithm: aes256-sha256", "algorithm: 3des-md5").replace(
        "0x000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f",
        "0x000102030405060708090a0b0c0d0e0f0001020304050607").replace(
        "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "0x00112233445566778899aabbccddeeff")
    loaded = load_config_text(text, "hq.yaml")
    assert [str(w) for w in loaded.warnings] == [
        "hq.yaml:11 connections.branch1.manual.outbound.algorithm: warning: 3des-md5 is weak: "
        "only for legacy peers"]


def test_yaml_syntax_error_has_a_line() -> None:
    assert issues("gateway:\n  name: [unclosed\n") [0].startswith("hq.yaml:3 YAML syntax")


def test_duplicate_key_is_an_error() -> None:
    got = issues("gateway:\n  public_interface: a\n  public_interface: b\n")
    assert got == ["hq.yaml:3 gateway.public_interface: duplicate key"]


def test_secrets_never_in_repr() -> None:
    loaded = load_config_text(GOOD)
    text = repr(loaded.config) + str(loaded.config.model_dump())
    assert "000102030405" not in text
    assert "00112233445566" not in text
    assert "***" in text


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("remote: 198.51.100.1", "remote: 1.2.3.4.5.6"))
    ok = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(good)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "OK (1 connection)" in ok.stdout
    fail = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(good), str(bad)],
                          capture_output=True, text=True)
    assert fail.returncode == 1
    assert f"{bad}:6 connections.branch1.remote: not an IP address or host name" in fail.stderr


def test_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


L2TP = """\
gateway:
  public_interface: wan0
  public_address: 192.0.2.1
pools:
  dialin: {subnet: 10.9.0.0/24, dns: [10.1.0.53]}
users:
  alice: {nt_hash: 0x8846f7eaee8fb117ad06bdd830b7586c}
  bob: {password: "bob's clear password", address: 10.9.0.200, max_sessions: 2}
connections:
  dialin:
    remote: "%any"
    auth: {method: psk, psk: group-key-for-l2tp}
    l2tp: {role: lns, pool: dialin, auth: [mschapv2, chap-md5, pap]}
  to-hq:
    remote: 203.0.113.1
    auth: {method: psk, psk: branch-key}
    l2tp: {role: lac, user: branch1, password: s3cret, remote_subnets: [10.250.0.0/24]}
"""


def test_l2tp_connections_default_to_ikev1_transport() -> None:
    loaded = load_config_text(L2TP)
    lns, lac = loaded.config.connections["dialin"], loaded.config.connections["to-hq"]
    assert lns.mode == lac.mode == "transport" and lns.ike.version == lac.ike.version == 1
    assert lns.l2tp is not None and lns.l2tp.role == "lns" and lns.l2tp.mss == 1360
    assert lac.l2tp is not None and lac.l2tp.role == "lac" and "s3cret" not in repr(lac)
    assert "bob's clear password" not in repr(loaded.config.users)
    # bob has the clear password CHAP-MD5 needs, alice does not: a warning, not an error
    assert [str(w) for w in loaded.warnings] == [
        "<config>:7 users.alice: warning: CHAP-MD5 (in l2tp.auth of dialin) needs the clear password; "
        "this user cannot use it"]


def test_l2tp_selectors_are_udp_1701() -> None:
    from gateway.ike.v2 import fromconfig

    cfg = load_config_text(L2TP).config
    lns = fromconfig.peer_config("dialin", cfg.connections["dialin"], cfg, None)
    lac = fromconfig.peer_config("to-hq", cfg.connections["to-hq"], cfg, None)
    (lts,), (rts,) = lns.child.local_ts, lns.child.remote_ts
    assert (str(lts.start), lts.protocol, lts.port_start, lts.port_end) == ("192.0.2.1", 17, 1701, 1701)
    assert (str(rts.start), str(rts.end), rts.port_start, rts.port_end) == ("0.0.0.0", "255.255.255.255",
                                                                            0, 65535)
    (rts,) = lac.child.remote_ts
    assert (str(rts.start), rts.protocol, rts.port_start) == ("203.0.113.1", 17, 1701)
    assert lns.version == lac.version == 1 and lns.child.mode == "transport"


def test_l2tp_config_mistakes() -> None:
    text = (L2TP.replace("pool: dialin, auth", "pool: nowhere, auth")
                .replace("remote: 203.0.113.1", "remote: '%any'")
                .replace("  alice: {nt_hash: 0x8846f7eaee8fb117ad06bdd830b7586c}",
                         "  alice: {max_sessions: 3}"))
    got = issues(text + "    mode: tunnel\n    local_subnets: [10.1.0.0/24]\n")
    assert any("connections.dialin.l2tp.pool: no pool named 'nowhere'" in i for i in got), got
    assert any("connections.to-hq.remote: a LAC dials one LNS" in i for i in got), got
    assert any("users.alice: give nt_hash, password_hash or password" in i for i in got), got
    assert any("connections.to-hq.l2tp: L2TP runs over IKEv1 ESP transport mode" in i for i in got), got
    assert any("connections.to-hq.local_subnets: an L2TP connection" in i for i in got), got


DEMAND = """\
gateway:
  public_interface: wan0
  public_address: 198.51.100.1
connections:
  hq:
    remote: 192.0.2.1
    local_subnets: [10.2.0.0/24]
    remote_subnets: [10.1.0.0/24]
    auth: {method: psk, psk: branch-key}
    demand_dial: {idle_timeout: 5m, queue: 16}
"""


def test_demand_dial_defaults_and_units() -> None:
    conn = load_config_text(DEMAND).config.connections["hq"]
    dd = conn.demand_dial
    assert dd is not None and dd.idle_timeout == 300 and dd.queue == 16 and not dd.persistent
    assert (dd.dial_timeout, dd.redial_min, dd.redial_max) == (30, 5, 120)


def test_demand_dial_mistakes() -> None:
    got = issues(DEMAND.replace("    auth:", "    ike: {start: start}\n    auth:")
                 .replace("queue: 16}", "queue: 16, redial_min: 10m, redial_max: 1m}"))
    assert any("connections.hq.ike.start: a demand-dial connection starts on traffic" in i for i in got), got
    assert any("connections.hq.demand_dial.redial_min: redial_min is longer than redial_max" in i
               for i in got), got
    got = issues(DEMAND.replace("remote: 192.0.2.1", "remote: '%any'"))
    assert any("connections.hq.remote: demand-dial needs the peer's address" in i for i in got), got
    lac = load_config_text(L2TP + "    demand_dial: {}\n").config.connections["to-hq"]
    assert lac.demand_dial is not None  # a LAC with remote subnets dials on demand
    lns = L2TP.replace("    l2tp: {role: lns", "    demand_dial: {}\n    l2tp: {role: lns")
    assert any("connections.dialin.demand_dial: an LNS answers calls" in i for i in issues(lns))
    assert load_config_text(DEMAND.replace("queue: 16", "queue: 0")).warnings[0].message.startswith(
        "with no queue")
