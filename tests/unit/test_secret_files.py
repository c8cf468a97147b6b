"""Private keys and PSK files that group or others may read are refused, with the file,
its mode and the fix, at check-config, at start and at reload; a config file with inline
secrets that others may read draws a warning, one they may write is refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import pki
from gateway.config import ConfigError, load_config, load_config_text
from gateway.config.model import User
from gateway.config.secretfiles import inline_secrets, private_file_problem
from gateway.daemon import Gateway, ReloadError, StartupError

PSK_TEXT = "psk-from-a-file-9d1c"

BASE = """\
gateway: {name: hq, public_interface: wan0, public_address: 192.0.2.1}
edge: {nftables: false}
control: {socket: SOCKET}
connections:
"""

PSK_FILE_CONN = """\
  branch1:
    remote: 198.51.100.1
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.2.0.0/24]
    auth: {method: psk, psk_file: branch1.psk}
"""

CERT_CONN = """\
  certs:
    remote: 198.51.100.2
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.3.0.0/24]
    auth: {method: cert, cert: pki/gw.crt, key: pki/gw.key, ca: [pki/root.crt]}
"""

INLINE_CONN = """\
  inline:
    remote: 198.51.100.3
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.4.0.0/24]
    auth: {method: psk, psk: an-inline-psk}
"""


def write(directory: Path, *conns: str, mode: int = 0o600) -> Path:
    path = directory / "gw.yaml"
    path.write_text(BASE.replace("SOCKET", str(directory / "control.sock")) + "".join(conns))
    path.chmod(mode)
    return path


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """branch1.psk and a certificate with its key (both 0600), next to the config."""
    psk = tmp_path / "branch1.psk"
    psk.write_text(PSK_TEXT + "\n")
    psk.chmod(0o600)
    root = pki.make_ca(tmp_path / "pki", "root", kind="ecdsa256")
    gw = pki.issue(tmp_path / "pki", root, "gw", kind="ecdsa256", san_ip=["192.0.2.1"])
    assert (gw.key_path.stat().st_mode & 0o777) == 0o600  # appliance.pki writes keys private
    return tmp_path


def issues(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(i) for i in info.value.issues]


def test_private_files_load(files: Path) -> None:
    loaded = load_config(write(files, PSK_FILE_CONN, CERT_CONN))
    assert loaded.warnings == []


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o660])
def test_a_loose_private_key_is_refused_at_check_config(files: Path, mode: int) -> None:
    key = files / "pki" / "gw.key"
    key.chmod(mode)
    [problem] = issues(write(files, CERT_CONN))
    assert "connections.certs.auth.key:" in problem
    assert f"{key} holds a private key" in problem and f"(mode {mode:04o})" in problem
    assert problem.endswith(f"run chmod 600 {key}")


def test_a_loose_psk_file_is_refused_and_the_message_has_no_secret(files: Path) -> None:
    psk = files / "branch1.psk"
    psk.chmod(0o644)
    [problem] = issues(write(files, PSK_FILE_CONN))
    assert "connections.branch1.auth.psk_file:" in problem and "group or others may read it" in problem
    assert f"run chmod 600 {psk}" in problem and PSK_TEXT not in problem


def test_relative_key_paths_are_checked_where_the_daemon_reads_them(files: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """check-config reads relative paths from the config's directory, as the daemon does."""
    monkeypatch.chdir("/")
    assert load_config(write(files, PSK_FILE_CONN, CERT_CONN)).warnings == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_key_of_another_user_is_refused(files: Path) -> None:
    key = files / "pki" / "gw.key"
    os.chown(key, 65534, -1)
    [problem] = issues(write(files, CERT_CONN))
    assert "belongs to another user (uid 65534)" in problem and f"chown root {key}" in problem


def test_check_config_cli_names_the_file_its_mode_and_the_fix(files: Path) -> None:
    key = files / "pki" / "gw.key"
    key.chmod(0o644)
    proc = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(write(files, CERT_CONN))],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert f"{key} holds a private key but group or others may read it (mode 0644): " \
           f"run chmod 600 {key}" in proc.stderr
    assert "BEGIN" not in proc.stderr and key.read_text().splitlines()[1] not in proc.stderr


def test_a_readable_config_with_inline_secrets_is_a_warning(files: Path) -> None:
    path = write(files, PSK_FILE_CONN, INLINE_CONN, mode=0o644)
    [warning] = load_config(path).warnings
    assert warning.key == "connections.inline.auth.psk" and warning.warning
    assert f"group or others may read it (mode 0644): run chmod 600 {path}" in str(warning)
    # without inline secrets, a readable config is fine (keys are in private files)
    assert load_config(write(files, PSK_FILE_CONN, mode=0o644)).warnings == []


