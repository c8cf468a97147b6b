"""One control connection (tunnel): the state machine of RFC 2661 7.2 in both roles, tunnel
authentication (5.1.1), keepalives (6.5), teardown (5.7), and the dispatch of session
messages to its calls (7.4).

Initiator: SCCRQ -> (SCCRP) -> SCCCN, established. Responder: (SCCRQ) -> SCCRP ->
(SCCCN), established. Either side ends the tunnel with StopCCN: the sender waits for its
acknowledgement; the receiver lingers a full retransmission cycle to acknowledge it again.
A message with an unknown mandatory AVP ends the tunnel or the session it belongs to
(RFC 2661 4.2).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from gateway.l2tp.auth import CHALLENGE_SIZE, challenge_response, response_matches
from gateway.l2tp.avp import NEVER_HIDDEN, Avp, ResultCode, make
from gateway.l2tp.constants import (
    CDN_TEXT,
    DEFAULT_PEER_WINDOW,
    ERROR_TEXT,
    PROTOCOL_VERSION,
    STOPCCN_TEXT,
    TUNNEL_MESSAGES,
    AvpType,
    CdnResult,
    ErrorCode,
    MessageType,
    StopCcnResult,
    avp_name,
)
from gateway.l2tp.events import Note, TunnelDown, TunnelUp
from gateway.l2tp.message import ControlMessage, Header
from gateway.l2tp.reliable import ReliableChannel
from gateway.l2tp.session import Session, SessionState

if TYPE_CHECKING:
    from gateway.l2tp.endpoint import L2tpEndpoint
    from gateway.l2tp.settings import L2tpSettings

#: AVPs without which a message cannot be acted on at all (the rest of RFC 2661 6's
#: required AVPs are noted when missing, and their absence tolerated)
ESSENTIAL_AVPS: dict[int, tuple[AvpType, ...]] = {
    MessageType.SCCRQ: (AvpType.ASSIGNED_TUNNEL_ID,),
    MessageType.SCCRP: (AvpType.ASSIGNED_TUNNEL_ID,),
    MessageType.ICRQ: (AvpType.ASSIGNED_SESSION_ID,),
    MessageType.OCRQ: (AvpType.ASSIGNED_SESSION_ID,),
    MessageType.ICRP: (AvpType.ASSIGNED_SESSION_ID,),
    MessageType.OCRP: (AvpType.ASSIGNED_SESSION_ID,),
    MessageType.WEN: (AvpType.CALL_ERRORS,),
    MessageType.SLI: (AvpType.ACCM,),
}
_VERSION_ERROR = (PROTOCOL_VERSION[0] << 8) | PROTOCOL_VERSION[1]  # highest version we support


class TunnelState(enum.Enum):
    IDLE = "idle"  # a responder before its SCCRQ was processed
    WAIT_CTL_REPLY = "wait-ctl-reply"  # SCCRQ sent
    WAIT_CTL_CONN = "wait-ctl-conn"  # SCCRP sent
    ESTABLISHED = "established"
    CLOSING = "closing"  # StopCCN sent, waiting for its acknowledgement
    LINGER = "linger"  # StopCCN received, acknowledging its retransmissions
    CLOSED = "closed"


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""


def _octets(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


class Tunnel:
    """A control connection with one peer (address, port) and the calls inside it."""

    def __init__(self, endpoint: L2tpEndpoint, local_id: int, peer: tuple[str, int], *, initiator: bool,
                 secret: bytes | None, now: float) -> None:
        self.endpoint = endpoint
        self.settings: L2tpSettings = endpoint.settings
        self.local_id = local_id
        self.peer = peer
        self.initiator = initiator
        self._secret = secret
        self.state = TunnelState.IDLE
        self.channel: ReliableChannel[ControlMessage] = ReliableChannel(
            self.settings.retransmit, self.settings.receive_window, now=now, counter=endpoint.count_control)
        self.peer_id = 0
        self.peer_host = b""
        self.peer_vendor = b""
        self.peer_firmware: int | None = None
        self.peer_framing: int | None = None
        self.peer_bearer: int | None = None
        self.peer_window = DEFAULT_PEER_WINDOW
        self.authenticated = False
        self._challenge: bytes | None = None
        self.tie_breaker: bytes | None = None
        self.sessions: dict[int, Session] = {}
        self.created = now
        self.up_since: float | None = None
        self.timeout_at: float | None = now + self.settings.setup_timeout
        self._serial = 0
        self._down_reported = False
        self._last_peer = peer

    def __repr__(self) -> str:
        return f"Tunnel({self.local_id}, peer={self.peer}, {self.state.value}, {len(self.sessions)} sessions)"

    @property
    def up(self) -> bool:
        return self.state is TunnelState.ESTABLISHED

    @property
    def secret(self) -> bytes | None:
        """The shared secret of this tunnel (never in a repr)."""
        return self._secret

    @property
    def closed(self) -> bool:
        return self.state is TunnelState.CLOSED

    def accepts_from(self, peer: tuple[str, int]) -> bool:
        """Whether a datagram from ``peer`` belongs here: ports are fixed once the peer replied,
        but an SCCRP may come from another port than the one we sent SCCRQ to (RFC 2661 8.1)."""
        if peer == self.peer:
            return True
        return self.state is TunnelState.WAIT_CTL_REPLY and peer[0] == self.peer[0]

    # -- what sessions and the endpoint use ----------------------------------------------------

    def emit(self, event: object) -> None:
        self.endpoint.emit(event)

    def note(self, what: str, level: str = "info", **fields: object) -> None:
        self.endpoint.emit(Note(what, level, (("tunnel", str(self.local_id)),
                                              *((k, str(v)) for k, v in fields.items()))))

    def send(self, kind: MessageType, avps: Iterable[Avp], now: float, session_id: int = 0) -> None:
        """Send a control message reliably (hiding the AVPs ``hide_avps`` names)."""
        out = list(avps)
        if self._secret is not None and self.settings.hide_avps:
            out = [replace(a, hidden=True) if a.type in self.settings.hide_avps and a.type not in NEVER_HIDDEN
                   else a for a in out]
        body = ControlMessage(int(kind), tuple(out)).body(secret=self._secret, random=self.endpoint.random)
        self.channel.send(session_id, body, kind.name, now)

    def forget_session(self, session: Session) -> None:
        self.sessions.pop(session.local_id, None)

    def unexpected(self, msg: ControlMessage, where: str) -> None:
        self.endpoint.drop("unexpected_message")
        self.note(f"{msg.name} ignored {where}", "warning", session=msg.session_id)

    def flush(self) -> None:
        for data in self.channel.take():
            self.endpoint.transmit(data, self.peer)

    # -- opening -------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Send SCCRQ (RFC 2661 6.1) as the initiator."""
        avps = self._identity_avps()
        if self.settings.tie_breaker:
            self.tie_breaker = self.endpoint.random(8)
            avps.append(make(AvpType.TIE_BREAKER, self.tie_breaker))
        if self._secret is not None:
            self._challenge = self.endpoint.random(CHALLENGE_SIZE)
            avps.append(make(AvpType.CHALLENGE, self._challenge))
        self.send(MessageType.SCCRQ, avps, now)
        self.state = TunnelState.WAIT_CTL_REPLY
        self.settle(now)

    def _identity_avps(self) -> list[Avp]:
        s = self.settings
        avps = [make(AvpType.PROTOCOL_VERSION, PROTOCOL_VERSION),
                make(AvpType.HOST_NAME, s.host_name),
                make(AvpType.FRAMING_CAPABILITIES, s.framing_capabilities),
                make(AvpType.BEARER_CAPABILITIES, s.bearer_capabilities),
                make(AvpType.FIRMWARE_REVISION, s.firmware_revision),
                make(AvpType.ASSIGNED_TUNNEL_ID, self.local_id),
                make(AvpType.RECEIVE_WINDOW_SIZE, s.receive_window)]
        if s.vendor_name:
            avps.append(make(AvpType.VENDOR_NAME, s.vendor_name))
        return avps

    def _learn_peer(self, msg: ControlMessage) -> None:
        self.peer_id = int(msg.value(AvpType.ASSIGNED_TUNNEL_ID, 0))  # type: ignore[call-overload]
        self.channel.peer_tunnel_id = self.peer_id
        self.peer_host = bytes(msg.value(AvpType.HOST_NAME, b""))  # type: ignore[call-overload]
        self.peer_vendor = bytes(msg.value(AvpType.VENDOR_NAME, b""))  # type: ignore[call-overload]
        firmware = msg.value(AvpType.FIRMWARE_REVISION)
        self.peer_firmware = firmware if isinstance(firmware, int) else None
        framing = msg.value(AvpType.FRAMING_CAPABILITIES)
        self.peer_framing = framing if isinstance(framing, int) else None
        bearer = msg.value(AvpType.BEARER_CAPABILITIES)
        self.peer_bearer = bearer if isinstance(bearer, int) else None
        window = msg.value(AvpType.RECEIVE_WINDOW_SIZE)
        self.peer_window = window if isinstance(window, int) and window > 0 else DEFAULT_PEER_WINDOW
        self.channel.peer_window = self.peer_window

    def _version_ok(self, msg: ControlMessage, now: float) -> bool:
        version = msg.value(AvpType.PROTOCOL_VERSION)
        if version is None or version == PROTOCOL_VERSION:
            return True
        self.endpoint.refuse("bad_version")
        self._stop(now, StopCcnResult.BAD_PROTOCOL_VERSION, _VERSION_ERROR,
                   f"protocol version {version[0]}.{version[1]} is not 1.0", reason="bad_version")  # type: ignore[index]
        return False

    def _on_sccrq(self, msg: ControlMessage, now: float) -> None:
        if self.state is not TunnelState.IDLE:
            self.unexpected(msg, f"in tunnel state {self.state.value}")
            return
        self._learn_peer(msg)
        if not self._version_ok(msg, now):
            return
        avps = self._identity_avps()
        challenge = msg.value(AvpType.CHALLENGE)
        if isinstance(challenge, bytes):
            if self._secret is None:
                self._auth_failed(now, "the peer challenged us, but we have no shared secret for it")
                return
            avps.append(make(AvpType.CHALLENGE_RESPONSE, challenge_response(MessageType.SCCRP, self._secret,
                                                                             challenge)))
        if self._secret is not None:
            self._challenge = self.endpoint.random(CHALLENGE_SIZE)
            avps.append(make(AvpType.CHALLENGE, self._challenge))
        self.send(MessageType.SCCRP, avps, now)
        self.state = TunnelState.WAIT_CTL_CONN

    def _on_sccrp(self, msg: ControlMessage, now: float) -> None:
        if self.state is not TunnelState.WAIT_CTL_REPLY:
            self.unexpected(msg, f"in tunnel state {self.state.value}")
            return
        self.peer = self._last_peer  # the port the peer answered from (RFC 2661 8.1)
        self._learn_peer(msg)
        if not self._version_ok(msg, now):
            return
        if not self._peer_proved(msg, MessageType.SCCRP, now):
            return
        avps: list[Avp] = []
        challenge = msg.value(AvpType.CHALLENGE)
        if isinstance(challenge, bytes):
            if self._secret is None:
                self._auth_failed(now, "the peer challenged us, but we have no shared secret for it")
                return
            avps.append(make(AvpType.CHALLENGE_RESPONSE, challenge_response(MessageType.SCCCN, self._secret,
                                                                             challenge)))
        self.send(MessageType.SCCCN, avps, now)
        self._established(now)

    def _on_scccn(self, msg: ControlMessage, now: float) -> None:
        if self.state is not TunnelState.WAIT_CTL_CONN:
            self.unexpected(msg, f"in tunnel state {self.state.value}")
            return
        if self._peer_proved(msg, MessageType.SCCCN, now):
            self._established(now)

    def _peer_proved(self, msg: ControlMessage, carrier: MessageType, now: float) -> bool:
        """With a secret, the peer must answer our challenge (RFC 2661 5.1.1)."""
        if self._secret is None or self._challenge is None:
            return True
        response = msg.value(AvpType.CHALLENGE_RESPONSE)
        if response_matches(carrier, self._secret, self._challenge, response):
            self.authenticated = True
            return True
        self._auth_failed(now, f"{carrier.name} without a Challenge Response" if response is None
                          else f"the Challenge Response in {carrier.name} is wrong")
        return False

    def _auth_failed(self, now: float, why: str) -> None:
        self.endpoint.refuse("auth_failed")
        self._stop(now, StopCcnResult.NOT_AUTHORIZED, ErrorCode.NO_ERROR, why, reason="auth_failed")

    def _established(self, now: float) -> None:
        self.state = TunnelState.ESTABLISHED
        self.timeout_at = None
        self.up_since = now
        self.emit(TunnelUp(self.local_id, self.peer, self.peer_id, _text(self.peer_host),
                           _text(self.peer_vendor), self.initiator, self.authenticated, self.peer_firmware,
                           self.peer_window))
        for session in list(self.sessions.values()):
            if session.state is SessionState.WAIT_TUNNEL:
                session.start(now)

    # -- receiving -----------------------------------------------------------------------------

    def on_control(self, msg: ControlMessage, peer: tuple[str, int], now: float) -> None:
        self._last_peer = peer
        for ready in self.channel.receive(msg.ns, msg.nr, None if msg.is_zlb else msg, now):
            self._dispatch(ready, now)
        self.settle(now)

    def _dispatch(self, msg: ControlMessage, now: float) -> None:
        if self.state in (TunnelState.LINGER, TunnelState.CLOSED):
            return
        if self.state is TunnelState.CLOSING and msg.type != MessageType.STOPCCN:
            return
        if self.state is TunnelState.IDLE and msg.type == MessageType.SCCRQ:
            self._learn_peer(msg)  # where to send a StopCCN, whatever else is wrong with it
        try:
            kind = MessageType(msg.type)
        except ValueError:
            if msg.type_mandatory:
                self._stop(now, StopCcnResult.GENERAL_ERROR, ErrorCode.BAD_VALUE,
                           f"unknown message type {msg.type} with the M bit", reason="unknown_mandatory")
            else:
                self.note(f"ignored unknown message type {msg.type}", "debug")
            return
        unknown = next((a for a in msg.avps if a.mandatory and not a.known), None)
        if unknown is not None:
            name = avp_name(unknown.vendor, unknown.type)
            text = f"unknown mandatory AVP {name} in {kind.name}"
            if not unknown.readable:
                text = f"hidden AVP {name} in {kind.name}, but no shared secret"
            self._refuse_unknown(kind, msg, text, now)
            return
        for avp in msg.avps:
            if not avp.known:
                self.note(f"ignored AVP {avp_name(avp.vendor, avp.type)} in {kind.name}", "debug")
        missing = msg.missing()
        essential = [t for t in ESSENTIAL_AVPS.get(kind, ()) if t in missing]
        if essential:
            self.endpoint.drop("missing_avp")
            self.note(f"{kind.name} without {', '.join(t.name for t in essential)} ignored (RFC 2661 6)",
                      "warning")
            return
        if missing:
            self.note(f"{kind.name} lacks {', '.join(t.name for t in missing)} (RFC 2661 6)", "debug")
        if kind in TUNNEL_MESSAGES:
            self._TUNNEL_HANDLERS[kind](self, msg, now)
        elif self.state is not TunnelState.ESTABLISHED:
            self.unexpected(msg, f"in tunnel state {self.state.value}")
        elif kind in (MessageType.ICRQ, MessageType.OCRQ):
            self._on_call_request(kind, msg, now)
        else:
            session = self._session_of(msg)
            if session is None:
                self.endpoint.drop("unknown_session")
                self.note(f"{kind.name} for unknown session {msg.session_id}", "debug")
            else:
                session.on_message(kind, msg, now)

    def _refuse_unknown(self, kind: MessageType, msg: ControlMessage, text: str, now: float) -> None:
        """RFC 2661 4.2: an unknown mandatory AVP ends the session, or the whole tunnel."""
        self.endpoint.refuse("unknown_mandatory")
        if kind in TUNNEL_MESSAGES or self.state is not TunnelState.ESTABLISHED:
            self._stop(now, StopCcnResult.GENERAL_ERROR, ErrorCode.UNKNOWN_MANDATORY_AVP, text,
                       reason="unknown_mandatory")
            return
        if kind in (MessageType.ICRQ, MessageType.OCRQ):
            peer_session = msg.value(AvpType.ASSIGNED_SESSION_ID)
            if isinstance(peer_session, int) and peer_session:
                self._refuse_call(peer_session, now, CdnResult.GENERAL_ERROR, ErrorCode.UNKNOWN_MANDATORY_AVP,
                                  text)
            return
        session = self._session_of(msg)
        if session is not None:
            session.close(now, CdnResult.GENERAL_ERROR, ErrorCode.UNKNOWN_MANDATORY_AVP, text,
                          reason="unknown_mandatory")

    def _session_of(self, msg: ControlMessage) -> Session | None:
        session = self.sessions.get(msg.session_id) if msg.session_id else None
        if session is None and msg.type == MessageType.CDN and msg.session_id == 0:
            peer_session = msg.value(AvpType.ASSIGNED_SESSION_ID)
            session = next((s for s in self.sessions.values() if s.peer_id and s.peer_id == peer_session),
                           None)
        return session

    def _on_call_request(self, kind: MessageType, msg: ControlMessage, now: float) -> None:
        outgoing = kind is MessageType.OCRQ
        peer_session = msg.value(AvpType.ASSIGNED_SESSION_ID)
        assert isinstance(peer_session, int)
        if peer_session == 0:
            self.endpoint.drop("missing_avp")
            self.note(f"{kind.name} with Assigned Session ID 0 ignored", "warning")
            return
        if any(s.peer_id == peer_session for s in self.sessions.values()):
            self.unexpected(msg, f"(the peer's session {peer_session} exists already)")
            return
        if not (self.settings.accept_outgoing_calls if outgoing else self.settings.accept_incoming_calls):
            self.endpoint.refuse("calls_not_accepted")
            self._refuse_call(peer_session, now, CdnResult.NO_FACILITIES_PERMANENT, ErrorCode.NO_ERROR,
                              f"{'outgoing' if outgoing else 'incoming'} calls are not accepted here")
            return
        if len(self.sessions) >= self.settings.max_sessions_per_tunnel:
            self.endpoint.refuse("max_sessions")
            self._refuse_call(peer_session, now, CdnResult.NO_FACILITIES_TEMPORARY, ErrorCode.NO_RESOURCES,
                              f"{len(self.sessions)} sessions on this tunnel already")
            return
        session = Session(self, self._allocate_session_id(), lac=outgoing, outgoing=outgoing, now=now)
        session.learn_request(msg)
        self.sessions[session.local_id] = session
        session.answer(now)

    def _refuse_call(self, peer_session: int, now: float, result: int, error: int, text: str) -> None:
        code = ResultCode(result, error, text.encode())
        self.send(MessageType.CDN, [make(AvpType.RESULT_CODE, code), make(AvpType.ASSIGNED_SESSION_ID, 0)],
                  now, session_id=peer_session)
        self.note("call refused", "warning", peer_session=peer_session,
                  result=code.text(CDN_TEXT, ERROR_TEXT))

    def _on_stopccn(self, msg: ControlMessage, now: float) -> None:
        result = msg.value(AvpType.RESULT_CODE)
        if not self.peer_id:  # refused before the peer's SCCRP named its id: acknowledge to the id it names
            self.peer_id = int(msg.value(AvpType.ASSIGNED_TUNNEL_ID, 0))  # type: ignore[call-overload]
            self.channel.peer_tunnel_id = self.peer_id
        self.channel.drop_pending()
        self.channel.ack_now(now)
        self._sessions_down("tunnel_down", "the peer closed the tunnel")
        self.state = TunnelState.LINGER
        self.timeout_at = now + self.settings.linger_time
        if isinstance(result, ResultCode):
            self._report_down("stopccn", result.text(STOPCCN_TEXT, ERROR_TEXT), result.result, result.error)
        else:
            self._report_down("stopccn", "StopCCN without a Result Code")

    def _on_hello(self, msg: ControlMessage, now: float) -> None:
        """A keepalive: its acknowledgement is all it asks for (RFC 2661 6.5)."""

    _TUNNEL_HANDLERS = {
        MessageType.SCCRQ: _on_sccrq,
        MessageType.SCCRP: _on_sccrp,
        MessageType.SCCCN: _on_scccn,
        MessageType.STOPCCN: _on_stopccn,
        MessageType.HELLO: _on_hello,
    }

    def on_data(self, header: Header, payload: bytes, now: float) -> str | None:
        """Take a data message: None when delivered, else a drop reason."""
        if self.state is not TunnelState.ESTABLISHED:
            return "tunnel_not_up"
        session = self.sessions.get(header.session_id)
        if session is None:
            return "unknown_session"
        reason = session.on_data(header, payload)
        if reason is None:
            self.channel.last_heard = now  # data counts as hearing from the peer (RFC 2661 6.5)
        return reason

    # -- calls -------------------------------------------------------------------------------------

    def _allocate_session_id(self) -> int:
        for _ in range(16):
            sid = int.from_bytes(self.endpoint.random(2), "big")
            if sid and sid not in self.sessions:
                return sid
        return next(i for i in range(1, 0x10000) if i not in self.sessions)

    def place_call(self, now: float, *, outgoing: bool, calling_number: str | bytes = b"",
                   called_number: str | bytes = b"", sub_address: str | bytes = b"",
                   physical_channel: int | None = None, minimum_bps: int | None = None,
                   maximum_bps: int | None = None) -> Session:
        """Place a call: ICRQ (we are the LAC) or OCRQ (we are the LNS), now or once the
        tunnel is up."""
        session = Session(self, self._allocate_session_id(), lac=not outgoing, outgoing=outgoing, now=now)
        self._serial = (self._serial + 1) & 0xFFFFFFFF
        session.serial = self._serial
        session.calling_number = _octets(calling_number)
        session.called_number = _octets(called_number)
        session.sub_address = _octets(sub_address)
        session.physical_channel = physical_channel
        session.minimum_bps = minimum_bps
        session.maximum_bps = maximum_bps
        self.sessions[session.local_id] = session
        if self.up:
            session.start(now)
        self.settle(now)
        return session

    # -- ending --------------------------------------------------------------------------------------

    def close(self, now: float, result: int = StopCcnResult.GENERAL_REQUEST, error: int | None = None,
              text: str = "") -> None:
        """End the tunnel with a StopCCN (RFC 2661 6.4), the shell asked."""
        self._stop(now, result, error, text, reason="closed")
        self.settle(now)

    def _stop(self, now: float, result: int, error: int | None, text: str, *, reason: str) -> None:
        if self.state in (TunnelState.CLOSING, TunnelState.LINGER, TunnelState.CLOSED):
            return
        code = ResultCode(result, error, text.encode())
        self._sessions_down("tunnel_down", "the tunnel is closing")
        if self.peer_id:
            self.send(MessageType.STOPCCN, [make(AvpType.ASSIGNED_TUNNEL_ID, self.local_id),
                                            make(AvpType.RESULT_CODE, code)], now)
            self.state = TunnelState.CLOSING
        else:
            self.state = TunnelState.CLOSED  # the peer never told us where to send a StopCCN
        self.timeout_at = None
        self._report_down(reason, code.text(STOPCCN_TEXT, ERROR_TEXT), result, error)

    def discard(self, reason: str, text: str) -> None:
        """Drop the tunnel without a word to the peer (a lost tie break, a peer that restarted)."""
        if self.state is TunnelState.CLOSED:
            return
        self._sessions_down("tunnel_down", text)
        self.channel.drop_pending()
        self.state = TunnelState.CLOSED
        self._report_down(reason, text)

    def _sessions_down(self, reason: str, text: str) -> None:
        for session in list(self.sessions.values()):
            session.down(reason, text)

    def _report_down(self, reason: str, text: str, result: int | None = None,
                     error: int | None = None) -> None:
        if not self._down_reported:
            self._down_reported = True
            as_int = (None if result is None else int(result)), (None if error is None else int(error))
            self.emit(TunnelDown(self.local_id, self.peer, reason, text, *as_int))

    # -- time -----------------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        times = [self.channel.next_deadline(), self.timeout_at]
        if self.state is TunnelState.ESTABLISHED:
            if self.channel.idle:
                times.append(self.channel.last_heard + self.settings.hello_interval)
            times += [s.timeout_at for s in self.sessions.values()]
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def on_timer(self, now: float) -> None:
        if self.timeout_at is not None and now >= self.timeout_at:
            self.timeout_at = None
            if self.state is TunnelState.LINGER:
                self.state = TunnelState.CLOSED
            elif self.state in (TunnelState.IDLE, TunnelState.WAIT_CTL_REPLY, TunnelState.WAIT_CTL_CONN):
                text = f"not established within {self.settings.setup_timeout:g} s"
                self._stop(now, StopCcnResult.GENERAL_ERROR, ErrorCode.NO_ERROR, text, reason="setup_timeout")
        if self.state is TunnelState.ESTABLISHED:
            if self.channel.idle and now >= self.channel.last_heard + self.settings.hello_interval:
                self.send(MessageType.HELLO, [], now)
            for session in list(self.sessions.values()):
                session.on_timer(now)
        self.settle(now)

    def settle(self, now: float) -> None:
        """Whatever the reliable channel has due, then the consequences of its state."""
        self.channel.poll(now)
        if self.channel.failed and self.state is not TunnelState.CLOSED:
            if self.state is TunnelState.CLOSING:
                self.note("StopCCN never acknowledged", "debug")
                self.state = TunnelState.CLOSED
            else:
                self._sessions_down("tunnel_down", "the peer stopped answering")
                self.state = TunnelState.CLOSED
                waiting = ", ".join(self.channel.outstanding) or "a message"
                self._report_down("timeout", f"no acknowledgement after {self.settings.retransmit.retries} "
                                             f"retransmissions of {waiting}")
        if self.state is TunnelState.CLOSING and self.channel.idle:
            self.state = TunnelState.CLOSED
        self.flush()

    def describe(self, now: float) -> dict[str, object]:
        return {
            "tunnel": self.local_id, "peer": f"{self.peer[0]}:{self.peer[1]}", "peer_tunnel": self.peer_id,
            "state": self.state.value, "initiator": self.initiator, "host_name": _text(self.peer_host),
            "vendor": _text(self.peer_vendor), "authenticated": self.authenticated,
            "up_seconds": None if self.up_since is None else round(now - self.up_since, 1),
            "control": dict(self.channel.stats), "outstanding": self.channel.outstanding,
            "sessions": [s.describe(now) for s in self.sessions.values()],
        }
