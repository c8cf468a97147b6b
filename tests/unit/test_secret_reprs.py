"""No repr or str of the gateway's objects shows a secret (issue 7), nor does an exception
the config and key loaders raise.

Live objects, not hand-made ones: the LAC/LNS pair of test_dialup (IKEv1, L2TP with a tunnel
secret, PPP with MS-CHAPv2, users stored as NT hash and clear password) after it connected,
an IKEv2 pair after IKE_AUTH with a PSK, a manually keyed tunnel, certificate auth with a
private key, and the config models.  Everything reachable from them is walked; the repr and
str of every object of a gateway class is searched for the configured secrets and for the
key material found inside the objects themselves (SKEYID*, SK_*, ESP keys, cookie secrets,
the bound ciphers' keys), as text, hex and base64.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ike_loopback import endpoints, psk_pair
from test_dialup import LAC, LNS, Lab, gateway

from appliance import pki
from gateway.config import ConfigError, load_config_text
from gateway.config.model import CertAuth, PskAuth
from gateway.ike.events import ChildSaUp
from gateway.ike.v2 import fromconfig
from gateway.manual import build_manual
from gateway.ppp.auth import UserSecret, nt_hash, salted_hash

L2TP_SECRET = "l2tp-tunnel-secret-4Rq"
IKEV2_PSK = "ikev2-psk-value-Xy7Q1"
MANUAL_KEYS = [bytes([i]) * 32 for i in (0xA1, 0xA2, 0xA3, 0xA4)]
KEYISH = re.compile(r"key|secret|skeyid|^sk_|encr|integ|psk|password|hash", re.IGNORECASE)

MANUAL = """\
gateway: {public_interface: wan0, public_address: 192.0.2.1}
connections:
  m:
    remote: 198.51.100.9
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.5.0.0/24]
    keying: manual
    manual:
      outbound: {spi: 0x1001, algorithm: aes256-sha256, encryption_key: 0xK0, integrity_key: 0xK1}
      inbound: {spi: 0x2001, algorithm: aes256-sha256, encryption_key: 0xK2, integrity_key: 0xK3}
