"""The key log (logging.save_keys): Wireshark's ESP SA table, written safely, keys nowhere else."""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from ipsec_testkit import ALL_ESP_SUITES, esp_keys

from gateway.config import ConfigError, load_config_text
from gateway.crypto.algorithms import ENCRYPTION, INTEGRITY, parse_esp_suite
from gateway.dataplane.edge import EdgePolicy
from gateway.dataplane.engine import Dataplane
from gateway.dataplane.esp import encapsulate
from gateway.ike.events import ChildSaKeys, ChildSaUp
from gateway.ike.proposals import NegotiatedSuite
from gateway.ike.trafficselectors import TsRange
from gateway.keylog import (
    ESP_SA_FILE,
    TSHARK_ESP_AUTHENTICATION,
    TSHARK_ESP_ENCRYPTION,
    EspSaKeys,
    KeyLog,
    KeyLogError,
    directory_problem,
)
from gateway.logs import JsonFormatter, TextFormatter
from gateway.tunnels import TunnelTable

TSHARK = shutil.which("tshark")
LOCAL, REMOTE = "192.0.2.1", "203.0.113.2"
GCM_KEY = bytes(range(20))  # 16-octet key, then the 4-octet salt
CBC_KEY = bytes(range(0x20, 0x40))
SHA256_KEY = bytes(range(0x40, 0x60))


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    d.mkdir(mode=0o700)
    return d


def child_up(suite_name: str, *, spi_in: int = 0xC0000001, spi_out: int = 0xC0000002, seed: int = 1,
             keys: ChildSaKeys | None = None) -> ChildSaUp:
    """A CHILD_SA pair as an IKE core announces it: transport mode between LOCAL and REMOTE."""
    suite = parse_esp_suite(suite_name)
    if keys is None:
        enc_out, auth_out = esp_keys(suite_name, seed)
        enc_in, auth_in = esp_keys(suite_name, seed + 1)
        keys = ChildSaKeys(enc_out, auth_out or b"", enc_in, auth_in or b"")
    here, there = ipaddress.IPv4Address(LOCAL), ipaddress.IPv4Address(REMOTE)
    return ChildSaUp("dialin", "ike-1", spi_in, spi_out, 50, "transport",
                     NegotiatedSuite(suite.encryption, suite.integrity, None, None, False), keys,
                     (TsRange(here, here),), (TsRange(there, there),), LOCAL, REMOTE, None)


def table(keylog: KeyLog | None) -> TunnelTable:
    return TunnelTable(Dataplane(EdgePolicy("wan0", ipaddress.IPv4Address(LOCAL), ())), 64, keylog)


# -- the record format -------------------------------------------------------------------------


def test_records_are_tsharks_esp_sa_rows() -> None:
    gcm = EspSaKeys.from_suite(LOCAL, REMOTE, 0xC0000002, parse_esp_suite("aes128gcm16"), GCM_KEY, b"")
    assert gcm.uat_record() == (
        '"IPv4","192.0.2.1","203.0.113.2","0xc0000002","AES-GCM with 16 octet ICV [RFC4106]",'
        '"0x000102030405060708090a0b0c0d0e0f10111213","NULL",""')
    cbc = EspSaKeys.from_suite(REMOTE, LOCAL, 0x1001, parse_esp_suite("aes256-sha256"), CBC_KEY, SHA256_KEY)
    assert cbc.uat_record() == (
        '"IPv4","203.0.113.2","192.0.2.1","0x00001001","AES-CBC [RFC3602]",'
        '"0x202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",'
        '"HMAC-SHA-256-128 [RFC4868]",'
        '"0x404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"')
    legacy = EspSaKeys.from_suite(LOCAL, REMOTE, 7, parse_esp_suite("3des-md5"), bytes(24), bytes(16))
    assert legacy.uat_record() == (
        '"IPv4","192.0.2.1","203.0.113.2","0x00000007","TripleDES-CBC [RFC2451]",'
        '"0x000000000000000000000000000000000000000000000000","HMAC-MD5-96 [RFC2403]",'
        '"0x00000000000000000000000000000000"')


def test_every_algorithm_has_a_tshark_name() -> None:
    assert set(TSHARK_ESP_ENCRYPTION) == set(ENCRYPTION)
    assert set(TSHARK_ESP_AUTHENTICATION) == {None, *INTEGRITY}


def test_ike_pair_is_saved_as_two_rows(keydir: Path) -> None:
    keys = ChildSaKeys(GCM_KEY, b"", bytes(range(100, 120)), b"")
    table(KeyLog(keydir)).up(child_up("aes128gcm16", keys=keys))
    assert (keydir / ESP_SA_FILE).read_text() == (
        '"IPv4","192.0.2.1","203.0.113.2","0xc0000002","AES-GCM with 16 octet ICV [RFC4106]",'
        '"0x000102030405060708090a0b0c0d0e0f10111213","NULL",""\n'
        '"IPv4","203.0.113.2","192.0.2.1","0xc0000001","AES-GCM with 16 octet ICV [RFC4106]",'
        '"0x6465666768696a6b6c6d6e6f7071727374757677","NULL",""\n')


