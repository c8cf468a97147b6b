"""The packet engine: SPD + SAD + ESP/AH + edge filter, with no I/O of its own.

A backend feeds it packets (from the TUN device, from raw ESP/AH sockets, from the UDP
4500 socket) and sends what it returns.  It is deterministic and testable without any
namespace: bytes in, bytes out, drops counted by reason.

Outbound results are ``(kind, data, address)`` tuples, cheap on the hot path:
``SEND_ESP`` (an ESP payload for a raw IP-protocol-50 socket; the kernel adds the IPv4
header), ``SEND_IP`` (a complete IPv4 packet for an IP_HDRINCL socket, used by AH whose
ICV covers the header) and ``SEND_UDP`` (a UDP payload for the NAT-T socket).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from socket import inet_aton, inet_ntoa
from typing import Any, Protocol

from gateway.dataplane import ah, esp, ip
from gateway.dataplane.drops import DropCounters, Dropped, DropReason
from gateway.dataplane.edge import EdgePolicy
from gateway.dataplane.sa import Direction, Mode, SecurityAssociation
from gateway.dataplane.spd import Action, Policy, SecurityPolicyDatabase

SEND_ESP = 0
SEND_IP = 1
SEND_UDP = 2

Transmit = tuple[int, bytes, tuple[str, int]]

_NON_ESP_MARKER = b"\0\0\0\0"  # RFC 3948 2.2: IKE on port 4500
L2TP_PORT = 1701

#: Where L2TP that came out of an ESP transport SA goes: (the SA's tunnel, the sender's
#: address and UDP port, the UDP payload).
L2tpHandler = Callable[[str, tuple[str, int], bytes], None]


class Link(Protocol):
    """A point-to-point link (a PPP session over L2TP) that carries packets for some
    destinations instead of the SPD: it frames the packet and returns what to send."""

    def transmit(self, packet: bytes) -> Transmit | None: ...
#: The largest inner packet that still fits one IPv4 packet after ESP/AH and an outer
#: header (65535 minus the worst-case overhead of the transforms here).
_MAX_INNER = 65535 - 128


@dataclass(frozen=True)
class SaExhausted:
    """An outbound SA ran out of sequence numbers: it must be rekeyed (RFC 4303 3.3.3)."""

    sa_name: str
    spi: int


@dataclass(frozen=True)
class Acquire:
    """Traffic matched a protecting policy that has no SA yet (RFC 4301 5.1.1, an
    "acquire"): the IKE side may bring the connection up (trap, DPD hold)."""

    policy: str


@dataclass(frozen=True)
class MappingChanged:
    """Authenticated UDP-encapsulated ESP came from another address or port than its SA's
    peer (a NAT rebinding, what XFRM reports as XFRM_MSG_MAPPING): the shell may move the
    tunnel there. Reported once per new address."""

    tunnel: str
    spi: int
    address: tuple[str, int]


@dataclass(frozen=True)
class IkeDatagram:
    """An IKE message: from UDP 500, or from UDP 4500 after the non-ESP marker."""

    data: bytes
    address: tuple[str, int]
    local_port: int = 4500


class Dataplane:
    """Holds the SPD and SAD and transforms packets in both directions."""

    def __init__(self, edge: EdgePolicy) -> None:
        self.edge = edge
        self.spd = SecurityPolicyDatabase()
        #: what decides packets that came out of an SA, beyond its selectors (RFC 4301 5.2):
        #: the first match wins and DISCARD drops (a block rule covers traffic in tunnels too)
        self.spd_in = SecurityPolicyDatabase(inbound=True)
        self.sad_in: dict[tuple[int, bytes], SecurityAssociation] = {}
        #: outbound SAs in the order installed (a dict as an ordered set: a policy per peer
        #: puts thousands here, and a list's "in" made each install O(N): bench/scale)
        self.sas_out: dict[SecurityAssociation, None] = {}
        self.drops = DropCounters()
        self.events: deque[object] = deque()
        self.keepalives_received = 0
        self._ident = 0
        self._public = edge.public_address.packed
        #: L2TP (UDP 1701) from ESP transport SAs goes here, never to the TUN (RFC 3193 4)
        self.l2tp_handler: L2tpHandler | None = None
        #: PPP links by destination address (a dial-in client's) and by network (the
        #: remote subnets of a LAC): looked up before the SPD
        self.links: dict[int, Link] = {}
        self.link_nets: list[tuple[int, int, Link]] = []  # (network, mask, link)
        #: packets waiting for a demand-dialed tunnel, by policy name (`Policy.hold`)
        self.held: dict[str, deque[bytes]] = {}
        self.held_total = 0
        #: called when an event is queued (an Acquire wants IKE at once, not at the next tick)
        self.on_event: Callable[[], None] | None = None

    # -- configuration -------------------------------------------------------------
    def install_inbound(self, sa: SecurityAssociation) -> None:
        assert sa.direction is Direction.IN
        self.sad_in[(sa.protocol, sa.spi_bytes)] = sa

    def remove_inbound(self, sa: SecurityAssociation) -> None:
        self.sad_in.pop((sa.protocol, sa.spi_bytes), None)

    def install_policy(self, policy: Policy) -> None:
        for sa in (policy.esp_out, policy.ah_out):
            if sa is not None:
                self.sas_out[sa] = None
        self.spd.add(policy)

    def remove_policy(self, name: str) -> None:
        for policy in list(self.spd):
            if policy.name == name:
                for sa in (policy.esp_out, policy.ah_out):
                    if sa is not None:
                        self.sas_out.pop(sa, None)
        self.spd.remove(name)

    # -- outbound: a packet the kernel routed into the TUN ---------------------------
    def _esp_policy(self, packet: bytes) -> Policy | None:
        """The policy that protected ``packet`` with ESP (what `_outbound` took), or None
        when it went elsewhere (a PPP link, bypass, discard, AH, no SA)."""
        dst = int.from_bytes(packet[16:20], "big")
        if (self.links or self.link_nets) and self.link_for(dst) is not None:
            return None
        policy = self.spd.lookup_packet(packet, int.from_bytes(packet[12:16], "big"), dst)
        if policy is None or policy.action is not Action.PROTECT or policy.esp_out is None:
            return None
        return policy

    def outbound(self, packet: bytes) -> Transmit | None:
        try:
            return self._outbound(packet)
        except Dropped as exc:
            self.drops.count(exc.reason)
            if exc.reason is DropReason.SEQ_EXHAUSTED:
                self._report_exhausted()
        except OverflowError:
            self.drops.count(DropReason.TOO_BIG)
        except (IndexError, ValueError):
            self.drops.count(DropReason.MALFORMED)
        return None

    def outbound_burst(self, packets: Sequence[bytes]) -> list[Transmit]:
        """What to send for the segments of one TCP burst (a TSO read, cut): they share
        addresses, protocol and ports, so the first one's policy serves them all when it
        protects with ESP; anything else takes the packet-by-packet path."""
        first = self.outbound(packets[0])
        out = [] if first is None else [first]
        policy = self._esp_policy(packets[0]) if first is not None else None
        if policy is None:
            for packet in packets[1:]:
                result = self.outbound(packet)
                if result is not None:
                    out.append(result)
            return out
        sa = policy.esp_out
        tunnel = policy.mode is Mode.TUNNEL
        if sa.encap is not None:
            kind, address = SEND_UDP, (sa.remote_str, sa.encap.remote_port)
        else:
            kind, address = SEND_ESP, (sa.remote_str, 0)
        counters = sa.counters
        encapsulate = esp.encapsulate
        for packet in packets[1:]:
            try:
                if len(packet) > _MAX_INNER:
                    raise Dropped(DropReason.TOO_BIG)
                if tunnel:
                    data = encapsulate(sa, packet, ip.PROTO_IPIP)
                else:
                    data = encapsulate(sa, packet[ip.header_length(packet):], packet[9])
            except Dropped as exc:
                self.drops.count(exc.reason)
                if exc.reason is DropReason.SEQ_EXHAUSTED:
                    self._report_exhausted()
                continue
            policy.hits += 1
            counters.packets += 1
            counters.bytes += len(packet)
            out.append((kind, data, address))
        return out

    def _outbound(self, packet: bytes) -> Transmit | None:
        if len(packet) < 20 or packet[0] >> 4 != 4:
            raise Dropped(DropReason.NOT_IPV4 if packet and packet[0] >> 4 == 6 else DropReason.MALFORMED)
        src = int.from_bytes(packet[12:16], "big")
        dst = int.from_bytes(packet[16:20], "big")
        if self.links or self.link_nets:
            link = self.link_for(dst)
            if link is not None:
                return link.transmit(packet)
        proto = packet[9]
        policy = self.spd.lookup_packet(packet, src, dst)
        if policy is None:
            raise Dropped(DropReason.NO_POLICY)
        policy.hits += 1
        if policy.action is Action.BYPASS:
            # Routed into the TUN but exempt from IPsec: send it on in clear, via the
            # marked raw socket that the TUN routes do not catch.
            return SEND_IP, packet, (inet_ntoa(packet[16:20]), 0)
        if policy.action is not Action.PROTECT:
            raise Dropped(DropReason.POLICY_DISCARD)
        if len(packet) > _MAX_INNER:
            raise Dropped(DropReason.TOO_BIG)
        sa = policy.esp_out
        if sa is not None:
            if policy.mode is Mode.TUNNEL:
                data = esp.encapsulate(sa, packet, ip.PROTO_IPIP)
            else:
                ihl = ip.header_length(packet)
                data = esp.encapsulate(sa, packet[ihl:], proto)
            sa.counters.packets += 1
            sa.counters.bytes += len(packet)
            if sa.encap is not None:
                return SEND_UDP, data, (sa.remote_str, sa.encap.remote_port)
            return SEND_ESP, data, (sa.remote_str, 0)
        sa = policy.ah_out
        if sa is None:
            return self._without_sa(policy, packet)
        if policy.mode is Mode.TUNNEL:
            header = ip.build_header(sa.local_packed, sa.remote_packed, ip.PROTO_AH, 0,
                                     ident=self._next_ident())
            data = ah.protect(sa, header, ip.PROTO_IPIP, packet)
        else:
            ihl = ip.header_length(packet)
            header = packet[:ihl]
            if header[4:6] == b"\0\0":
                header = header[:4] + self._next_ident().to_bytes(2, "big") + header[6:]
            data = ah.protect(sa, header, proto, packet[ihl:])
        sa.counters.packets += 1
        sa.counters.bytes += len(packet)
        return SEND_IP, data, (sa.remote_str, 0)

    def _without_sa(self, policy: Policy, packet: bytes) -> Transmit | None:
        """A protecting policy without an SA: ask for one (RFC 4301 5.1.1, once until it is
        installed, so a flood makes one event), and meanwhile hold the packet (demand-dial),
        send it in clear ("request security") or drop it."""
        if not policy.acquired:
            policy.acquired = True
            self.events.append(Acquire(policy.name))
            if self.on_event is not None:
                self.on_event()
        if policy.fallback_clear:
            return SEND_IP, packet, (inet_ntoa(packet[16:20]), 0)
        if policy.hold:
            queue = self.held.get(policy.name)
            if queue is None:
                queue = self.held[policy.name] = deque()
            if len(queue) >= policy.hold:
                raise Dropped(DropReason.HOLD_FULL)  # the first packets matter most: keep them
            queue.append(packet)
            self.held_total += 1
            return None
        raise Dropped(DropReason.NO_SA)

    def release_held(self, name: str, source: bytes | None = None) -> list[Transmit]:
        """The packets held for a policy, sent now that its tunnel is up (in arrival order).

        ``source``: the address a PPP link got from IPCP. This host's own packets that
        waited for the link were sent before it had that address; they leave with it
        (their replies come back to it), as later packets do by the link's route."""
        queue = self.held.pop(name, None)
        if not queue:
            return []
        if source is not None:
            queue = deque(p if p[12:16] == source else ip.with_source(p, source) for p in queue)
        out = []  # a packet that still finds no SA (or link) is simply held again
        for packet in queue:
            sent = self.outbound(packet)
            if sent is not None:
                out.append(sent)
        return out

    def discard_held(self, name: str) -> int:
        """Drop what a policy held: its tunnel did not come up."""
        queue = self.held.pop(name, None)
        for _ in queue or ():
            self.drops.count(DropReason.HOLD_EXPIRED)
        return len(queue or ())

    def link_for(self, dst: int) -> Link | None:
        link = self.links.get(dst)
        if link is None:
            for net, mask, candidate in self.link_nets:
                if dst & mask == net:
                    return candidate
        return link

    def send_transport(self, sa: SecurityAssociation, proto: int, segment: bytes) -> Transmit | None:
        """Protect a transport-mode payload (e.g. an L2TP datagram) with a given outbound SA:
        several clients behind one NAT have identical selectors, so the SA is chosen by the
        session, not by the SPD."""
        try:
            data = esp.encapsulate(sa, segment, proto)
        except Dropped as exc:
            self.drops.count(exc.reason)
            if exc.reason is DropReason.SEQ_EXHAUSTED:
                self._report_exhausted()
            return None
        sa.counters.packets += 1
        sa.counters.bytes += len(segment) + 20
        if sa.encap is not None:
            return SEND_UDP, data, (sa.remote_str, sa.encap.remote_port)
        return SEND_ESP, data, (sa.remote_str, 0)

    def _report_exhausted(self) -> None:
        for sa in self.sas_out:
            if sa.exhausted and not sa.exhaustion_reported:
                sa.exhaustion_reported = True
                self.events.append(SaExhausted(sa.name, sa.spi))

    def _next_ident(self) -> int:
        self._ident = self._ident % 0xFFFF + 1  # never 0: the kernel would overwrite it
        return self._ident

    # -- inbound: from the raw ESP/AH sockets and the NAT-T socket -------------------
    def inbound_ip(self, packet: bytes) -> bytes | None:
        """A whole IPv4 packet from a raw socket; returns the packet for the TUN, if any."""
        try:
            reason = self.edge.check(packet)
            if reason is not None:
                raise Dropped(reason)
            ihl = ip.header_length(packet)
            if packet[9] == ip.PROTO_ESP:
                return self._inbound_esp(packet[ihl:], packet[:ihl], None)
            if packet[9] == ip.PROTO_AH:
                return self._inbound_ah(packet, ihl)
            return None  # allowed (management), but not the dataplane's to handle
        except Dropped as exc:
            self.drops.count(exc.reason)
        except (IndexError, ValueError):
            self.drops.count(DropReason.MALFORMED)
        return None

    def inbound_udp(self, payload: bytes, address: tuple[str, int]) -> bytes | IkeDatagram | None:
        """A datagram that arrived on UDP 4500 (RFC 3948 2.2/2.3)."""
        if len(payload) == 1 and payload[0] == 0xFF:
            self.keepalives_received += 1
            return None
        if payload[:4] == _NON_ESP_MARKER:
            return IkeDatagram(payload[4:], address)
        try:
            return self._inbound_esp(payload, None, address[0], address)
        except Dropped as exc:
            self.drops.count(exc.reason)
        except (IndexError, ValueError, OSError):
            self.drops.count(DropReason.MALFORMED)
        return None

    def _lookup(self, proto: int, spi: bytes) -> SecurityAssociation:
        sa = self.sad_in.get((proto, spi))
        if sa is None:
            raise Dropped(DropReason.UNKNOWN_SPI)
        return sa

    def _inbound_esp(self, data: bytes, outer: bytes | None, source: str | None,
                     sender: tuple[str, int] | None = None) -> bytes | None:
        """``outer`` is the IPv4 header for raw ESP; for UDP-encapsulated ESP it is None
        and ``source`` is the sender's address (a header is made only if transport mode
        needs one)."""
        if len(data) < 8:
            raise Dropped(DropReason.TOO_SHORT)
        sa = self._lookup(ip.PROTO_ESP, data[:4])
        try:
            next_header, payload = esp.decapsulate(sa, data)
            if sender is not None and sa.encap is not None and (
                    sender[1] != sa.encap.remote_port or sender[0] != sa.remote_str):
                self._mapping_changed(sa, sender)  # only after the ICV and the replay check
            if outer is None and sa.mode is Mode.TRANSPORT:
                outer = ip.build_header(inet_aton(source or ""), self._public, ip.PROTO_ESP, 0)
            return self._deliver(sa, outer, next_header, payload)
        except Dropped:
            sa.counters.drops += 1
            raise

    def _mapping_changed(self, sa: SecurityAssociation, sender: tuple[str, int]) -> None:
        if sa.mapping_reported == sender:
            return
        sa.mapping_reported = sender
        self.events.append(MappingChanged(sa.tunnel, sa.spi, sender))
        if self.on_event is not None:
            self.on_event()

    def _inbound_ah(self, packet: bytes, ihl: int) -> bytes | None:
        if len(packet) < ihl + 12:
            raise Dropped(DropReason.TOO_SHORT)
        sa = self._lookup(ip.PROTO_AH, packet[ihl + 4:ihl + 8])
        try:
            outer, next_header, payload = ah.verify(sa, packet)
            return self._deliver(sa, outer, next_header, payload)
        except Dropped:
            sa.counters.drops += 1
            raise

    def _deliver(self, sa: SecurityAssociation, outer: bytes | None, next_header: int,
                 payload: bytes) -> bytes | None:
        """The packet to write to the TUN, after the inbound policy check (RFC 4301 5.2);
        None when it was L2TP, which goes to the L2TP handler instead."""
        if sa.mode is Mode.TUNNEL:
            if next_header != ip.PROTO_IPIP:
                raise Dropped(DropReason.BAD_NEXT_HEADER)
            if len(payload) < 20 or payload[0] >> 4 != 4 or (
                    (payload[2] << 8 | payload[3]) != len(payload)):
                raise Dropped(DropReason.MALFORMED)
            inner = payload
        else:
            assert outer is not None
            if sa.encap is not None:
                # UDP-encapsulated transport mode crossed a NAT: the sender's TCP/UDP
                # checksum covers addresses we do not see (RFC 3948 3.1.2).
                payload = ip.transport_checksum_fix(next_header, outer[12:16], outer[16:20], payload)
            inner = ip.rewrite_header(outer, proto=next_header,
                                      total_length=len(outer) + len(payload)) + payload
        if sa.selectors and not self._selectors_allow(sa, inner):
            raise Dropped(DropReason.POLICY_MISMATCH)
        if len(self.spd_in) and self._inbound_discards(inner):
            raise Dropped(DropReason.POLICY_DISCARD)
        sa.counters.packets += 1
        sa.counters.bytes += len(inner)
        if next_header == ip.PROTO_UDP and sa.mode is Mode.TRANSPORT and self.l2tp_handler is not None:
            ihl = ip.header_length(inner)
            sport, dport = ip.ports(inner, ihl)
            if dport == L2TP_PORT:
                self.l2tp_handler(sa.tunnel, (inet_ntoa(inner[12:16]), sport), inner[ihl + 8:])
                return None
        return inner

    def _inbound_discards(self, inner: bytes) -> bool:
        """Whether the inbound policy drops this decapsulated packet (its first match is
        DISCARD); a match of any kind counts as a hit."""
        policy = self.spd_in.lookup_packet(inner, int.from_bytes(inner[12:16], "big"),
                                           int.from_bytes(inner[16:20], "big"))
        if policy is None:
            return False
        policy.hits += 1
        return policy.action is Action.DISCARD

    @staticmethod
    def _selectors_allow(sa: SecurityAssociation, inner: bytes) -> bool:
        """Does the decapsulated packet fall inside the SA's selectors?

        Address-only selectors (the common case) are decided once per address pair and
        remembered in a small per-SA cache.
        """
        cache = sa.selector_cache
        if cache is not None:
            key = inner[12:20]
            verdict = cache.get(key)
            if verdict is not None:
                return verdict
        src = int.from_bytes(inner[12:16], "big")
        dst = int.from_bytes(inner[16:20], "big")
        proto = inner[9]
        sport, dport = ip.ports(inner, ip.header_length(inner))
        verdict = any(p.matches_inbound(src, dst, proto, sport, dport) for p in sa.selectors)
        if cache is not None:
            if len(cache) >= 4096:
                cache.clear()
            cache[key] = verdict
        return verdict

    # -- reporting -----------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Counters and SAs for the control socket and metrics (no key material)."""
        return {
            "policies": [
                {"name": p.name, "action": p.action.value, "mode": p.mode.value,
                 "selectors": [str(s) for s in p.selectors], "hits": p.hits}
                for p in self.spd
            ],
            "sas": [sa.describe() for sa in self.sas_out] + [
                sa.describe() for sa in self.sad_in.values()],
            "drops": dict(self.drops),
            "keepalives_received": self.keepalives_received,
        }
