"""One PPP link over one L2TP session, in either role, sans-IO (RFC 1661 3).

The phases run in RFC 1661 3's order: Establish (LCP), Authenticate (the method LCP
agreed on), Network (IPCP), Terminate.  Until LCP is open only LCP is read (3.4); until
the network phase IPCP and IPv4 are dropped (3.5); a protocol nobody here speaks gets a
Protocol-Reject once LCP is open (5.7): IPv6CP, CCP, EAP, CBCP, ...

The shell::

    s = PppSession(role="server", config=cfg, random=os.urandom, now=loop.time(),
                   credentials=users.lookup, address_for=pool.allocate)
    s.start(now)                       # LCP Up + Open
    s.receive(frame, now)              # each PPP frame out of an L2TP data message
    for f in s.frames_to_send(): ...   # each into an L2TP data message
    while (e := s.next_event()) is not None: ...
    s.get_timer() / s.handle_timer(now)
    s.send_ip(packet, now)             # once LinkUp came
    s.close(now, "admin down")         # LCP Terminate; LinkDown follows
    s.lower_down(now)                  # the L2TP session is gone: LinkDown at once

Nothing here raises on what the peer sends: malformed input is counted in `drops` by
reason.  Time is always a parameter; randomness comes from ``random(n)``.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from gateway.ppp.auth import AuthOutcome, AuthRole, AuthTiming, Credentials
from gateway.ppp.automaton import State
from gateway.ppp.chap import ChapMd5Authenticator, ChapMd5Peer
from gateway.ppp.config import PppConfig
from gateway.ppp.events import (
    AuthFailed,
    AuthSucceeded,
    IpPacket,
    LinkDown,
    LinkUp,
    Note,
    PppEvent,
)
from gateway.ppp.frame import (
    PROTO_CHAP,
    PROTO_IPCP,
    PROTO_IPV4,
    PROTO_LCP,
    PROTO_PAP,
    ControlPacket,
    PppMalformed,
    decode_control,
    decode_frame,
    encode_frame,
    protocol_name,
)
from gateway.ppp.ipcp import Ipcp
from gateway.ppp.lcp import Lcp
from gateway.ppp.mschapv2 import MsChapV2Authenticator, MsChapV2Peer
from gateway.ppp.pap import PapAuthenticator, PapPeer

AddressFor = Callable[[str], str | None]

_TAGS = {PROTO_LCP: "lcp", PROTO_PAP: "pap", PROTO_CHAP: "chap", PROTO_IPCP: "ipcp"}


def public_reason(reason: str, by_shell: bool = False) -> str:
    """What our Terminate-Request tells the peer (pppd's wording).  Never our own reason:
    it would tell a client whether a user exists ("unknown user" or "bad password")."""
    if by_shell:
        return "User request"
    if reason.startswith("authentication failed"):
        return "Authentication failed"
    if reason.startswith("peer does not answer"):
        return "Peer not responding"
    if reason.startswith("no address available"):
        return "No address available"
    return "Link terminated"


class Phase(StrEnum):
    """RFC 1661 3.2-3.7."""

    DEAD = "dead"
    ESTABLISH = "establish"
    AUTHENTICATE = "authenticate"
    NETWORK = "network"
    TERMINATE = "terminate"


class PppSession:
    """A PPP link, as the server (authenticator, address assigner) or the client.

    ``credentials(user) -> UserSecret | None`` and ``address_for(user) -> "a.b.c.d" | None``
    (None: no address to give, the link ends) are the server's callbacks into its shell;
    ``address_for`` runs once per successful authentication, before IPCP.  Releasing the
    address after `LinkDown` is the shell's business.
    """

    def __init__(self, role: str, config: PppConfig, random: Callable[[int], bytes], now: float, *,
                 credentials: Credentials | None = None, address_for: AddressFor | None = None) -> None:
        if role == "server":
            if config.server is None or credentials is None or address_for is None:
                raise ValueError("a server PPP session needs config.server, credentials and address_for")
            methods = config.server.methods
        elif role == "client":
            if config.client is None:
                raise ValueError("a client PPP session needs config.client")
            methods = config.client.methods
        else:
            raise ValueError(f"PPP role must be 'server' or 'client', not {role!r}")
        self.role = role
        self.config = config
        self._random = random
        self._credentials = credentials
        self._address_for = address_for
        self._out: list[bytes] = []
        self._events: deque[PppEvent] = deque()
        self._now = now
        #: received frames dropped, by reason
        self.drops: dict[str, int] = {}
        self.phase = Phase.DEAD
        self.finished = False
        #: why the link is ending, once it is
        self.reason: str | None = None
        self.created = now
        #: when the last frame (any that decodes) / IPv4 packet arrived, and the last IPv4 packet left
        self.last_rx: float | None = None
        self.last_ip_rx: float | None = None
        self.last_ip_tx: float | None = None
        self.user: str | None = None
        self.method: str | None = None
        self.link_up: LinkUp | None = None
        self.lcp = Lcp(self, config.lcp, role, methods, random)
        self.auth: AuthRole | None = None
        self.ipcp: Ipcp | None = None
        self._outcome_seen: AuthOutcome | None = None
        self._pending_close: str | None = None
        self._noted_rejects: set[int] = set()
        self._by_shell = False

    # == the shell's interface ===================================================================
    def start(self, now: float) -> None:
        """Begin: LCP Up and Open (RFC 1661 4.3); our Configure-Request goes out."""
        if self.phase is not Phase.DEAD or self.finished:
            return
        self._now = now
        self.phase = Phase.ESTABLISH
        self.lcp.up(now)
        self.lcp.open(now)
        self._settle(now)

    def receive(self, frame: bytes, now: float) -> None:
        """A PPP frame from L2TP (with or without FF 03)."""
        self._now = now
        if self.finished:
            self._drop("session_finished")
            return
        try:
            decoded = decode_frame(frame)
        except PppMalformed as exc:
            self._malformed("frame", exc)
            return
        self.last_rx = now
        self.lcp.last_rx = now
        try:
            self._dispatch(decoded.protocol, decoded.payload, now)
        except PppMalformed as exc:
            self._malformed(_TAGS.get(decoded.protocol, "frame"), exc)
        self._settle(now)

    def frames_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> PppEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        if self.finished:
            return None
        times = [self.lcp.deadline()]
        if self.auth is not None:
            times.append(self.auth.deadline())
        if self.ipcp is not None:
            times.append(self.ipcp.deadline())
        present = [t for t in times if t is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        self._now = now
        if self.finished:
            return
        for part in (self.lcp, self.auth, self.ipcp):
            if self.finished or part is None:
                continue
            deadline = part.deadline()
            if deadline is not None and now >= deadline:
                part.on_timer(now)
        self._settle(now)

    def send_ip(self, packet: bytes, now: float | None = None) -> bool:
        """Frame an IPv4 packet for the peer; False (and counted) before IPCP is open."""
        if self.finished or self.ipcp is None or not self.ipcp.opened:
            self._drop("ip_not_ready")
            return False
        if now is not None:
            self.last_ip_tx = now
        self._frame(PROTO_IPV4, packet)
        return True

    def close(self, now: float, reason: str) -> None:
        """End the link: LCP Terminate-Request; `LinkDown(reason)` once the peer acknowledged
        (or after Max-Terminate tries)."""
        self._now = now
        if self.finished:
            return
        if self.phase is Phase.DEAD:
            self.reason = reason
            self._finish(reason)
            return
        self._by_shell = self.reason is None
        self._close(now, reason)
        self._settle(now)

    def lower_down(self, now: float, reason: str = "lower layer down") -> None:
        """The L2TP session went away: LCP Down (RFC 1661 4.3), `LinkDown` at once."""
        self._now = now
        if self.finished:
            return
        if self.reason is None:
            self.reason = reason
        self.lcp.down(now)
        self._finish(self.reason)

    # -- what the shell may read -------------------------------------------------------------------
    @property
    def last_activity(self) -> float:
        """When a frame last arrived (the session's creation before any): for idle timeouts."""
        return self.last_rx if self.last_rx is not None else self.created

    def describe(self, now: float) -> dict[str, Any]:
        """A snapshot for status output (JSON-friendly, no secrets)."""
        up = self.link_up
        return {
            "role": self.role, "phase": self.phase.value, "user": self.user, "method": self.method,
            "lcp": self.lcp.automaton.state.name.lower(),
            "ipcp": self.ipcp.automaton.state.name.lower() if self.ipcp is not None else None,
            "local_address": up.local_address if up else None,
            "peer_address": up.peer_address if up else None,
            "dns": list(up.dns) if up else [], "mru": self.mru, "mtu": self.mtu,
            "ours": self.lcp.ours.describe(), "theirs": self.lcp.theirs.describe(),
            "age": round(now - self.created, 1),
            "idle": round(now - self.last_activity, 1),
            "reason": self.reason, "drops": dict(self.drops),
        }

    @property
    def mru(self) -> int:
        """The largest frame the peer may send us."""
        return self.lcp.ours.mru

    @property
    def mtu(self) -> int:
        """The largest packet we may send: the peer's MRU."""
        return self.lcp.theirs.mru

    # == the layers' owner (LayerOwner) ===============================================================
    def send_packet(self, protocol: int, packet: ControlPacket) -> None:
        self._frame(protocol, packet.encode())

    def drop(self, reason: str) -> None:
        self._drop(reason)

    def note(self, what: str, level: str = "info", **fields: object) -> None:
        self._events.append(Note(what, level, tuple((k, str(v)) for k, v in fields.items())))

    def give_up(self, reason: str) -> None:
        if self._pending_close is None and not self.finished:
            self._pending_close = reason

    def layer_up(self, protocol: int) -> None:
        if protocol == PROTO_LCP:
            self._authenticate(self._now)
        elif protocol == PROTO_IPCP:
            self._network_up()

    def layer_down(self, protocol: int) -> None:
        if protocol == PROTO_LCP:
            if self.ipcp is not None:
                self.ipcp.down(self._now)
                self.ipcp = None
            if self.phase is Phase.TERMINATE:
                self.auth = None
                return
            if self.lcp.automaton.state in (State.REQ_SENT, State.ACK_SENT):  # renegotiation (4.1)
                self.auth = None  # authenticate again once LCP is open
                if self.user is not None or self.phase is Phase.NETWORK:
                    self.give_up("peer renegotiated LCP after authentication")
                self.phase = Phase.ESTABLISH
            else:  # Stopping: the peer's Terminate-Request or rejection; Starting: lower layer down
                peer_ended = bool(self.lcp.peer_terminated)
                self._abandon_auth("peer terminated the link during authentication" if peer_ended
                                   else f"authentication not finished: {self.reason or 'link down'}")
                self.phase = Phase.TERMINATE
        elif protocol == PROTO_IPCP:
            self.note("ipcp down", "info")

    def layer_finished(self, protocol: int, reason: str) -> None:
        if protocol == PROTO_LCP:
            self._finish(self.reason or reason)
        elif protocol == PROTO_IPCP:
            self.give_up(reason)

    def peer_rejected_protocol(self, protocol: int) -> None:
        self.note("peer rejected a protocol", "info", protocol=protocol_name(protocol))
        if protocol in (PROTO_IPCP, PROTO_IPV4):
            self.give_up(f"peer rejected {protocol_name(protocol)}")
        elif self.auth is not None and protocol == self.auth.protocol:
            self.give_up(f"peer rejected the authentication protocol {protocol_name(protocol)}")

    # == inside ===========================================================================================
    def _dispatch(self, protocol: int, payload: bytes, now: float) -> None:
        if protocol == PROTO_LCP:
            self.lcp.receive(payload, now)
            return
        if not self.lcp.opened:
            self._drop("before_lcp_open")  # RFC 1661 3.4
            return
        if protocol in (PROTO_PAP, PROTO_CHAP):
            if self.auth is None or self.auth.protocol != protocol:
                self._drop(f"{_TAGS[protocol]}_not_in_use")
                return
            self.auth.receive(decode_control(payload), now)
        elif protocol == PROTO_IPCP:
            if self.ipcp is None:
                self._drop("ipcp_before_network")  # RFC 1661 3.5
                return
            self.ipcp.receive(payload, now)
        elif protocol == PROTO_IPV4:
            if self.ipcp is None or not self.ipcp.opened:
                self._drop("ip_before_ipcp")
                return
            self.last_ip_rx = now
            self._events.append(IpPacket(payload))
        else:
            self._drop("protocol_rejected")
            if protocol not in self._noted_rejects:
                self._noted_rejects.add(protocol)
                self.note("protocol rejected", "debug", protocol=protocol_name(protocol))
            self.lcp.reject_protocol(protocol, payload)

    def _settle(self, now: float) -> None:
        """What follows from the last input: an authentication verdict, a close."""
        for _ in range(8):
            auth = self.auth
            if auth is not None and auth.outcome is not None and auth.outcome is not self._outcome_seen:
                self._outcome(auth.outcome, now)
                continue
            if self._pending_close is not None:
                reason, self._pending_close = self._pending_close, None
                self._close(now, reason)
                continue
            return

    def _outcome(self, outcome: AuthOutcome, now: float) -> None:
        self._outcome_seen = outcome
        if outcome.ok:
            if self.user is None:  # the first success (a CHAP rechallenge repeats it)
                self.user, self.method = outcome.user, outcome.method
                self._events.append(AuthSucceeded(outcome.user, outcome.method))
                self.note("authenticated", "info", user=outcome.user, method=outcome.method)
                self._start_network(now)
            return
        self._events.append(AuthFailed(outcome.user, outcome.method, outcome.reason))
        if outcome.detail:
            self.note("authentication failed", "info", user=outcome.user, method=outcome.method,
                      message=outcome.detail)
        self.give_up(f"authentication failed: {outcome.reason}")

    def _authenticate(self, now: float) -> None:
        """LCP is open: the authentication phase (RFC 1661 3.5)."""
        method = self.lcp.auth
        self.phase = Phase.AUTHENTICATE
        if method is None:
            if self.role == "server":
                self.give_up("no authentication protocol agreed")
            else:
                self._start_network(now)
            return
        timing = AuthTiming(self.config.lcp.restart_interval, self.config.lcp.max_configure,
                            self._auth_timeout())
        pap, chap = self._auth_sender(PROTO_PAP), self._auth_sender(PROTO_CHAP)
        role: AuthRole
        if self.role == "server":
            assert self.config.server is not None and self._credentials is not None
            users, name = self._credentials, self.config.server.name
            if method == "pap":
                role = PapAuthenticator(pap, self._random, timing, users, self._drop)
            elif method == "chap-md5":
                role = ChapMd5Authenticator(chap, self._random, timing, users, name, self._drop)
            else:
                role = MsChapV2Authenticator(chap, self._random, timing, users, name, self._drop)
        else:
            assert self.config.client is not None
            user, password = self.config.client.user, self.config.client.password
            if method == "pap":
                role = PapPeer(pap, self._random, timing, user, password, self._drop)
            elif method == "chap-md5":
                role = ChapMd5Peer(chap, self._random, timing, user, password, self._drop)
            else:
                role = MsChapV2Peer(chap, self._random, timing, user, password, self._drop)
        self.auth = role
        role.start(now)

    def _auth_timeout(self) -> float:
        side = self.config.server if self.role == "server" else self.config.client
        assert side is not None
        return side.auth_timeout

    def _auth_sender(self, protocol: int) -> Callable[[ControlPacket], None]:
        return lambda packet: self.send_packet(protocol, packet)

    def _start_network(self, now: float) -> None:
        """The network phase (RFC 1661 3.6): IPCP Up and Open."""
        self.phase = Phase.NETWORK
        if self.role == "server":
            assert self.config.server is not None and self._address_for is not None
            peer = self._address_for(self.user or "")
            try:
                if peer is not None:
                    ipaddress.IPv4Address(peer)
            except ValueError:
                peer = None
            if peer is None:
                self.give_up("no address available for the peer")
                return
            server = self.config.server
            self.ipcp = Ipcp(self, self.config.lcp, "server", self._random, local=server.local_address,
                             peer=peer, dns=server.dns)
        else:
            assert self.config.client is not None
            self.ipcp = Ipcp(self, self.config.lcp, "client", self._random, local=self.config.client.address,
                             request_dns=self.config.client.request_dns)
        self.ipcp.start(now)

    def _network_up(self) -> None:
        ipcp = self.ipcp
        assert ipcp is not None
        if self.role == "server":
            assert self.config.server is not None
            local, dns = self.config.server.local_address, self.config.server.dns
        else:
            local, dns = ipcp.local_address or "0.0.0.0", ipcp.dns
            if local == "0.0.0.0":
                self.give_up("IPCP: peer assigned us no address")
                return
        self.link_up = LinkUp(local, ipcp.peer_address, tuple(dns), self.mru, self.mtu, self.user,
                              self.method)
        self._events.append(self.link_up)
        self.note("ipcp up", "info", local=local, peer=ipcp.peer_address, dns=",".join(dns) or "-")

    def _close(self, now: float, reason: str) -> None:
        if self.finished:
            return
        if self.reason is None:
            self.reason = reason
        self.phase = Phase.TERMINATE
        self._abandon_auth(f"authentication not finished: {self.reason}")
        self.note("closing the link", "info", reason=self.reason)
        self.lcp.close(now, public_reason(self.reason, self._by_shell))
        if self.lcp.automaton.state in (State.INITIAL, State.CLOSED, State.STOPPED):
            self._finish(self.reason)

    def _abandon_auth(self, reason: str) -> None:
        """The authentication phase ends without a verdict: a failure too (SoftEther refuses a
        PAP password with an LCP Terminate-Request, not a PAP Nak)."""
        auth, self.auth = self.auth, None
        if auth is not None and auth.outcome is None:
            self._events.append(AuthFailed(auth.user, auth.method, reason))

    def _finish(self, reason: str) -> None:
        if self.finished:
            return
        self._abandon_auth(f"authentication not finished: {reason}")
        self.finished = True
        self.phase = Phase.DEAD
        self.auth = None
        self.ipcp = None
        self.reason = self.reason or reason
        self._events.append(LinkDown(reason))

    def _frame(self, protocol: int, payload: bytes) -> None:
        """Frame for the peer, compressed as it asked (never LCP: RFC 1661 6.5, 6.6)."""
        compress = self.config.lcp.compress_to_peer and protocol != PROTO_LCP and self.lcp.opened
        theirs = self.lcp.theirs
        self._out.append(encode_frame(protocol, payload, address_control=not (compress and theirs.acfc),
                                      compress_protocol=compress and theirs.pfc))

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _malformed(self, tag: str, exc: PppMalformed) -> None:
        """Counted; the first of each kind also noted (a flood must not flood the log)."""
        reason = f"malformed_{tag}"
        if reason not in self.drops:
            self.note("malformed input dropped", "debug", protocol=tag, error=str(exc))
        self._drop(reason)
