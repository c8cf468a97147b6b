"""What the IKEv2 core needs to know about a connection, already parsed and loaded.

The daemon builds these from the YAML model (`gateway.ike.v2.fromconfig`); tests build
them directly.  Private keys and pre-shared keys are never shown by a repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.config.model import Secret
from gateway.ike.identity import Identity
from gateway.ike.proposals import AlgorithmSet
from gateway.ike.trafficselectors import TsRange


@dataclass(frozen=True)
class ChildConfig:
    name: str
    local_ts: tuple[TsRange, ...]
    remote_ts: tuple[TsRange, ...]
    proposals: tuple[AlgorithmSet, ...]
    mode: str = "tunnel"
    lifetime: int = 3600  # seconds until rekey (before jitter)
    rekey_bytes: int | None = None
    rekey_packets: int | None = None


@dataclass(frozen=True)
class Timing:
    """Retransmission (RFC 7296 2.1) and other clocks, in seconds."""

    retransmit_timeout: float = 4.0
    retransmit_base: float = 1.8
    retransmit_tries: int = 5
    half_open_timeout: float = 30.0
    jitter: float = 0.1  # rekeys happen up to this fraction early, spread at random
    #: wall-clock seconds at ``now == 0`` (certificate validity is judged at epoch + now);
    #: None: no wall clock, so certificates cannot be checked
    epoch: float | None = None


@dataclass(frozen=True)
class ResponderLimits:
    """How much state strangers can make a responder keep (RFC 7296 2.6, RFC 8019).

    A *half-open* SA is one a peer started and has not authenticated yet (IKEv2 before
    IKE_AUTH, IKEv1 Main Mode before message 5).  ``cookie_threshold``: half-open IKEv2
    SAs before a new IKE_SA_INIT must return a COOKIE (proof that the initiator receives
    at its address).  ``half_open_max``: half-open SAs of one IKE version in all; beyond
    it new ones are refused without state (IKEv2) or the oldest unproven one is evicted
    (IKEv1, which has no cookies).  ``half_open_per_source``: half-open SAs whose peer has
    proven its address, per source address (see the cores for why only those count).
    """

    cookie_threshold: int = 10
    half_open_max: int = 2000
    half_open_per_source: int = 100


@dataclass(frozen=True)
class PeerConfig:
    """One configured IKE connection (a peer and the CHILD_SA it carries)."""

    name: str
    local_address: str
    remote_address: str | None  # None: any peer address (remote access)
    ike_proposals: tuple[AlgorithmSet, ...]
    child: ChildConfig
    local_id: Identity
    remote_id: Identity
    psk: Secret | None = None
    certificate: Any = None  # cryptography x509.Certificate
    private_key: Any = field(default=None, repr=False)
    intermediates: tuple[Any, ...] = ()
    trust: Any = None  # gateway.ike.certs.TrustStore
    rsa_pss: bool = False
    ike_lifetime: int = 14400
    jitter: float | None = None  # rekey up to this fraction early; None: Timing.jitter
    reauth_time: int | None = None  # a fresh IKE SA (new authentication) this often (2.8.3)
    dpd_interval: float | None = 30.0
    dpd_timeout: float = 30.0
    dpd_action: str = "restart"  # clear | restart | hold
    force_encap: bool = False
    fragmentation: bool = True
    fragment_size: int = 1280  # IP datagram size a fragment must fit (RFC 7383 2.5.1)
    remote_port: int = 500
    initial_contact: bool = True
    pool: str | None = None  # virtual IPs for remote-access clients (configuration payload)
    version: int = 2  # IKE version: 2, or 1 (Main Mode + Quick Mode)

    @property
    def auth_method(self) -> str:
        return "psk" if self.psk is not None else "pubkey"