"""


@dataclass
class Needles:
    """What must not show: encoding -> label."""

    found: dict[str, str] = field(default_factory=dict)

    def add(self, label: str, value: bytes) -> None:
        forms = [value.hex(), value.hex().upper(), base64.b64encode(value).decode().rstrip("=")]
        if value.isascii() and value.decode().isprintable():
            forms.append(value.decode())
        for form in forms:
            self.found.setdefault(form, label)

    def in_text(self, text: str) -> list[str]:
        return sorted({label for needle, label in self.found.items() if needle in text})


def _children(obj: object) -> Iterator[tuple[str, object]]:
    if isinstance(obj, dict):
        yield from ((f"[{k!r}]", v) for k, v in obj.items())
        yield from (("<key>", k) for k in obj)
    elif isinstance(obj, list | tuple | set | frozenset) or type(obj).__name__ == "deque":
        yield from ((f"[{i}]", v) for i, v in enumerate(obj))  # type: ignore[arg-type]
    else:
        yield from ((f".{k}", v) for k, v in getattr(obj, "__dict__", {}).items())
        for cls in type(obj).__mro__:
            for name in getattr(cls, "__slots__", ()):
                if hasattr(obj, name):
                    yield f".{name}", getattr(obj, name)


def walk(roots: dict[str, object], needles: Needles) -> list[tuple[str, object]]:
    """Every object reachable from ``roots`` (path, object); key material met on the way,
    bytes under key-like attribute names, is added to ``needles``."""
    seen: set[int] = set()
    out: list[tuple[str, object]] = []
    stack: list[tuple[str, object]] = list(roots.items())
    while stack:
        path, obj = stack.pop()
        if id(obj) in seen or isinstance(obj, str | int | float | bool | bytes | bytearray | type(None)):
            continue
        seen.add(id(obj))
        out.append((path, obj))
        for step, child in _children(obj):
            if isinstance(child, bytes | bytearray) and len(child) >= 8 and step != "<key>" \
                    and KEYISH.search(step.lstrip(".")):
                needles.add(f"key material at {path}{step}", bytes(child))
            elif not callable(child) or hasattr(child, "__dict__") or hasattr(child, "__slots__"):
                stack.append((path + step, child))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], Needles]:
    needles = Needles()
    for label, text in (("L2TP secret", L2TP_SECRET), ("IKEv2 PSK", IKEV2_PSK),
                        ("IKEv1 group PSK", "group-key-for-l2tp"), ("password", "branch-password"),
                        ("carol's password", "carol-pw")):
        needles.add(label, text.encode())
    needles.add("NT hash", nt_hash("branch-password"))
    for i, key in enumerate(MANUAL_KEYS):
        needles.add(f"manual key {i}", key)
    # dial-up over IKEv1, with L2TP tunnel authentication
    lns = LNS.replace("l2tp: {role: lns,", f"l2tp: {{role: lns, secret: {L2TP_SECRET},")
    lac = LAC.replace("l2tp: {role: lac,", f"l2tp: {{role: lac, secret: {L2TP_SECRET},")
    assert lns != LNS and lac != LAC
    lb = Lab(gateway(lns, 1), gateway(lac, 2))
    lb.branch.ike.initiate("to-hq", lb.now)
    lb.pump()
    lb.advance(2)
    assert any(line.what == "ppp.up" for line in lb.branch.dialup.log)
    # IKEv2 with a PSK, up to a CHILD_SA
    wire = endpoints(*psk_pair(psk_hq=IKEV2_PSK))
    wire.b.initiate("to-hq", wire.now)
    wire.pump()
    assert [e for e in wire.events_a if isinstance(e, ChildSaUp)]
    # manual keys
    text = MANUAL
    for i, key in enumerate(MANUAL_KEYS):
        text = text.replace(f"0xK{i}", "0x" + key.hex())
    manual_cfg = load_config_text(text).config
    manual = build_manual("m", manual_cfg.connections["m"], manual_cfg.gateway.public_address, 64)
    # a private key
    directory = tmp_path_factory.mktemp("pki")
    root = pki.make_ca(directory, "root", kind="ecdsa256")
    gw = pki.issue(directory, root, "gw", kind="ecdsa256", san_ip=["192.0.2.1"])
    for i, line in enumerate(gw.key_path.read_text().splitlines()):
        if not line.startswith("-----"):
            needles.found[line] = f"private key PEM line {i}"
    auth = fromconfig.load_auth(CertAuth(method="cert", cert=str(gw.cert_path), key=str(gw.key_path),
                                         ca=[str(root.cert_path)]))
    scalar = auth.private_key.private_numbers().private_value
    needles.add("private scalar", scalar.to_bytes(32, "big"))
    users = {"salted": UserSecret(salted=salted_hash("salted-pw-value")),
             "all": UserSecret(password="clear-pw-value", nt_hash=nt_hash("clear-pw-value"))}
    needles.add("salted user's password", b"salted-pw-value")
    needles.add("clear user's password", b"clear-pw-value")
    roots = {"lns": lb.hq, "lac": lb.branch, "ikev2": wire, "manual": manual, "manual config": manual_cfg,
             "cert auth": auth, "users": users}
    return roots, needles


def test_no_repr_or_str_shows_a_secret(world: tuple[dict[str, object], Needles]) -> None:
    roots, needles = world
    objects = walk(roots, needles)
    leaks = {}
    for path, obj in objects:
        if not type(obj).__module__.startswith("gateway") and not isinstance(obj, BaseException):
            continue
        found = needles.in_text(repr(obj) + str(obj))
        if found:
            leaks.setdefault(type(obj).__qualname__, (path, found))
    assert not leaks, leaks
    # the walk reached what holds secrets (a walk that saw nothing would pass too)
    kinds = {type(obj).__qualname__ for _, obj in objects}
    assert {"IkeSa", "IkeSaKeys", "IsakmpSa", "Phase1Keys", "ChildSaKeys", "ChildSaUp",
            "SecurityAssociation", "PeerConfig", "Secret", "L2tpSettings", "Tunnel", "Session", "PppSession",
            "MsChapV2Authenticator", "MsChapV2Peer", "DialupService", "UserSecret", "LoadedAuth",
            "ManualTunnel", "Config", "User", "L2tpServer", "L2tpClient", "ManualSa", "BoundIntegrity",
            "KeyExchange"} <= kinds, kinds
    labels = set(needles.found.values())
    assert any("skeyid" in label for label in labels) and any("sk_d" in label for label in labels), labels
    assert any("encr_out" in label for label in labels), labels


def test_config_dumps_hide_every_secret(world: tuple[dict[str, object], Needles]) -> None:
    roots, needles = world
    for name in ("manual config",):
        config: Any = roots[name]
        assert not needles.in_text(config.model_dump_json() + str(config.model_dump()) + repr(config))
    lns: Any = roots["lns"]
    text = lns.config.model_dump_json() + repr(lns.config)
    assert "***" in text and not needles.in_text(text)


BROKEN = [
    ("psk: [the-psk-in-a-list-abc123]", "must be a non-empty string"),
    ("psk: 1234567890123456789", "must be a non-empty string"),
    ("pre_shared: the-psk-under-a-typo-abc123", "unknown key"),
]


@pytest.mark.parametrize("line, message", BROKEN)
def test_config_errors_do_not_echo_secrets(line: str, message: str) -> None:
    text = f"""\
