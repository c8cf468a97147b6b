"""A bounded flood of spoofed packets, for the lab only (tests of the responder limits).

    ip netns exec gwlab-inet python -m appliance.lab.flood ikev2 --target 192.0.2.1 \\
        --sources 100.64.0.0/18 --addresses 5000 --rate 2000 --seconds 10

It sends valid-looking IKE_SA_INIT requests (RFC 7296 1.2: SA, KE with a real public key,
nonce) or IKEv1 Main Mode first messages (RFC 2409 5: SA with our default Phase 1
offer), built with the gateway's own codecs, from many source addresses through a raw
socket (IP_HDRINCL), each with a fresh initiator SPI (cookie); or (``packets``) complete
IPv4 packets read as hex lines from stdin.  Everything is bounded: at most `MAX_RATE`
packets per second for at most `MAX_SECONDS`, and it refuses to run outside a named
network namespace (``ip netns exec``: the lab's), so never from the host's own.  It
prints one JSON object: packets sent, seconds, the rate achieved.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

MAX_RATE = 20_000
MAX_SECONDS = 60.0
IKE_PROPOSAL = "aes256gcm16-prfsha256-ecp256"  # the first of our IKEv2 defaults
IKEV1_PROPOSAL = "aes256-sha256-modp2048"  # among our IKEv1 defaults


# -- packets ---------------------------------------------------------------------------------------


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4 header and a UDP header (checksum 0: none, RFC 768) around ``payload``."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + udp


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ike_sa_init(spi_i: bytes, nonce: bytes, group: int, public: bytes,
                proposal: str = IKE_PROPOSAL) -> bytes:
    """An IKE_SA_INIT request (RFC 7296 1.2) as our initiator would send it, minus NAT-D."""
    from gateway.ike.proposals import parse_ike_proposal
    from gateway.ike.v2.constants import ExchangeType, Flag, ProtocolId
    from gateway.ike.v2.message import Header, KePayload, NoncePayload, SaPayload, encode_payloads
    from gateway.ike.v2.negotiation import build_proposals

    sa = SaPayload(build_proposals([parse_ike_proposal(proposal)], ProtocolId.IKE, b""))
    first, body = encode_payloads([sa, KePayload(group, public), NoncePayload(nonce)])
    header = Header(spi_i, bytes(8), first, ExchangeType.IKE_SA_INIT, Flag.INITIATOR, 0, 28 + len(body))
    return header.encode() + body


def ike_sa_init_template(proposal: str = IKE_PROPOSAL, random: Callable[[int], bytes] = os.urandom) -> bytes:
    """An IKE_SA_INIT request with a real public key of the proposal's group (so a
    responder that computes the DH gets a valid point); send it with fresh SPIs."""
    from gateway.crypto.dh import DH_GROUPS
    from gateway.ike.proposals import parse_ike_proposal

    group = parse_ike_proposal(proposal).dh[0]
    keyex = DH_GROUPS[group.id].generate(random)
    return ike_sa_init(random(8), random(32), group.id, keyex.public, proposal)


def main_mode_1(icookie: bytes, proposal: str = IKEV1_PROPOSAL) -> bytes:
    """Main Mode message 1 (RFC 2409 5) with a pre-shared key offer and no vendor IDs."""
    from gateway.ike.proposals import parse_ike_proposal
    from gateway.ike.v1.constants import AuthMethod, ExchangeType, ProtocolId
    from gateway.ike.v1.message import Header, Proposal, SaPayload, encode_payloads
    from gateway.ike.v1.negotiation import phase1_transforms

    transforms = phase1_transforms([parse_ike_proposal(proposal)], AuthMethod.PSK, 28800)
    first, body = encode_payloads([SaPayload([Proposal(1, ProtocolId.ISAKMP, b"", transforms)])])
    return Header(icookie, bytes(8), first, ExchangeType.MAIN, 0, 0, 28 + len(body)).encode() + body


# -- sending ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FloodResult:
    sent: int
    seconds: float
    rate: float
    errors: int = 0


def source_addresses(network: str, count: int) -> list[str]:
    """``count`` addresses of ``network`` (its hosts, in order)."""
    hosts = ipaddress.IPv4Network(network).hosts()
    out = [str(next(hosts)) for _ in range(count)]
    return out


def ike_packets(kind: str, target: str, sources: Sequence[str], *, port: int = 500,
                random: Callable[[int], bytes] = os.urandom) -> Iterator[bytes]:
    """Endless IKE packets of ``kind`` ("ikev2", "ikev1") from ``sources`` in turn, each with
    a fresh initiator SPI (cookie) and source port."""
    template = ike_sa_init_template(random=random) if kind == "ikev2" else main_mode_1(bytes(8))
    headers = [ipv4_udp(s, target, 500, port, template) for s in sources]
    while True:
        for packet in headers:
            sport = 1024 + int.from_bytes(random(2), "big") % 60000
            yield b"".join((packet[:20], struct.pack("!H", sport), packet[22:28], random(8), packet[36:]))


def send(packets: Iterator[bytes], *, rate: float, seconds: float, limit: int | None = None,
         sendto: Callable[[bytes, tuple[str, int]], int] | None = None,
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> FloodResult:
    """Send ``packets`` (whole IPv4 packets) at ``rate`` per second for ``seconds`` (or until
    ``limit`` packets or the iterator ends), paced in 5 ms slices; both bounded."""
    rate = min(float(rate), MAX_RATE)
    seconds = min(float(seconds), MAX_SECONDS)
    if sendto is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sendto = sock.sendto
    start = clock()
    sent = errors = 0
    cap = int(rate * seconds) if limit is None else min(limit, int(rate * seconds))
    for packet in packets:
        if sent + errors >= cap:
            break
        now = clock()
        if now - start >= seconds:
            break
        ahead = (sent + errors) / rate - (now - start)
        if ahead > 0.005:
            sleep(ahead)
        try:
            sendto(packet, (socket.inet_ntoa(packet[16:20]), 0))
            sent += 1
        except OSError:  # ENOBUFS under load: counted, not fatal
            errors += 1
    elapsed = max(clock() - start, 1e-9)
    return FloodResult(sent, round(elapsed, 3), round(sent / elapsed, 1), errors)


def in_named_namespace() -> bool:
    """Whether this process runs in a named network namespace (``ip netns``: the lab's),
    not in the host's own."""
    try:
        mine = os.stat("/proc/self/ns/net").st_ino
        names = os.listdir("/run/netns")
    except OSError:
        return False
    for name in names:
        try:
            if os.stat(f"/run/netns/{name}").st_ino == mine:
                return True
        except OSError:
            continue
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.lab.flood", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=("ikev2", "ikev1", "packets"))
    parser.add_argument("--target", help="the responder's address (ikev2, ikev1)")
    parser.add_argument("--port", type=int, default=500)
    parser.add_argument("--sources", default="100.64.0.0/16", help="network of the spoofed sources")
    parser.add_argument("--addresses", type=int, default=1000, help="how many source addresses")
    parser.add_argument("--rate", type=float, default=1000.0, help=f"packets per second (at most {MAX_RATE})")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help=f"at most this long (at most {MAX_SECONDS:.0f})")
    parser.add_argument("--count", type=int, default=None, help="at most this many packets")
    args = parser.parse_args(argv)
    if not in_named_namespace():
        print("refusing to flood outside a lab namespace: run it with `ip netns exec NAME`",
              file=sys.stderr)
        return 2
    if args.kind == "packets":
        packets: Iterator[bytes] = (bytes.fromhex(line) for line in sys.stdin if line.strip())
    else:
        if not args.target:
            parser.error("--target is needed")
        packets = ike_packets(args.kind, args.target, source_addresses(args.sources, args.addresses),
                              port=args.port)
    result = send(packets, rate=args.rate, seconds=args.seconds, limit=args.count)
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
