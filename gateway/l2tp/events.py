"""What the L2TP core tells its shell: tunnels and sessions coming and going, PPP frames that
arrived, link information from SLI/WEN, and lines for the log.

PPP frames and proxy authentication responses (a PAP password can travel in one) never
show in a repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.l2tp.avp import CallErrors


@dataclass(frozen=True, order=True)
class SessionKey:
    """A session: our tunnel id and our session id (the ids the peer sends to)."""

    tunnel: int
    session: int

    def __str__(self) -> str:
        return f"{self.tunnel}/{self.session}"


@dataclass(frozen=True)
class TunnelUp:
    """A control connection is established (RFC 2661 7.2)."""

    tunnel: int
    peer: tuple[str, int]
    peer_tunnel: int
    host_name: str
    vendor: str
    initiator: bool
    authenticated: bool  # the peer proved the shared secret (Challenge Response, 5.1.1)
    firmware: int | None = None
    window: int = 4  # the peer's Receive Window Size


@dataclass(frozen=True)
class TunnelDown:
    """A control connection is gone (or never came up); its sessions went before it.

    ``reason`` is a short tag for metrics: ``closed`` (we sent StopCCN), ``stopccn`` (the peer
    did), ``timeout`` (no acknowledgement after the retransmissions), ``setup_timeout``,
    ``auth_failed``, ``bad_version``, ``unknown_mandatory``, ``protocol_error``,
    ``tie_breaker`` (discarded for the peer's tunnel) or ``replaced`` (the peer started over).
    """

    tunnel: int
    peer: tuple[str, int]
    reason: str
    text: str = ""
    result: int | None = None
    error: int | None = None


@dataclass(frozen=True)
class ProxyAuth:
    """Proxy authentication AVPs of an ICCN (RFC 2661 4.4.5): what the LAC already did."""

    type: int | None
    name: bytes = b""
    challenge: bytes = b""
    id: int | None = None
    response: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class ProxyLcp:
    """Proxy LCP AVPs of an ICCN (RFC 2661 4.4.5): the LCP CONFREQ option lists."""

    initial_received: bytes | None = None
    last_sent: bytes | None = None
    last_received: bytes | None = None


@dataclass(frozen=True)
class SessionUp:
    """A call is established (RFC 2661 7.4): PPP can start on it."""

    session: SessionKey
    peer: tuple[str, int]
    peer_session: int
    call: str  # "incoming" (ICRQ) or "outgoing" (OCRQ)
    lac: bool  # we are the LAC of the call
    serial: int | None = None
    calling_number: str = ""
    called_number: str = ""
    sub_address: str = ""
    bearer_type: int | None = None
    framing_type: int | None = None
    tx_connect_speed: int | None = None
    rx_connect_speed: int | None = None
    physical_channel: int | None = None
    private_group: bytes | None = None
    sequencing: bool = False
    proxy_lcp: ProxyLcp | None = None
    proxy_auth: ProxyAuth | None = None

    @property
    def tunnel(self) -> int:
        return self.session.tunnel


@dataclass(frozen=True)
class SessionDown:
    """A call is gone (CDN either way, a tunnel that went, a refusal).

    ``reason``: ``closed`` (we sent CDN), ``cdn`` (the peer did), ``tunnel_down``,
    ``setup_timeout``, ``unknown_mandatory``, ``refused``.
    """

    session: SessionKey
    reason: str
    text: str = ""
    result: int | None = None
    error: int | None = None
    q931_cause: int | None = None


@dataclass(frozen=True)
class FrameReceived:
    """A PPP frame from a data message of an established session."""

    session: SessionKey
    frame: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"FrameReceived({self.session}, {len(self.frame)} octets)"


@dataclass(frozen=True)
class LinkInfo:
    """Link information from the peer: an SLI's ACCMs or a WEN's error counters (6.15, 6.14)."""

    session: SessionKey
    message: str  # "SLI" or "WEN"
    send_accm: int | None = None
    receive_accm: int | None = None
    call_errors: CallErrors | None = None


@dataclass(frozen=True)
class Note:
    """A line for the log (debug, info or warning): what happened and why."""

    what: str
    level: str = "info"
    fields: tuple[tuple[str, str], ...] = ()


L2tpEvent = TunnelUp | TunnelDown | SessionUp | SessionDown | FrameReceived | LinkInfo | Note
