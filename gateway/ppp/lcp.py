"""LCP, the Link Control Protocol (RFC 1661 5-6), for a link carried by L2TP.

Options (RFC 1661 6): Maximum-Receive-Unit (1), Async-Control-Character-Map (2, RFC 1662
7.1: accepted and meaningless on L2TP), Authentication-Protocol (3: PAP c023, CHAP c223
with algorithm 5 MD5 or 0x81 MS-CHAPv2, RFC 1994 3 and RFC 2759 2), Magic-Number (5, with
RFC 1661 6.4's loop-back detection), Protocol-Field-Compression (7) and
Address-and-Control-Field-Compression (8).  Anything else the peer asks for (Callback,
Multilink MRRU, Endpoint Discriminator, Quality-Protocol, ...) is rejected.

Authentication-Protocol: as the authenticator we ask for our most preferred method; a Nak
that names another method we allow moves us to it (Windows Naks CHAP-MD5 with
MS-CHAPv2), otherwise we try our next one, and when none is left the link cannot come up.
As the client we acknowledge a method we allow and Nak anything else with our most
preferred one (SoftEther asks for EAP first).

Beyond the automaton's codes LCP has Protocol-Reject (8), Echo-Request/Reply (9, 10: our
keepalive, RFC 1661 5.8), Discard-Request (11) and, from RFC 1570, Identification (12) and
Time-Remaining (13), which Windows sends and which are taken silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from gateway.ppp.automaton import ACK, REJECT, Automaton, Event, OptionHandler, Reply, State, nak
from gateway.ppp.config import LcpConfig
from gateway.ppp.frame import (
    CONF_ACK,
    CONF_NAK,
    CONF_REJ,
    DISCARD_REQ,
    ECHO_REP,
    ECHO_REQ,
    IDENTIFICATION,
    PROTO_CHAP,
    PROTO_EAP,
    PROTO_LCP,
    PROTO_PAP,
    PROTO_REJ,
    TIME_REMAINING,
    ControlPacket,
    Option,
    PppMalformed,
    decode_control,
    printable,
)

OPT_MRU = 1
OPT_ACCM = 2
OPT_AUTH = 3
OPT_QUALITY = 4
OPT_MAGIC = 5
OPT_PFC = 7
OPT_ACFC = 8

OPTION_NAMES = {
    OPT_MRU: "MRU", OPT_ACCM: "ACCM", OPT_AUTH: "Auth-Protocol", OPT_QUALITY: "Quality-Protocol",
    OPT_MAGIC: "Magic-Number", OPT_PFC: "PFC", OPT_ACFC: "ACFC", 13: "Callback", 17: "MRRU",
    18: "Short-Sequence-Number", 19: "Endpoint-Discriminator", 23: "Link-Discriminator",
}

DEFAULT_MRU = 1500
MIN_MRU = 128
LOOPED_BACK = "link is looped back (our own Magic-Number comes back)"

_AUTH_OPTIONS = {
    "pap": PROTO_PAP.to_bytes(2, "big"),
    "chap-md5": PROTO_CHAP.to_bytes(2, "big") + b"\x05",
    "mschapv2": PROTO_CHAP.to_bytes(2, "big") + b"\x81",
}


def auth_option(method: str) -> Option:
    """The Authentication-Protocol option asking for ``method``."""
    return Option(OPT_AUTH, _AUTH_OPTIONS[method])


def auth_method(data: bytes) -> str:
    """What an Authentication-Protocol option's data asks for: pap | chap-md5 | mschapv2, or a
    descriptive name of something we do not do (eap, mschapv1, chap-0x.., 0x....)."""
    if len(data) < 2:
        return "truncated"
    protocol, rest = int.from_bytes(data[:2], "big"), data[2:]
    if protocol == PROTO_PAP:
        return "pap" if not rest else "pap-with-data"
    if protocol == PROTO_CHAP:
        if len(rest) != 1:
            return "chap-without-algorithm"
        return {5: "chap-md5", 0x81: "mschapv2", 0x80: "mschapv1"}.get(rest[0], f"chap-0x{rest[0]:02x}")
    if protocol == PROTO_EAP:
        return "eap"
    return f"0x{protocol:04x}"


def option_names(options: list[Option]) -> str:
    return ",".join(OPTION_NAMES.get(o.type, str(o.type)) for o in options) or "-"


@dataclass(frozen=True)
class LcpValues:
    """The options in force in one direction."""

    mru: int = DEFAULT_MRU
    accm: int | None = None
    auth: str | None = None
    magic: int = 0
    pfc: bool = False
    acfc: bool = False

    def describe(self) -> str:
        parts = [f"mru={self.mru}"]
        if self.accm is not None:
            parts.append(f"accm=0x{self.accm:08x}")
        if self.auth:
            parts.append(f"auth={self.auth}")
        if self.magic:
            parts.append(f"magic=0x{self.magic:08x}")
        parts += [name for name, on in (("pfc", self.pfc), ("acfc", self.acfc)) if on]
        return " ".join(parts)


class LayerOwner(Protocol):
    """What LCP and IPCP need from their session."""

    def send_packet(self, protocol: int, packet: ControlPacket) -> None: ...

    def drop(self, reason: str) -> None: ...

    def note(self, what: str, level: str = "info", **fields: object) -> None: ...

    def layer_up(self, protocol: int) -> None: ...

    def layer_down(self, protocol: int) -> None: ...

    def layer_finished(self, protocol: int, reason: str) -> None: ...

    def give_up(self, reason: str) -> None: ...

    def peer_rejected_protocol(self, protocol: int) -> None: ...


def finish_reason(name: str, event: Event, state: State, heard: bool) -> str:
    """Why a layer finished (tlf), when nobody said so before."""
    if event is Event.TO_MINUS and state in (State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT):
        if not heard:
            return f"{name}: no answer to Configure-Request"
        return f"{name}: negotiation did not converge"
    if event is Event.RXJ_MINUS:
        return f"{name}: peer rejected it"
    return f"{name}: closed"


class Lcp(OptionHandler):
    """LCP of one session: the option handler, its automaton and the keepalive."""

    name = "LCP"

    def __init__(self, owner: LayerOwner, config: LcpConfig, role: str, methods: tuple[str, ...],
                 random: Callable[[int], bytes]) -> None:
        self.owner = owner
        self.config = config
        self.role = role
        self.methods = methods
        self._random = random
        self.automaton = Automaton(self, restart_interval=config.restart_interval,
                                   max_configure=config.max_configure, max_terminate=config.max_terminate,
                                   max_failure=config.max_failure, first_id=random(1)[0])
        self.want = LcpValues()
        #: our request as the peer acknowledged it: what the peer may send us
        self.ours = LcpValues()
        #: the peer's request as we acknowledged it: what we may send the peer
        self.theirs = LcpValues()
        self._candidate = LcpValues()
        self._tried: list[str] = []
        self._clashes = 0
        self._heard = False
        self.terminate_reason = ""
        self.peer_terminated = ""
        self.now = 0.0
        # keepalive (RFC 1661 5.8)
        self.last_rx = 0.0
        self._echo_at: float | None = None
        self._echo_pending = 0
        self._echo_off = False
        self._echo_id = 0
        self.loopbacks = 0

    # -- the session's interface -------------------------------------------------------------
    @property
    def opened(self) -> bool:
        return self.automaton.opened

    @property
    def auth(self) -> str | None:
        """The method in force: the one we demand as server, the one we agreed to as client."""
        return self.ours.auth if self.role == "server" else self.theirs.auth

    def up(self, now: float) -> None:
        self.now = now
        self.automaton.up(now)

    def down(self, now: float) -> None:
        self.now = now
        self.automaton.down(now)

    def open(self, now: float) -> None:
        self.now = now
        self.automaton.open(now)

    def close(self, now: float, public_reason: str) -> None:
        """Close; ``public_reason`` goes into our Terminate-Request for the peer to read."""
        self.now = now
        self.terminate_reason = public_reason
        self.automaton.close(now)

    def receive(self, payload: bytes, now: float) -> None:
        self.now = now
        packet = decode_control(payload)
        self._heard = self._heard or packet.code in (CONF_ACK, CONF_NAK, CONF_REJ)  # an answer to us
        self.automaton.receive(packet, now)

    def deadline(self) -> float | None:
        times = [t for t in (self.automaton.deadline, self._echo_at) if t is not None]
        return min(times) if times else None

    def on_timer(self, now: float) -> None:
        self.now = now
        self.automaton.on_timer(now)
        if self._echo_at is not None and now >= self._echo_at:
            self._keepalive(now)

    def reject_protocol(self, protocol: int, payload: bytes) -> None:
        """Protocol-Reject (RFC 1661 5.7): only in the Opened state."""
        if not self.opened:
            return
        data = protocol.to_bytes(2, "big") + payload
        limit = self.theirs.mru - 4
        self.send(ControlPacket(PROTO_REJ, self.automaton.next_id(), data[:limit]))

    # -- the automaton's handler: packets ------------------------------------------------------
    def send(self, packet: ControlPacket) -> None:
        self.owner.send_packet(PROTO_LCP, packet)

    def drop(self, reason: str) -> None:
        self.owner.drop(f"lcp_{reason}")

    # -- our request ------------------------------------------------------------------------------
    def _new_magic(self) -> int:
        """A fresh, non-zero Magic-Number unlike the last (RFC 1661 6.4)."""
        for _ in range(8):
            magic = int.from_bytes(self._random(4), "big")
            if magic and magic != self.want.magic:
                return magic
        return (self.want.magic * 1103515245 + 12345) & 0xFFFFFFFF or 1  # a random source stuck on a value

    def reset_request(self) -> None:
        self.want = LcpValues(mru=self.config.mru, magic=0,
                              auth=self.methods[0] if self.role == "server" else None,
                              pfc=self.config.request_pfc, acfc=self.config.request_acfc)
        if self.config.magic_number:
            self.want = replace(self.want, magic=self._new_magic())
        self._tried = []

    def request_options(self) -> list[Option]:
        w = self.want
        options: list[Option] = []
        if w.mru != DEFAULT_MRU:
            options.append(Option(OPT_MRU, w.mru.to_bytes(2, "big")))
        if w.auth:
            options.append(auth_option(w.auth))
        if w.magic:
            options.append(Option(OPT_MAGIC, w.magic.to_bytes(4, "big")))
        if w.pfc:
            options.append(Option(OPT_PFC))
        if w.acfc:
            options.append(Option(OPT_ACFC))
        return options

    def ack_received(self, options: list[Option]) -> None:
        self.ours = self.want

    def nak_received(self, options: list[Option]) -> None:
        for o in options:
            if o.type == OPT_MRU and len(o.data) == 2:
                mru = int.from_bytes(o.data, "big")
                if MIN_MRU <= mru <= DEFAULT_MRU:
                    self.want = replace(self.want, mru=mru)
            elif o.type == OPT_AUTH and self.want.auth:
                self._auth_naked(auth_method(o.data))
            elif o.type == OPT_MAGIC and self.want.magic:
                self.want = replace(self.want, magic=self._new_magic())  # RFC 1661 6.4

    def _auth_naked(self, suggested: str) -> None:
        current = self.want.auth
        assert current is not None
        if current not in self._tried:
            self._tried.append(current)
        if suggested in self.methods and suggested not in self._tried:
            choice: str | None = suggested
        else:
            choice = next((m for m in self.methods if m not in self._tried), None)
        if choice is None:
            self.owner.give_up(f"no common authentication method: peer wants {suggested}, "
                               f"we allow {','.join(self.methods)}")
            return
        self.owner.note("lcp auth protocol refused", "info", offered=current, peer_wants=suggested,
                        now_offering=choice)
        self.want = replace(self.want, auth=choice)

    def reject_received(self, options: list[Option]) -> bool:
        sent = {o.type for o in self.request_options()}
        if any(o.type not in sent for o in options):
            return False
        for o in options:
            if o.type == OPT_MRU:
                self.want = replace(self.want, mru=DEFAULT_MRU)
            elif o.type == OPT_AUTH:
                # on a looped-back link our own Auth-Protocol comes back and we rejected it
                self.owner.give_up(LOOPED_BACK if self._clashes else
                                   "peer refuses to authenticate (rejected Auth-Protocol)")
            elif o.type == OPT_MAGIC:
                self.want = replace(self.want, magic=0)
            elif o.type == OPT_PFC:
                self.want = replace(self.want, pfc=False)
            elif o.type == OPT_ACFC:
                self.want = replace(self.want, acfc=False)
        return True

    # -- the peer's request ------------------------------------------------------------------------
    def check_request(self, options: list[Option]) -> tuple[list[Reply], list[Option]]:
        candidate = LcpValues()
        replies: list[Reply] = []
        for o in options:
            reply = ACK
            t, d = o.type, o.data
            if t == OPT_MRU and len(d) == 2:
                mru = int.from_bytes(d, "big")
                if mru < MIN_MRU:
                    reply = nak(Option(OPT_MRU, MIN_MRU.to_bytes(2, "big")))
                candidate = replace(candidate, mru=mru)
            elif t == OPT_ACCM and len(d) == 4:
                candidate = replace(candidate, accm=int.from_bytes(d, "big"))
            elif t == OPT_AUTH and self.role == "client" and len(d) >= 2:
                method = auth_method(d)
                if method in self.methods:
                    candidate = replace(candidate, auth=method)
                else:
                    self.owner.note("lcp auth protocol refused", "info", peer_offers=method,
                                    we_ask_for=self.methods[0])
                    reply = nak(auth_option(self.methods[0]))
            elif t == OPT_MAGIC and len(d) == 4:
                magic = int.from_bytes(d, "big")
                if magic == 0 or magic == self.want.magic:
                    if magic:
                        self._clashes += 1
                        if self._clashes >= self.config.max_failure:
                            self.owner.give_up(LOOPED_BACK)
                    reply = nak(Option(OPT_MAGIC, self._new_magic().to_bytes(4, "big")))
                candidate = replace(candidate, magic=magic)
            elif t == OPT_PFC and not d:
                candidate = replace(candidate, pfc=True)
            elif t == OPT_ACFC and not d:
                candidate = replace(candidate, acfc=True)
            else:
                reply = REJECT
            replies.append(reply)
        refused = [o for o, r in zip(options, replies, strict=True) if r.verdict != "ack"]
        if refused:
            self.owner.note("lcp peer request refused", "debug", options=option_names(refused))
        self._candidate = candidate
        return replies, []

    def peer_acked(self, options: list[Option]) -> None:
        self.theirs = self._candidate
        self._clashes = 0

    # -- LCP's own codes ----------------------------------------------------------------------------
    def extension(self, packet: ControlPacket, opened: bool) -> Event | None:
        code = packet.code
        if code == PROTO_REJ:
            if len(packet.data) < 2:
                raise PppMalformed("Protocol-Reject without the rejected protocol")
            protocol = int.from_bytes(packet.data[:2], "big")
            if protocol == PROTO_LCP:
                return Event.RXJ_MINUS
            if opened:
                self.owner.peer_rejected_protocol(protocol)
            return Event.RXJ_PLUS
        if code in (ECHO_REQ, ECHO_REP, DISCARD_REQ):
            if len(packet.data) < 4:
                raise PppMalformed(f"LCP code {code} without a Magic-Number")
            return Event.RXR
        if code in (IDENTIFICATION, TIME_REMAINING):
            if opened and code == IDENTIFICATION and len(packet.data) >= 4:
                self.owner.note("lcp identification", "debug", text=printable(packet.data[4:]))
            return Event.RXR
        return None

    def serve(self, packet: ControlPacket) -> None:
        magic = int.from_bytes(packet.data[:4], "big")
        if packet.code == ECHO_REQ:
            if magic and magic == self.ours.magic:  # our own request came back (RFC 1661 5.8)
                self.loopbacks += 1
                self.owner.note("lcp echo request carries our own magic number: link looped back?", "warning")
                return
            data = self.ours.magic.to_bytes(4, "big") + packet.data[4:]
            self.send(ControlPacket(ECHO_REP, packet.identifier, data[:self.theirs.mru - 4]))
        elif packet.code == ECHO_REP:
            # any reply proves life, even one that copies our magic back (SoftEther clones the data)
            self._echo_pending = 0

    def code_rejected(self, code: int) -> None:
        if code == ECHO_REQ:
            self._echo_off = True
            self._echo_at = None
            self.owner.note("lcp peer rejects echo requests: keepalive off", "info")

    def terminate_requested(self, packet: ControlPacket) -> None:
        # only in Opened does it end the layer (RFC 1661 4.1: tld,zrc,sta/5)
        if not self.peer_terminated and self.automaton.state is State.OPENED:
            text = printable(packet.data)
            self.peer_terminated = "peer terminated the link" + (f": {text}" if text else "")

    def terminate_data(self) -> bytes:
        return self.terminate_reason.encode("utf-8", "replace")[:64]

    def not_converging(self, what: str) -> None:
        self.owner.give_up(f"LCP negotiation does not converge ({what})")

    # -- this layer ---------------------------------------------------------------------------------
    def layer_up(self) -> None:
        self.automaton.reply_limit = self.theirs.mru
        self.last_rx = self.now
        self._echo_pending = 0
        if self.config.echo_interval is not None and not self._echo_off:
            self._echo_at = self.now + self.config.echo_interval
        self.owner.note("lcp up", "info", ours=self.ours.describe(), theirs=self.theirs.describe())
        self.owner.layer_up(PROTO_LCP)

    def layer_down(self) -> None:
        self._echo_at = None
        self.owner.layer_down(PROTO_LCP)

    def layer_finished(self, event: Event, state: State) -> None:
        self._echo_at = None
        reason = self.peer_terminated or finish_reason("LCP", event, state, self._heard)
        self.owner.layer_finished(PROTO_LCP, reason)

    # -- keepalive --------------------------------------------------------------------------------
    def _keepalive(self, now: float) -> None:
        interval = self.config.echo_interval
        if interval is None or not self.opened or self._echo_off:
            self._echo_at = None
            return
        if self.config.echo_adaptive and now - self.last_rx < interval:
            self._echo_pending = 0
            self._echo_at = self.last_rx + interval
            return
        if self._echo_pending >= self.config.echo_failures:
            self._echo_at = None
            self.owner.give_up(f"peer does not answer: {self._echo_pending} LCP echo requests unanswered")
            return
        self._echo_pending += 1
        self._echo_id = (self._echo_id + 1) & 0xFF
        self.send(ControlPacket(ECHO_REQ, self._echo_id, self.ours.magic.to_bytes(4, "big")))
        self._echo_at = now + interval
