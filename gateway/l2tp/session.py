"""One call (session) inside a tunnel: the session state machines of RFC 2661 7.4 for both
roles and both directions, and its data channel (RFC 2661 3.1, 5.4).

Incoming call: the LAC sends ICRQ, the LNS answers ICRP, the LAC confirms with ICCN.
Outgoing call: the LNS sends OCRQ, the LAC answers OCRP and, once connected, OCCN. Either
side ends a call with CDN. SLI (ACCMs) and WEN (error counters) are reported as they come.

Data sequencing: a Sequencing Required AVP in ICCN/OCCN makes sequence numbers mandatory
on the session; without it the LNS decides (``data_sequencing``) and the LAC follows the
S bit of what the LNS sends (RFC 2661 4.4.6, 5.4). Late data messages are dropped.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from gateway.l2tp.avp import Accm, Avp, CallErrors, Q931Cause, ResultCode, make
from gateway.l2tp.constants import CDN_TEXT, ERROR_TEXT, AvpType, CdnResult, ErrorCode, MessageType
from gateway.l2tp.events import (
    FrameReceived,
    LinkInfo,
    ProxyAuth,
    ProxyLcp,
    SessionDown,
    SessionKey,
    SessionUp,
)
from gateway.l2tp.message import ControlMessage, DataMessage, Header
from gateway.l2tp.reliable import seq_before, seq_next

if TYPE_CHECKING:
    from gateway.l2tp.tunnel import Tunnel


class SessionState(enum.Enum):
    WAIT_TUNNEL = "wait-tunnel"  # placed before its tunnel was up
    WAIT_REPLY = "wait-reply"  # ICRQ/OCRQ sent
    WAIT_CONNECT = "wait-connect"  # ICRP sent, or OCRP received
    ESTABLISHED = "established"
    CLOSED = "closed"


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Session:
    """A call: our session id, the peer's, its state, what we know of the call, data counters."""

    def __init__(self, tunnel: Tunnel, local_id: int, *, lac: bool, outgoing: bool, now: float) -> None:
        self.tunnel = tunnel
        self.local_id = local_id
        self.peer_id = 0
        self.lac = lac  # we are the LAC of this call
        self.outgoing = outgoing  # an outgoing call (OCRQ) rather than an incoming one (ICRQ)
        self.state = SessionState.WAIT_TUNNEL
        self.started = now
        self.up_since: float | None = None
        self.timeout_at: float | None = None
        # the call, as the requests and connects described it
        self.serial: int | None = None
        self.calling_number = b""
        self.called_number = b""
        self.sub_address = b""
        self.bearer_type: int | None = None
        self.framing_type: int | None = None
        self.minimum_bps: int | None = None
        self.maximum_bps: int | None = None
        self.tx_connect_speed: int | None = None
        self.rx_connect_speed: int | None = None
        self.physical_channel: int | None = None
        self.private_group: bytes | None = None
        self.proxy_lcp: ProxyLcp | None = None
        self.proxy_auth: ProxyAuth | None = None
        # data channel
        self.sequencing_required = False
        self.send_sequence = tunnel.settings.data_sequencing
        self.data_ns = 0
        self.data_nr = 0
        self.frames_in = 0
        self.frames_out = 0

    def __repr__(self) -> str:
        return f"Session({self.key}, peer={self.peer_id}, {self.state.value})"

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.tunnel.local_id, self.local_id)

    @property
    def _connect_kind(self) -> MessageType:
        return MessageType.OCCN if self.outgoing else MessageType.ICCN

    @property
    def up(self) -> bool:
        return self.state is SessionState.ESTABLISHED

    # -- placing and answering calls -------------------------------------------------------------

    def start(self, now: float) -> None:
        """Send the call request: ICRQ as the LAC (RFC 2661 6.10), OCRQ as the LNS (6.7)."""
        settings = self.tunnel.settings
        if self.bearer_type is None:
            self.bearer_type = settings.bearer_type
        avps = [make(AvpType.ASSIGNED_SESSION_ID, self.local_id),
                make(AvpType.CALL_SERIAL_NUMBER, self.serial or 0)]
        if self.outgoing:
            if self.framing_type is None:
                self.framing_type = settings.framing_type
            avps += [make(AvpType.MINIMUM_BPS, self.minimum_bps or 0),
                     make(AvpType.MAXIMUM_BPS, self.maximum_bps or settings.connect_speed),
                     make(AvpType.BEARER_TYPE, self.bearer_type),
                     make(AvpType.FRAMING_TYPE, self.framing_type),
                     make(AvpType.CALLED_NUMBER, self.called_number)]
            if self.sub_address:
                avps.append(make(AvpType.SUB_ADDRESS, self.sub_address))
            kind = MessageType.OCRQ
        else:
            avps.append(make(AvpType.BEARER_TYPE, self.bearer_type))
            if self.physical_channel is not None:
                avps.append(make(AvpType.PHYSICAL_CHANNEL_ID, self.physical_channel))
            for attribute, value in ((AvpType.CALLING_NUMBER, self.calling_number),
                                     (AvpType.CALLED_NUMBER, self.called_number),
                                     (AvpType.SUB_ADDRESS, self.sub_address)):
                if value:
                    avps.append(make(attribute, value))
            kind = MessageType.ICRQ
        self.tunnel.send(kind, avps, now, session_id=0)
        self.state = SessionState.WAIT_REPLY
        self.timeout_at = now + settings.setup_timeout

    def learn_request(self, msg: ControlMessage) -> None:
        """What an ICRQ or OCRQ says about the call (RFC 2661 6.7, 6.10)."""
        self.peer_id = _int(msg.value(AvpType.ASSIGNED_SESSION_ID)) or 0
        self.serial = _int(msg.value(AvpType.CALL_SERIAL_NUMBER))
        self.bearer_type = _int(msg.value(AvpType.BEARER_TYPE))
        self.framing_type = _int(msg.value(AvpType.FRAMING_TYPE))
        self.minimum_bps = _int(msg.value(AvpType.MINIMUM_BPS))
        self.maximum_bps = _int(msg.value(AvpType.MAXIMUM_BPS))
        self.physical_channel = _int(msg.value(AvpType.PHYSICAL_CHANNEL_ID))
        self.calling_number = bytes(msg.value(AvpType.CALLING_NUMBER, b""))  # type: ignore[call-overload]
        self.called_number = bytes(msg.value(AvpType.CALLED_NUMBER, b""))  # type: ignore[call-overload]
        self.sub_address = bytes(msg.value(AvpType.SUB_ADDRESS, b""))  # type: ignore[call-overload]

    def answer(self, now: float) -> None:
        """Answer a call request: ICRP as the LNS (6.11); OCRP then OCCN as the LAC (6.8, 6.9).

        As a LAC we have no line to dial: the call is connected as soon as it is accepted."""
        self.tunnel.send(MessageType.OCRP if self.outgoing else MessageType.ICRP,
                         [make(AvpType.ASSIGNED_SESSION_ID, self.local_id)], now, session_id=self.peer_id)
        if self.outgoing:
            self.tunnel.send(MessageType.OCCN, self._connect_avps(), now, session_id=self.peer_id)
            self._established(now)
        else:
            self.state = SessionState.WAIT_CONNECT
            self.timeout_at = now + self.tunnel.settings.setup_timeout

    def _connect_avps(self) -> list[Avp]:
        settings = self.tunnel.settings
        avps = [make(AvpType.TX_CONNECT_SPEED, settings.connect_speed),
                make(AvpType.FRAMING_TYPE, settings.framing_type)]
        if settings.data_sequencing:
            avps.append(make(AvpType.SEQUENCING_REQUIRED, True))
            self.sequencing_required = True
            self.send_sequence = True
        self.tx_connect_speed = settings.connect_speed
        self.framing_type = settings.framing_type
        return avps

    def _learn_connect(self, msg: ControlMessage) -> None:
        """What an ICCN or OCCN says about the connected call (RFC 2661 6.9, 6.12)."""
        self.tx_connect_speed = _int(msg.value(AvpType.TX_CONNECT_SPEED))
        self.rx_connect_speed = _int(msg.value(AvpType.RX_CONNECT_SPEED))
        self.framing_type = _int(msg.value(AvpType.FRAMING_TYPE))
        group = msg.value(AvpType.PRIVATE_GROUP_ID)
        self.private_group = group if isinstance(group, bytes) else None
        if msg.find(AvpType.SEQUENCING_REQUIRED) is not None:
            self.sequencing_required = True
            self.send_sequence = True
        lcp = [msg.value(t) for t in (AvpType.INITIAL_RECEIVED_LCP_CONFREQ, AvpType.LAST_SENT_LCP_CONFREQ,
                                      AvpType.LAST_RECEIVED_LCP_CONFREQ)]
        if any(v is not None for v in lcp):
            self.proxy_lcp = ProxyLcp(*lcp)  # type: ignore[arg-type]
        auth = [msg.find(t) for t in (AvpType.PROXY_AUTHEN_TYPE, AvpType.PROXY_AUTHEN_NAME,
                                      AvpType.PROXY_AUTHEN_CHALLENGE, AvpType.PROXY_AUTHEN_ID,
                                      AvpType.PROXY_AUTHEN_RESPONSE)]
        if any(a is not None for a in auth):
            kind, name, challenge, ident, response = (a.value if a is not None else None for a in auth)
            self.proxy_auth = ProxyAuth(_int(kind), name or b"", challenge or b"",  # type: ignore[arg-type]
                                        _int(ident), response or b"")  # type: ignore[arg-type]

    def _established(self, now: float) -> None:
        self.state = SessionState.ESTABLISHED
        self.timeout_at = None
        self.up_since = now
        self.tunnel.emit(SessionUp(
            self.key, self.tunnel.peer, self.peer_id, "outgoing" if self.outgoing else "incoming", self.lac,
            self.serial, _text(self.calling_number), _text(self.called_number), _text(self.sub_address),
            self.bearer_type, self.framing_type, self.tx_connect_speed, self.rx_connect_speed,
            self.physical_channel, self.private_group, self.send_sequence, self.proxy_lcp, self.proxy_auth))

    # -- messages for this session ---------------------------------------------------------------

    def on_message(self, kind: MessageType, msg: ControlMessage, now: float) -> None:
        state = self.state
        if kind is MessageType.CDN:
            self._on_cdn(msg)
        elif kind is MessageType.ICRP and state is SessionState.WAIT_REPLY and not self.outgoing:
            self.peer_id = _int(msg.value(AvpType.ASSIGNED_SESSION_ID)) or 0
            self.tunnel.send(MessageType.ICCN, self._connect_avps(), now, session_id=self.peer_id)
            self._established(now)
        elif kind is MessageType.OCRP and state is SessionState.WAIT_REPLY and self.outgoing:
            self.peer_id = _int(msg.value(AvpType.ASSIGNED_SESSION_ID)) or 0
            self.physical_channel = _int(msg.value(AvpType.PHYSICAL_CHANNEL_ID))
            self.state = SessionState.WAIT_CONNECT
        elif state is SessionState.WAIT_CONNECT and kind is self._connect_kind:
            self._learn_connect(msg)
            self._established(now)
        elif kind is MessageType.SLI and isinstance(accm := msg.value(AvpType.ACCM), Accm):
            self.tunnel.emit(LinkInfo(self.key, "SLI", send_accm=accm.send, receive_accm=accm.receive))
        elif kind is MessageType.WEN and isinstance(errors := msg.value(AvpType.CALL_ERRORS), CallErrors):
            self.tunnel.emit(LinkInfo(self.key, "WEN", call_errors=errors))
        else:
            self.tunnel.unexpected(msg, f"in session state {state.value}")

    def _on_cdn(self, msg: ControlMessage) -> None:
        result = msg.value(AvpType.RESULT_CODE)
        cause = msg.value(AvpType.Q931_CAUSE_CODE)
        if isinstance(result, ResultCode):
            self.down("cdn", result.text(CDN_TEXT, ERROR_TEXT), result.result, result.error,
                      cause.cause if isinstance(cause, Q931Cause) else None)
        else:
            self.down("cdn", "CDN without a Result Code")

    # -- ending ------------------------------------------------------------------------------------

    def close(self, now: float, result: int, error: int | None = None, text: str = "",
              reason: str = "closed") -> None:
        """Send CDN (RFC 2661 6.13) and forget the call."""
        if self.state is SessionState.CLOSED:
            return
        code = ResultCode(result, error, text.encode())
        if self.state is not SessionState.WAIT_TUNNEL:
            self.tunnel.send(MessageType.CDN, [make(AvpType.RESULT_CODE, code),
                                               make(AvpType.ASSIGNED_SESSION_ID, self.local_id)],
                             now, session_id=self.peer_id)
        self.down(reason, code.text(CDN_TEXT, ERROR_TEXT), result, error)

    def down(self, reason: str, text: str = "", result: int | None = None, error: int | None = None,
             cause: int | None = None) -> None:
        """Forget the call without a word to the peer (it ended it, or its tunnel went)."""
        if self.state is SessionState.CLOSED:
            return
        self.state = SessionState.CLOSED
        self.tunnel.forget_session(self)
        self.tunnel.emit(SessionDown(self.key, reason, text, None if result is None else int(result),
                                     None if error is None else int(error), cause))

    def on_timer(self, now: float) -> None:
        if self.timeout_at is not None and now >= self.timeout_at:
            result = CdnResult.TIMEOUT if self.lac else CdnResult.GENERAL_ERROR
            text = f"not established within {self.tunnel.settings.setup_timeout:g} s"
            self.close(now, result, ErrorCode.NO_ERROR, text, reason="setup_timeout")

    # -- data ----------------------------------------------------------------------------------------

    def wrap(self, frame: bytes) -> bytes:
        """A data message carrying ``frame`` to the peer."""
        ns = None
        if self.send_sequence:
            ns = self.data_ns
            self.data_ns = seq_next(self.data_ns)
        self.frames_out += 1
        return DataMessage(self.tunnel.peer_id, self.peer_id, frame, ns, 0 if ns is not None else None,
                           self.tunnel.settings.data_length_field).encode()

    def on_data(self, header: Header, payload: bytes) -> str | None:
        """Take a received data message: None when its frame was delivered, else a drop reason."""
        if self.state is not SessionState.ESTABLISHED:
            return "session_not_up"
        if header.ns is not None:
            if seq_before(header.ns, self.data_nr):
                return "data_out_of_order"
            self.data_nr = seq_next(header.ns)
        if self.lac and not self.sequencing_required:
            self.send_sequence = header.ns is not None  # the LNS decides (RFC 2661 5.4)
        if not payload:
            return "empty_frame"
        self.frames_in += 1
        self.tunnel.emit(FrameReceived(self.key, payload))
        return None

    def describe(self, now: float) -> dict[str, object]:
        return {
            "session": self.local_id, "peer_session": self.peer_id, "state": self.state.value,
            "call": "outgoing" if self.outgoing else "incoming", "lac": self.lac,
            "calling_number": _text(self.calling_number), "called_number": _text(self.called_number),
            "sequencing": self.send_sequence, "frames_in": self.frames_in, "frames_out": self.frames_out,
            "up_seconds": None if self.up_since is None else round(now - self.up_since, 1),
        }
