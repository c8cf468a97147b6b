"""From the YAML model to the IKEv2 core's `PeerConfig`: load keys, certificates, CAs.

Errors name the config key and the file, never a secret; a key or PSK file that others
may read is refused (`gateway.config.secretfiles`).  Identities default as in
strongSwan: our public address (PSK) or our certificate's subject (certificates); the
peer's address (PSK) or any identity its certificate proves (certificates).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config.model import CertAuth, Config, Connection, PskAuth, Secret
from gateway.config.secretfiles import private_file_problem
from gateway.ike.identity import ANY, Identity
from gateway.ike.pool import AddressPool
from gateway.ike.proposals import parse_child_proposal, parse_ike_proposal
from gateway.ike.settings import ChildConfig, PeerConfig, ResponderLimits, Timing
from gateway.ike.trafficselectors import TsRange


class AuthConfigError(ValueError):
    """A key, certificate or CA file that cannot be used; ``key`` is the config key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class LoadedAuth:
    psk: Secret | None = None
    certificate: Any = None
    private_key: Any = field(default=None, repr=False)
    intermediates: tuple[Any, ...] = ()
    trust: Any = None


def parse_identity(text: str) -> Identity:
    return Identity.parse(text)


def load_auth(auth: PskAuth | CertAuth, base: Path | None = None) -> LoadedAuth:
    def path(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() or base is None else base / q

    if isinstance(auth, PskAuth):
        if auth.psk is not None:
            return LoadedAuth(psk=auth.psk)
        if auth.psk_file is None:
            raise AuthConfigError("psk", "give psk or psk_file")
        if (loose := private_file_problem(path(auth.psk_file), "a pre-shared key")) is not None:
            raise AuthConfigError("psk_file", loose)
        try:
            value = path(auth.psk_file).read_bytes().strip()
        except OSError as exc:
            raise AuthConfigError("psk_file", f"cannot read {auth.psk_file}: {exc.strerror}") from None
        if not value:
            raise AuthConfigError("psk_file", f"{auth.psk_file} is empty")
        return LoadedAuth(psk=Secret(value))
    from gateway.ike import certs

    try:
        chain = _load_certs(path(auth.cert))
    except (OSError, ValueError) as exc:
        raise AuthConfigError("cert", f"cannot load certificate {auth.cert}: {exc}") from None
    if (loose := private_file_problem(path(auth.key), "a private key")) is not None:
        raise AuthConfigError("key", loose)
    try:
        key = certs.load_private_key(path(auth.key))
    except (OSError, ValueError) as exc:
        raise AuthConfigError("key", f"cannot load private key {auth.key}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
    if not _same_key(chain[0], key):
        raise AuthConfigError("key", f"{auth.key} is not the private key of {auth.cert}")
    try:
        trust = certs.TrustStore.from_files([path(p) for p in auth.ca])
    except (OSError, ValueError) as exc:
        raise AuthConfigError("ca", f"cannot load CA certificates: {exc}") from None
    return LoadedAuth(certificate=chain[0], private_key=key, intermediates=tuple(chain[1:]), trust=trust)


def _load_certs(path: Path) -> list[Any]:
    from cryptography import x509

    data = path.read_bytes()
    if b"-----BEGIN" in data:
        found = x509.load_pem_x509_certificates(data)
    else:
        found = [x509.load_der_x509_certificate(data)]
    if not found:
        raise ValueError("no certificate in the file")
    return found


def _same_key(cert: Any, key: Any) -> bool:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    fmt = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return bool(cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt))


def resolve(host: str) -> str:
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        return socket.gethostbyname(host)


def peer_config(name: str, conn: Connection, config: Config, base: Path | None = None) -> PeerConfig:
    assert conn.auth is not None
    local = str(config.gateway.public_address)
    remote = None if conn.remote == "%any" else resolve(conn.remote)
    auth = load_auth(conn.auth, base)
    if conn.auth.id is not None:
        local_id = Identity.parse(conn.auth.id)
    elif auth.certificate is not None:
        local_id = Identity.subject_of(auth.certificate)
    else:
        local_id = Identity.from_address(local)
    if conn.auth.remote_id is not None:
        remote_id = Identity.parse(conn.auth.remote_id)
    elif auth.certificate is not None or remote is None:
        remote_id = ANY
    else:
        remote_id = Identity.from_address(remote)
    if conn.mode == "tunnel":
        local_ts = tuple(TsRange.of_network(n) for n in conn.local_subnets)
        remote_ts = tuple(TsRange.of_network(n) for n in conn.remote_subnets)
        if conn.pool is not None and not remote_ts:
            remote_ts = (TsRange.of_network(config.pools[conn.pool].subnet),)
    elif conn.l2tp is not None:
        # L2TP/IPsec (RFC 3193 5): UDP 1701 between the two gateways. Clients may send from
        # another port (the LNS takes any); behind a NAT they name their private address,
        # which the IKEv1 responder replaces with the IKE endpoints' (RFC 3947 5.2).
        me = ipaddress.IPv4Address(local)
        local_ts = (TsRange(me, me, 17, 1701, 1701),)
        peer = (ipaddress.IPv4Address(0), ipaddress.IPv4Address("255.255.255.255")) if remote is None \
            else (ipaddress.IPv4Address(remote),) * 2
        ports = (0, 65535) if conn.l2tp.role == "lns" else (1701, 1701)
        remote_ts = (TsRange(peer[0], peer[1], 17, *ports),)
    else:
        local_ts = tuple(TsRange.of_network(n) for n in conn.local_subnets) or (
            TsRange.of_network(ipaddress.IPv4Network(local)),)
        remote_ts = tuple(TsRange.of_network(n) for n in conn.remote_subnets) or (
            TsRange(ipaddress.IPv4Address(0), ipaddress.IPv4Address("255.255.255.255")) if remote is None
            else TsRange.of_network(ipaddress.IPv4Network(remote)),)
    if config.policy is not None:  # rules that negotiate through this connection say what
        from gateway.policy.runtime import plan_policy

        runtime = plan_policy(config)
        negotiated = runtime.negotiated(name) if runtime is not None else None
        if negotiated is not None:
            local_ts, remote_ts = negotiated
    life = conn.lifetimes
    child = ChildConfig("net", local_ts, remote_ts,
                        tuple(parse_child_proposal(p) for p in conn.proposals.esp), conn.mode,
                        life.child, life.child_bytes, life.child_packets)
    return PeerConfig(
        name, local, remote, tuple(parse_ike_proposal(p) for p in conn.proposals.ike), child,
        local_id, remote_id, psk=auth.psk, certificate=auth.certificate, private_key=auth.private_key,
        intermediates=auth.intermediates, trust=auth.trust, rsa_pss=conn.ike.rsa_pss,
        ike_lifetime=life.ike, jitter=life.jitter, reauth_time=life.reauth, dpd_interval=conn.dpd.interval,
        dpd_timeout=conn.dpd.timeout,
        dpd_action=conn.dpd.action, force_encap=conn.encapsulation == "udp",
        fragmentation=conn.ike.fragmentation, fragment_size=conn.ike.fragment_size,
        remote_port=conn.ike.remote_port, initial_contact=conn.ike.initial_contact, pool=conn.pool,
        version=conn.ike.version)


def pools(config: Config) -> dict[str, AddressPool]:
    return {name: AddressPool(name, p.subnet, tuple(p.dns)) for name, p in config.pools.items()}


def timing(config: Config, epoch: float) -> Timing:
    """``epoch``: wall-clock seconds at the daemon's monotonic zero (the shell's clocks)."""
    ike = config.ike
    return Timing(retransmit_timeout=ike.retransmit_timeout, retransmit_tries=ike.retransmit_tries,
                  half_open_timeout=ike.half_open_timeout, epoch=epoch)


def limits(config: Config) -> ResponderLimits:
    """The responder limits of the ``ike`` section (cookies, half-open SAs)."""
    ike = config.ike
    return ResponderLimits(cookie_threshold=ike.cookie_threshold, half_open_max=ike.half_open_max,
                           half_open_per_source=ike.half_open_per_source)
