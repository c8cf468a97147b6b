"""The L2TP endpoint (RFC 2661): every tunnel and call of one gateway, behind a sans-IO
interface in the manner of aioquic and h11.

The shell feeds it the UDP payloads that arrived on port 1701 (L2TP that came out of an
IPsec SA) with the peer's address and port, collects the datagrams to send (always to the
port the peer uses: a LAC behind NAT need not use 1701), the events, and the time of the
next timer. The endpoint plays the LNS (answers SCCRQ and ICRQ) and the LAC (opens tunnels,
places calls, answers OCRQ) as its settings allow, both at once if asked.

It never touches a socket, a clock or a thread: time is a parameter and randomness (ids,
challenges, tie breakers, random vectors) comes from the injected ``random``. Malformed
input is counted in ``drops`` by reason and never raises; refused tunnels and calls are
counted in ``refusals``. Every table is bounded.

A shell drives it like this (``sock`` a UDP socket on 1701 inside the IPsec policy)::

    ep = L2tpEndpoint(L2tpSettings(host_name="gw"), random=os.urandom)
    ep.receive(payload, (src_address, src_port), loop.time())   # for every datagram
    for data, peer in ep.datagrams_to_send():                   # after every call into ep
        sock.sendto(data, peer)
    while (event := ep.next_event()) is not None:               # TunnelUp, SessionUp, FrameReceived...
        handle(event)
    when = ep.get_timer()                                       # re-arm one timer; at `when`:
    ep.handle_timer(loop.time())
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gateway.l2tp.avp import Accm, CallErrors, ResultCode, make
from gateway.l2tp.constants import AvpType, CdnResult, ErrorCode, MessageType, StopCcnResult
from gateway.l2tp.errors import L2tpMalformed, L2tpRefused
from gateway.l2tp.events import L2tpEvent, Note, SessionKey
from gateway.l2tp.message import ControlMessage, Header, decode_control, decode_header, encode_control
from gateway.l2tp.reliable import seq_next
from gateway.l2tp.session import Session
from gateway.l2tp.settings import L2tpSettings
from gateway.l2tp.tunnel import Tunnel, TunnelState

Address = tuple[str, int]


class L2tpEndpoint:
    """All L2TP tunnels of this gateway: ``receive`` / ``datagrams_to_send`` / ``next_event`` /
    ``get_timer`` / ``handle_timer``, plus the commands of the shell (open, call, send, close)."""

    def __init__(self, settings: L2tpSettings | None = None, *, random: Callable[[int], bytes],
                 **overrides: Any) -> None:
        base = settings or L2tpSettings()
        self.settings = replace(base, **overrides) if overrides else base
        self._random = random
        self._tunnels: dict[int, Tunnel] = {}
        self._answered: dict[tuple[str, int, int], int] = {}  # (address, port, peer tunnel id) -> ours
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[L2tpEvent] = deque()
        #: input discarded, by reason (malformed, unknown_tunnel, wrong_peer, ...)
        self.drops: dict[str, int] = {}
        #: tunnels and calls refused, by reason (max_tunnels, auth_failed, ...)
        self.refusals: dict[str, int] = {}
        #: control channel totals over all tunnels: retransmissions, duplicates, reordered,
        #: beyond_window, bad_nr, zlb_sent (RFC 2661 5.8)
        self.control: dict[str, int] = {}

    # -- what tunnels use -------------------------------------------------------------------

    def random(self, n: int) -> bytes:
        return self._random(n)

    def emit(self, event: object) -> None:
        self._events.append(event)  # type: ignore[arg-type]

    def transmit(self, data: bytes, peer: Address) -> None:
        self._out.append((data, peer))

    def drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def refuse(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def count_control(self, what: str) -> None:
        self.control[what] = self.control.get(what, 0) + 1
        if what == "beyond_window":
            self.drop("control_beyond_window")  # a control message we had no room to hold

    def _note(self, what: str, level: str = "info", **fields: object) -> None:
        self.emit(Note(what, level, tuple((k, str(v)) for k, v in fields.items())))

    # -- the shell's interface ----------------------------------------------------------------

    def receive(self, data: bytes, peer: Address, now: float) -> None:
        """Take a UDP payload from ``peer`` (address, port)."""
        try:
            header, body = decode_header(data)
            if header.control:
                self._on_control(header, body, peer, now)
            else:
                self._on_data(header, body, peer, now)
        except L2tpMalformed as exc:
            self.drop(exc.reason)
        self._sweep()

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> L2tpEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = [t for t in (tunnel.next_deadline() for tunnel in self._tunnels.values()) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for tunnel in list(self._tunnels.values()):
            deadline = tunnel.next_deadline()
            if deadline is not None and now >= deadline:
                tunnel.on_timer(now)
        self._sweep()

    # -- commands -------------------------------------------------------------------------------

    def open_tunnel(self, peer: Address, now: float, *, secret: bytes | None = None) -> int:
        """Open a tunnel to an LNS (or any L2TP peer) by sending SCCRQ; our tunnel id. With a
        secret (given, or configured for the peer's address) the peer must prove it."""
        if len(self._tunnels) >= self.settings.max_tunnels:
            self.refuse("max_tunnels")
            raise L2tpRefused(f"{len(self._tunnels)} tunnels already (max_tunnels)")
        tunnel = Tunnel(self, self._allocate_tunnel_id(), peer, initiator=True,
                        secret=secret if secret is not None else self.settings.secret_for(peer[0]), now=now)
        self._tunnels[tunnel.local_id] = tunnel
        tunnel.start(now)
        self._sweep()
        return tunnel.local_id

    def place_call(self, tunnel_id: int, now: float, *, outgoing: bool = False,
                   calling_number: str | bytes = b"", called_number: str | bytes = b"",
                   sub_address: str | bytes = b"", physical_channel: int | None = None,
                   minimum_bps: int | None = None, maximum_bps: int | None = None) -> SessionKey:
        """Place a call on a tunnel: an incoming call (ICRQ, we are the LAC) or, with
        ``outgoing``, ask the peer LAC to dial out (OCRQ, we are the LNS). A call placed
        before the tunnel is up goes out when it is. SessionUp or SessionDown tells the end."""
        tunnel = self._tunnel(tunnel_id)
        if tunnel.state in (TunnelState.CLOSING, TunnelState.LINGER, TunnelState.CLOSED):
            raise L2tpRefused(f"tunnel {tunnel_id} is {tunnel.state.value}")
        if len(tunnel.sessions) >= self.settings.max_sessions_per_tunnel:
            self.refuse("max_sessions")
            raise L2tpRefused(f"tunnel {tunnel_id} has {len(tunnel.sessions)} sessions "
                              "(max_sessions_per_tunnel)")
        session = tunnel.place_call(now, outgoing=outgoing, calling_number=calling_number,
                                    called_number=called_number, sub_address=sub_address,
                                    physical_channel=physical_channel, minimum_bps=minimum_bps,
                                    maximum_bps=maximum_bps)
        return session.key

    def send_frame(self, session: SessionKey, frame: bytes) -> bool:
        """Send a PPP frame on an established session; False (and nothing sent) otherwise."""
        found = self._session(session)
        if found is None or not found.up or not found.tunnel.up:
            return False
        self.transmit(found.wrap(frame), found.tunnel.peer)
        return True

    def set_link_info(self, session: SessionKey, now: float, *, send_accm: int, receive_accm: int) -> None:
        """Send SLI with the ACCMs PPP negotiated (RFC 2661 6.16; the LNS tells the LAC)."""
        found = self._established(session)
        found.tunnel.send(MessageType.SLI, [make(AvpType.ACCM, Accm(send_accm, receive_accm))], now,
                          session_id=found.peer_id)
        found.tunnel.settle(now)

    def report_call_errors(self, session: SessionKey, now: float, errors: CallErrors) -> None:
        """Send WEN with the call's error counters (RFC 2661 6.14; the LAC tells the LNS)."""
        found = self._established(session)
        found.tunnel.send(MessageType.WEN, [make(AvpType.CALL_ERRORS, errors)], now, session_id=found.peer_id)
        found.tunnel.settle(now)

    def close_session(self, session: SessionKey, now: float, *, result: int = CdnResult.ADMINISTRATIVE,
                      error: int | None = None, message: str = "") -> bool:
        """End a call with CDN; False when there is no such call (any more)."""
        found = self._session(session)
        if found is None:
            return False
        found.close(now, result, error, message)
        found.tunnel.settle(now)
        self._sweep()
        return True

    def close_tunnel(self, tunnel_id: int, now: float, *, result: int = StopCcnResult.GENERAL_REQUEST,
                     error: int | None = None, message: str = "") -> bool:
        """End a tunnel and its calls with StopCCN; False when there is no such tunnel."""
        tunnel = self._tunnels.get(tunnel_id)
        if tunnel is None or tunnel.closed:
            return False
        tunnel.close(now, result, error, message)
        self._sweep()
        return True

    def close_all(self, now: float, *, message: str = "shutting down") -> None:
        """StopCCN on every tunnel (the gateway stops; RFC 2661 result 6)."""
        for tunnel in list(self._tunnels.values()):
            tunnel.close(now, StopCcnResult.SHUTTING_DOWN, ErrorCode.NO_ERROR if message else None, message)
        self._sweep()

    # -- reporting ------------------------------------------------------------------------------------

    @property
    def tunnel_ids(self) -> list[int]:
        return [t.local_id for t in self._tunnels.values() if not t.closed]

    def tunnel_state(self, tunnel_id: int) -> str | None:
        tunnel = self._tunnels.get(tunnel_id)
        return None if tunnel is None else tunnel.state.value

    def session_state(self, session: SessionKey) -> str | None:
        found = self._session(session)
        return None if found is None else found.state.value

    def sessions(self) -> list[SessionKey]:
        return [s.key for t in self._tunnels.values() for s in t.sessions.values()]

    def describe(self, now: float) -> list[dict[str, object]]:
        """Every tunnel and its sessions, for the control socket and ``gateway status``."""
        return [t.describe(now) for t in self._tunnels.values()]

    # -- receiving ------------------------------------------------------------------------------------

    def _on_control(self, header: Header, body: bytes, peer: Address, now: float) -> None:
        if header.tunnel_id == 0:
            msg = decode_control(header, body, secret=self.settings.secret_for(peer[0]))
            if msg.type != MessageType.SCCRQ:
                self.drop("unknown_tunnel")
                return
            self._on_sccrq(msg, peer, now)
            return
        tunnel = self._tunnels.get(header.tunnel_id)
        if tunnel is None:
            self.drop("unknown_tunnel")
            return
        if not tunnel.accepts_from(peer):
            self.drop("wrong_peer")
            return
        tunnel.on_control(decode_control(header, body, secret=tunnel.secret), peer, now)

    def _on_sccrq(self, msg: ControlMessage, peer: Address, now: float) -> None:
        peer_tunnel = msg.value(AvpType.ASSIGNED_TUNNEL_ID)
        if not isinstance(peer_tunnel, int) or peer_tunnel == 0:
            raise L2tpMalformed("SCCRQ without an Assigned Tunnel ID")
        key = (peer[0], peer[1], peer_tunnel)
        existing = self._tunnels.get(self._answered.get(key, 0))
        if existing is not None and not existing.closed:
            if existing.state in (TunnelState.CLOSING, TunnelState.LINGER):
                pass  # that tunnel is over (it lingers on for its StopCCN): this is a new one
            elif existing.up_since is None or now - existing.up_since < self.settings.linger_time:
                existing.on_control(msg, peer, now)  # a retransmission or a late copy: acknowledged again
                return
            else:
                # up for longer than any copy of the old SCCRQ can wander: the peer started over
                existing.discard("replaced", "the peer sent a new SCCRQ with the same tunnel id")
                self._note("tunnel replaced by a new SCCRQ", "warning", tunnel=existing.local_id, peer=peer)
        if not self.settings.accept_tunnels:
            self.refuse("tunnels_not_accepted")
            self._stateless_stop(msg, peer, StopCcnResult.NOT_AUTHORIZED, "tunnels are not accepted here")
            return
        if not self._tie_break(msg, peer):
            return
        if len(self._tunnels) >= self.settings.max_tunnels:
            self.refuse("max_tunnels")
            self._stateless_stop(msg, peer, StopCcnResult.GENERAL_ERROR, "too many tunnels",
                                 ErrorCode.NO_RESOURCES)
            return
        tunnel = Tunnel(self, self._allocate_tunnel_id(), peer, initiator=False,
                        secret=self.settings.secret_for(peer[0]), now=now)
        self._tunnels[tunnel.local_id] = tunnel
        self._answered[key] = tunnel.local_id
        tunnel.on_control(msg, peer, now)

    def _tie_break(self, msg: ControlMessage, peer: Address) -> bool:
        """Whether to answer an SCCRQ from a peer we sent an SCCRQ to ourselves (RFC 2661
        4.4.3): the lower Tie Breaker wins, a Tie Breaker wins over none, and equal values
        lose both; without any Tie Breaker both tunnels go ahead."""
        theirs = msg.value(AvpType.TIE_BREAKER)
        for tunnel in list(self._tunnels.values()):
            racing = tunnel.initiator and tunnel.state is TunnelState.WAIT_CTL_REPLY
            if not racing or tunnel.peer[0] != peer[0]:
                continue
            ours = tunnel.tie_breaker
            if ours is None and theirs is None:
                continue
            if ours is not None and (theirs is None or ours < theirs):  # type: ignore[operator]
                self.refuse("tie_breaker")
                self._note("SCCRQ ignored: our tie breaker wins", tunnel=tunnel.local_id, peer=peer)
                return False
            tunnel.discard("tie_breaker", "the peer's SCCRQ won the tie break")
            if ours == theirs:
                self.refuse("tie_breaker")
                self._note("equal tie breakers: both SCCRQs discarded", "warning", peer=peer)
                return False
        return True

    def _stateless_stop(self, msg: ControlMessage, peer: Address, result: int, text: str,
                        error: int = ErrorCode.NO_ERROR) -> None:
        """Refuse an SCCRQ without keeping state: one StopCCN, sent again if the SCCRQ is."""
        peer_tunnel = int(msg.value(AvpType.ASSIGNED_TUNNEL_ID, 0))  # type: ignore[call-overload]
        code = ResultCode(result, error, text.encode())
        stop = ControlMessage(MessageType.STOPCCN, (make(AvpType.ASSIGNED_TUNNEL_ID, 0),
                                                    make(AvpType.RESULT_CODE, code)))
        self.transmit(encode_control(peer_tunnel, 0, 0, seq_next(msg.ns), stop.body()), peer)
        self._note("SCCRQ refused", "warning", peer=f"{peer[0]}:{peer[1]}", why=text)

    def _on_data(self, header: Header, body: bytes, peer: Address, now: float) -> None:
        tunnel = self._tunnels.get(header.tunnel_id)
        if tunnel is None:
            self.drop("unknown_tunnel")
            return
        if peer != tunnel.peer:
            self.drop("wrong_peer")
            return
        reason = tunnel.on_data(header, body, now)
        if reason is not None:
            self.drop(reason)

    # -- tables ------------------------------------------------------------------------------------------

    def _allocate_tunnel_id(self) -> int:
        for _ in range(16):
            tid = int.from_bytes(self._random(2), "big")
            if tid and tid not in self._tunnels:
                return tid
        return next(i for i in range(1, 0x10000) if i not in self._tunnels)

    def _tunnel(self, tunnel_id: int) -> Tunnel:
        tunnel = self._tunnels.get(tunnel_id)
        if tunnel is None or tunnel.closed:
            raise L2tpRefused(f"no tunnel {tunnel_id}")
        return tunnel

    def _session(self, key: SessionKey) -> Session | None:
        tunnel = self._tunnels.get(key.tunnel)
        return None if tunnel is None else tunnel.sessions.get(key.session)

    def _established(self, key: SessionKey) -> Session:
        found = self._session(key)
        if found is None or not found.up:
            raise L2tpRefused(f"session {key} is not established")
        return found

    def _sweep(self) -> None:
        """Forget closed tunnels."""
        for tid in [tid for tid, t in self._tunnels.items() if t.closed]:
            tunnel = self._tunnels.pop(tid)
            tunnel.flush()
            key = (tunnel.peer[0], tunnel.peer[1], tunnel.peer_id)
            if self._answered.get(key) == tid:
                del self._answered[key]
