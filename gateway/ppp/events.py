"""What a PPP session tells its shell (RFC 1661 3: the phases as they end).

Events come out of `PppSession.next_event()` in the order they happened.  None of them ever
carries a secret: user names and reasons yes, passwords, hashes and responses never.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AuthSucceeded:
    """Authentication phase passed (RFC 1661 3.5).  ``user``: the peer's name when we are the
    authenticator, our own name when we are the client.  ``method``: pap | chap-md5 | mschapv2."""

    user: str
    method: str


@dataclass(frozen=True)
class AuthFailed:
    """Authentication failed, by our verdict or the peer's.  ``reason`` is short and stable
    (``bad password``, ``unknown user``, ``peer refused our credentials: E=691``, ...)."""

    user: str
    method: str
    reason: str


@dataclass(frozen=True)
class LinkUp:
    """IPCP is open (RFC 1332): IPv4 packets may flow.

    ``local_address``: ours on this link (the gateway's address on the server side, the
    assigned one on the client side); ``peer_address``: the peer's (the address we assigned
    on the server side; None if a server did not tell us its own).  ``mru``: the largest
    frame the peer may send us; ``mtu``: the largest IPv4 packet we may send (the peer's MRU).
    It may come again if the peer renegotiates IPCP; the latest one holds.
    """

    local_address: str
    peer_address: str | None
    dns: tuple[str, ...]
    mru: int
    mtu: int
    user: str | None = None
    method: str | None = None


@dataclass(frozen=True)
class IpPacket:
    """An IPv4 packet (protocol 0x0021) received while IPCP is open."""

    packet: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"IpPacket({len(self.packet)} octets)"


@dataclass(frozen=True)
class LinkDown:
    """The link is finished (RFC 1661 3.7, Link Dead); the last event of a session.  Send what
    `frames_to_send()` still holds, then tear the L2TP session down."""

    reason: str


@dataclass(frozen=True)
class Note:
    """A line for the negotiation log: what happened and why (level debug | info | warning)."""

    what: str
    level: str = "info"
    fields: tuple[tuple[str, str], ...] = ()


PppEvent = AuthSucceeded | AuthFailed | LinkUp | IpPacket | LinkDown | Note
