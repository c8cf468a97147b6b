"""What an L2TP endpoint is configured with: who it says it is, which roles it plays, the
shared secrets of tunnel authentication (RFC 2661 5.1.1), its timers and its table bounds.

Secrets never appear in a repr.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.l2tp.constants import BEARER_ANALOG, BEARER_DIGITAL, FRAMING_ASYNC, FRAMING_SYNC
from gateway.l2tp.reliable import RetransmitPolicy


@dataclass(frozen=True)
class L2tpSettings:
    #: Host Name AVP we send (RFC 2661 4.4.3)
    host_name: str = "gateway"
    #: Vendor Name AVP we send
    vendor_name: str = "gateway"
    firmware_revision: int = 0x0100
    framing_capabilities: int = FRAMING_SYNC | FRAMING_ASYNC
    bearer_capabilities: int = BEARER_DIGITAL | BEARER_ANALOG

    #: LNS: answer SCCRQs (open to dial-in clients and LACs)
    accept_tunnels: bool = True
    #: LNS: answer ICRQs (incoming calls on tunnels the peer or we opened)
    accept_incoming_calls: bool = True
    #: LAC: answer OCRQs (outgoing calls an LNS asks us to place)
    accept_outgoing_calls: bool = False

    #: shared secrets by peer address; ``default_secret`` for every other peer. With a secret
    #: we challenge the peer and require its Challenge Response (RFC 2661 5.1.1)
    secrets: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    default_secret: bytes | None = field(default=None, repr=False)
    #: AVP types we send hidden (RFC 2661 4.3) on tunnels that have a secret
    hide_avps: frozenset[int] = frozenset()
    #: send a Tie Breaker AVP in our SCCRQs (RFC 2661 4.4.3): one tunnel per peer pair
    tie_breaker: bool = False

    #: the Receive Window Size we advertise: how many messages we hold out of order (5.8)
    receive_window: int = 8
    retransmit: RetransmitPolicy = field(default_factory=RetransmitPolicy)
    #: send a HELLO after this long without hearing from the peer (RFC 2661 6.5)
    hello_interval: float = 60.0
    #: how long a tunnel or call may take from its first message to established
    setup_timeout: float = 60.0
    #: how long a tunnel closed by the peer stays to acknowledge its StopCCN again (5.7);
    #: None means one full retransmission cycle
    linger: float | None = None

    max_tunnels: int = 1024
    max_sessions_per_tunnel: int = 256

    #: data: ask for (LAC: Sequencing Required AVP) and send sequence numbers (RFC 2661 5.4)
    data_sequencing: bool = False
    #: data: send the Length field (the L bit is optional on data messages)
    data_length_field: bool = False
    #: the Tx Connect Speed (bits/s) we report in ICCN/OCCN
    connect_speed: int = 100_000_000
    framing_type: int = FRAMING_SYNC
    bearer_type: int = BEARER_DIGITAL

    def __post_init__(self) -> None:
        if not self.host_name or len(self.host_name.encode()) > 1017:
            raise ValueError("host_name must be 1 to 1017 octets")
        if len(self.vendor_name.encode()) > 1017:
            raise ValueError("vendor_name must be at most 1017 octets")
        if not 1 <= self.receive_window <= 0xFFFF:
            raise ValueError("receive_window must be 1..65535")
        if self.max_tunnels < 1 or self.max_sessions_per_tunnel < 1:
            raise ValueError("table bounds must be positive")
        if self.hello_interval <= 0 or self.setup_timeout <= 0:
            raise ValueError("hello_interval and setup_timeout must be positive")
        if self.retransmit.initial <= 0 or self.retransmit.retries < 0 or self.retransmit.ack_delay < 0:
            raise ValueError("retransmission timers must be positive")

    def secret_for(self, address: str) -> bytes | None:
        return self.secrets.get(address, self.default_secret)

    @property
    def linger_time(self) -> float:
        return self.retransmit.cycle() if self.linger is None else self.linger
