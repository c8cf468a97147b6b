"""The option negotiation automaton of RFC 1661 4, shared by LCP and IPCP.

`TABLE` is RFC 1661 4.1's state transition table, cell for cell: for each state, the
events it accepts, the actions they run (in the printed order) and the next state.  A "-"
cell is not in the table: the event is ignored and counted.  The footnoted options are
not taken: no restart on Open [r] (the session never reopens), no passive wait [p]
beyond the Stopped state itself.  The crossed-connection case [x] is the printed cell.

The automaton knows the packets of RFC 1661 5.1-5.7 (Configure-*, Terminate-*,
Code-Reject); what the options mean and what other codes do (LCP's Protocol-Reject, Echo
and Discard) is its `OptionHandler`'s business.  Replies to a Configure-Request follow
5.2-5.4: any option to reject makes a Configure-Reject of those alone, otherwise any value
to change makes a Configure-Nak, otherwise the request is acknowledged verbatim.  After
Max-Failure Naks without an Ack, Naks turn into Rejects (4.6).

Sans-IO: time comes in as ``now``; the only clock is `deadline`, the Restart timer (4.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

from gateway.ppp.frame import (
    CODE_REJ,
    CONF_ACK,
    CONF_NAK,
    CONF_REJ,
    CONF_REQ,
    TERM_ACK,
    TERM_REQ,
    ControlPacket,
    Option,
    PppMalformed,
    decode_options,
    encode_options,
)


class State(IntEnum):
    """RFC 1661 4.2."""

    INITIAL = 0
    STARTING = 1
    CLOSED = 2
    STOPPED = 3
    CLOSING = 4
    STOPPING = 5
    REQ_SENT = 6
    ACK_RCVD = 7
    ACK_SENT = 8
    OPENED = 9


class Event(Enum):
    """RFC 1661 4.3."""

    UP = "Up"
    DOWN = "Down"
    OPEN = "Open"
    CLOSE = "Close"
    TO_PLUS = "TO+"
    TO_MINUS = "TO-"
    RCR_PLUS = "RCR+"
    RCR_MINUS = "RCR-"
    RCA = "RCA"
    RCN = "RCN"
    RTR = "RTR"
    RTA = "RTA"
    RUC = "RUC"
    RXJ_PLUS = "RXJ+"
    RXJ_MINUS = "RXJ-"
    RXR = "RXR"


_S, _E = State, Event
_N: tuple[str, ...] = ()  # no action

#: RFC 1661 4.1: state -> event -> (actions, next state)
TABLE: dict[State, dict[Event, tuple[tuple[str, ...], State]]] = {
    _S.INITIAL: {
        _E.UP: (_N, _S.CLOSED),
        _E.OPEN: (("tls",), _S.STARTING),
        _E.CLOSE: (_N, _S.INITIAL),
    },
    _S.STARTING: {
        _E.UP: (("irc", "scr"), _S.REQ_SENT),
        _E.OPEN: (_N, _S.STARTING),
        _E.CLOSE: (("tlf",), _S.INITIAL),
    },
    _S.CLOSED: {
        _E.DOWN: (_N, _S.INITIAL),
        _E.OPEN: (("irc", "scr"), _S.REQ_SENT),
        _E.CLOSE: (_N, _S.CLOSED),
        _E.RCR_PLUS: (("sta",), _S.CLOSED),
        _E.RCR_MINUS: (("sta",), _S.CLOSED),
        _E.RCA: (("sta",), _S.CLOSED),
        _E.RCN: (("sta",), _S.CLOSED),
        _E.RTR: (("sta",), _S.CLOSED),
        _E.RTA: (_N, _S.CLOSED),
        _E.RUC: (("scj",), _S.CLOSED),
        _E.RXJ_PLUS: (_N, _S.CLOSED),
        _E.RXJ_MINUS: (("tlf",), _S.CLOSED),
        _E.RXR: (_N, _S.CLOSED),
    },
    _S.STOPPED: {
        _E.DOWN: (("tls",), _S.STARTING),
        _E.OPEN: (_N, _S.STOPPED),
        _E.CLOSE: (_N, _S.CLOSED),
        _E.RCR_PLUS: (("irc", "scr", "sca"), _S.ACK_SENT),
        _E.RCR_MINUS: (("irc", "scr", "scn"), _S.REQ_SENT),
        _E.RCA: (("sta",), _S.STOPPED),
        _E.RCN: (("sta",), _S.STOPPED),
        _E.RTR: (("sta",), _S.STOPPED),
        _E.RTA: (_N, _S.STOPPED),
        _E.RUC: (("scj",), _S.STOPPED),
        _E.RXJ_PLUS: (_N, _S.STOPPED),
        _E.RXJ_MINUS: (("tlf",), _S.STOPPED),
        _E.RXR: (_N, _S.STOPPED),
    },
    _S.CLOSING: {
        _E.DOWN: (_N, _S.INITIAL),
        _E.OPEN: (_N, _S.STOPPING),
        _E.CLOSE: (_N, _S.CLOSING),
        _E.TO_PLUS: (("str",), _S.CLOSING),
        _E.TO_MINUS: (("tlf",), _S.CLOSED),
        _E.RCR_PLUS: (_N, _S.CLOSING),
        _E.RCR_MINUS: (_N, _S.CLOSING),
        _E.RCA: (_N, _S.CLOSING),
        _E.RCN: (_N, _S.CLOSING),
        _E.RTR: (("sta",), _S.CLOSING),
        _E.RTA: (("tlf",), _S.CLOSED),
        _E.RUC: (("scj",), _S.CLOSING),
        _E.RXJ_PLUS: (_N, _S.CLOSING),
        _E.RXJ_MINUS: (("tlf",), _S.CLOSED),
        _E.RXR: (_N, _S.CLOSING),
    },
    _S.STOPPING: {
        _E.DOWN: (_N, _S.STARTING),
        _E.OPEN: (_N, _S.STOPPING),
        _E.CLOSE: (_N, _S.CLOSING),
        _E.TO_PLUS: (("str",), _S.STOPPING),
        _E.TO_MINUS: (("tlf",), _S.STOPPED),
        _E.RCR_PLUS: (_N, _S.STOPPING),
        _E.RCR_MINUS: (_N, _S.STOPPING),
        _E.RCA: (_N, _S.STOPPING),
        _E.RCN: (_N, _S.STOPPING),
        _E.RTR: (("sta",), _S.STOPPING),
        _E.RTA: (("tlf",), _S.STOPPED),
        _E.RUC: (("scj",), _S.STOPPING),
        _E.RXJ_PLUS: (_N, _S.STOPPING),
        _E.RXJ_MINUS: (("tlf",), _S.STOPPED),
        _E.RXR: (_N, _S.STOPPING),
    },
    _S.REQ_SENT: {
        _E.DOWN: (_N, _S.STARTING),
        _E.OPEN: (_N, _S.REQ_SENT),
        _E.CLOSE: (("irc", "str"), _S.CLOSING),
        _E.TO_PLUS: (("scr",), _S.REQ_SENT),
        _E.TO_MINUS: (("tlf",), _S.STOPPED),
        _E.RCR_PLUS: (("sca",), _S.ACK_SENT),
        _E.RCR_MINUS: (("scn",), _S.REQ_SENT),
        _E.RCA: (("irc",), _S.ACK_RCVD),
        _E.RCN: (("irc", "scr"), _S.REQ_SENT),
        _E.RTR: (("sta",), _S.REQ_SENT),
        _E.RTA: (_N, _S.REQ_SENT),
        _E.RUC: (("scj",), _S.REQ_SENT),
        _E.RXJ_PLUS: (_N, _S.REQ_SENT),
        _E.RXJ_MINUS: (("tlf",), _S.STOPPED),
        _E.RXR: (_N, _S.REQ_SENT),
    },
    _S.ACK_RCVD: {
        _E.DOWN: (_N, _S.STARTING),
        _E.OPEN: (_N, _S.ACK_RCVD),
        _E.CLOSE: (("irc", "str"), _S.CLOSING),
        _E.TO_PLUS: (("scr",), _S.REQ_SENT),
        _E.TO_MINUS: (("tlf",), _S.STOPPED),
        _E.RCR_PLUS: (("sca", "tlu"), _S.OPENED),
        _E.RCR_MINUS: (("scn",), _S.ACK_RCVD),
        _E.RCA: (("scr",), _S.REQ_SENT),
        _E.RCN: (("scr",), _S.REQ_SENT),
        _E.RTR: (("sta",), _S.REQ_SENT),
        _E.RTA: (_N, _S.REQ_SENT),
        _E.RUC: (("scj",), _S.ACK_RCVD),
        _E.RXJ_PLUS: (_N, _S.REQ_SENT),
        _E.RXJ_MINUS: (("tlf",), _S.STOPPED),
        _E.RXR: (_N, _S.ACK_RCVD),
    },
    _S.ACK_SENT: {
        _E.DOWN: (_N, _S.STARTING),
        _E.OPEN: (_N, _S.ACK_SENT),
        _E.CLOSE: (("irc", "str"), _S.CLOSING),
        _E.TO_PLUS: (("scr",), _S.ACK_SENT),
        _E.TO_MINUS: (("tlf",), _S.STOPPED),
        _E.RCR_PLUS: (("sca",), _S.ACK_SENT),
        _E.RCR_MINUS: (("scn",), _S.REQ_SENT),
        _E.RCA: (("irc", "tlu"), _S.OPENED),
        _E.RCN: (("irc", "scr"), _S.ACK_SENT),
        _E.RTR: (("sta",), _S.REQ_SENT),
        _E.RTA: (_N, _S.ACK_SENT),
        _E.RUC: (("scj",), _S.ACK_SENT),
        _E.RXJ_PLUS: (_N, _S.ACK_SENT),
        _E.RXJ_MINUS: (("tlf",), _S.STOPPED),
        _E.RXR: (_N, _S.ACK_SENT),
    },
    _S.OPENED: {
        _E.DOWN: (("tld",), _S.STARTING),
        _E.OPEN: (_N, _S.OPENED),
        _E.CLOSE: (("tld", "irc", "str"), _S.CLOSING),
        _E.RCR_PLUS: (("tld", "scr", "sca"), _S.ACK_SENT),
        _E.RCR_MINUS: (("tld", "scr", "scn"), _S.REQ_SENT),
        _E.RCA: (("tld", "scr"), _S.REQ_SENT),
        _E.RCN: (("tld", "scr"), _S.REQ_SENT),
        _E.RTR: (("tld", "zrc", "sta"), _S.STOPPING),
        _E.RTA: (("tld", "scr"), _S.REQ_SENT),
        _E.RUC: (("scj",), _S.OPENED),
        _E.RXJ_PLUS: (_N, _S.OPENED),
        _E.RXJ_MINUS: (("tld", "irc", "str"), _S.STOPPING),
        _E.RXR: (("ser",), _S.OPENED),
    },
}

#: states in which the Restart timer runs (RFC 1661 4.2)
_TIMED = frozenset({State.CLOSING, State.STOPPING, State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT})
#: states in which a Configure-Request is judged (the others answer it without looking)
_JUDGING = frozenset({State.STOPPED, State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT, State.OPENED})
#: states that expect replies to our Configure-Request
_EXPECTING = frozenset({State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT, State.OPENED})
_NEGOTIATING = frozenset({State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT})


@dataclass(frozen=True)
class Reply:
    """A handler's verdict on one option of the peer's Configure-Request."""

    verdict: str  # "ack" | "nak" | "reject"
    suggestion: Option | None = None  # for "nak": the value we would accept


ACK = Reply("ack")
REJECT = Reply("reject")


def nak(suggestion: Option) -> Reply:
    return Reply("nak", suggestion)


class OptionHandler:
    """What the automaton asks of its protocol (LCP, IPCP).  The defaults suit a protocol
    with no options and no codes of its own; subclasses override what they need."""

    name = "?"

    # -- packets out, drops -------------------------------------------------------------
    def send(self, packet: ControlPacket) -> None:
        raise NotImplementedError

    def drop(self, reason: str) -> None:
        """A received packet was ignored (stale, out of state, inconsistent)."""

    # -- our Configure-Request ------------------------------------------------------------
    def reset_request(self) -> None:
        """A fresh negotiation starts: go back to the configured wishes."""

    def request_options(self) -> list[Option]:
        return []

    def ack_received(self, options: list[Option]) -> None:
        """The peer acknowledged our request (already checked to be verbatim)."""

    def nak_received(self, options: list[Option]) -> None:
        """Adjust the next request to the peer's Configure-Nak."""

    def reject_received(self, options: list[Option]) -> bool:
        """Drop the rejected options from the next request; False if the Reject names
        options we did not send (the packet is then discarded, RFC 1661 5.4)."""
        return True

    # -- the peer's Configure-Request -----------------------------------------------------
    def check_request(self, options: list[Option]) -> tuple[list[Reply], list[Option]]:
        """One verdict per option, plus options to add to a Nak unasked (RFC 1661 5.3)."""
        return [REJECT for _ in options], []

    def peer_acked(self, options: list[Option]) -> None:
        """We acknowledge this request of the peer's: its values are in force once open."""

    # -- other packets --------------------------------------------------------------------
    def extension(self, packet: ControlPacket, opened: bool) -> Event | None:
        """Classify a code beyond 1..7: RXR, RXJ+ or RXJ-; None if unknown (RUC)."""
        return None

    def serve(self, packet: ControlPacket) -> None:
        """The ser action: answer an RXR packet in the Opened state."""

    def code_rejected(self, code: int) -> None:
        """The peer Code-Rejected one of our codes beyond 1..7 (RXJ+)."""

    def terminate_requested(self, packet: ControlPacket) -> None:
        """The peer sent a Terminate-Request (any state)."""

    def terminate_data(self) -> bytes:
        return b""

    def not_converging(self, what: str) -> None:
        """The peer keeps refusing our requests; the owner should give up."""

    # -- this layer (RFC 1661 4.4) ------------------------------------------------------------
    def layer_up(self) -> None: ...

    def layer_down(self) -> None: ...

    def layer_started(self) -> None: ...

    def layer_finished(self, event: Event, state: State) -> None:
        """tlf, caused by ``event`` in ``state``."""


