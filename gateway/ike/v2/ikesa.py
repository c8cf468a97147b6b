"""One IKE SA and its CHILD_SAs: the exchanges of RFC 7296 as a sans-IO state machine.

The structure follows strongSwan's tasks (ike_init, ike_auth, child_create, child_rekey,
ike_rekey, ike_dpd, ike_delete): each request we start is an `Outstanding` exchange
with a response handler and a retransmission schedule (2.1, 2.4); requests from the
peer are answered in `_on_request` and the answer is cached, so a retransmitted request
gets the same bytes back (2.1).  The window is one request each way (2.3).

Everything that needs the world (randomness, other SAs, sending, events) goes through
the `Context` the endpoint passes in; time is always a parameter.
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
import itertools
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.serialization import Encoding

from gateway.crypto.dh import InvalidKeyExchange, KeyExchange
from gateway.ike import certs, signatures
from gateway.ike.endpointbase import PeerIdentified
from gateway.ike.events import (
    AuthFailed,
    ChildSaActivate,
    ChildSaDown,
    ChildSaKeys,
    ChildSaUp,
    IkeSaDown,
    IkeSaUp,
    NegotiationFailed,
    Note,
    PeerDead,
    PeerMoved,
)
from gateway.ike.identity import Identity, IdType
from gateway.ike.pool import PoolExhausted
from gateway.ike.proposals import NegotiatedSuite
from gateway.ike.settings import ChildConfig, PeerConfig, Timing
from gateway.ike.trafficselectors import TsRange, narrow, within
from gateway.ike.v2 import authdata
from gateway.ike.v2.constants import (
    NATT_PORT,
    CertEncoding,
    CfgAttribute,
    CfgType,
    ExchangeType,
    Flag,
    NotifyType,
    PayloadType,
    ProtocolId,
)
from gateway.ike.v2.keymat import child_keymat, derive_ike_sa_keys, rekey_skeyseed, skeyseed
from gateway.ike.v2.message import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CpPayload,
    DeletePayload,
    EncryptedFragment,
    EncryptedPayload,
    Header,
    IdPayload,
    IdrPayload,
    KePayload,
    MalformedMessage,
    Message,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    TsPayload,
    TsrPayload,
    decode_payloads,
    encode_payloads,
)
from gateway.ike.v2.negotiation import (
    accept_response,
    build_proposals,
    describe_proposals,
    select,
    suite_of,
)
from gateway.ike.v2.protection import FragmentBuffer, IntegrityError, SkProtection

log = logging.getLogger("gateway.ike")

#: numbers SAs as they are made: the order of the endpoint's SAs (``_same_peer`` keeps it)
_CREATED = itertools.count()

NONCE_SIZE = 32
KEEPALIVE_SECONDS = 20.0  # RFC 3948 4: NAT-T keepalives from behind a NAT
UDP_IP_OVERHEAD = 28


class State(enum.Enum):
    INIT_SENT = "connecting"
    HALF_OPEN = "half-open"
    AUTH_SENT = "authenticating"
    ESTABLISHED = "established"
    REKEYED = "rekeyed"
    DELETING = "deleting"
    CLOSED = "closed"


class Context(Protocol):
    """What an IKE SA needs from the endpoint that owns it."""

    timing: Timing

    def random(self, n: int) -> bytes: ...
    def wall_time(self, now: float) -> datetime.datetime | None: ...
    def emit(self, event: object) -> None: ...
    def transmit(self, datagrams: list[bytes], local_port: int, remote: tuple[str, int]) -> None: ...
    def allocate_spi(self) -> int: ...
    def release_spi(self, spi: int) -> None: ...
    def refuse_child(self, name: str, remote_ts: tuple[TsRange, ...],
                     local_ts: tuple[TsRange, ...]) -> str | None: ...
    def configs_for(self, remote_ip: str) -> list[PeerConfig]: ...
    def adopt(self, ike_sa: IkeSa) -> None: ...
    def lease(self, pool: str, owner: str) -> ipaddress.IPv4Address: ...
    def release(self, pool: str, address: ipaddress.IPv4Address) -> None: ...
    def pool_dns(self, pool: str) -> tuple[ipaddress.IPv4Address, ...]: ...
    def initial_contact(self, ike_sa: IkeSa) -> None: ...
    def reauthenticate(self, ike_sa: IkeSa, now: float) -> None: ...
    def sa_closed(self, ike_sa: IkeSa) -> None: ...
    def peer_identified(self, ike_sa: IkeSa, old: Identity | None) -> None: ...


@dataclass
class ChildSa:
    config: ChildConfig
    spi_in: int
    spi_out: int
    suite: NegotiatedSuite
    mode: str
    local_ts: tuple[TsRange, ...]
    remote_ts: tuple[TsRange, ...]
    established: float
    rekey_at: float
    expire_at: float
    state: str = "installed"  # installed | rekeying | rekeyed | deleting
    #: the peer rekeyed this SA while we were rekeying it too (2.8.1): its exchange's
    #: nonces and the inbound SPI of the SA it created
    collision: tuple[bytes, bytes, int] | None = None
    tunnel: str = ""  # the dataplane tunnel (see ChildSaUp.tunnel); kept across rekeys

    def describe(self) -> dict[str, Any]:
        return {"name": self.config.name, "state": self.state, "spi_in": f"0x{self.spi_in:08x}",
                "spi_out": f"0x{self.spi_out:08x}", "mode": self.mode, "algorithm": self.suite.name,
                "local_ts": [str(t) for t in self.local_ts],
                "remote_ts": [str(t) for t in self.remote_ts]}


@dataclass
class Outstanding:
    """A request we sent and whose response we wait for."""

    message_id: int
    kind: str
    exchange: int
    datagrams: list[bytes] = field(repr=False)
    on_response: Callable[[Message, float], None] = field(repr=False)
    deadline: float
    tries: int = 0
    give_up_at: float | None = None  # DPD: a total time budget instead of a try count


@dataclass
class _ChildRequest:
    """A CHILD_SA negotiation in flight (IKE_AUTH or CREATE_CHILD_SA)."""

    config: ChildConfig
    spi_in: int
    proposals: list[Proposal]
    nonce: bytes = b""
    keyex: KeyExchange | None = field(default=None, repr=False)
    rekey: ChildSa | None = None


class IkeSa(PeerIdentified):
    """An IKE SA from either end.  ``initiator`` is the original initiator (the I flag)."""

    def __init__(self, ctx: Context, *, initiator: bool, config: PeerConfig | None, spi_i: bytes,
                 spi_r: bytes, local: tuple[str, int], remote: tuple[str, int], now: float) -> None:
        self.ctx = ctx
        self.seq = next(_CREATED)  # creation order: the endpoint's order of SAs
        self.initiator = initiator
        self.config = config
        self.spi_i = spi_i
        self.spi_r = spi_r
        self.local = local
        self.remote = remote
        self.state = State.INIT_SENT if initiator else State.HALF_OPEN
        self.started = now
        self.established_at: float | None = None
        self.last_received = now
        self.children: list[ChildSa] = []
        self.suite: NegotiatedSuite | None = None
        self.protection: SkProtection | None = None
        self.sk_d = b""
        self.sk_pi = b""
        self.sk_pr = b""
        self.nonce_i = b""
        self.nonce_r = b""
        self.keyex: KeyExchange | None = None
        self.init_request = b""  # RealMessage1
        self.init_response = b""  # RealMessage2
        self.nat_local = False
        self.nat_remote = False
        self.peer_fragmentation = False
        self.peer_hashes: tuple[int, ...] = ()
        self.peer_certreq = False
        self._peer_id: Identity | None = None
        #: a responder's key in its endpoint's table of half-open SAs, while it is there
        self.half_open_key: tuple[bytes, str, int] | None = None
        self.auth_used = ""
        self.next_request_id = 0
        self.next_expected = 0
        self.cached_response: tuple[int, list[bytes]] | None = None
        self.outstanding: Outstanding | None = None
        self.queue: list[tuple[str, Callable[[float], None]]] = []
        self.fragments: FragmentBuffer | None = None
        self.rekey_at: float | None = None
        self.delete_at: float | None = None
        self.close_reason = ""
        self.cookie = b""
        self.ke_retries = 0
        self.pending_child: _ChildRequest | None = None
        self.replaced_by: IkeSa | None = None
        self.keepalive_at: float | None = None
        self.redundant = False  # the loser of a rekey collision: closes without a report
        self.virtual_ip: ipaddress.IPv4Address | None = None
        self.reauth_at: float | None = None
        self.reauth_of: IkeSa | None = None  # the SA this one reauthenticates (2.8.3)
        self._init_proposals: list[Proposal] = []

    # -- naming -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name if self.config else "?"

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def up(self) -> bool:
        return self.state is State.ESTABLISHED

    @property
    def ident(self) -> str:
        return f"{self.spi_i.hex()}_i {self.spi_r.hex()}_r"

    @property
    def our_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    @property
    def remote_str(self) -> str:
        return f"{self.remote[0]}:{self.remote[1]}"

    @property
    def encapsulate(self) -> bool:
        """UDP-encapsulate ESP (RFC 3948): a NAT on either side, or forced by config."""
        return self.nat_local or self.nat_remote or bool(self.config and self.config.force_encap)

    def _note(self, what: str, level: str = "info", **fields: object) -> None:
        self.ctx.emit(Note(what, level, tuple((k, str(v)) for k, v in fields.items())))

    # =====================================================================================
    # sending
    # =====================================================================================
    def _flags(self, response: bool) -> int:
        flags = Flag.INITIATOR if self.initiator else 0
        return flags | (Flag.RESPONSE if response else 0)

    def _fragment_size(self) -> int | None:
        if not (self.peer_fragmentation and self.config and self.config.fragmentation):
            return None
        size = self.config.fragment_size - UDP_IP_OVERHEAD
        return size - 4 if self.local[1] == NATT_PORT else size

    def _encode(self, exchange: int, message_id: int, payloads: list[Payload], response: bool) -> list[bytes]:
        header = Header(self.spi_i, self.spi_r, 0, exchange, self._flags(response), message_id)
        first, body = encode_payloads(payloads)
        if exchange == ExchangeType.IKE_SA_INIT:
            header.next_payload = first
            header.length = 28 + len(body)
            return [header.encode() + body]
        assert self.protection is not None
        fragment_size = self._fragment_size() if exchange == ExchangeType.IKE_AUTH else None
        return self.protection.seal(header, first, body, fragment_size)

    def _request(self, kind: str, exchange: int, payloads: list[Payload],
                 on_response: Callable[[Message, float], None], now: float, *,
                 budget: float | None = None) -> None:
        mid = self.next_request_id
        self.next_request_id += 1
        datagrams = self._encode(exchange, mid, payloads, False)
        timing = self.ctx.timing
        self.outstanding = Outstanding(mid, kind, exchange, datagrams, on_response,
                                       now + timing.retransmit_timeout,
                                       give_up_at=now + budget if budget else None)
        if budget:
            self.outstanding.deadline = now + min(timing.retransmit_timeout, budget / 3)
        self.ctx.transmit(datagrams, self.local[1], self.remote)

    def _respond(self, request: Header, payloads: list[Payload]) -> None:
        datagrams = self._encode(request.exchange, request.message_id, payloads, True)
        self.cached_response = (request.message_id, datagrams)
        self.ctx.transmit(datagrams, self.local[1], self.remote)

    def _enqueue(self, kind: str, start: Callable[[float], None], now: float) -> None:
        if any(k == kind for k, _ in self.queue):
            return
        self.queue.append((kind, start))
        self._next_task(now)

    def _next_task(self, now: float) -> None:
        # A task may find nothing to do (its SA went away meanwhile): go on to the next.
        while self.outstanding is None and self.queue and self.state in (State.ESTABLISHED, State.REKEYED):
            _, start = self.queue.pop(0)
            start(now)

    # =====================================================================================
    # IKE_SA_INIT, initiator side (1.2)
    # =====================================================================================
    def start(self, now: float, group_id: int | None = None) -> None:
        cfg = self.config
        assert cfg is not None
        groups = [g for s in cfg.ike_proposals for g in s.dh]
        group = next((g for g in groups if g.id == group_id), groups[0])
        self.keyex = group.generate(self.ctx.random)
        self.nonce_i = self.nonce_i or self.ctx.random(NONCE_SIZE)
        self.state = State.INIT_SENT
        self.next_request_id = 0
        proposals = build_proposals(list(cfg.ike_proposals), ProtocolId.IKE, b"")
        payloads: list[Payload] = []
        if self.cookie:
            payloads.append(NotifyPayload(NotifyType.COOKIE, self.cookie))
        payloads += [SaPayload(proposals), KePayload(group.id, self.keyex.public),
                     NoncePayload(self.nonce_i)]
        payloads += self._nat_detection_payloads(self.spi_i, bytes(8))
        if cfg.fragmentation:
            payloads.append(NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
        payloads.append(_signature_hashes_notify())
        self._init_proposals = proposals
        self._request("ike_init", ExchangeType.IKE_SA_INIT, payloads, self._on_init_response, now)
        assert self.outstanding is not None
        self.init_request = self.outstanding.datagrams[0]

    def _nat_detection_payloads(self, spi_i: bytes, spi_r: bytes) -> list[Payload]:
        cfg = self.config
        source = authdata.nat_detection_hash(spi_i, spi_r, *self.local)
        if cfg is not None and cfg.force_encap:
            source = self.ctx.random(20)  # fake a NAT so the peer encapsulates (RFC 3948)
        dest = authdata.nat_detection_hash(spi_i, spi_r, *self.remote)
        return [NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, source),
                NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, dest)]

    def _check_nat(self, msg: Message) -> None:
        """2.23: compare the peer's hashes with the addresses as we see them."""
        sources = [n.data for n in msg.notifies() if n.type == NotifyType.NAT_DETECTION_SOURCE_IP]
        dest = msg.notify(NotifyType.NAT_DETECTION_DESTINATION_IP)
        if not sources and dest is None:
            return
        spi_r = self.spi_r if msg.header.is_response else bytes(8)
        seen_remote = authdata.nat_detection_hash(self.spi_i, spi_r, *self.remote)
        seen_local = authdata.nat_detection_hash(self.spi_i, spi_r, *self.local)
        self.nat_remote = bool(sources) and seen_remote not in sources
        self.nat_local = dest is not None and dest.data != seen_local

    def _on_init_response(self, msg: Message, now: float) -> None:
        cfg = self.config
        assert cfg is not None and self.keyex is not None
        cookie = msg.notify(NotifyType.COOKIE)
        if cookie is not None:
            if self.cookie and self.ke_retries > 3:
                return self._fail_negotiation("ike_init", "cookie_loop",
                                              "the responder keeps asking for a cookie", now)
            self.cookie = cookie.data
            self.ke_retries += 1
            self._note("ike.cookie_requested", connection=self.name, peer=self.remote_str)
            return self.start(now, self.keyex.group.id)
        invalid_ke = msg.notify(NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke is not None:
            wanted = struct.unpack("!H", invalid_ke.data[:2])[0] if len(invalid_ke.data) >= 2 else 0
            ours = {g.id for s in cfg.ike_proposals for g in s.dh}
            if wanted not in ours or self.ke_retries > 3 or wanted == self.keyex.group.id:
                detail = f"responder wants DH group {wanted}, we offer {sorted(ours)}"
                return self._fail_negotiation("ike_init", "invalid_ke", detail, now)
            self.ke_retries += 1
            self._note("ike.invalid_ke_retry", connection=self.name, peer=self.remote_str,
                       group=wanted, sent=self.keyex.group.id)
            return self.start(now, wanted)
        error = msg.error_notify()
        if error is not None:
            offered = describe_proposals(self._init_proposals)
            return self._fail_negotiation("ike_init", error.name.lower(),
                                          f"peer answered {error.name}; we offered {offered}", now)
        sa = msg.find(SaPayload)
        ke = msg.find(KePayload)
        nonce = msg.find(NoncePayload)
        if not (isinstance(sa, SaPayload) and isinstance(ke, KePayload) and isinstance(nonce, NoncePayload)):
            return self._fail_negotiation("ike_init", "invalid_syntax",
                                          "IKE_SA_INIT response lacks SA, KE or Nonce", now)
        chosen = accept_response(self._init_proposals, sa.proposals)
        if chosen is None:
            detail = f"responder chose {describe_proposals(sa.proposals)}, not one we offered"
            return self._fail_negotiation("ike_init", "bad_proposal", detail, now)
        suite = suite_of(chosen)
        if suite.dh is None or suite.dh.id != ke.group or ke.group != self.keyex.group.id:
            return self._fail_negotiation("ike_init", "invalid_ke",
                                          f"KE group {ke.group} does not match the proposal", now)
        self.spi_r = msg.header.spi_r
        self.nonce_r = nonce.data
        self.init_response = msg.raw
        try:
            shared = self.keyex.shared_secret(ke.data)
        except InvalidKeyExchange as exc:
            return self._fail_negotiation("ike_init", "invalid_ke", f"peer's public value: {exc}", now)
        self._derive(suite, shared)
        self._check_nat(msg)
        self.peer_fragmentation = msg.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
        self.peer_hashes = _parse_hashes(msg.notify(NotifyType.SIGNATURE_HASH_ALGORITHMS))
        self.peer_certreq = msg.find(CertReqPayload) is not None
        if self.encapsulate and self.local[1] != NATT_PORT:
            # 2.23: move to port 4500 for everything after IKE_SA_INIT.
            self.local = (self.local[0], NATT_PORT)
            self.remote = (self.remote[0], NATT_PORT)
        self._note("ike.init_done", connection=self.name, peer=self.remote_str, suite=suite.name,
                   nat_local=self.nat_local, nat_remote=self.nat_remote)
        self._send_auth(now)

    def _derive(self, suite: NegotiatedSuite, shared: bytes) -> None:
        assert suite.prf is not None
        self.suite = suite
        seed = skeyseed(suite.prf, self.nonce_i, self.nonce_r, shared)
        self._install_keys(suite, seed)

    def _install_keys(self, suite: NegotiatedSuite, seed: bytes) -> None:
        assert suite.prf is not None
        integ_size = suite.integrity.key_size if suite.integrity else 0
        keys = derive_ike_sa_keys(suite.prf, seed, self.nonce_i, self.nonce_r, self.spi_i, self.spi_r,
                                  integ_key_size=integ_size, encr_key_size=suite.encryption.keymat_size)
        self.sk_d, self.sk_pi, self.sk_pr = keys.sk_d, keys.sk_pi, keys.sk_pr
        self.protection = SkProtection(suite.encryption, suite.integrity, keys, self.initiator,
                                       self.ctx.random)

    # =====================================================================================
    # IKE_AUTH, initiator side (1.2, 2.15)
    # =====================================================================================
    def _send_auth(self, now: float) -> None:
        cfg = self.config
        assert cfg is not None
        id_payload = IdPayload(cfg.local_id.type, cfg.local_id.data)
        payloads: list[Payload] = [id_payload]
        if cfg.certificate is not None:
            payloads += self._cert_payloads()
        if cfg.trust is not None:
            payloads += self._certreq_payloads()
        if cfg.remote_id.type != 0 and not cfg.remote_id.is_any:
            payloads.append(IdrPayload(cfg.remote_id.type, cfg.remote_id.data))
        octets = authdata.signed_octets(self.suite.prf, self.init_request, self.nonce_r,  # type: ignore[union-attr]
                                        self.sk_pi, id_payload.body_for_auth())
        payloads.append(self._make_auth(octets))
        if cfg.initial_contact and self.reauth_of is None:  # 2.4: not while the old SA lives
            payloads.append(NotifyPayload(NotifyType.INITIAL_CONTACT))
        request = self._child_request(cfg.child, now, ike_auth=True)
        if cfg.child.mode == "transport":
            payloads.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
        payloads += [SaPayload(request.proposals), TsPayload(list(cfg.child.local_ts)),
                     TsrPayload(list(cfg.child.remote_ts))]
        self.pending_child = request
        self.state = State.AUTH_SENT
        self._request("ike_auth", ExchangeType.IKE_AUTH, payloads, self._on_auth_response, now)

    def _cert_payloads(self) -> list[Payload]:
        cfg = self.config
        assert cfg is not None
        certs = [cfg.certificate, *cfg.intermediates]
        return [CertPayload(CertEncoding.X509_SIGNATURE, c.public_bytes(Encoding.DER)) for c in certs]

    def _certreq_payloads(self) -> list[Payload]:
        cfg = self.config
        assert cfg is not None and cfg.trust is not None
        hashes = b"".join(cfg.trust.certreq_hashes())
        return [CertReqPayload(CertEncoding.X509_SIGNATURE, hashes)] if hashes else []

    def _make_auth(self, octets: bytes) -> AuthPayload:
        cfg = self.config
        assert cfg is not None and self.suite is not None and self.suite.prf is not None
        if cfg.psk is not None:
            self.auth_used = "psk"
            return AuthPayload(2, authdata.psk_auth(self.suite.prf, cfg.psk.reveal(), octets))
        known = signatures.HashAlgorithm._value2member_map_
        peer_hashes = [signatures.HashAlgorithm(h) for h in self.peer_hashes if h in known]
        method, data = signatures.sign(cfg.private_key, octets,
                                       method=signatures.AuthMethod.DIGITAL_SIGNATURE,
                                       peer_hashes=peer_hashes, rsa_pss=cfg.rsa_pss)
        self.auth_used = "pubkey"
        return AuthPayload(int(method), data)

    def _on_auth_response(self, msg: Message, now: float) -> None:
        cfg = self.config
        assert cfg is not None
        if msg.notify(NotifyType.AUTHENTICATION_FAILED) is not None:
            detail = f"the peer refused our authentication ({self.auth_used}, id {cfg.local_id})"
            self.ctx.emit(AuthFailed(self.name, self.remote_str, "peer_refused", detail))
            return self._close("peer refused our authentication", now, notify_peer=False)
        idr = msg.find(IdrPayload)
        auth = msg.find(AuthPayload)
        if not (isinstance(idr, IdrPayload) and isinstance(auth, AuthPayload)):
            error = msg.error_notify()
            detail = f"peer answered {error.name}" if error else "IKE_AUTH response lacks IDr or AUTH"
            self._fail_negotiation("ike_auth", error.name.lower() if error else "invalid_syntax", detail, now)
            return
        peer_id = _wire_identity(idr)
        if peer_id is None or not cfg.remote_id.matches(peer_id):
            detail = f"peer identity {peer_id} does not match the configured {cfg.remote_id}"
            self.ctx.emit(AuthFailed(self.name, self.remote_str, "identity_mismatch", detail))
            return self._close("peer identity mismatch", now)
        octets = authdata.signed_octets(self.suite.prf, self.init_response, self.nonce_i,  # type: ignore[union-attr]
                                        self.sk_pr, idr.body_for_auth())
        failure = self._verify_auth(cfg, peer_id, auth, octets, msg, now)
        if failure is not None:
            self.ctx.emit(AuthFailed(self.name, self.remote_str, failure[0], failure[1]))
            return self._close(f"peer authentication failed: {failure[1]}", now)
        self.peer_id = peer_id
        self._established(now)
        request = self.pending_child
        self.pending_child = None
        if request is not None:
            self._finish_child(request, msg, now, nonce_i=self.nonce_i, nonce_r=self.nonce_r, ike_auth=True)
        old, self.reauth_of = self.reauth_of, None
        if old is not None and old.state is State.ESTABLISHED:
            # Make-before-break (2.8.3): the new SAs carry traffic; now the old ones go.
            self._note("ike.reauthenticated", connection=self.name, old=old.ident, new=self.ident)
            old.delete_ike(now, reason="reauthenticated", quiet=True)

    def _verify_auth(self, cfg: PeerConfig, peer_id: Identity, auth: AuthPayload, octets: bytes,
                     msg: Message, now: float) -> tuple[str, str] | None:
        """None if the peer proved its identity; else (reason tag, readable detail)."""
        assert self.suite is not None and self.suite.prf is not None
        if auth.method == 2:
            if cfg.psk is None:
                return "method_mismatch", f"peer {peer_id} used a pre-shared key; we expect a certificate"
            if not authdata.psk_verify(self.suite.prf, cfg.psk.reveal(), octets, auth.data):
                return "bad_psk", f"pre-shared key AUTH from {peer_id} does not verify (wrong PSK?)"
            return None
        if cfg.trust is None:
            return ("method_mismatch",
                    f"peer {peer_id} used a signature (method {auth.method}); we expect a PSK")
        ders = [p.data for p in msg.all(CertPayload) if isinstance(p, CertPayload)
                and p.encoding == CertEncoding.X509_SIGNATURE]
        try:
            cert = certs.peer_certificate(cfg.trust, peer_id, ders, self.ctx.wall_time(now))
        except certs.PeerCertificateRejected as exc:
            return exc.reason, str(exc)
        try:
            scheme = signatures.verify(cert.public_key(), octets, signatures.AuthMethod(auth.method),
                                       auth.data, our_hashes=signatures.SUPPORTED_HASHES)
        except (signatures.SignatureRejected, ValueError) as exc:
            return "bad_signature", f"signature of {peer_id}: {exc}"
        self.auth_used = f"pubkey ({scheme})"
        return None

    def _established(self, now: float) -> None:
        cfg = self.config
        assert cfg is not None and self.suite is not None
        self.state = State.ESTABLISHED
        self.established_at = now
        self.last_received = now
        self.rekey_at = now + self._jittered(cfg.ike_lifetime)
        if cfg.reauth_time and cfg.remote_address is not None:
            self.reauth_at = now + self._jittered(cfg.reauth_time)
        self.ctx.emit(IkeSaUp(self.name, self.ident, f"{self.local[0]}:{self.local[1]}", self.remote_str,
                              self.initiator, self.suite.name, str(cfg.local_id), str(self.peer_id),
                              self.nat_local, self.nat_remote, self.auth_used, round(now - self.started, 3)))

    def _jittered(self, seconds: float) -> float:
        cfg = self.config
        jitter = cfg.jitter if cfg is not None and cfg.jitter is not None else self.ctx.timing.jitter
        fraction = int.from_bytes(self.ctx.random(2), "big") / 65535
        return seconds * (1 - jitter * fraction)

    # =====================================================================================
    # CHILD_SA creation (1.3, 2.17) — shared by IKE_AUTH and CREATE_CHILD_SA
    # =====================================================================================
    def _child_request(self, child: ChildConfig, now: float, *, ike_auth: bool,
                       rekey: ChildSa | None = None, group_id: int | None = None) -> _ChildRequest:
        spi = self.ctx.allocate_spi()
        proposals = build_proposals(list(child.proposals), ProtocolId.ESP, spi.to_bytes(4, "big"),
                                    include_dh=not ike_auth)
        req = _ChildRequest(child, spi, proposals, rekey=rekey)
        if not ike_auth:
            req.nonce = self.ctx.random(NONCE_SIZE)
            groups = [g for s in child.proposals for g in s.dh]
            if groups:
                group = next((g for g in groups if g.id == group_id), groups[0])
                req.keyex = group.generate(self.ctx.random)
        return req

    def _finish_child(self, req: _ChildRequest, msg: Message, now: float, *,
                      nonce_i: bytes, nonce_r: bytes, ike_auth: bool) -> None:
        """The initiator's handling of the CHILD_SA part of a response."""
        error = msg.error_notify()
        sa = msg.find(SaPayload)
        tsi, tsr = msg.find(TsPayload), msg.find(TsrPayload)
        if error is not None or not isinstance(sa, SaPayload):
            self.ctx.release_spi(req.spi_in)
            name = error.name if error else "no SA payload"
            detail = (f"CHILD_SA {req.config.name} refused by peer ({name}); we offered "
                      f"{describe_proposals(req.proposals)} for {_ts_text(req.config.local_ts)} === "
                      f"{_ts_text(req.config.remote_ts)}")
            self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "child", name.lower(), detail))
            if req.rekey is not None:
                req.rekey.state = "installed"
            return
        chosen = accept_response(req.proposals, sa.proposals, ignore_dh=ike_auth)
        if chosen is None or len(chosen.spi) != 4:
            self._refuse_child(req.spi_in, now)
            detail = f"peer chose {describe_proposals(sa.proposals)}, not one we offered"
            self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "child", "bad_proposal", detail))
            return
        if not (isinstance(tsi, TsPayload) and isinstance(tsr, TsrPayload)
                and within(tsi.selectors, req.config.local_ts)
                and within(tsr.selectors, req.config.remote_ts)):
            self._refuse_child(req.spi_in, now)
            self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "child", "ts_unacceptable",
                                            "peer's traffic selectors are not within ours"))
            return
        mode = "transport" if msg.notify(NotifyType.USE_TRANSPORT_MODE) else "tunnel"
        if mode != req.config.mode:
            self._refuse_child(req.spi_in, now)
            self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "child", "mode_mismatch",
                                            f"we asked for {req.config.mode} mode, peer chose {mode}"))
            return
        suite = suite_of(chosen)
        shared = None
        if not ike_auth and suite.dh is not None:
            ke = msg.find(KePayload)
            if req.keyex is None or not isinstance(ke, KePayload) or ke.group != suite.dh.id:
                self._refuse_child(req.spi_in, now)
                self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "child", "invalid_ke",
                                                "PFS group in the answer does not match our KE"))
                return
            try:
                shared = req.keyex.shared_secret(ke.data)
            except InvalidKeyExchange as exc:
                self._refuse_child(req.spi_in, now)
                self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "child", "invalid_ke", str(exc)))
                return
        self._install_child(req.config, suite, req.spi_in, int.from_bytes(chosen.spi, "big"), mode,
                            tuple(tsi.selectors), tuple(tsr.selectors), nonce_i, nonce_r, shared,
                            we_initiated=True, now=now, rekey=req.rekey)

    def _refuse_child(self, spi_in: int, now: float) -> None:
        """The peer installed a CHILD_SA we cannot accept: delete it (1.3.1)."""

        def start(now: float) -> None:
            def on_response(msg: Message, now: float) -> None:
                self.ctx.release_spi(spi_in)

            self._request("child_delete", ExchangeType.INFORMATIONAL,
                          [DeletePayload(ProtocolId.ESP, [spi_in.to_bytes(4, "big")])], on_response, now)

        self._enqueue(f"child_refuse:{spi_in}", start, now)

    def _install_child(self, config: ChildConfig, suite: NegotiatedSuite, spi_in: int, spi_out: int,
                       mode: str, local_ts: tuple[TsRange, ...], remote_ts: tuple[TsRange, ...],
                       nonce_i: bytes, nonce_r: bytes, shared: bytes | None, *, we_initiated: bool,
                       now: float, rekey: ChildSa | None) -> ChildSa:
        assert self.suite is not None and self.suite.prf is not None
        enc_size = suite.encryption.keymat_size
        integ_size = suite.integrity.key_size if suite.integrity else 0
        keymat = child_keymat(self.suite.prf, self.sk_d, nonce_i, nonce_r, 2 * (enc_size + integ_size),
                              shared)
        enc_i = keymat[:enc_size]
        integ_i = keymat[enc_size:enc_size + integ_size]
        enc_r = keymat[enc_size + integ_size:2 * enc_size + integ_size]
        integ_r = keymat[2 * enc_size + integ_size:]
        if we_initiated:
            keys = ChildSaKeys(enc_i, integ_i, enc_r, integ_r)
        else:
            keys = ChildSaKeys(enc_r, integ_r, enc_i, integ_i)
        lifetime = config.lifetime
        child = ChildSa(config, spi_in, spi_out, suite, mode, local_ts, remote_ts, now,
                        rekey_at=now + self._jittered(lifetime), expire_at=now + lifetime * 1.1,
                        tunnel=rekey.tunnel if rekey is not None and rekey.tunnel else self._tunnel_key())
        self.children.append(child)
        encap = self.remote[1] if self.encapsulate else None
        self.ctx.emit(ChildSaUp(self.name, self.ident, spi_in, spi_out, 50, mode, suite, keys, local_ts,
                                remote_ts, self.local[0], self.remote[0], encap,
                                rekey.spi_in if rekey is not None else None, lifetime,
                                str(self.virtual_ip) if self.virtual_ip else None,
                                activate=we_initiated or rekey is None, tunnel=child.tunnel))
        if rekey is not None and (we_initiated or rekey.state == "installed"):
            rekey.state = "rekeyed"
        return child

    def _tunnel_key(self) -> str:
        """One dataplane tunnel per connection, or per peer for a connection open to many
        (as in IKEv1): each peer's policy keeps its own outbound SA and selectors."""
        if self.config is None or self.config.remote_address is not None:
            return self.name
        return f"{self.name}@{self.remote[0]}:{self.remote[1]}"

    # =====================================================================================
    # receiving
    # =====================================================================================
    def receive(self, data: bytes, header: Header, remote: tuple[str, int], now: float) -> None:
        if self.state is State.CLOSED:
            return
        if header.is_response:
            out = self.outstanding
            if out is None or out.message_id != header.message_id or out.exchange != header.exchange:
                self._note("ike.unexpected_response", "debug", ike_sa=self.ident, message=header.describe())
                return
        else:
            if header.message_id + 1 == self.next_expected and self.cached_response is not None \
                    and self.cached_response[0] == header.message_id:
                if header.next_payload != PayloadType.SKF or _fragment_number(data) == 1:
                    self.ctx.transmit(self.cached_response[1], self.local[1], self.remote)
                return
            if header.message_id != self.next_expected:
                self._note("ike.bad_message_id", "debug", ike_sa=self.ident, got=header.message_id,
                           expected=self.next_expected)
                return
        msg = self._decode(data, header)
        if msg is None:
            return
        self.last_received = now
        if self.state is State.ESTABLISHED and remote != self.remote and self.nat_remote:
            self._note("ike.peer_moved", ike_sa=self.ident, old=self.remote_str,
                       new=f"{remote[0]}:{remote[1]}")
            self.remote = remote  # 2.23: follow a NAT mapping change
            self.ctx.emit(PeerMoved(self.name, self.ident, remote, tuple(c.spi_in for c in self.children)))
        if header.is_response:
            out = self.outstanding
            assert out is not None
            self.outstanding = None
            out.on_response(msg, now)
            self._next_task(now)
        else:
            self.next_expected += 1
            self._on_request(msg, now)

    def _decode(self, data: bytes, header: Header) -> Message | None:
        authentic = False
        try:
            payloads = decode_payloads(header.next_payload, data[28:], 28)
            if header.exchange == ExchangeType.IKE_SA_INIT:
                if self.state not in (State.INIT_SENT, State.HALF_OPEN):
                    self._note("ike.unexpected_init", "debug", ike_sa=self.ident, message=header.describe())
                    return None
                return Message(header, payloads, data)
            if not payloads or not isinstance(payloads[-1], (EncryptedPayload, EncryptedFragment)):
                self._note("ike.unprotected", "warning", ike_sa=self.ident, message=header.describe())
                return None
            if self.protection is None:
                return None
            sk = payloads[-1]
            plain = self.protection.open(data, sk)
            authentic = True
            if isinstance(sk, EncryptedFragment):
                if sk.total == 0 or not 1 <= sk.number <= sk.total or sk.total > 64:
                    raise MalformedMessage("bad fragment numbering")
                buf = self.fragments
                if buf is None or buf.message_id != header.message_id or buf.total != sk.total:
                    buf = self.fragments = FragmentBuffer(header.message_id, sk.total)
                whole = buf.add(sk, plain)
                if whole is None:
                    return None
                self.fragments = None
                inner = decode_payloads(buf.first_inner, whole)
            else:
                inner = decode_payloads(sk.first_inner, plain)
            return Message(header, payloads[:-1] + inner)
        except IntegrityError as exc:
            self._note("ike.integrity_failed", "warning", ike_sa=self.ident, message=header.describe(),
                       detail=str(exc))
        except MalformedMessage as exc:
            self._note("ike.malformed", "warning", ike_sa=self.ident, message=header.describe(),
                       detail=str(exc))
            if authentic and not header.is_response and header.message_id == self.next_expected:
                # RFC 7296 2.21.1: an authentic request whose payloads do not parse gets an
                # INVALID_SYNTAX answer (the peer stops retransmitting it), and uses its ID
                self.next_expected += 1
                self._respond(header, [NotifyPayload(NotifyType.INVALID_SYNTAX)])
        return None

    # =====================================================================================
    # requests from the peer
    # =====================================================================================
    def _on_request(self, msg: Message, now: float) -> None:
        ex = msg.header.exchange
        if ex == ExchangeType.IKE_AUTH and self.state is State.HALF_OPEN:
            return self._on_auth_request(msg, now)
        if self.state not in (State.ESTABLISHED, State.REKEYED, State.DELETING):
            self._note("ike.request_in_wrong_state", "debug", ike_sa=self.ident, message=msg.summary(),
                       state=self.state.value)
            return
        if ex == ExchangeType.INFORMATIONAL:
            return self._on_informational(msg, now)
        if ex == ExchangeType.CREATE_CHILD_SA:
            return self._on_create_child(msg, now)
        self._respond(msg.header, [NotifyPayload(NotifyType.INVALID_SYNTAX)])

    # -- responder: IKE_SA_INIT is handled by the endpoint, which calls this ---------------
    def respond_init(self, msg: Message, config: PeerConfig, chosen: Proposal, keyex: KeyExchange,
                     peer_public: bytes, now: float) -> bool:
        self.config = config
        suite = suite_of(chosen)
        nonce = msg.find(NoncePayload)
        assert isinstance(nonce, NoncePayload)
        self.nonce_i = nonce.data
        self.nonce_r = self.ctx.random(NONCE_SIZE)
        self.init_request = msg.raw
        self.keyex = keyex
        try:
            shared = keyex.shared_secret(peer_public)
        except InvalidKeyExchange as exc:
            self.ctx.emit(NegotiationFailed(config.name, self.remote_str, "ike_init", "invalid_ke", str(exc)))
            return False
        self._derive(suite, shared)
        self._check_nat(msg)
        self.peer_fragmentation = msg.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
        self.peer_hashes = _parse_hashes(msg.notify(NotifyType.SIGNATURE_HASH_ALGORITHMS))
        payloads: list[Payload] = [SaPayload([chosen]), KePayload(keyex.group.id, keyex.public),
                                   NoncePayload(self.nonce_r)]
        payloads += self._nat_detection_payloads(self.spi_i, self.spi_r)
        if config.fragmentation:
            payloads.append(NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
        payloads.append(_signature_hashes_notify())
        if config.trust is not None:
            payloads += self._certreq_payloads()
        self.next_expected = 1
        self._respond(msg.header, payloads)
        assert self.cached_response is not None
        self.init_response = self.cached_response[1][0]
        self._note("ike.init_answered", connection=config.name, peer=self.remote_str, suite=suite.name,
                   nat_local=self.nat_local, nat_remote=self.nat_remote)
        return True

    def _on_auth_request(self, msg: Message, now: float) -> None:
        idi = msg.find(IdPayload)
        auth = msg.find(AuthPayload)
        if not (isinstance(idi, IdPayload) and isinstance(auth, AuthPayload)):
            self._respond(msg.header, [NotifyPayload(NotifyType.INVALID_SYNTAX)])
            return self._close("IKE_AUTH request without IDi or AUTH", now, notify_peer=False)
        peer_id = _wire_identity(idi)
        if peer_id is None:
            self._respond(msg.header, [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)])
            self.ctx.emit(AuthFailed(None, self.remote_str, "bad_identity",
                                     f"unusable IDi (type {idi.id_type}, {len(idi.data)} octets)"))
            return self._close("unusable peer identity", now, notify_peer=False)
        idr = msg.find(IdrPayload)
        wanted_id = _wire_identity(idr) if isinstance(idr, IdrPayload) else None
        octets = authdata.signed_octets(self.suite.prf, self.init_request, self.nonce_r,  # type: ignore[union-attr]
                                        self.sk_pi, idi.body_for_auth())
        candidates = [c for c in self.ctx.configs_for(self.remote[0])
                      if c.remote_id.matches(peer_id)
                      and (wanted_id is None or wanted_id.matches(c.local_id))
                      and (auth.method == 2) == (c.psk is not None)]
        if not candidates:
            known = [f"{c.name} ({c.remote_id}, {c.auth_method})"
                     for c in self.ctx.configs_for(self.remote[0])]
            detail = (f"no connection for peer identity {peer_id} with auth method {auth.method}"
                      f"{f' and our identity {wanted_id}' if wanted_id else ''}; configured: "
                      f"{', '.join(known) or 'none for this address'}")
            self._respond(msg.header, [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)])
            self.ctx.emit(AuthFailed(None, self.remote_str, "no_matching_connection", detail))
            return self._close("no matching connection", now, notify_peer=False)
        failure: tuple[str, str] | None = None
        chosen_cfg: PeerConfig | None = None
        for cfg in candidates:
            failure = self._verify_auth(cfg, peer_id, auth, octets, msg, now)
            if failure is None:
                chosen_cfg = cfg
                break
        if chosen_cfg is None:
            assert failure is not None
            self._respond(msg.header, [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)])
            self.ctx.emit(AuthFailed(candidates[0].name, self.remote_str, failure[0], failure[1]))
            return self._close(f"authentication failed: {failure[1]}", now, notify_peer=False)
        self.config = cfg = chosen_cfg
        self.peer_id = peer_id
        id_payload = IdrPayload(cfg.local_id.type, cfg.local_id.data)
        payloads: list[Payload] = [id_payload]
        if cfg.certificate is not None:
            payloads += self._cert_payloads()
        r_octets = authdata.signed_octets(self.suite.prf, self.init_response, self.nonce_i,  # type: ignore[union-attr]
                                          self.sk_pr, id_payload.body_for_auth())
        payloads.append(self._make_auth(r_octets))
        self._established(now)
        if msg.notify(NotifyType.INITIAL_CONTACT) is not None:
            self.ctx.initial_contact(self)
        cp_payloads = self._answer_cp(msg, cfg)
        if cp_payloads and isinstance(cp_payloads[0], NotifyPayload):
            return self._respond(msg.header, payloads + cp_payloads)  # IKE SA without a CHILD_SA
        child_payloads = self._answer_child(msg, cfg.child, now, self.nonce_i, self.nonce_r, ike_auth=True)
        self._respond(msg.header, payloads + cp_payloads + child_payloads)

    def _answer_cp(self, msg: Message, cfg: PeerConfig) -> list[Payload]:
        """3.15: a remote-access client asks for an address (and DNS servers)."""
        cp = msg.find(CpPayload)
        if not isinstance(cp, CpPayload) or cp.cfg_type != CfgType.REQUEST or cfg.pool is None:
            return []
        wanted = {a for a, _ in cp.attributes}
        if CfgAttribute.INTERNAL_IP4_ADDRESS not in wanted:
            return []
        try:
            vip = self.ctx.lease(cfg.pool, str(self.peer_id))
        except PoolExhausted as exc:
            self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "config", "pool_exhausted", str(exc)))
            return [NotifyPayload(NotifyType.INTERNAL_ADDRESS_FAILURE)]
        self.virtual_ip = vip
        attributes = [(int(CfgAttribute.INTERNAL_IP4_ADDRESS), vip.packed)]
        # 3.15.1: a responder may return attributes that were not asked for; clients that
        # asked only for an address (strongSwan without a DNS handler) still learn them.
        attributes += [(int(CfgAttribute.INTERNAL_IP4_DNS), d.packed) for d in self.ctx.pool_dns(cfg.pool)]
        self._note("ike.virtual_ip", connection=self.name, peer=str(self.peer_id), address=vip, pool=cfg.pool)
        return [CpPayload(CfgType.REPLY, attributes)]

    def _answer_child(self, msg: Message, child: ChildConfig, now: float, nonce_i: bytes, nonce_r: bytes,
                      *, ike_auth: bool, rekey: ChildSa | None = None) -> list[Payload]:
        """Responder side of a CHILD_SA: choose, narrow, install; the payloads to answer."""
        sa, tsi, tsr = msg.find(SaPayload), msg.find(TsPayload), msg.find(TsrPayload)
        if not (isinstance(sa, SaPayload) and isinstance(tsi, TsPayload) and isinstance(tsr, TsrPayload)):
            return [NotifyPayload(NotifyType.INVALID_SYNTAX)] if not ike_auth else []
        ours = build_proposals(list(child.proposals), ProtocolId.ESP, b"", include_dh=not ike_auth)
        chosen = select(ours, sa.proposals, ignore_dh=ike_auth)
        if chosen is None or len(chosen.spi) != 4:
            detail = (f"CHILD_SA {child.name}: peer offered {describe_proposals(sa.proposals)}"
                      f"; we accept {describe_proposals(ours)}")
            self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "child", "no_proposal_chosen",
                                            detail))
            return [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)]
        local_ts = narrow(tsr.selectors, list(child.local_ts))
        vip = self.virtual_ip
        allowed_remote = [TsRange(vip, vip)] if vip is not None else list(child.remote_ts)
        remote_ts = narrow(tsi.selectors, allowed_remote)
        if not local_ts or not remote_ts:
            detail = (f"CHILD_SA {child.name}: peer proposed {_ts_text(tsi.selectors)} === "
                      f"{_ts_text(tsr.selectors)}; we allow {_ts_text(child.remote_ts)} === "
                      f"{_ts_text(child.local_ts)}")
            self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "child", "ts_unacceptable", detail))
            return [NotifyPayload(NotifyType.TS_UNACCEPTABLE)]
        refusal = self.ctx.refuse_child(self.name, tuple(remote_ts), tuple(local_ts))
        if refusal is not None:  # the IPsec policy says no (RFC 4301 4.4.1: the SPD decides)
            detail = f"CHILD_SA {child.name}: {_ts_text(remote_ts)} === {_ts_text(local_ts)}: {refusal}"
            self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "child", "policy_refused", detail))
            return [NotifyPayload(NotifyType.TS_UNACCEPTABLE)]
        mode = "transport" if msg.notify(NotifyType.USE_TRANSPORT_MODE) else "tunnel"
        if mode != child.mode:
            if child.mode == "transport":
                self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "child", "mode_mismatch",
                                                "peer wants tunnel mode, we are configured for transport"))
                return [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)]
            mode = "tunnel"  # 1.3.1: the responder may decline transport mode
        suite = suite_of(chosen)
        shared = None
        out_payloads: list[Payload] = []
        if not ike_auth and suite.dh is not None:
            ke = msg.find(KePayload)
            if not isinstance(ke, KePayload) or ke.group != suite.dh.id:
                return [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", suite.dh.id))]
            mine = suite.dh.generate(self.ctx.random)
            try:
                shared = mine.shared_secret(ke.data)
            except InvalidKeyExchange:
                return [NotifyPayload(NotifyType.INVALID_SYNTAX)]
            out_payloads.append(KePayload(mine.group.id, mine.public))
        elif not ike_auth:
            chosen = Proposal(chosen.number, chosen.protocol, chosen.spi,
                              [t for t in chosen.transforms if t.type != 4])
        spi_in = self.ctx.allocate_spi()
        answer = Proposal(chosen.number, chosen.protocol, spi_in.to_bytes(4, "big"), chosen.transforms)
        self._install_child(child, suite, spi_in, int.from_bytes(chosen.spi, "big"), mode, tuple(local_ts),
                            tuple(remote_ts), nonce_i, nonce_r, shared, we_initiated=False, now=now,
                            rekey=rekey)
        payloads: list[Payload] = []
        if mode == "transport":
            payloads.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
        payloads.append(SaPayload([answer]))
        if not ike_auth:
            payloads.append(NoncePayload(nonce_r))
            payloads += out_payloads
        payloads += [TsPayload(remote_ts), TsrPayload(local_ts)]
        return payloads

    # -- INFORMATIONAL (1.4, 1.5) -----------------------------------------------------
    def _on_informational(self, msg: Message, now: float) -> None:
        deletes = [p for p in msg.payloads if isinstance(p, DeletePayload)]
        if any(d.protocol == ProtocolId.IKE for d in deletes):
            self._respond(msg.header, [])
            return self._close("deleted by peer", now, notify_peer=False)
        answer: list[Payload] = []
        for d in deletes:
            if d.protocol not in (ProtocolId.ESP, ProtocolId.AH):
                continue
            ours: list[bytes] = []
            for spi in d.spis:
                child = self._child_by_out(int.from_bytes(spi, "big"))
                if child is None:
                    continue
                ours.append(child.spi_in.to_bytes(4, "big"))
                self._remove_child(child, "deleted by peer")
            if ours:
                answer.append(DeletePayload(d.protocol, ours))
        self._respond(msg.header, answer)

    def _child_by_out(self, spi: int) -> ChildSa | None:
        return next((c for c in self.children if c.spi_out == spi), None)

    def _child_by_in(self, spi: int) -> ChildSa | None:
        return next((c for c in self.children if c.spi_in == spi), None)

    def _remove_child(self, child: ChildSa, reason: str) -> None:
        owner: IkeSa | None = self
        while owner is not None and child not in owner.children:
            owner = owner.replaced_by  # it moved to the IKE SA that replaced this one
        if owner is not None and owner is not self:
            return owner._remove_child(child, reason)
        if child in self.children:
            self.children.remove(child)
            self.ctx.release_spi(child.spi_in)
            self.ctx.emit(ChildSaDown(self.name, self.ident, child.spi_in, child.spi_out, reason,
                                      tunnel=child.tunnel))

    # -- CREATE_CHILD_SA as responder (1.3) ---------------------------------------------
    def _on_create_child(self, msg: Message, now: float) -> None:
        cfg = self.config
        assert cfg is not None
        sa = msg.find(SaPayload)
        nonce = msg.find(NoncePayload)
        if not isinstance(sa, SaPayload) or not isinstance(nonce, NoncePayload):
            return self._respond(msg.header, [NotifyPayload(NotifyType.INVALID_SYNTAX)])
        if self.state is not State.ESTABLISHED:
            return self._respond(msg.header, [NotifyPayload(NotifyType.TEMPORARY_FAILURE)])
        busy = self.outstanding.kind if self.outstanding is not None else ""
        if sa.proposals and sa.proposals[0].protocol == ProtocolId.IKE:
            if busy.startswith("child_rekey") or busy == "child_create":
                # 2.25: our CHILD_SA exchange would land on an IKE SA about to go away.
                return self._respond(msg.header, [NotifyPayload(NotifyType.TEMPORARY_FAILURE)])
            return self._on_rekey_ike(msg, sa, nonce, now)
        if busy == "ike_rekey":
            return self._respond(msg.header, [NotifyPayload(NotifyType.TEMPORARY_FAILURE)])
        rekey_notify = msg.notify(NotifyType.REKEY_SA)
        old: ChildSa | None = None
        if rekey_notify is not None:
            old = self._child_by_out(int.from_bytes(rekey_notify.spi, "big")) if len(rekey_notify.spi) == 4 \
                else None
            if old is None:
                return self._respond(msg.header, [NotifyPayload(NotifyType.CHILD_SA_NOT_FOUND, b"",
                                                                ProtocolId.ESP, rekey_notify.spi)])
            if old.state in ("rekeyed", "deleting"):
                return self._respond(msg.header, [NotifyPayload(NotifyType.TEMPORARY_FAILURE)])
        nonce_r = self.ctx.random(NONCE_SIZE)
        count = len(self.children)
        payloads = self._answer_child(msg, cfg.child, now, nonce.data, nonce_r, ike_auth=False, rekey=old)
        self._respond(msg.header, payloads)
        if old is not None and old.state == "rekeying" and len(self.children) > count:
            old.collision = (nonce.data, nonce_r, self.children[-1].spi_in)
            self._note("ike.child_rekey_collision", connection=self.name, child=f"0x{old.spi_in:08x}")
        if old is not None and any(isinstance(p, SaPayload) for p in payloads):
            self._note("ike.child_rekeyed", connection=self.name, old=f"0x{old.spi_in:08x}", by="peer")

    def _on_rekey_ike(self, msg: Message, sa: SaPayload, nonce: NoncePayload, now: float) -> None:
        """2.18: the peer rekeys this IKE SA; the new one takes over our CHILD_SAs."""
        cfg = self.config
        assert cfg is not None and self.suite is not None and self.suite.prf is not None
        ours = build_proposals(list(cfg.ike_proposals), ProtocolId.IKE, b"")
        chosen = select(ours, sa.proposals)
        ke = msg.find(KePayload)
        if chosen is None or len(chosen.spi) != 8:
            self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "ike_rekey", "no_proposal_chosen",
                                            f"peer offered {describe_proposals(sa.proposals)}; we accept "
                                            f"{describe_proposals(ours)}"))
            return self._respond(msg.header, [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)])
        suite = suite_of(chosen)
        assert suite.dh is not None
        if not isinstance(ke, KePayload) or ke.group != suite.dh.id:
            return self._respond(msg.header, [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD,
                                                            struct.pack("!H", suite.dh.id))])
        mine = suite.dh.generate(self.ctx.random)
        try:
            shared = mine.shared_secret(ke.data)
        except InvalidKeyExchange:
            return self._respond(msg.header, [NotifyPayload(NotifyType.INVALID_SYNTAX)])
        new_spi = self.ctx.random(8)
        new = self._successor(initiator=False, spi_i=chosen.spi, spi_r=new_spi, nonce_i=nonce.data,
                              nonce_r=self.ctx.random(NONCE_SIZE), suite=suite, shared=shared, now=now)
        answer = Proposal(chosen.number, ProtocolId.IKE, new_spi, chosen.transforms)
        self._respond(msg.header, [SaPayload([answer]), NoncePayload(new.nonce_r),
                                   KePayload(mine.group.id, mine.public)])

    def _successor(self, *, initiator: bool, spi_i: bytes, spi_r: bytes, nonce_i: bytes, nonce_r: bytes,
                   suite: NegotiatedSuite, shared: bytes, now: float, inherit: bool = True) -> IkeSa:
        """The IKE SA that replaces this one (2.18); it inherits our CHILD_SAs (unless it
        is the redundant loser of a rekey collision, 2.8.2)."""
        assert self.suite is not None and self.suite.prf is not None
        new = IkeSa(self.ctx, initiator=initiator, config=self.config, spi_i=spi_i, spi_r=spi_r,
                    local=self.local, remote=self.remote, now=now)
        new.nonce_i, new.nonce_r = nonce_i, nonce_r
        new.suite = suite
        new._install_keys(suite, rekey_skeyseed(self.suite.prf, self.sk_d, shared, nonce_i, nonce_r))
        new.nat_local, new.nat_remote = self.nat_local, self.nat_remote
        new.peer_fragmentation, new.peer_hashes = self.peer_fragmentation, self.peer_hashes
        new.peer_id, new.auth_used = self.peer_id, self.auth_used
        new.virtual_ip = self.virtual_ip
        new.state = State.ESTABLISHED
        new.established_at = now
        assert self.config is not None
        new.rekey_at = now + new._jittered(self.config.ike_lifetime)
        self.ctx.adopt(new)
        if inherit:
            new.children = self.children
            self.children = []
            # CHILD_SA work still queued here continues on the new IKE SA.
            for kind, _ in self.queue:
                what, _, spi_text = kind.partition(":")
                spi = int(spi_text) if spi_text.isdigit() else -1
                moved = new._child_by_in(spi)
                if what == "child_rekey" and moved is not None:
                    new.rekey_child(moved, now)
                elif what == "child_delete" and moved is not None:
                    new.delete_child(moved, now, reason="rekeyed" if moved.state == "rekeyed" else "deleted")
                elif what == "child_refuse":
                    new._refuse_child(spi, now)
            self.queue = [q for q in self.queue if not q[0].startswith("child_")]
            self.state = State.REKEYED
            self.replaced_by = new
            self.delete_at = now + 30.0  # if the peer never deletes the old SA, we do
        self.ctx.emit(IkeSaUp(new.name, new.ident, f"{new.local[0]}:{new.local[1]}", new.remote_str,
                              initiator, suite.name, str(self.config.local_id), str(new.peer_id),
                              new.nat_local, new.nat_remote, "rekey", 0.0))
        self._note("ike.rekeyed", connection=self.name, old=self.ident, new=new.ident)
        return new

    # =====================================================================================
    # our own requests once established: rekey, DPD, delete
    # =====================================================================================
    def rekey_child(self, child: ChildSa, now: float) -> None:
        kind = f"child_rekey:{child.spi_in}"

        def start(now: float, group_id: int | None = None) -> None:
            if child not in self.children or child.state != "installed":
                return
            child.state = "rekeying"
            req = self._child_request(child.config, now, ike_auth=False, rekey=child, group_id=group_id)
            payloads: list[Payload] = [NotifyPayload(NotifyType.REKEY_SA, b"", ProtocolId.ESP,
                                                     child.spi_in.to_bytes(4, "big"))]
            if child.mode == "transport":
                payloads.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
            payloads += [SaPayload(req.proposals), NoncePayload(req.nonce)]
            if req.keyex is not None:
                payloads.append(KePayload(req.keyex.group.id, req.keyex.public))
            payloads += [TsPayload(list(child.local_ts)), TsrPayload(list(child.remote_ts))]

            def on_response(msg: Message, now: float) -> None:
                nonce = msg.find(NoncePayload)
                invalid_ke = msg.notify(NotifyType.INVALID_KE_PAYLOAD)
                if invalid_ke is not None and group_id is None and len(invalid_ke.data) >= 2:
                    # 1.3: try once more with the PFS group the responder names, if ours.
                    wanted = struct.unpack("!H", invalid_ke.data[:2])[0]
                    if wanted in {g.id for s in child.config.proposals for g in s.dh}:
                        self.ctx.release_spi(req.spi_in)
                        child.state = "installed"
                        self._note("ike.child_invalid_ke_retry", connection=self.name, group=wanted)
                        self.queue.insert(0, (kind, lambda now: start(now, wanted)))
                        return
                if msg.notify(NotifyType.TEMPORARY_FAILURE) is not None:
                    # 2.25: the peer is busy with another exchange on this SA; retry soon.
                    self.ctx.release_spi(req.spi_in)
                    child.state = "installed"
                    child.rekey_at = now + 2.0 + self.ctx.random(1)[0] / 64
                    return
                if not isinstance(nonce, NoncePayload) and msg.error_notify() is None:
                    self.ctx.release_spi(req.spi_in)
                    child.state = "installed"
                    return
                nr = nonce.data if isinstance(nonce, NoncePayload) else b""
                count = len(self.children)
                self._finish_child(req, msg, now, nonce_i=req.nonce, nonce_r=nr, ike_auth=False)
                created = self.children[-1] if len(self.children) > count else None
                if created is not None and child.collision is not None:
                    ni_b, nr_b, spi_b = child.collision
                    if min(req.nonce, nr) < min(ni_b, nr_b):
                        # 2.8.1: ours has the lowest nonce, so ours is redundant; the peer
                        # deletes the old SA and theirs carries the traffic.
                        self._note("ike.child_rekey_collision_lost", connection=self.name,
                                   redundant=f"0x{created.spi_in:08x}", kept=f"0x{spi_b:08x}")
                        child.state = "rekeyed"
                        self.ctx.emit(ChildSaActivate(self.name, spi_b, tunnel=child.tunnel))
                        self.delete_child(created, now, reason="redundant (rekey collision)")
                        return
                    self._note("ike.child_rekey_collision_won", connection=self.name,
                               kept=f"0x{created.spi_in:08x}", redundant=f"0x{spi_b:08x}")
                if child.state == "rekeyed":
                    self.delete_child(child, now, reason="rekeyed")
                else:
                    child.state = "installed"
                    child.rekey_at = now + 30.0  # try again later

            self._request("child_rekey", ExchangeType.CREATE_CHILD_SA, payloads, on_response, now)

        self._enqueue(kind, start, now)

    def delete_child(self, child: ChildSa, now: float, reason: str = "deleted") -> None:
        def start(now: float) -> None:
            if child not in self.children:
                return
            child.state = "deleting"

            def on_response(msg: Message, now: float) -> None:
                self._remove_child(child, reason)

            delete = DeletePayload(ProtocolId.ESP, [child.spi_in.to_bytes(4, "big")])
            self._request("child_delete", ExchangeType.INFORMATIONAL, [delete], on_response, now)

        self._enqueue(f"child_delete:{child.spi_in}", start, now)

    def rekey_ike(self, now: float) -> None:
        def start(now: float) -> None:
            cfg = self.config
            assert cfg is not None and self.suite is not None
            if self.state is not State.ESTABLISHED:
                return
            new_spi = self.ctx.random(8)
            proposals = build_proposals(list(cfg.ike_proposals), ProtocolId.IKE, new_spi)
            group = self.suite.dh or next(g for s in cfg.ike_proposals for g in s.dh)
            keyex = group.generate(self.ctx.random)
            nonce = self.ctx.random(NONCE_SIZE)

            def on_response(msg: Message, now: float) -> None:
                sa, ke, nr = msg.find(SaPayload), msg.find(KePayload), msg.find(NoncePayload)
                chosen = accept_response(proposals, sa.proposals) if isinstance(sa, SaPayload) else None
                if chosen is None or not isinstance(ke, KePayload) or not isinstance(nr, NoncePayload) \
                        or len(chosen.spi) != 8:
                    error = msg.error_notify()
                    if error is not None and error.type == NotifyType.TEMPORARY_FAILURE:
                        self.rekey_at = now + 2.0 + self.ctx.random(1)[0] / 64  # 2.25: retry soon
                        return
                    self._note("ike.rekey_failed", "warning", connection=self.name,
                               detail=error.name if error else "bad answer")
                    self.rekey_at = now + 60.0
                    return
                suite = suite_of(chosen)
                try:
                    shared = keyex.shared_secret(ke.data)
                except InvalidKeyExchange:
                    self.rekey_at = now + 60.0
                    return
                other = self.replaced_by
                if other is not None:  # the peer rekeyed this SA at the same time (2.8.2)
                    new = self._successor(initiator=True, spi_i=new_spi, spi_r=chosen.spi, nonce_i=nonce,
                                          nonce_r=nr.data, suite=suite, shared=shared, now=now,
                                          inherit=False)
                    if min(nonce, nr.data) < min(other.nonce_i, other.nonce_r):
                        # Ours holds the lowest nonce: it is redundant; the peer deletes the old SA.
                        self._note("ike.rekey_collision", connection=self.name, kept=other.ident,
                                   redundant=new.ident)
                        new.redundant = True
                        new.delete_ike(now, reason="redundant (rekey collision)", quiet=True)
                        return
                    self._note("ike.rekey_collision", connection=self.name, kept=new.ident,
                               redundant=other.ident)
                    new.children, other.children = other.children, []
                    other.redundant = True  # the peer deletes it
                    self.replaced_by = new
                else:
                    self._successor(initiator=True, spi_i=new_spi, spi_r=chosen.spi, nonce_i=nonce,
                                    nonce_r=nr.data, suite=suite, shared=shared, now=now)
                self.state = State.ESTABLISHED  # to send the delete on the old SA
                self.delete_ike(now, reason="rekeyed", quiet=True)

            self._request("ike_rekey", ExchangeType.CREATE_CHILD_SA,
                          [SaPayload(proposals), NoncePayload(nonce), KePayload(group.id, keyex.public)],
                          on_response, now)

        self._enqueue("ike_rekey", start, now)

    def dpd(self, now: float) -> None:
        cfg = self.config
        assert cfg is not None

        def start(now: float) -> None:
            def on_response(msg: Message, now: float) -> None:
                pass

            self._request("dpd", ExchangeType.INFORMATIONAL, [], on_response, now, budget=cfg.dpd_timeout)

        self._enqueue("dpd", start, now)

    def delete_ike(self, now: float, reason: str = "deleted", quiet: bool = False) -> None:
        def start(now: float) -> None:
            self.state = State.DELETING

            def on_response(msg: Message, now: float) -> None:
                self._close(reason, now, notify_peer=False, quiet=quiet)

            self._request("ike_delete", ExchangeType.INFORMATIONAL, [DeletePayload(ProtocolId.IKE)],
                          on_response, now, budget=10.0)

        if self.state in (State.ESTABLISHED, State.REKEYED):
            self.queue = [q for q in self.queue if q[0] != "dpd"]
            self._enqueue("ike_delete", start, now)
        else:
            self._close(reason, now, notify_peer=False, quiet=quiet)

    # =====================================================================================
    # failure and closing
    # =====================================================================================
    def _fail_negotiation(self, stage: str, reason: str, detail: str, now: float) -> None:
        self.ctx.emit(NegotiationFailed(self.name, self.remote_str, stage, reason, detail))
        self._close(f"{stage} failed: {reason}", now, notify_peer=False)

    def _close(self, reason: str, now: float, *, notify_peer: bool = True, quiet: bool = False) -> None:
        if self.state is State.CLOSED:
            return
        if notify_peer and self.protection is not None and self.state is not State.HALF_OPEN:
            # Best effort, unanswered: the SA is gone either way (1.4.1).
            mid = self.next_request_id
            self.next_request_id += 1
            self.ctx.transmit(self._encode(ExchangeType.INFORMATIONAL, mid, [DeletePayload(ProtocolId.IKE)],
                                           False), self.local[1], self.remote)
        for child in list(self.children):
            self._remove_child(child, reason)
        if self.pending_child is not None:
            self.ctx.release_spi(self.pending_child.spi_in)
            self.pending_child = None
        if self.virtual_ip is not None and self.config is not None and self.config.pool is not None \
                and self.replaced_by is None:
            self.ctx.release(self.config.pool, self.virtual_ip)
        was_up = self.established_at is not None
        self.state = State.CLOSED
        self.ctx.sa_closed(self)
        self.outstanding = None
        self.queue.clear()
        self.close_reason = reason
        if self.redundant or self.replaced_by is not None:
            quiet = True  # a rekeyed or redundant SA: its successor carries on
        if was_up and not quiet:
            self.ctx.emit(IkeSaDown(self.name, self.ident, self.remote_str, reason))
        elif not quiet:
            self._note("ike.closed", "info", connection=self.name, ike_sa=self.ident, reason=reason)

    def close(self, reason: str, now: float) -> None:
        self._close(reason, now, notify_peer=False)

    # =====================================================================================
    # timers
    # =====================================================================================
    def next_deadline(self) -> float | None:
        times: list[float] = []
        if self.state is State.CLOSED:
            return None
        if self.outstanding is not None:
            times.append(self.outstanding.deadline)
        if self.state is State.HALF_OPEN:
            times.append(self.started + self.ctx.timing.half_open_timeout)
        if self.state is State.ESTABLISHED:
            cfg = self.config
            assert cfg is not None
            if self.rekey_at is not None:
                times.append(self.rekey_at)
            if self.reauth_at is not None:
                times.append(self.reauth_at)
            if cfg.dpd_interval:
                times.append(self.last_received + cfg.dpd_interval)
            if self.nat_local:
                if self.keepalive_at is None:
                    self.keepalive_at = (self.established_at or self.started) + KEEPALIVE_SECONDS
                times.append(self.keepalive_at)
            for c in self.children:
                times.append(c.rekey_at if c.state == "installed" else c.expire_at)
        if self.delete_at is not None:
            times.append(self.delete_at)
        return min(times) if times else None

    def on_timer(self, now: float) -> None:
        if self.state is State.CLOSED:
            return
        out = self.outstanding
        if out is not None and now >= out.deadline:
            self._retransmit(out, now)
            if self.state is State.CLOSED:
                return
        if self.state is State.HALF_OPEN and now >= self.started + self.ctx.timing.half_open_timeout:
            return self._close("half-open SA timed out", now, notify_peer=False)
        if self.delete_at is not None and now >= self.delete_at:
            self.delete_at = None
            if self.state is State.REKEYED:
                self.state = State.ESTABLISHED
                self.delete_ike(now, reason="rekeyed", quiet=True)
        if self.state is not State.ESTABLISHED:
            return
        cfg = self.config
        assert cfg is not None
        if self.reauth_at is not None and now >= self.reauth_at:
            self.reauth_at = None
            self.rekey_at = None  # the new IKE SA replaces this one
            self.ctx.reauthenticate(self, now)
        if self.rekey_at is not None and now >= self.rekey_at:
            self.rekey_at = None
            self.rekey_ike(now)
        for child in list(self.children):
            if child.state == "installed" and now >= child.rekey_at:
                child.rekey_at = now + 30.0
                self.rekey_child(child, now)
            elif child.state != "installed" and now >= child.expire_at:
                self._remove_child(child, "expired")
        if self.nat_local and self.keepalive_at is not None and now >= self.keepalive_at:
            self.keepalive_at = now + KEEPALIVE_SECONDS
            self.ctx.transmit([b"\xff"], NATT_PORT, self.remote)  # keeps the NAT mapping open
        if cfg.dpd_interval and now >= self.last_received + cfg.dpd_interval and self.outstanding is None:
            self.last_received = now  # one probe per interval
            self.dpd(now)

    def _retransmit(self, out: Outstanding, now: float) -> None:
        timing = self.ctx.timing
        out.tries += 1
        if out.give_up_at is not None:
            exhausted = now >= out.give_up_at
        else:
            exhausted = out.tries > timing.retransmit_tries
        if exhausted:
            self.outstanding = None
            if out.kind == "dpd":
                cfg = self.config
                assert cfg is not None
                self.ctx.emit(PeerDead(self.name, self.ident, self.remote_str, cfg.dpd_action))
                return self._close("peer dead (no answer to liveness checks)", now, notify_peer=False)
            if out.kind in ("ike_delete",):
                return self._close("deleted (peer did not answer)", now, notify_peer=False)
            return self._close(f"peer did not answer our {out.kind} request", now, notify_peer=False)
        if out.give_up_at is not None:
            out.deadline = min(out.give_up_at, now + timing.retransmit_timeout)
        else:
            out.deadline = now + timing.retransmit_timeout * timing.retransmit_base ** out.tries
        self._note("ike.retransmit", "debug", ike_sa=self.ident, kind=out.kind, attempt=out.tries)
        self.ctx.transmit(out.datagrams, self.local[1], self.remote)

    # =====================================================================================
    # reporting
    # =====================================================================================
    def child_usage(self, spi_in: int, octets: int, packets: int, now: float) -> None:
        """Volume-based soft lifetime (RFC 4301 4.4.2.1): rekey once either counter of
        the pair passes the configured limit."""
        child = self._child_by_in(spi_in)
        if child is None or child.state != "installed" or self.state is not State.ESTABLISHED:
            return
        cfg = child.config
        over_bytes = bool(cfg.rekey_bytes) and octets >= (cfg.rekey_bytes or 0)
        over_packets = bool(cfg.rekey_packets) and packets >= (cfg.rekey_packets or 0)
        if over_bytes or over_packets:
            self._note("ike.child_volume_limit", connection=self.name, spi_in=f"0x{spi_in:08x}",
                       octets=octets, packets=packets)
            self.rekey_child(child, now)

    def child_used(self, now: float) -> None:
        """The dataplane saw authenticated traffic on this SA: the peer is alive (2.4)."""
        self.last_received = max(self.last_received, now)

    def describe(self, now: float) -> dict[str, Any]:
        cfg = self.config
        up = self.established_at
        return {
            "name": self.name, "ike_sa": self.ident, "state": self.state.value, "initiator": self.initiator,
            "local": f"{self.local[0]}:{self.local[1]}", "remote": self.remote_str,
            "local_id": str(cfg.local_id) if cfg else None,
            "remote_id": str(self.peer_id) if self.peer_id else None,
            "algorithm": self.suite.name if self.suite else None, "auth": self.auth_used,
            "nat_local": self.nat_local, "nat_remote": self.nat_remote, "encap": self.encapsulate,
            "established_for": round(now - up, 1) if up is not None else None,
            "rekey_in": round(self.rekey_at - now, 1) if self.rekey_at is not None else None,
            "children": [dict(c.describe(), rekey_in=round(c.rekey_at - now, 1),
                              expire_in=round(c.expire_at - now, 1)) for c in self.children],
        }


def _wire_identity(payload: IdPayload) -> Identity | None:
    """The identity an ID payload carries, or None if its type or data is unusable."""
    if payload.id_type not in IdType._value2member_map_:
        return None
    try:
        return Identity(IdType(payload.id_type), payload.data)
    except ValueError:
        return None


def _signature_hashes_notify() -> NotifyPayload:
    """RFC 7427 4: we verify SHA2-256/384/512 signatures."""
    return NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, struct.pack("!HHH", 2, 3, 4))


def _parse_hashes(notify: NotifyPayload | None) -> tuple[int, ...]:
    if notify is None:
        return ()
    data = notify.data[: len(notify.data) // 2 * 2]
    return tuple(struct.unpack(f"!{len(data) // 2}H", data))


def _fragment_number(data: bytes) -> int:
    if len(data) < 36:
        return 0
    return struct.unpack_from("!H", data, 32)[0]


def _ts_text(selectors: tuple[TsRange, ...] | list[TsRange]) -> str:
    return ",".join(str(s) for s in selectors) or "(none)"