def test_a_config_others_may_write_is_refused(files: Path) -> None:
    path = write(files, PSK_FILE_CONN, mode=0o664)
    [problem] = issues(path)
    assert "writable by group or others (mode 0664)" in problem and f"chmod 600 {path}" in problem


def test_inline_secrets_are_all_found() -> None:
    text = """\
gateway: {public_interface: wan0, public_address: 192.0.2.1}
pools: {dialin: {subnet: 10.9.0.0/24}}
users:
  alice: {nt_hash: 0x8846f7eaee8fb117ad06bdd830b7586c}
  bob: {password_hash: "scrypt$16384$8$1$c2FsdA$aGFzaA"}
  carol: {password: clear}
  dave: {address: 10.9.0.9, password: x}
connections:
  lns:
    remote: "%any"
    auth: {method: psk, psk: group}
    l2tp: {role: lns, pool: dialin, secret: tunnel-secret, auth: [mschapv2, chap-md5, pap]}
  lac:
    remote: 203.0.113.1
    auth: {method: psk, psk: other}
    l2tp: {role: lac, user: me, password: pw, secret: s, remote_subnets: [10.250.0.0/24]}
  manual1:
    remote: 198.51.100.9
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.5.0.0/24]
    keying: manual
    manual:
      outbound: {spi: 0x1001, algorithm: aes128gcm16, encryption_key: 0xKEY1}
      inbound: {spi: 0x2001, algorithm: aes128gcm16, encryption_key: 0xKEY2}
"""
    config = load_config_text(text.replace("KEY1", "11" * 20).replace("KEY2", "22" * 20)).config
    found = {".".join(map(str, p)) for p in inline_secrets(config)}
    assert found == {
        "users.alice.nt_hash", "users.bob.password_hash", "users.carol.password", "users.dave.password",
        "connections.lns.auth.psk", "connections.lns.l2tp.secret", "connections.lac.auth.psk",
        "connections.lac.l2tp.password", "connections.lac.l2tp.secret",
        "connections.manual1.manual.outbound.encryption_key",
        "connections.manual1.manual.inbound.encryption_key",
    }
    bob = config.users["bob"]
    assert "aGFzaA" not in repr(bob) + str(bob.model_dump()) + repr(config)


def test_private_file_problem_ignores_missing_files(tmp_path: Path) -> None:
    assert private_file_problem(tmp_path / "absent", "a private key") is None  # reading reports it
    assert User(password_hash="scrypt$1$1$1$YQ$Yg").password_hash == "scrypt$1$1$1$YQ$Yg"


# -- at start and at reload: the daemon loads keys the same way --------------------------


class Backend:
    name = "stand-in"
    tun_name = "tun-test"
    sockets = None

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        pass

    def stop(self) -> None:
        pass

    async def route(self, *args: object) -> None:
        pass


def gateway(path: Path) -> Gateway:
    gw = Gateway(load_config(path))
    gw._make_backend = lambda: Backend()  # type: ignore[method-assign]
    return gw


def test_a_loose_key_stops_the_start(files: Path) -> None:
    path = write(files, CERT_CONN)
    gw = gateway(path)  # loaded while the key was private
    (files / "pki" / "gw.key").chmod(0o644)

    async def scenario() -> None:
        with pytest.raises(StartupError, match=r"connection certs: .*gw\.key holds a private key .*600"):
            await gw.start()
        await gw.shutdown()

    asyncio.run(scenario())


def test_a_reload_with_a_loose_key_changes_nothing(files: Path) -> None:
    path = write(files, PSK_FILE_CONN)
    gw = gateway(path)

    async def scenario() -> None:
        await gw.start()
        (files / "pki" / "gw.key").chmod(0o640)
        write(files, PSK_FILE_CONN, CERT_CONN)
        with pytest.raises(ReloadError, match=r"gw\.key holds a private key .*\(mode 0640\): run chmod 600"):
            await gw.reload()
        assert gw.ike is not None and sorted(gw.ike.configs) == ["branch1"]
        write(files, PSK_FILE_CONN, mode=0o666)
        with pytest.raises(ReloadError, match=r"writable by group or others \(mode 0666\)"):
            await gw.reload()
        await gw.shutdown()

    asyncio.run(scenario())