def test_rows_are_appended(keydir: Path) -> None:
    tunnels = table(KeyLog(keydir))
    tunnels.up(child_up("aes128-sha256"))
    tunnels.up(child_up("aes128-sha256", spi_in=0xC0000003, spi_out=0xC0000004, seed=5))
    rows = (keydir / ESP_SA_FILE).read_text().splitlines()
    assert [r.split(",")[3] for r in rows] == ['"0xc0000002"', '"0xc0000001"', '"0xc0000004"', '"0xc0000003"']


def test_no_key_log_writes_nothing(keydir: Path) -> None:
    table(None).up(child_up("aes128gcm16"))
    assert list(keydir.iterdir()) == []


# -- safety --------------------------------------------------------------------------------------


def test_file_is_private_whatever_the_umask(keydir: Path) -> None:
    old = os.umask(0)
    try:
        table(KeyLog(keydir)).up(child_up("aes128gcm16"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((keydir / ESP_SA_FILE).stat().st_mode) == 0o600


def test_an_existing_file_is_made_private(keydir: Path) -> None:
    path = keydir / ESP_SA_FILE
    path.write_text("")
    path.chmod(0o644)
    table(KeyLog(keydir)).up(child_up("aes128gcm16"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().splitlines()) == 2


def test_a_symlink_is_not_followed(keydir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    (keydir / ESP_SA_FILE).symlink_to(target)
    keylog = KeyLog(keydir)
    with caplog.at_level(logging.DEBUG, logger="gateway"):
        tunnel, _ = table(keylog).up(child_up("aes128gcm16"))  # the SA is installed all the same
    assert tunnel.pairs and target.read_text() == "" and keylog.failures == 1
    assert [r.getMessage() for r in caplog.records] == ["keys.save_failed"]


@pytest.mark.parametrize("mode", [0o770, 0o703, 0o777])
def test_a_shared_directory_is_refused(keydir: Path, mode: int) -> None:
    keydir.chmod(mode)
    problem = directory_problem(keydir)
    assert problem is not None and "writable by group or others" in problem
    with pytest.raises(KeyLogError, match="private directory"):
        KeyLog(keydir)


def test_missing_directory_and_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyLogError, match="No such file or directory"):
        KeyLog(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(KeyLogError, match="not a directory"):
        KeyLog(tmp_path / "file")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory away")
def test_another_users_directory_is_refused(keydir: Path) -> None:
    os.chown(keydir, 65534, 65534)
    assert "belongs to another user" in (directory_problem(keydir) or "")


CONFIG = """\
gateway: {{public_interface: wan0, public_address: 192.0.2.1}}
logging:
  level: debug
  save_keys: {path}
"""


def test_config_checks_the_directory(keydir: Path) -> None:
    assert load_config_text(CONFIG.format(path=keydir)).config.logging.save_keys == str(keydir)
    plain = CONFIG.split("logging:")[0].format()
    assert load_config_text(plain).config.logging.save_keys is None  # off by default
    keydir.chmod(0o777)
    with pytest.raises(ConfigError) as err:
        load_config_text(CONFIG.format(path=keydir), "hq.yaml")
    assert f"hq.yaml:4 logging.save_keys: {keydir} is writable by group or others" in str(err.value)
    with pytest.raises(ConfigError, match=r"logging\.save_keys: give an absolute path"):
        load_config_text(CONFIG.format(path="keys"))


# -- keys nowhere else -----------------------------------------------------------------------------


def test_keys_never_in_reprs_or_logs(keydir: Path, caplog: pytest.LogCaptureFixture) -> None:
    enc_out, auth_out = esp_keys("aes256-sha256", 7)
    enc_in, auth_in = esp_keys("aes256-sha256", 8)
    assert auth_out is not None and auth_in is not None
    secrets = [k.hex() for k in (enc_out, auth_out, enc_in, auth_in)]
    keylog = KeyLog(keydir)
    tunnels = table(keylog)
    with caplog.at_level(logging.DEBUG, logger="gateway"):
        keys = ChildSaKeys(enc_out, auth_out, enc_in, auth_in)
        tunnel, _ = tunnels.up(child_up("aes256-sha256", keys=keys))
        (keydir / ESP_SA_FILE).chmod(0o600)
        os.rename(keydir / ESP_SA_FILE, keydir / "saved")
        os.mkfifo(keydir / ESP_SA_FILE)  # no reader: the write fails at once, and is logged
        tunnels.up(child_up("aes256-sha256", spi_in=5, spi_out=6, keys=keys))
    saved = (keydir / "saved").read_text()
    assert all(s in saved for s in secrets)  # the file has them ...
    pair = next(iter(tunnel.pairs.values()))
    records = [EspSaKeys.of(pair.outbound, enc_out, auth_out), EspSaKeys.of(pair.inbound, enc_in, auth_in)]
    shown = " ".join([repr(keylog), *map(repr, records), *map(str, records), repr(tunnels.tunnels)])
    assert "0xc0000002" in shown.lower()
    lines = [f.format(r) for r in caplog.records for f in (TextFormatter(), JsonFormatter())]
    assert {r.getMessage() for r in caplog.records} == {"keys.saved", "keys.save_failed"}
    assert "0xc0000002" in " ".join(lines)  # ... the log names the SPIs ...
    for secret in secrets:  # ... and nothing else shows a key
        assert secret not in shown and secret not in " ".join(lines)


# -- tshark reads what we wrote ------------------------------------------------------------------


@pytest.mark.peer
@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_tshark_decrypts_with_the_saved_rows(keydir: Path, tmp_path: Path) -> None:
    """For every suite: one ESP packet each way on an IKE-style pair, written to a pcap;
    tshark, given only the rows we saved, decrypts both, with good ICVs."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    from scapy.utils import wrpcap

    keylog = KeyLog(keydir)
    packets = []
    for n, name in enumerate(ALL_ESP_SUITES):
        tunnel, _ = table(keylog).up(child_up(name, spi_in=0x100 + n, spi_out=0x200 + n, seed=3 * n))
        pair = tunnel.pairs[0x100 + n]
        for sa, (src, dst) in ((pair.outbound, (LOCAL, REMOTE)), (pair.inbound, (REMOTE, LOCAL))):
            inner = bytes(ICMP(type=8, id=n, seq=1) / Raw(name.encode()))
            packets.append(Ether() / IP(src=src, dst=dst, proto=50) / Raw(encapsulate(sa, inner, 1)))
    pcap = tmp_path / "esp.pcap"
    wrpcap(str(pcap), packets)
    rows = (keydir / ESP_SA_FILE).read_text().splitlines()
    assert len(rows) == 2 * len(ALL_ESP_SUITES)
    conf = tmp_path / "wireshark"
    conf.mkdir()
    cmd = [TSHARK or "tshark", "-n", "-r", str(pcap), "-o", "esp.enable_encryption_decode:TRUE",
           "-o", "esp.enable_authentication_check:TRUE",
           *[a for r in rows for a in ("-o", f"uat:esp_sa:{r}")],
           "-T", "fields", "-E", "separator=|", "-e", "esp.spi", "-e", "esp.icv_good", "-e", "icmp.type",
           "-e", "data.data", "-e", "_ws.malformed", "-e", "_ws.expert"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True,
                          env={**os.environ, "WIRESHARK_CONFIG_DIR": str(conf), "HOME": str(tmp_path)})
    seen = [line.split("|") for line in proc.stdout.splitlines()]
    assert len(seen) == len(packets), proc.stdout
    for (spi, icv_good, icmp_type, data, malformed, expert), n in zip(
            seen, [n for n in range(len(ALL_ESP_SUITES)) for _ in (0, 1)], strict=True):
        name = ALL_ESP_SUITES[n]
        assert int(spi, 16) in (0x100 + n, 0x200 + n)
        assert icmp_type == "8" and bytes.fromhex(data) == name.encode(), f"{name}: not decrypted: {spi}"
        assert icv_good == "1" and not malformed and not expert, f"{name}: {icv_good} {malformed} {expert}"


# -- the daemon's wiring ---------------------------------------------------------------------------

MANUAL = """\
gateway: {{public_interface: wan0, public_address: 192.0.2.1}}
control: {{socket: {socket}}}
logging: {{save_keys: {path}}}
connections:
  branch1:
    remote: 198.51.100.1
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.2.0.0/24]
    keying: manual
    manual:
      outbound: {{spi: 0x1001, algorithm: aes128gcm16,
                  encryption_key: 0x000102030405060708090a0b0c0d0e0f10111213}}
      inbound:  {{spi: 0x2001, algorithm: aes128-sha256, encryption_key: 0x202122232425262728292a2b2c2d2e2f,
                 integrity_key: 0x404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f}}
"""


def test_daemon_saves_manual_sas_and_refuses_a_directory_gone_bad(keydir: Path, tmp_path: Path) -> None:
    from gateway.daemon import Gateway, StartupError
    from gateway.manual import build_manual

    loaded = load_config_text(MANUAL.format(path=keydir, socket=tmp_path / "control.sock"))
    gw = Gateway(loaded)
    assert gw.keylog is not None and gw.ike_tunnels.keylog is gw.keylog
    cfg = loaded.config
    gw._save_manual_keys(build_manual("branch1", cfg.connections["branch1"], cfg.gateway.public_address, 64))
    assert (keydir / ESP_SA_FILE).read_text() == (
        '"IPv4","192.0.2.1","198.51.100.1","0x00001001","AES-GCM with 16 octet ICV [RFC4106]",'
        '"0x000102030405060708090a0b0c0d0e0f10111213","NULL",""\n'
        '"IPv4","198.51.100.1","192.0.2.1","0x00002001","AES-CBC [RFC3602]",'
        '"0x202122232425262728292a2b2c2d2e2f","HMAC-SHA-256-128 [RFC4868]",'
        '"0x404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"\n')
    keydir.chmod(0o775)  # after the config was checked
    with pytest.raises(StartupError, match=r"logging\.save_keys: .* writable by group or others"):
        Gateway(loaded)
