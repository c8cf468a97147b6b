"""Helpers for the e2e tests that run SoftEther VPN Server (appliance.lab.softether).

- ``SOFTETHER``: the marks for a module that needs SoftEther (skipped with the reason when
  it is not installed).
- ``softether_lab``: a fresh lab with a SoftEther LNS on the branch gateway (its tap, with
  ``bridge=True``, in the branch LAN namespace); nothing survives it.
- ISAKMP probes: ``main_mode_offer`` builds a Main Mode first message (scapy), and
  ``udp_exchange`` sends datagrams from a namespace and collects the answers.
- ``l2tp_hello``: an L2TP SCCRQ -> SCCRP -> StopCCN exchange from a namespace (to show
  that data crosses an ESP transport SA both ways without a full L2TP/PPP client).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from e2e_support import assert_lab_gone, lab

from appliance.lab.softether import VPNCMD, VPNSERVER, SoftetherServer, SoftetherSettings
from appliance.lab.topology import Topology


def _softether_unavailable() -> str | None:
    for path, package in ((VPNSERVER, "softether-vpnserver"), (VPNCMD, "softether-vpncmd")):
        if not Path(path).exists():
            return f"SoftEther is not installed ({path}; package {package}, see appliance/install.sh)"
    for tool in ("unshare", "nsenter", "timeout"):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux / coreutils) is needed to run SoftEther in the lab"
    return None


SOFTETHER_UNAVAILABLE = _softether_unavailable()

#: Add to `pytestmark` of modules that run a SoftEther server.
SOFTETHER = [
    pytest.mark.peer,
    pytest.mark.skipif(SOFTETHER_UNAVAILABLE is not None, reason=SOFTETHER_UNAVAILABLE or ""),
]


@contextmanager
def softether_lab(prefix: str, workdir: Path,
                  settings: SoftetherSettings | None = None) -> Iterator[tuple[Topology, SoftetherServer]]:
    """A fresh lab with SoftEther on the branch gateway (198.51.100.1); on failure its
    log tail is printed; afterwards no namespace and no vpnserver is left (of every run,
    if the test restarted it)."""
    with lab(prefix) as topology:
        server = SoftetherServer.on_site(topology, topology.branch, Path(workdir) / "lns", settings)
        with server:
            try:
                yield topology, server
            except BaseException:
                print(server.log_tail(80))
                raise
        alive = [pid for pid in server.pids if Path(f"/proc/{pid}").exists()]
        assert server.pids and not alive, f"vpnserver {alive} survived stop()"
    assert_lab_gone(prefix)


# -- ISAKMP probes ------------------------------------------------------------------------------

#: Phase 1 transforms by name, as scapy's ISAKMP_payload_Transform attributes.
AES256_SHA1_MODP2048 = [("Encryption", "AES-CBC"), ("KeyLength", 256), ("Hash", "SHA"),
                        ("GroupDesc", "2048MODPgr"), ("Authentication", "PSK"),
                        ("LifeType", "Seconds"), ("LifeDuration", 28800)]
AES256_SHA256_ECP256 = [("Encryption", "AES-CBC"), ("KeyLength", 256), ("Hash", "SHA2-256"),
                        ("GroupDesc", 19), ("Authentication", "PSK"),
                        ("LifeType", "Seconds"), ("LifeDuration", 28800)]


def main_mode_offer(transforms: Sequence[list[tuple[str, Any]]],
                    cookie: bytes | None = None) -> tuple[bytes, bytes]:
    """A Main Mode first message: one ISAKMP proposal with ``transforms`` (numbered from 1);
    returns (datagram, initiator cookie)."""
    from scapy.layers.isakmp import (
        ISAKMP,
        ISAKMP_payload_Proposal,
        ISAKMP_payload_SA,
        ISAKMP_payload_Transform,
    )

    cookie = cookie or os.urandom(8)
    trans = None
    for number, attrs in reversed(list(enumerate(transforms, 1))):
        t = ISAKMP_payload_Transform(transform_count=number, transform_id=1, transforms=attrs)  # KEY_IKE
        if trans is not None:
            t.next_payload = 3  # another transform follows
            t = t / trans
        trans = t
    proposal = ISAKMP_payload_Proposal(proposal=1, proto=1, trans_nb=len(transforms), trans=trans)
    message = ISAKMP(init_cookie=cookie, next_payload=1, exch_type=2) / ISAKMP_payload_SA(prop=proposal)
    return bytes(message), cookie


_UDP_EXCHANGE = """
import json, socket, sys
src, sport, dst, dport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
timeout = float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((src, sport))
s.settimeout(timeout)
replies = []
for line in sys.stdin:
    if line.strip():
        s.sendto(bytes.fromhex(line.strip()), (dst, dport))
