"""Record IKEv1 vectors from a strongSwan-vs-strongSwan exchange (for test_ikev1_kat.py).

Two charons (strongSwan 5.9.8, the lab harness in appliance/lab/strongswan.py) run in the
lab's network namespaces: hq (192.0.2.1, initiator) and branch (198.51.100.1, responder),
IKEv1 Main Mode with a pre-shared key, Phase 1 ``aes256-sha1-modp2048`` (SKEYID_e is 20
octets, the AES-256 key 32: the RFC 2409 Appendix B expansion is needed), Quick Mode ESP
``aes128-sha1``.  charon's file log runs at ``ike = 4, enc = 4, chd = 4, cfg = 2,
knl = 2, net = 3``: keymat_v1.c logs g^xy, SKEYID, SKEYID_d/a/e, the encryption key Ka,
HASH_I/HASH_R with the data they cover and the Quick Mode hashes; iv_manager.c the initial
IV and the first IV of each exchange (``next IV for MID``); the CHILD_SA keys come from
keymat_v1.c at ``chd = 4``; ``net = 3`` dumps every datagram charon receives.

Run it as root from the repository root::

    .venv/bin/python tests/unit/data/ikev1/record_strongswan_vectors.py [--keep DIR]
    .venv/bin/python tests/unit/data/ikev1/record_strongswan_vectors.py \\
        --ike 3des-md5-modp1024 --esp 3des-md5-modp1024 --prefix SS3_
    .venv/bin/python tests/unit/data/ikev1/record_strongswan_vectors.py --default-offer

It prints the values as Python constants (paste them into test_ikev1_kat.py) and removes
its namespaces and processes afterwards.  Every run gives new values (fresh nonces, DH
keys and cookies); the tests only need one consistent recording.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[4]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from appliance.lab.strongswan import PeerSettings, StrongswanPeer  # noqa: E402
from appliance.lab.topology import Topology  # noqa: E402

PSK = "ikev1-kat-psk-0123456789"
IKE_PROPOSAL = "aes256-sha1-modp2048"
ESP_PROPOSAL = "aes128-sha1"
LOG_LEVELS = {"default": 1, "ike": 4, "enc": 4, "chd": 4, "cfg": 2, "knl": 2, "net": 3, "lib": 1}

#: a filelog line: "13:45:01.123 07[IKE] text"
_LINE = re.compile(r"^\S+ (\d+)\[(\w+)\] (.*)$")
_DUMP = re.compile(r"^\s*\d+: ((?:[0-9A-F]{2} ?)+)")
_HEAD = re.compile(r"^(.*?) ?=> (\d+) bytes @ 0x[0-9a-f]+$")


def hexdumps(log: str) -> list[tuple[str, str, bytes]]:
    """Every %B/%b dump in a charon file log: (subsystem, label, octets), in order."""
    out: list[tuple[str, str, bytes]] = []
    current: tuple[str, str, int, bytearray] | None = None
    for line in log.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        _thread, subsystem, text = m.groups()
        d = _DUMP.match(text)
        if current is not None and d:
            current[3].extend(bytes.fromhex(d.group(1).replace(" ", "")))
            continue
        if current is not None:
            sub, label, length, data = current
            assert len(data) == length, (label, length, len(data))
            out.append((sub, label, bytes(data)))
            current = None
        h = _HEAD.match(text)
        if h:
            current = (subsystem, h.group(1), int(h.group(2)), bytearray())
            if int(h.group(2)) == 0:
                out.append((subsystem, h.group(1), b""))
                current = None
    if current is not None:
        out.append((current[0], current[1], bytes(current[3])))
    return out


def first(dumps: list[tuple[str, str, bytes]], label: str) -> bytes:
    for _sub, name, data in dumps:
        if name == label:
            return data
    raise KeyError(label)


def every(dumps: list[tuple[str, str, bytes]], label: str) -> list[bytes]:
    return [data for _sub, name, data in dumps if name == label]


def received(dumps: list[tuple[str, str, bytes]]) -> list[bytes]:
    """The ISAKMP messages a charon received (net = 3 logs each datagram), in order; the
    non-ESP marker of UDP 4500 is removed."""
    out = []
    for sub, label, data in dumps:
        if sub == "NET" and label == "received packet":
            if data[:4] == bytes(4) and int.from_bytes(data[24:28], "big") != len(data):
                data = data[4:]
            out.append(data)
    return out


def decryptions(dumps: list[tuple[str, str, bytes]]) -> dict[bytes, bytes]:
    """ciphertext -> padded plaintext, from the enc = 3 dumps of "decrypting payloads"."""
    out = {}
    for (_s1, a, crypt), (_s2, b, plain) in itertools.pairwise(dumps):
        if a == "encrypted" and b == "plain" and len(crypt) == len(plain):
            out[crypt] = plain
    return out


def const(name: str, value: bytes | str | int, comment: str = "") -> str:
    head = f"# {comment}\n" if comment else ""
    if isinstance(value, int):
        return f"{head}{name} = {value:#x}"
    if isinstance(value, str):
        return f"{head}{name} = {value!r}"
    text = value.hex()
    if len(text) <= 80:
        return f'{head}{name} = _hex("{text}")'
    body = "\n".join(f'    "{text[i:i + 96]}"' for i in range(0, len(text), 96))
    return f"{head}{name} = _hex(\n{body}\n)"


def settings(ike: str, esp: str) -> PeerSettings:
    return PeerSettings(version=1, psk=PSK, name="kat", child="net", ike_proposals=ike,
                        esp_proposals=esp, fragmentation="no", log_levels=dict(LOG_LEVELS))


def record(workdir: Path, ike_proposal: str, esp_proposal: str, prefix: str) -> str:
    topo = Topology(prefix=f"v1kat{os.getpid()}-")
    try:
        topo.up()
        hq = StrongswanPeer(topo, topo.hq, topo.branch.gw_public, topo.branch.lan_subnet,
                            workdir / "hq", settings(ike_proposal, esp_proposal))
        branch = StrongswanPeer(topo, topo.branch, topo.hq.gw_public, topo.hq.lan_subnet,
                                workdir / "branch", settings(ike_proposal, esp_proposal))
        try:
            hq.start()
            branch.start()
            hq.initiate("net", timeout=20)
            hq_child = hq.wait_child_installed("net")
            br_child = branch.wait_child_installed("net")
            ike = hq.ike_sa()
            assert ike is not None
            hq.terminate_child("net")  # an Informational exchange (DELETE) to record as well
            time.sleep(0.5)
        finally:
            for peer in (hq, branch):
                peer.stop()
        text = report(hq.log_text(), branch.log_text(), ike, hq_child, br_child,
                      f"{ike_proposal} / esp {esp_proposal}")
        return text.replace("SS_", prefix)
    finally:
        topo.down()


def record_default_offer(workdir: Path) -> str:
    """Main Mode message 1 with strongSwan's default IKEv1 proposal (``proposals = default``),
    as the responder received it: for test_ikev1_messages.py (its second transform carries
    only the DH group, the authentication method and the lifetime)."""
    topo = Topology(prefix=f"v1kat{os.getpid()}-")
    try:
        topo.up()
        peers = [StrongswanPeer(topo, site, other.gw_public, other.lan_subnet, workdir / site.name,
                                settings("default", "default"))
                 for site, other in ((topo.hq, topo.branch), (topo.branch, topo.hq))]
        try:
            for peer in peers:
                peer.start()
            peers[0].initiate("net", timeout=20)
        finally:
            for peer in peers:
                peer.stop()
        first_message = next(m for m in received(hexdumps(peers[1].log_text())) if m[18] == 2)
        return "\n".join([
            "# Main Mode message 1 of strongSwan 5.9.8 with `proposals = default` (IKEv1, PSK), as",
            "# recorded by tests/unit/data/ikev1/record_strongswan_vectors.py --default-offer",
            const("SS_DEFAULT_MM1", first_message),
        ])
    finally:
        topo.down()


def report(hq_log: str, br_log: str, ike: dict[str, str], hq_child: dict[str, str],
           br_child: dict[str, str], proposals: str) -> str:
    hq, br = hexdumps(hq_log), hexdumps(br_log)
    to_hq, to_br = received(hq), received(br)
    mm_i = [m for m in to_br if m[18] == 2]  # the initiator's Main Mode messages 1, 3, 5
    mm_r = [m for m in to_hq if m[18] == 2]  # the responder's 2, 4, 6
    qm_i = [m for m in to_br if m[18] == 32]
    qm_r = [m for m in to_hq if m[18] == 32]
    info = [m for m in to_br if m[18] == 5]
    assert len(mm_i) == 3 and len(mm_r) == 3 and len(qm_i) == 2 and len(qm_r) == 1 and info, \
        (len(mm_i), len(mm_r), len(qm_i), len(qm_r), len(info))
    messages = [mm_i[0], mm_r[0], mm_i[1], mm_r[1], mm_i[2], mm_r[2], qm_i[0], qm_r[0], qm_i[1], info[0]]
    plains = decryptions(hq) | decryptions(br)
    for label in ("SKEYID", "SKEYID_d", "SKEYID_a", "SKEYID_e", "encryption key Ka", "initial IV",
                  "shared Diffie Hellman secret", "encryption initiator key", "integrity responder key"):
        assert first(br, label) == first(hq, label), label  # both ends derived the same
    qm_mid = int.from_bytes(qm_i[0][20:24], "big")
    info_mid = int.from_bytes(info[0][20:24], "big")
    ivs: dict[int, bytes] = {}
    for _sub, label, data in hq:
        m = re.match(r"next IV for MID (\d+)$", label)
        if m and int(m.group(1)) and int(m.group(1)) not in ivs:
            ivs[int(m.group(1))] = data  # the first IV of that exchange: hash(phase 1 IV | M-ID)
    lines = [
        "# Recorded by tests/unit/data/ikev1/record_strongswan_vectors.py: strongSwan 5.9.8 (charon,",
        "# swanctl, kernel-libipsec) initiator hq 192.0.2.1 vs. strongSwan responder branch",
        "# 198.51.100.1, each in its own network namespace; IKEv1 Main Mode, PSK,",
        f"# proposals {proposals}; charon filelog ike=4 enc=4 chd=4",
        "# cfg=2 knl=2 net=3.  Messages as charon received them (net 3 \"received packet\"), values",
        "# from keymat_v1.c / iv_manager.c (ike 4, chd 4) and encrypted_payload.c (enc 3).",
        const("SS_PSK", PSK.encode()),
        const("SS_CKY_I", bytes.fromhex(ike["initiator-spi"])),
        const("SS_CKY_R", bytes.fromhex(ike["responder-spi"])),
    ]
    names = ["SS_MM1", "SS_MM2", "SS_MM3", "SS_MM4", "SS_MM5", "SS_MM6", "SS_QM1", "SS_QM2", "SS_QM3",
             "SS_INFO"]
    for name, msg in zip(names, messages, strict=True):
        lines.append(const(name, msg))
        if msg[19] & 1:
            lines.append(const(name + "_PLAIN", plains[msg[28:]],
                               "as charon decrypted it (padding included)"))
    values = [
        ("SS_GXY", first(hq, "shared Diffie Hellman secret")),
        ("SS_SKEYID", first(hq, "SKEYID")),
        ("SS_SKEYID_D", first(hq, "SKEYID_d")),
        ("SS_SKEYID_A", first(hq, "SKEYID_a")),
        ("SS_SKEYID_E", first(hq, "SKEYID_e")),
        ("SS_KA", first(hq, "encryption key Ka")),
        ("SS_INITIAL_IV", first(hq, "initial IV")),
        ("SS_HASH_I_DATA", first(hq, "HASH_I data")),
        ("SS_HASH_I", first(hq, "HASH_I")),
        ("SS_HASH_R_DATA", first(br, "HASH_R data")),
        ("SS_HASH_R", first(br, "HASH_R")),
        ("SS_QM_HASH1", first(hq, "Hash(1)")),
        ("SS_QM_HASH2", first(br, "Hash(2)")),
        ("SS_QM_HASH3", first(hq, "Hash(3)")),
        ("SS_INFO_HASH", first(hq, "Hash")),
        ("SS_INITIATOR_SA_SEED", first(hq, "initiator SA seed")),
        ("SS_RESPONDER_SA_SEED", first(hq, "responder SA seed")),
        ("SS_ENCR_I", first(hq, "encryption initiator key")),
        ("SS_ENCR_R", first(hq, "encryption responder key")),
        ("SS_INTEG_I", first(hq, "integrity initiator key")),
        ("SS_INTEG_R", first(hq, "integrity responder key")),
    ]
    if any(label == "DH secret" for _sub, label, _data in hq):  # Quick Mode with PFS
        values.append(("SS_QM_GXY", first(hq, "DH secret")))
    for name, value in values:
        lines.append(const(name, value))
    lines += [
        const("SS_QM_MID", qm_mid),
        const("SS_QM_IV", ivs[qm_mid], "iv_manager: the first IV of the Quick Mode exchange"),
        const("SS_INFO_MID", info_mid),
        const("SS_INFO_IV", ivs[info_mid], "the first IV of the Informational exchange"),
        const("SS_SPI_HQ_IN", bytes.fromhex(hq_child["spi-in"]), "the initiator's inbound SPI"),
        const("SS_SPI_BR_IN", bytes.fromhex(br_child["spi-in"]), "the responder's inbound SPI"),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep the charon logs in this directory")
    parser.add_argument("--ike", default=IKE_PROPOSAL, help=f"Phase 1 proposal ({IKE_PROPOSAL})")
    parser.add_argument("--esp", default=ESP_PROPOSAL, help=f"Quick Mode proposal ({ESP_PROPOSAL})")
    parser.add_argument("--prefix", default="SS_", help="prefix of the constants' names (SS_)")
    parser.add_argument("--default-offer", action="store_true",
                        help="record only message 1 of strongSwan's default Main Mode offer")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it creates network namespaces and starts charon")
    def run(workdir: Path) -> str:
        if args.default_offer:
            return record_default_offer(workdir)
        return record(workdir, args.ike, args.esp, args.prefix)

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        print(run(args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="ikev1-kat-") as tmp:
            print(run(Path(tmp)))


if __name__ == "__main__":
    main()
