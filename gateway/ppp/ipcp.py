"""IPCP, the IP Control Protocol (RFC 1332), with the DNS options of RFC 1877.

Options: IP-Address (3, RFC 1332 3.3), Primary/Secondary DNS Server Address (129, 131,
RFC 1877 1.1, 1.3).  IP-Addresses (1, deprecated), IP-Compression-Protocol (2: Van
Jacobson, which Windows asks for), the NBNS options (130, 132) and anything else are
rejected.

Server (address assigner): our request carries our own address; the peer's IP-Address is
acknowledged when it is the address assigned to it and Nak'd with that address otherwise
(0.0.0.0 included); a peer that does not ask at all is told its address once, unasked
(RFC 1332 3.3 allows it); DNS requests are Nak'd with the configured servers, rejected
when none is configured for that slot.

Client: we ask for 0.0.0.0 (or a configured address) and DNS 0.0.0.0, take the values the
server Naks with, and acknowledge the server's own address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from gateway.ppp.automaton import ACK, REJECT, Automaton, Event, OptionHandler, Reply, State, nak
from gateway.ppp.config import LcpConfig
from gateway.ppp.frame import (
    CONF_ACK,
    CONF_NAK,
    CONF_REJ,
    PROTO_IPCP,
    ControlPacket,
    Option,
    decode_control,
    printable,
)
from gateway.ppp.lcp import LayerOwner, finish_reason

OPT_IP_ADDRESSES = 1
OPT_IP_COMPRESSION = 2
OPT_IP_ADDRESS = 3
OPT_DNS1 = 129
OPT_NBNS1 = 130
OPT_DNS2 = 131
OPT_NBNS2 = 132

OPTION_NAMES = {
    OPT_IP_ADDRESSES: "IP-Addresses", OPT_IP_COMPRESSION: "IP-Compression-Protocol",
    OPT_IP_ADDRESS: "IP-Address", OPT_DNS1: "Primary-DNS", OPT_NBNS1: "Primary-NBNS",
    OPT_DNS2: "Secondary-DNS", OPT_NBNS2: "Secondary-NBNS",
}

_ZERO = bytes(4)
_DNS_SLOTS = (OPT_DNS1, OPT_DNS2)


def _packed(address: str) -> bytes:
    return ipaddress.IPv4Address(address).packed


def _text(packed: bytes) -> str:
    return str(ipaddress.IPv4Address(packed))


class Ipcp(OptionHandler):
    """IPCP of one session, in the role of its session."""

    name = "IPCP"

    def __init__(self, owner: LayerOwner, config: LcpConfig, role: str, random: Callable[[int], bytes], *,
                 local: str, peer: str | None = None, dns: tuple[str, ...] = (),
                 request_dns: bool = True) -> None:
        self.owner = owner
        self.role = role
        self._local = _packed(local)
        self._peer = _packed(peer) if peer is not None else None
        self._dns = tuple(_packed(d) for d in dns)
        self._request_dns = request_dns
        self.automaton = Automaton(self, restart_interval=config.restart_interval,
                                   max_configure=config.max_configure, max_terminate=config.max_terminate,
                                   max_failure=config.max_failure, first_id=random(1)[0])
        self.want: dict[int, bytes] = {}
        #: results, once open
        self.local_address: str | None = None
        self.peer_address: str | None = None
        self.dns: tuple[str, ...] = ()
        self._candidate: str | None = None
        self._told = False
        self._heard = False
        self.peer_terminated = ""
        self.now = 0.0

    # -- the session's interface -----------------------------------------------------------
    @property
    def opened(self) -> bool:
        return self.automaton.opened

    def start(self, now: float) -> None:
        """Up and Open: the network phase begins (RFC 1661 3.6)."""
        self.now = now
        self.automaton.up(now)
        self.automaton.open(now)

    def down(self, now: float) -> None:
        self.now = now
        self.automaton.down(now)

    def receive(self, payload: bytes, now: float) -> None:
        self.now = now
        packet = decode_control(payload)
        self._heard = self._heard or packet.code in (CONF_ACK, CONF_NAK, CONF_REJ)  # an answer to us
        self.automaton.receive(packet, now)

    def deadline(self) -> float | None:
        return self.automaton.deadline

    def on_timer(self, now: float) -> None:
        self.now = now
        self.automaton.on_timer(now)

    # -- handler: packets --------------------------------------------------------------------
    def send(self, packet: ControlPacket) -> None:
        self.owner.send_packet(PROTO_IPCP, packet)

    def drop(self, reason: str) -> None:
        self.owner.drop(f"ipcp_{reason}")

    # -- our request ---------------------------------------------------------------------------
    def reset_request(self) -> None:
        self.want = {OPT_IP_ADDRESS: self._local}
        if self.role == "client" and self._request_dns:
            self.want[OPT_DNS1] = _ZERO
            self.want[OPT_DNS2] = _ZERO

    def request_options(self) -> list[Option]:
        return [Option(t, v) for t, v in self.want.items()]

    def ack_received(self, options: list[Option]) -> None:
        address = self.want.get(OPT_IP_ADDRESS)
        self.local_address = _text(address) if address is not None else None
        if self.role == "client":
            self.dns = tuple(_text(self.want[t]) for t in _DNS_SLOTS if self.want.get(t, _ZERO) != _ZERO)

    def nak_received(self, options: list[Option]) -> None:
        for o in options:
            if o.type not in self.want or len(o.data) != 4:
                continue
            if self.role == "server":
                self.owner.note("ipcp peer suggests another address for us; keeping ours", "debug",
                                suggested=_text(o.data))
            elif o.data != _ZERO or o.type != OPT_IP_ADDRESS:
                self.want[o.type] = o.data

    def reject_received(self, options: list[Option]) -> bool:
        if any(o.type not in self.want for o in options):
            return False
        for o in options:
            if o.type == OPT_IP_ADDRESS and self.role == "client" and self.want[o.type] == _ZERO:
                self.owner.give_up("IPCP: peer refuses to assign us an address (rejected IP-Address)")
            del self.want[o.type]
        return True

    # -- the peer's request ----------------------------------------------------------------------
    def check_request(self, options: list[Option]) -> tuple[list[Reply], list[Option]]:
        replies = [self._judge(o) for o in options]
        hints: list[Option] = []
        asked = any(o.type == OPT_IP_ADDRESS for o in options)
        if (self.role == "server" and not asked and not self._told and self._peer is not None
                and all(r.verdict != "reject" for r in replies)):
            hints.append(Option(OPT_IP_ADDRESS, self._peer))  # tell it its address, once
            self._told = True
        refused = [o for o, r in zip(options, replies, strict=True) if r.verdict != "ack"]
        if refused:
            names = ",".join(OPTION_NAMES.get(o.type, str(o.type)) for o in refused)
            self.owner.note("ipcp peer request refused", "debug", options=names)
        return replies, hints

    def _judge(self, o: Option) -> Reply:
        if self.role == "server":
            if o.type == OPT_IP_ADDRESS and len(o.data) == 4 and self._peer is not None:
                if o.data == self._peer:
                    self._candidate = _text(o.data)
                    return ACK
                return nak(Option(OPT_IP_ADDRESS, self._peer))
            if o.type in _DNS_SLOTS and len(o.data) == 4:
                slot = _DNS_SLOTS.index(o.type)
                if slot >= len(self._dns):
                    return REJECT
                return ACK if o.data == self._dns[slot] else nak(Option(o.type, self._dns[slot]))
            return REJECT
        if o.type == OPT_IP_ADDRESS and len(o.data) == 4 and o.data != _ZERO:
            self._candidate = _text(o.data)
            return ACK
        return REJECT

    def peer_acked(self, options: list[Option]) -> None:
        if self.role == "server" and self._peer is not None:
            self.peer_address = _text(self._peer)
        elif any(o.type == OPT_IP_ADDRESS for o in options):
            self.peer_address = self._candidate

    # -- this layer ---------------------------------------------------------------------------------
    def terminate_requested(self, packet: ControlPacket) -> None:
        # only in Opened does it end the layer (RFC 1661 4.1: tld,zrc,sta/5)
        if not self.peer_terminated and self.automaton.state is State.OPENED:
            text = printable(packet.data)
            self.peer_terminated = "IPCP: peer closed it" + (f": {text}" if text else "")

    def not_converging(self, what: str) -> None:
        self.owner.give_up(f"IPCP negotiation does not converge ({what})")

    def layer_up(self) -> None:
        self.owner.layer_up(PROTO_IPCP)

    def layer_down(self) -> None:
        self.owner.layer_down(PROTO_IPCP)

    def layer_finished(self, event: Event, state: State) -> None:
        reason = self.peer_terminated or finish_reason("IPCP", event, state, self._heard)
        self.owner.layer_finished(PROTO_IPCP, reason)