class Automaton:
    """One protocol's automaton.  Feed it `up`/`down`/`open`/`close`, decoded control
    packets (`receive`) and the Restart timer (`on_timer` once `deadline` passes)."""

    def __init__(self, handler: OptionHandler, *, restart_interval: float = 3.0, max_configure: int = 10,
                 max_terminate: int = 2, max_failure: int = 5, first_id: int = 0) -> None:
        self.handler = handler
        self.restart_interval = restart_interval
        self.max_configure = max_configure
        self.max_terminate = max_terminate
        self.max_failure = max_failure
        self.state = State.INITIAL
        self.restart_count = 0
        self.deadline: float | None = None
        #: Configure-Naks sent since the last Configure-Ack (Max-Failure, RFC 1661 4.6)
        self.failures = 0
        #: Configure-Naks/Rejects received since our last acknowledged request
        self.refusals = 0
        self.request_id: int | None = None
        self._request_data = b""
        self._reply_seen = False
        self._id = first_id & 0xFF
        self._now = 0.0
        #: the largest Code-Reject we send (the peer's MRU)
        self.reply_limit = 1500

    @property
    def opened(self) -> bool:
        return self.state is State.OPENED

    # -- administrative and lower-layer events (RFC 1661 4.3) ---------------------------------
    def up(self, now: float) -> None:
        self._fire(Event.UP, now)

    def down(self, now: float) -> None:
        self._fire(Event.DOWN, now)

    def open(self, now: float) -> None:
        self._fire(Event.OPEN, now)

    def close(self, now: float) -> None:
        self._fire(Event.CLOSE, now)

    def on_timer(self, now: float) -> None:
        if self.deadline is None or now < self.deadline:
            return
        self.deadline = None
        self._fire(Event.TO_PLUS if self.restart_count > 0 else Event.TO_MINUS, now)

    # -- received packets -----------------------------------------------------------------------
    def receive(self, packet: ControlPacket, now: float) -> None:
        """Handle one control packet; raises `PppMalformed` only (nothing changed then)."""
        code = packet.code
        if code == CONF_REQ:
            options = decode_options(packet.data)
            reply: ControlPacket | None = None
            event = Event.RCR_PLUS
            if self.state in _JUDGING:
                reply = self._judge(packet, options)
                event = Event.RCR_PLUS if reply.code == CONF_ACK else Event.RCR_MINUS
            self._fire(event, now, packet, reply=reply, options=options)
        elif code in (CONF_ACK, CONF_NAK, CONF_REJ):
            event = Event.RCA if code == CONF_ACK else Event.RCN
            if self.state in _EXPECTING:
                if packet.identifier != self.request_id or self._reply_seen:
                    self.handler.drop("stale_reply")
                    return
                options = decode_options(packet.data)
                if code == CONF_ACK:
                    if packet.data != self._request_data:
                        self.handler.drop("ack_not_verbatim")
                        return
                    self.refusals = 0
                    self.handler.ack_received(options)
                elif code == CONF_NAK:
                    self.handler.nak_received(options)
                elif not self.handler.reject_received(options):
                    self.handler.drop("reject_not_ours")
                    return
                self._reply_seen = True
                if code != CONF_ACK:
                    self.refusals += 1
                    if self.refusals > self.max_configure:
                        self.handler.not_converging(f"{self.refusals} Configure-Naks/Rejects in a row")
            self._fire(event, now, packet)
        elif code == TERM_REQ:
            self.handler.terminate_requested(packet)
            self._fire(Event.RTR, now, packet)
        elif code == TERM_ACK:
            self._fire(Event.RTA, now, packet)
        elif code == CODE_REJ:
            if not packet.data:
                raise PppMalformed("Code-Reject without the rejected packet")
            rejected = packet.data[0]
            if CONF_REQ <= rejected <= CODE_REJ:
                self._fire(Event.RXJ_MINUS, now, packet)
            else:
                self.handler.code_rejected(rejected)
                self._fire(Event.RXJ_PLUS, now, packet)
        else:
            extra = self.handler.extension(packet, self.opened)
            self._fire(extra or Event.RUC, now, packet)

    def _judge(self, packet: ControlPacket, options: list[Option]) -> ControlPacket:
        """The reply to a Configure-Request (RFC 1661 5.2-5.4, Max-Failure of 4.6)."""
        replies, hints = self.handler.check_request(options)
        rejects = [o for o, r in zip(options, replies, strict=True) if r.verdict == "reject"]
        if not rejects:
            naked = [o for o, r in zip(options, replies, strict=True) if r.verdict == "nak"]
            suggestions = [r.suggestion for r in replies if r.verdict == "nak" and r.suggestion is not None]
            if not naked and not hints:
                return ControlPacket(CONF_ACK, packet.identifier, packet.data)
            if self.failures < self.max_failure:
                return ControlPacket(CONF_NAK, packet.identifier, encode_options(suggestions + hints))
            if not naked:  # only unasked hints: give up on them
                return ControlPacket(CONF_ACK, packet.identifier, packet.data)
            rejects = naked
        return ControlPacket(CONF_REJ, packet.identifier, encode_options(rejects))

    # -- the machine ------------------------------------------------------------------------------
    def _fire(self, event: Event, now: float, packet: ControlPacket | None = None, *,
              reply: ControlPacket | None = None, options: list[Option] | None = None) -> None:
        self._now = now
        cell = TABLE[self.state].get(event)
        if cell is None:
            self.handler.drop(f"{event.name.lower()}_in_{self.state.name.lower()}")  # rcr_plus_in_initial
            return
        actions, new = cell
        old = self.state
        self.state = new
        for action in actions:
            if action == "irc":
                self.restart_count = self.max_terminate if "str" in actions else self.max_configure
            elif action == "zrc":
                self.restart_count = 0
                self.deadline = now + self.restart_interval
            elif action == "scr":
                self._send_configure_request(event, old)
            elif action == "sca":
                assert packet is not None and options is not None
                self.handler.send(ControlPacket(CONF_ACK, packet.identifier, packet.data))
                self.handler.peer_acked(options)
                self.failures = 0
            elif action == "scn":
                assert reply is not None
                self.handler.send(reply)
                if reply.code == CONF_NAK:
                    self.failures += 1
            elif action == "str":
                self.handler.send(ControlPacket(TERM_REQ, self.next_id(), self.handler.terminate_data()))
                self.restart_count -= 1
                self.deadline = now + self.restart_interval
            elif action == "sta":
                ident = packet.identifier if packet is not None else self.next_id()
                self.handler.send(ControlPacket(TERM_ACK, ident))
            elif action == "scj":
                assert packet is not None
                rejected = packet.encode()[:max(0, self.reply_limit - 4)]
                self.handler.send(ControlPacket(CODE_REJ, self.next_id(), rejected))
            elif action == "ser":
                assert packet is not None
                self.handler.serve(packet)
            elif action == "tlu":
                self.refusals = 0
                self.handler.layer_up()
            elif action == "tld":
                self.handler.layer_down()
            elif action == "tls":
                self.handler.layer_started()
            elif action == "tlf":
                self.handler.layer_finished(event, old)
        if self.state not in _TIMED:
            self.deadline = None

    def _send_configure_request(self, event: Event, old: State) -> None:
        if event is Event.TO_PLUS and self.request_id is not None:
            ident, data = self.request_id, self._request_data  # a retransmission (RFC 1661 5.1)
        else:
            if old not in _NEGOTIATING:
                self.handler.reset_request()
                self.refusals = 0
            data = encode_options(self.handler.request_options())
            ident = self.next_id()
            self.request_id, self._request_data = ident, data
        self._reply_seen = False
        self.handler.send(ControlPacket(CONF_REQ, ident, data))
        self.restart_count -= 1
        self.deadline = self._now + self.restart_interval

    def next_id(self) -> int:
        self._id = (self._id + 1) & 0xFF
        return self._id
