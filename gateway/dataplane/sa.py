"""Security associations as the dataplane holds them (the SAD entries of RFC 4301 4.4.2).

An SA is one direction of one protocol (ESP or AH) with its keys already bound to
cipher objects, its sequence counter or replay window, and its counters.  Keys are
never kept as bytes here, so no repr or log line can show them.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.crypto.algorithms import BoundCipher, BoundIntegrity, EspSuite, IntegrityAlgorithm
from gateway.dataplane.replay import ReplayWindow
from gateway.dataplane.selectors import SelectorPair


class Direction(enum.Enum):
    IN = "in"
    OUT = "out"


class Mode(enum.Enum):
    TUNNEL = "tunnel"
    TRANSPORT = "transport"


#: The largest sequence number a sender may use before it must rekey (RFC 4303 3.3.3).
SEQ_MAX_32 = 0xFFFFFFFF
SEQ_MAX_64 = 0xFFFFFFFFFFFFFFFF


@dataclass
class SaCounters:
    packets: int = 0
    bytes: int = 0
    drops: int = 0


@dataclass(frozen=True)
class UdpEncap:
    """UDP encapsulation of ESP (RFC 3948): our port and the peer's (4500, or NATed)."""

    local_port: int = 4500
    remote_port: int = 4500


@dataclass(eq=False)
class SecurityAssociation:
    """One SAD entry.  ``protocol`` is 50 (ESP) or 51 (AH)."""

    name: str
    spi: int
    protocol: int
    direction: Direction
    mode: Mode
    local: ipaddress.IPv4Address
    remote: ipaddress.IPv4Address
    esp: EspSuite | None = None
    ah: IntegrityAlgorithm | None = None
    cipher: BoundCipher | None = field(default=None, repr=False)
    integrity: BoundIntegrity | None = field(default=None, repr=False)
    encap: UdpEncap | None = None
    esn: bool = False
    replay: ReplayWindow | None = None
    selectors: tuple[SelectorPair, ...] = ()  # what the inner packets may be (inbound check)
    seq: int = 0  # last sequence number sent (outbound)
    counters: SaCounters = field(default_factory=SaCounters)
    random: Callable[[int], bytes] | None = field(default=None, repr=False)
    exhausted: bool = False
    exhaustion_reported: bool = False
    tunnel: str = ""  # the dataplane tunnel (connection, or one peer of a %any connection)
    #: the last new peer address a MappingChanged was reported for (inbound)
    mapping_reported: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        self.local_packed = self.local.packed
        self.remote_packed = self.remote.packed
        self.remote_str = str(self.remote)
        self.spi_bytes = self.spi.to_bytes(4, "big")
        self.seq_max = SEQ_MAX_64 if self.esn else SEQ_MAX_32
        # Inbound check cache, usable when no selector names a protocol or ports.
        self.selector_cache: dict[bytes, bool] | None = (
            {} if all(p.protocol == 0 and not p.uses_ports for p in self.selectors) else None)

    def move_peer(self, address: str, port: int | None) -> None:
        """The peer is now at ``address`` (and, UDP-encapsulated, ``port``): its NAT mapping
        changed (RFC 3948, RFC 7296 2.23)."""
        self.remote = ipaddress.IPv4Address(address)
        self.remote_packed = self.remote.packed
        self.remote_str = address
        if self.encap is not None and port is not None:
            self.encap = UdpEncap(self.encap.local_port, port)

    @property
    def algorithm(self) -> str:
        if self.esp is not None:
            return self.esp.name
        return f"ah-{self.ah.name}" if self.ah else "?"

    @classmethod
    def build_esp(cls, *, name: str, spi: int, direction: Direction, mode: Mode,
                  local: ipaddress.IPv4Address, remote: ipaddress.IPv4Address, suite: EspSuite,
                  encryption_key: bytes, integrity_key: bytes, encap: UdpEncap | None, esn: bool,
                  selectors: tuple[SelectorPair, ...], replay_window: int,
                  tunnel: str = "") -> SecurityAssociation:
        """An ESP SA with its keys bound (manual keying and IKE both build them so)."""
        return cls(name=name, spi=spi, protocol=50, direction=direction, mode=mode, local=local,
                   tunnel=tunnel or name,
                   remote=remote, esp=suite, cipher=suite.encryption.bind(encryption_key),
                   integrity=suite.integrity.bind(integrity_key) if suite.integrity else None,
                   encap=encap, esn=esn, selectors=selectors,
                   replay=ReplayWindow(replay_window, esn) if direction is Direction.IN else None)

    def describe(self) -> dict[str, object]:
        """What `gateway sas` shows: never a key."""
        return {
            "name": self.name,
            "spi": f"0x{self.spi:08x}",
            "protocol": "esp" if self.protocol == 50 else "ah",
            "direction": self.direction.value,
            "mode": self.mode.value,
            "local": str(self.local),
            "remote": str(self.remote),
            "algorithm": self.algorithm,
            "encap": f"udp/{self.encap.local_port}->{self.encap.remote_port}" if self.encap else None,
            "esn": self.esn,
            "replay_window": self.replay.size if self.replay else None,
            "seq": self.seq if self.direction is Direction.OUT else (
                self.replay.top if self.replay else 0),
            "packets": self.counters.packets,
            "bytes": self.counters.bytes,
            "drops": self.counters.drops,
        }