gateway: {{public_interface: wan0, public_address: 192.0.2.1}}
users:
  bob: {{password_hash: "scrypt$16384$8$1$c2FsdHNhbHQ$the-hash-part-xyz789", password: a-clear-pw-xyz789}}
  eve: {{nt_hash: 0x8846f7eaee8fb117ad06bdd830b7586cff}}
connections:
  b:
    remote: 198.51.100.1
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.2.0.0/24]
    auth: {{method: psk, {line}}}
  m:
    remote: 198.51.100.9
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.5.0.0/24]
    keying: manual
    manual:
      outbound: {{spi: 0x1001, algorithm: aes256-sha256, encryption_key: 0xKEY1, integrity_key: 0xnothex12}}
      inbound: {{spi: 0x2001, algorithm: aes256-sha256, encryption_key: 0xKEY2, integrity_key: 0xKEY3}}
""".replace("KEY1", "ab" * 31).replace("KEY2", "cd" * 32).replace("KEY3", "ef" * 32)
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    error = str(info.value) + repr(info.value) + repr(info.value.issues)
    assert message in error, error
    for secret in ("the-psk-in-a-list-abc123", "1234567890123456789", "the-psk-under-a-typo-abc123",
                   "the-hash-part-xyz789", "a-clear-pw-xyz789", "8846f7eaee8fb117ad06bdd830b7586c", "ab" * 31,
                   "nothex12", "cd" * 32, "ef" * 32):
        assert secret not in error, secret


def test_key_and_psk_file_errors_name_the_file_not_its_content(tmp_path: Path) -> None:
    secret = "a-psk-or-key-body-Qz9Lw2"
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text(f"-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n")
    not_a_key.chmod(0o600)
    loose = tmp_path / "loose.psk"
    loose.write_text(secret)
    loose.chmod(0o644)
    cert = pki.issue(tmp_path, pki.make_ca(tmp_path, "ca", kind="ecdsa256"), "gw", kind="ecdsa256")
    crt, key, ca = str(cert.cert_path), str(cert.key_path), [str(cert.cert_path)]
    for auth in (CertAuth(method="cert", cert=crt, key=str(not_a_key), ca=ca),
                 CertAuth(method="cert", cert=str(not_a_key), key=key, ca=ca),
                 PskAuth(method="psk", psk_file=str(loose))):
        with pytest.raises(fromconfig.AuthConfigError) as info:
            fromconfig.load_auth(auth)
        text = str(info.value) + repr(info.value)
        assert secret not in text and cert.key_path.read_text().splitlines()[1] not in text, text
        assert str(tmp_path) in text  # names the file
