"""What the IKEv2 core tells its shell: SAs to install or remove, and the negotiation log.

Key material travels only inside `ChildSaKeys`, whose repr shows nothing but sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.ike.proposals import NegotiatedSuite
from gateway.ike.trafficselectors import TsRange


@dataclass(frozen=True)
class Datagram:
    """An IKE message to send from our ``local_port`` (500 or 4500) to ``remote``."""

    data: bytes
    local_port: int
    remote: tuple[str, int]


@dataclass(frozen=True)
class ChildSaKeys:
    """Outbound and inbound keys of one CHILD_SA (RFC 7296 2.17), never printed."""

    encr_out: bytes = field(repr=False)
    integ_out: bytes = field(repr=False)
    encr_in: bytes = field(repr=False)
    integ_in: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"ChildSaKeys(encr={len(self.encr_out)}, integ={len(self.integ_out)}, ***)"


@dataclass(frozen=True)
class ChildSaUp:
    """A CHILD_SA pair is ready: install the inbound SA, then switch outbound to it."""

    connection: str
    ike_sa: str
    spi_in: int
    spi_out: int
    protocol: int  # 50 ESP, 51 AH
    mode: str  # "tunnel" | "transport"
    suite: NegotiatedSuite
    keys: ChildSaKeys
    local_ts: tuple[TsRange, ...]
    remote_ts: tuple[TsRange, ...]
    local: str
    remote: str
    encap_remote_port: int | None  # UDP encapsulation (RFC 3948) to this peer port, or None
    rekey_of: int | None = None  # the inbound SPI of the CHILD_SA this one replaces
    lifetime: int = 0
    virtual_ip: str | None = None
    #: send on the new outbound SA now (False for the responder of a rekey, which
    #: switches when the old pair is deleted: RFC 7296 2.8)
    activate: bool = True
    #: the dataplane tunnel this pair belongs to: the connection, or for a connection that
    #: serves many peers (remote %any) one tunnel per peer
    tunnel: str = ""


@dataclass(frozen=True)
class ChildSaActivate:
    """Send on this (already installed) pair's outbound SA from now on: the responder's
    pair won a rekey collision (RFC 7296 2.8.1)."""

    connection: str
    spi_in: int
    tunnel: str = ""


@dataclass(frozen=True)
class ChildSaDown:
    connection: str
    ike_sa: str
    spi_in: int
    spi_out: int
    reason: str
    tunnel: str = ""


@dataclass(frozen=True)
class IkeSaUp:
    connection: str
    ike_sa: str
    local: str
    remote: str
    initiator: bool
    suite: str
    local_id: str
    remote_id: str
    nat_local: bool
    nat_remote: bool
    auth: str
    seconds: float  # from the first message to established


@dataclass(frozen=True)
class IkeSaDown:
    connection: str
    ike_sa: str
    remote: str
    reason: str


@dataclass(frozen=True)
class AuthFailed:
    """Authentication refused (by us or by the peer); ``reason`` is a short tag for metrics."""

    connection: str | None
    remote: str
    reason: str
    detail: str


@dataclass(frozen=True)
class NegotiationFailed:
    """A proposal, key exchange or selector mismatch; ``detail`` says what each side had."""

    connection: str | None
    remote: str
    stage: str
    reason: str
    detail: str


@dataclass(frozen=True)
class PeerDead:
    connection: str
    ike_sa: str
    remote: str
    action: str  # clear | restart | hold


@dataclass(frozen=True)
class PeerMoved:
    """An established IKE SA's peer now sends from another address or port (its NAT
    mapping changed, RFC 7296 2.23): the CHILD_SAs with these inbound SPIs follow it."""

    connection: str
    ike_sa: str
    remote: tuple[str, int]
    spis_in: tuple[int, ...]


@dataclass(frozen=True)
class Note:
    """A line for the negotiation log (debug or info): what happened and why."""

    what: str
    level: str = "info"
    fields: tuple[tuple[str, str], ...] = ()