try:
    while True:
        data, addr = s.recvfrom(65535)
        replies.append([addr[0], addr[1], data.hex()])
        s.settimeout(0.3)
except TimeoutError:
    pass
print(json.dumps(replies))
"""


def udp_exchange(namespace: str, src: str, sport: int, dst: str, dport: int, *datagrams: bytes,
                 timeout: float = 3.0) -> list[tuple[str, int, bytes]]:
    """Send ``datagrams`` from ``src:sport`` in ``namespace``; every answer that arrives
    within ``timeout`` (then 0.3 s after the last one): (address, port, data)."""
    proc = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", _UDP_EXCHANGE, src,
                           str(sport), dst, str(dport), str(timeout)],
                          input="\n".join(d.hex() for d in datagrams) + "\n", capture_output=True, text=True,
                          timeout=timeout + 20, check=False)
    assert proc.returncode == 0, f"UDP exchange from {namespace} failed: {proc.stderr}"
    return [(a, p, bytes.fromhex(h)) for a, p, h in json.loads(proc.stdout)]


# -- L2TP ---------------------------------------------------------------------------------------

_L2TP_HELLO = r"""
import json, socket, struct, sys
src, dst, tid = sys.argv[1], sys.argv[2], int(sys.argv[3])

def avp(t, value, m=True):
    return struct.pack("!HHH", (0x8000 if m else 0) | (6 + len(value)), 0, t) + value

def ctrl(tunnel, ns, nr, avps):
    body = b"".join(avps)
    return struct.pack("!HHHHHH", 0xC802, 12 + len(body), tunnel, 0, ns, nr) + body

def parse(data):
    flags, length, tunnel, session, ns, nr = struct.unpack_from("!HHHHHH", data)
    avps, off = {}, 12
    while off + 6 <= length:
        fl, vendor, t = struct.unpack_from("!HHH", data, off)
        avps[t] = data[off + 6:off + (fl & 0x3FF)].hex()
        off += max(6, fl & 0x3FF)
    return {"flags": flags, "tunnel": tunnel, "ns": ns, "nr": nr, "avps": avps}

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 1701))
s.settimeout(3)
s.sendto(ctrl(0, 0, 0, [avp(0, struct.pack("!H", 1)), avp(2, b"\x01\x00"), avp(3, struct.pack("!I", 3)),
                        avp(7, b"gateway-lab-lac"), avp(9, struct.pack("!H", tid)),
                        avp(10, struct.pack("!H", 4), m=False)]), (dst, 1701))
data, addr = s.recvfrom(4096)
sccrp = parse(data)
result = {"from": list(addr), "sccrp": sccrp}
peer = int(sccrp["avps"].get(9, "0000"), 16)
s.sendto(ctrl(peer, 1, sccrp["ns"] + 1, [avp(0, struct.pack("!H", 4)), avp(1, struct.pack("!H", 1)),
                                         avp(9, struct.pack("!H", tid))]), (dst, 1701))
try:
    data, addr = s.recvfrom(4096)
    result["after_stopccn"] = parse(data)
except TimeoutError:
    result["after_stopccn"] = None
print(json.dumps(result))
"""


def l2tp_hello(namespace: str, src: str, dst: str, tunnel_id: int = 4242) -> dict[str, Any]:
    """SCCRQ from ``src:1701`` to ``dst:1701``, then a StopCCN for the tunnel the answer
    assigned (so the LNS keeps no half-open tunnel).  Returns ``{"from": [addr, port],
    "sccrp": {...}, "after_stopccn": {...} | None}`` where each message is ``{"flags",
    "tunnel", "ns", "nr", "avps": {type: hex value}}``."""
    proc = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", _L2TP_HELLO, src, dst,
                           str(tunnel_id)], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, f"L2TP hello from {namespace} failed: {proc.stderr}"
    return dict(json.loads(proc.stdout))


def l2tp_message_type(message: dict[str, Any]) -> int:
    """The Message Type AVP (0) of a parsed L2TP control message (0 for a ZLB)."""
    value = message["avps"].get("0")
    return struct.unpack("!H", bytes.fromhex(value))[0] if value else 0
