"""One ISAKMP SA: Main Mode (RFC 2409 5), Quick Mode (5.5), Informational (5.7), DPD
(RFC 3706), NAT-T (RFC 3947) and IKE fragmentation, as a sans-IO state machine.

The shape follows strongSwan's IKEv1 tasks: Main Mode establishes the SA (both roles,
PSK or signatures); each Quick Mode is an exchange of its own, keyed by its message ID,
that creates one pair of IPsec SAs; Informational exchanges carry DELETEs, notifications
and DPD.  IKEv1 has no request/response window: the initiator of an exchange retransmits
its last message until it gets the next one, and a side that receives a message again
resends the answer it gave (RFC 2408 5, RFC 2409 5).

Aggressive Mode is refused by the endpoint before an SA exists.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import itertools
import struct
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.serialization import Encoding

from gateway.crypto.dh import InvalidKeyExchange, KeyExchange
from gateway.crypto.prf import PRF, PrfAlgorithm
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
)
from gateway.ike.identity import Identity, IdType
from gateway.ike.settings import ChildConfig, PeerConfig, Timing
from gateway.ike.trafficselectors import TsRange, within
from gateway.ike.v1 import keymat
from gateway.ike.v1.constants import (
    MS_NT5_PREFIX,
    MS_NT5_VERSIONS,
    NATT_DRAFT_VIDS,
    NATT_PORT,
    VENDOR_IDS,
    VID_DPD,
    VID_FRAGMENTATION,
    VID_FRAGMENTATION_FLAGS,
    VID_NATT_DRAFT02,
    VID_NATT_DRAFT02N,
    VID_NATT_DRAFT03,
    VID_RFC3947,
    AuthMethod,
    CertEncoding,
    Encapsulation,
    ExchangeType,
    LifeType,
    NotifyType,
    PayloadType,
    Phase2Attr,
    ProtocolId,
)
from gateway.ike.v1.constants import IdType as IdV1
from gateway.ike.v1.message import (
    Attribute,
    CertPayload,
    CertReqPayload,
    DeletePayload,
    FragmentPayload,
    HashPayload,
    Header,
    IdPayload,
    KePayload,
    MalformedMessage,
    Message,
    NatDPayload,
    NatOaPayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    SigPayload,
    Transform,
    VendorIdPayload,
    decode_attributes,
    decode_payloads,
    encode_attributes,
    encode_payloads,
)
from gateway.ike.v1.negotiation import (
    Phase1Suite,
    Phase2Suite,
    describe_phase2,
    parse_phase1,
    phase1_transforms,
    phase2_proposals,
    select_phase2,
)
from gateway.ike.v1.protection import DecryptionError, Phase1Cipher

NONCE_SIZE = 32
MAX_FRAGMENTS = 16
ANSWER_CACHE = 8
KEEPALIVE_INTERVAL = 20.0
REKEY_DELETE_DELAY = 5.0
RETIRE_DELAY = 10.0  # a replaced ISAKMP SA is deleted this long after its successor is up
PHASE1_REKEY_RETRY = 0.5  # a Phase 1 rekey waits this long for a Quick Mode under way
#: rekey at this fraction of the negotiated lifetime (less jitter), so the new SAs are up
#: before the old ones expire on either side
REKEY_FRACTION = 0.9
_ECDSA_PRF = {AuthMethod.ECDSA_256: "prfsha256", AuthMethod.ECDSA_384: "prfsha384",
              AuthMethod.ECDSA_521: "prfsha512"}
_RFC_ENCAP = {"tunnel": Encapsulation.UDP_TUNNEL, "transport": Encapsulation.UDP_TRANSPORT}
_DRAFT_ENCAP = {"tunnel": Encapsulation.UDP_TUNNEL_DRAFT, "transport": Encapsulation.UDP_TRANSPORT_DRAFT}

#: numbers SAs as they are made: the order of the endpoint's SAs (``_same_peer`` keeps it)
_CREATED = itertools.count()


class Context(Protocol):
    """What an ISAKMP SA needs from its endpoint."""

    timing: Timing

    def random(self, n: int) -> bytes: ...
    def emit(self, event: object) -> None: ...
    def transmit(self, datagrams: list[bytes], local_port: int, remote: tuple[str, int]) -> None: ...
    def allocate_spi(self) -> int: ...
    def release_spi(self, spi: int) -> None: ...
    def refuse_child(self, name: str, remote_ts: tuple[TsRange, ...],
                     local_ts: tuple[TsRange, ...]) -> str | None: ...
    def wall_time(self, now: float) -> Any: ...
    def initial_contact(self, sa: IsakmpSa) -> None: ...
    def on_established(self, sa: IsakmpSa, now: float) -> None: ...
    def rekey_phase1(self, sa: IsakmpSa, now: float) -> None: ...
    def successor(self, sa: IsakmpSa) -> IsakmpSa | None: ...
    def sa_closed(self, sa: IsakmpSa) -> None: ...
    def peer_identified(self, sa: IsakmpSa, old: Identity | None) -> None: ...


class State(enum.Enum):
    MM_SA = "connecting"  # initiator sent message 1 / responder sent message 2
    MM_KE = "key exchange"  # message 3/4 exchanged
    MM_AUTH = "authenticating"  # initiator sent message 5
    ESTABLISHED = "established"
    DELETING = "deleting"
    CLOSED = "closed"


@dataclass
class Retransmit:
    datagrams: list[bytes] = field(repr=False)
    next_at: float
    tries: int = 0


@dataclass
class ChildSa:
    """One pair of IPsec SAs made by a Quick Mode."""

    config: ChildConfig
    spi_in: int
    spi_out: int
    suite: Phase2Suite
    mode: str
    local_ts: tuple[TsRange, ...]
    remote_ts: tuple[TsRange, ...]
    initiator: bool  # we ran the Quick Mode that created it
    established_at: float
    rekey_at: float | None
    expire_at: float
    state: str = "installed"  # installed | rekeying | rekeyed
    delete_at: float | None = None
    tunnel: str = ""  # the dataplane tunnel (see ChildSaUp.tunnel)

    def describe(self, now: float) -> dict[str, Any]:
        return {"name": self.config.name, "state": self.state, "spi_in": f"0x{self.spi_in:08x}",
                "spi_out": f"0x{self.spi_out:08x}", "mode": self.mode, "algorithm": self.suite.name,
                "local_ts": [str(t) for t in self.local_ts], "remote_ts": [str(t) for t in self.remote_ts],
                "rekey_in": round(self.rekey_at - now, 1) if self.rekey_at is not None else None,
                "expire_in": round(self.expire_at - now, 1)}


@dataclass
class QuickMode:
    """One Quick Mode exchange in progress (RFC 2409 5.5)."""

    message_id: int
    initiator: bool
    config: ChildConfig
    spi_in: int
    nonce_i: bytes = b""
    nonce_r: bytes = b""
    keyex: KeyExchange | None = None
    peer_ke: bytes = b""
    proposals: list[Proposal] = field(default_factory=list)
    chosen: tuple[Proposal, Phase2Suite] | None = None
    local_ts: TsRange | None = None
    remote_ts: TsRange | None = None
    rekey: ChildSa | None = None
    retransmit: Retransmit | None = None
    lifetime: int = 0
    commit: bool = False
    started: float = 0.0


def ts_of_id(payload: IdPayload) -> TsRange | None:
    """A Quick Mode ID (RFC 2407 4.6.2) as a traffic selector, or None if not IPv4."""
    d = payload.data
    try:
        if payload.id_type == IdV1.IPV4_ADDR and len(d) == 4:
            start = end = ipaddress.IPv4Address(d)
        elif payload.id_type == IdV1.IPV4_ADDR_SUBNET and len(d) == 8:
            net = ipaddress.IPv4Network((ipaddress.IPv4Address(d[:4]), str(ipaddress.IPv4Address(d[4:]))),
                                        strict=False)
            start, end = net.network_address, net.broadcast_address
        elif payload.id_type == IdV1.IPV4_ADDR_RANGE and len(d) == 8:
            start, end = ipaddress.IPv4Address(d[:4]), ipaddress.IPv4Address(d[4:])
            if start > end:
                return None
        else:
            return None
    except ValueError:
        return None
    if payload.port:
        return TsRange(start, end, payload.protocol, payload.port, payload.port)
    return TsRange(start, end, payload.protocol)


def id_of_ts(ts: TsRange) -> IdPayload:
    port = ts.port_start if ts.port_start == ts.port_end else 0
    if ts.start == ts.end:
        return IdPayload(IdV1.IPV4_ADDR, ts.protocol, port, ts.start.packed)
    nets = list(ipaddress.summarize_address_range(ts.start, ts.end))
    if len(nets) == 1:
        return IdPayload(IdV1.IPV4_ADDR_SUBNET, ts.protocol, port, nets[0].network_address.packed
                         + nets[0].netmask.packed)
    return IdPayload(IdV1.IPV4_ADDR_RANGE, ts.protocol, port, ts.start.packed + ts.end.packed)


def _wire_identity(payload: IdPayload) -> Identity | None:
    if payload.id_type not in IdType._value2member_map_:
        return None
    try:
        return Identity(IdType(payload.id_type), payload.data)
    except ValueError:
        return None


def vendor_name(data: bytes) -> str:
    if data in VENDOR_IDS:
        return VENDOR_IDS[data]
    if data[:16] == VID_FRAGMENTATION:
        return "FRAGMENTATION"
    if data[:16] == MS_NT5_PREFIX:
        version = int.from_bytes(data[16:20], "big") if len(data) >= 20 else 0
        return f"MS NT5 ISAKMPOAKLEY ({MS_NT5_VERSIONS.get(version, f'version {version}')})"
    for known, name in VENDOR_IDS.items():
        if len(known) < len(data) and data.startswith(known):
            return name
    return data.hex()


class IsakmpSa(PeerIdentified):
    def __init__(self, ctx: Context, *, initiator: bool, config: PeerConfig, icookie: bytes, rcookie: bytes,
                 local: tuple[str, int], remote: tuple[str, int], now: float) -> None:
        self.ctx = ctx
        self.seq = next(_CREATED)  # creation order: the endpoint's order of SAs
        self.initiator = initiator
        self.config = config
        self.icookie = icookie
        self.rcookie = rcookie
        self.local = local
        self.remote = remote
        self.state = State.MM_SA
        self.started = now
        self.suite: Phase1Suite | None = None
        self.sai_b = b""
        self.keyex: KeyExchange | None = None
        self.nonce_i = b""
        self.nonce_r = b""
        self.gxi = b""
        self.gxr = b""
        self.gxy = b""
        self.keys: keymat.Phase1Keys | None = None
        self.cipher: Phase1Cipher | None = None
        self._peer_id: Identity | None = None
        #: a responder's key in its endpoint's table of unproven half-open SAs, while there
        self.half_open_key: tuple[bytes, str, int] | None = None
        self.natt: str | None = None  # "rfc" | "draft" | None
        self.peer_dpd = False
        self.peer_frag = False
        self.vendors: list[str] = []
        self.nat_local = False
        self.nat_remote = False
        self.children: list[ChildSa] = []
        self.quick: dict[int, QuickMode] = {}
        self.retransmit: Retransmit | None = None
        self._answers: dict[bytes, list[bytes]] = {}
        self._fragments: dict[int, dict[int, bytes]] = {}
        self._fragment_last: dict[int, int] = {}
        self._fragment_id = 0
        self.established_at: float | None = None
        self.rekey_at: float | None = None
        self.expire_at: float | None = None
        self.last_received = now
        self.dpd_seq = int.from_bytes(ctx.random(2), "big")
        self.dpd_pending: tuple[int, float, int] | None = None  # (seq, sent at, tries)
        self.keepalive_at: float | None = None
        self.auth_used = ""
        self.reauth_of: IsakmpSa | None = None
        self.replacement: IsakmpSa | None = None  # the Main Mode that rekeys this SA
        self.replaced = False
        self._offered: set[tuple[Any, ...]] = set()  # what our Main Mode offer allows the responder to pick
        self.retire_at: float | None = None  # delete this replaced SA then
        self.half_open_deadline = now + ctx.timing.half_open_timeout
        self._dpd_started = now
        self._peer_draft_vid = VID_NATT_DRAFT02

    # -- naming -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def up(self) -> bool:
        return self.state is State.ESTABLISHED

    @property
    def replacing(self) -> bool:
        """A Main Mode that will take over this SA's IPsec SAs is under way: Quick Mode
        rekeys wait for it and run on the new SA (see IkeV1Endpoint.rekey_phase1)."""
        new = self.replacement
        return new is not None and new.reauth_of is self and not new.closed

    @property
    def ident(self) -> str:
        return f"{self.icookie.hex()}_i {self.rcookie.hex()}_r"

    @property
    def our_cookie(self) -> bytes:
        return self.icookie if self.initiator else self.rcookie

    @property
    def remote_str(self) -> str:
        return f"{self.remote[0]}:{self.remote[1]}"

    @property
    def encapsulate(self) -> bool:
        return self.natt is not None and (self.nat_local or self.nat_remote)

    def _note(self, what: str, level: str = "info", **fields: object) -> None:
        self.ctx.emit(Note(what, level, tuple((k, str(v)) for k, v in fields.items())))

    # -- sending ----------------------------------------------------------------------------
    def _message(self, exchange: int, mid: int, payloads: list[Payload], *, encrypt: bool,
                 flags: int = 0) -> list[bytes]:
        first, body = encode_payloads(payloads)
        if encrypt:
            assert self.cipher is not None
            body = self.cipher.encrypt(mid, body)
            flags |= 0x01
        header = Header(self.icookie, self.rcookie, first, exchange, flags, mid, 28 + len(body))
        return self._fragment(header.encode() + body)

    def _hashed(self, exchange: int, mid: int, rest: list[Payload], hash_of: Any,
                flags: int = 0) -> list[bytes]:
        """A message whose first payload is HASH(x) over M-ID and the rest (RFC 2409 5.5, 5.7)."""
        assert self.cipher is not None
        rest_first, rest_body = encode_payloads(rest)
        digest = hash_of(rest_body)
        chain = struct.pack("!BBH", rest_first, 0, 4 + len(digest)) + digest + rest_body
        body = self.cipher.encrypt(mid, chain)
        header = Header(self.icookie, self.rcookie, PayloadType.HASH, exchange, flags | 0x01, mid,
                        28 + len(body))
        return self._fragment(header.encode() + body)

    def _fragment(self, data: bytes) -> list[bytes]:
        """Split a message for the IKE fragmentation extension when the peer supports it."""
        limit = self.config.fragment_size - 20 - 8 - (4 if self.local[1] == NATT_PORT else 0)
        if not (self.peer_frag and self.config.fragmentation) or len(data) <= limit:
            return [data]
        room = limit - 28 - 8
        self._fragment_id = (self._fragment_id + 1) & 0xFFFF or 1
        pieces = [data[i:i + room] for i in range(0, len(data), room)]
        out = []
        exchange = ExchangeType.MAIN
        for n, piece in enumerate(pieces, 1):
            payload = FragmentPayload(self._fragment_id, n, n == len(pieces), piece)
            first, body = encode_payloads([payload])
            header = Header(self.icookie, self.rcookie, first, exchange, 0, 0, 28 + len(body))
            out.append(header.encode() + body)
        self._note("ikev1.fragmented", connection=self.name, octets=len(data), fragments=len(out))
        return out

    def _send(self, datagrams: list[bytes]) -> None:
        self.ctx.transmit(datagrams, self.local[1], self.remote)

    def _send_request(self, datagrams: list[bytes], now: float) -> None:
        self.retransmit = Retransmit(datagrams, now + self.ctx.timing.retransmit_timeout)
        self._send(datagrams)

    def _answer(self, request: bytes, datagrams: list[bytes]) -> None:
        """Send an answer and remember it for a retransmitted request."""
        self._answers[hashlib.sha256(request).digest()] = datagrams
        while len(self._answers) > ANSWER_CACHE:
            del self._answers[next(iter(self._answers))]
        self._send(datagrams)

    # -- Main Mode, initiator ------------------------------------------------------------------
    def _auth_method(self) -> int:
        if self.config.psk is not None:
            return AuthMethod.PSK
        return signatures.ikev1_method(self.config.private_key)

    def _vendor_ids(self) -> list[Payload]:
        vids = [VID_RFC3947, VID_NATT_DRAFT03, VID_NATT_DRAFT02N, VID_NATT_DRAFT02, VID_DPD]
        if self.config.fragmentation:
            vids.append(VID_FRAGMENTATION_FLAGS)
        return [VendorIdPayload(v) for v in vids]

    def start(self, now: float) -> None:
        transforms = phase1_transforms(self.config.ike_proposals, self._auth_method(),
                                       self.config.ike_lifetime)
        self._offered = {(s.encryption, s.hash_id, s.group, s.auth_method)
                         for t in transforms if (s := parse_phase1(t)) is not None}
        sa = SaPayload([Proposal(1, ProtocolId.ISAKMP, b"", transforms)])
        self.sai_b = sa.encode_body()
        self._send_request(self._message(ExchangeType.MAIN, 0, [sa, *self._vendor_ids()], encrypt=False), now)

    def _on_mm2(self, msg: Message, now: float) -> None:
        sa = msg.find(SaPayload)
        if not isinstance(sa, SaPayload) or len(sa.proposals) != 1 or len(sa.proposals[0].transforms) != 1:
            return self._fail_negotiation("no_proposal_chosen", "main_mode",
                                          "the responder's answer has no single chosen transform", now)
        suite = parse_phase1(sa.proposals[0].transforms[0])
        if suite is None or (suite.encryption, suite.hash_id, suite.group,
                             suite.auth_method) not in self._offered:
            return self._fail_negotiation("no_proposal_chosen", "main_mode",
                                          "the responder chose a transform we did not offer", now)
        self.suite = suite
        self._read_vendor_ids(msg)
        self.keyex = suite.group.generate(self.ctx.random)
        self.nonce_i = self.ctx.random(NONCE_SIZE)
        self.gxi = self.keyex.public
        payloads: list[Payload] = [KePayload(self.keyex.public), NoncePayload(self.nonce_i)]
        payloads += self._certreqs()
        payloads += self._nat_d_payloads()
        self.state = State.MM_KE
        self._send_request(self._message(ExchangeType.MAIN, 0, payloads, encrypt=False), now)

    def _on_mm4(self, msg: Message, now: float) -> None:
        assert self.suite is not None and self.keyex is not None
        ke, nonce = msg.find(KePayload), msg.find(NoncePayload)
        if not isinstance(ke, KePayload) or not isinstance(nonce, NoncePayload):
            return self._fail_negotiation("malformed", "main_mode", "message 4 lacks KE or nonce", now)
        self.nonce_r = nonce.data
        self.gxr = ke.data
        try:
            self.gxy = self.keyex.shared_secret(ke.data)
        except InvalidKeyExchange as exc:
            return self._fail_negotiation("invalid_ke", "main_mode", f"responder's KE: {exc}", now)
        self._check_nat_d(msg)
        self._derive()
        if self.encapsulate and self.local[1] != NATT_PORT:  # not when we began on 4500 already
            self.local = (self.local[0], NATT_PORT)
            self.remote = (self.remote[0], NATT_PORT)
            self._note("ikev1.float", connection=self.name, peer=self.remote_str)
        payloads = self._auth_payloads(initiator=True)
        if self.config.initial_contact and self.reauth_of is None:  # not when rekeying Phase 1
            payloads.append(NotifyPayload(NotifyType.INITIAL_CONTACT, ProtocolId.ISAKMP,
                                          self.icookie + self.rcookie))
        self.state = State.MM_AUTH
        self._send_request(self._message(ExchangeType.MAIN, 0, payloads, encrypt=True), now)

    def _on_mm6(self, msg: Message, now: float) -> None:
        if not self._verify_peer(msg, initiator_sent=False, now=now):
            return
        self.retransmit = None
        self._established(now)

    # -- Main Mode, responder -------------------------------------------------------------------
    def respond_mm1(self, msg: Message, chosen: Transform, suite: Phase1Suite, proposal_number: int,
                    now: float) -> None:
        sa = msg.find(SaPayload)
        assert isinstance(sa, SaPayload)
        self.sai_b = sa.raw or sa.encode_body()
        self.suite = suite
        self._read_vendor_ids(msg)
        answer: list[Payload] = [SaPayload([Proposal(proposal_number, ProtocolId.ISAKMP, b"", [chosen])])]
        if self.natt == "rfc":
            answer.append(VendorIdPayload(VID_RFC3947))
        elif self.natt == "draft":
            answer.append(VendorIdPayload(self._peer_draft_vid))
        if self.peer_dpd:
            answer.append(VendorIdPayload(VID_DPD))
        if self.peer_frag and self.config.fragmentation:
            answer.append(VendorIdPayload(VID_FRAGMENTATION_FLAGS))
        self._answer(msg.raw, self._message(ExchangeType.MAIN, 0, answer, encrypt=False))

    def _on_mm3(self, msg: Message, now: float) -> None:
        assert self.suite is not None
        ke, nonce = msg.find(KePayload), msg.find(NoncePayload)
        if not isinstance(ke, KePayload) or not isinstance(nonce, NoncePayload):
            return self._fail_negotiation("malformed", "main_mode", "message 3 lacks KE or nonce", now)
        self.keyex = self.suite.group.generate(self.ctx.random)
        try:
            self.gxy = self.keyex.shared_secret(ke.data)
        except InvalidKeyExchange as exc:
            return self._fail_negotiation("invalid_ke", "main_mode", f"initiator's KE: {exc}", now)
        self.gxi, self.gxr = ke.data, self.keyex.public
        self.nonce_i, self.nonce_r = nonce.data, self.ctx.random(NONCE_SIZE)
        self._check_nat_d(msg)
        payloads: list[Payload] = [KePayload(self.keyex.public), NoncePayload(self.nonce_r)]
        payloads += self._certreqs()
        payloads += self._nat_d_payloads()
        self._derive()
        self.state = State.MM_KE
        self._answer(msg.raw, self._message(ExchangeType.MAIN, 0, payloads, encrypt=False))

    def _on_mm5(self, msg: Message, now: float) -> None:
        if not self._verify_peer(msg, initiator_sent=True, now=now):
            return
        if msg.notify(NotifyType.INITIAL_CONTACT) is not None:
            self.ctx.initial_contact(self)
        self._answer(msg.raw, self._message(ExchangeType.MAIN, 0, self._auth_payloads(initiator=False),
                                            encrypt=True))
        self._established(now)

    # -- Main Mode pieces -----------------------------------------------------------------------
    def _read_vendor_ids(self, msg: Message) -> None:
        for p in msg.all(VendorIdPayload):
            assert isinstance(p, VendorIdPayload)
            name = vendor_name(p.data)
            self.vendors.append(name)
            if p.data == VID_RFC3947:
                self.natt = "rfc"
            elif p.data in NATT_DRAFT_VIDS and self.natt != "rfc":
                self.natt = "draft"
                self._peer_draft_vid = p.data
            elif p.data == VID_DPD:
                self.peer_dpd = True
            elif p.data[:16] == VID_FRAGMENTATION:
                self.peer_frag = True
        self._note("ikev1.vendor_ids", "debug", connection=self.name, peer=self.remote_str,
                   vendor_ids=", ".join(self.vendors) or "none")

    def _nat_d_payloads(self) -> list[Payload]:
        if self.natt is None:
            return []
        assert self.suite is not None
        draft = self.natt == "draft"
        theirs = keymat.nat_d(self.suite.prf, self.icookie, self.rcookie,
                              ipaddress.IPv4Address(self.remote[0]).packed, self.remote[1])
        if self.config.force_encap:
            ours = self.ctx.random(len(theirs))  # RFC 3947 has no flag: fake our NAT-D (as strongSwan does)
        else:
            ours = keymat.nat_d(self.suite.prf, self.icookie, self.rcookie,
                                ipaddress.IPv4Address(self.local[0]).packed, self.local[1])
        return [NatDPayload(theirs, draft), NatDPayload(ours, draft)]

    def _check_nat_d(self, msg: Message) -> None:
        found = [p for p in msg.all(NatDPayload) if isinstance(p, NatDPayload)]
        if self.natt is None or len(found) < 2:
            return
        assert self.suite is not None
        ours = keymat.nat_d(self.suite.prf, self.icookie, self.rcookie,
                            ipaddress.IPv4Address(self.local[0]).packed, self.local[1])
        theirs = keymat.nat_d(self.suite.prf, self.icookie, self.rcookie,
                              ipaddress.IPv4Address(self.remote[0]).packed, self.remote[1])
        self.nat_local = found[0].data != ours or self.config.force_encap
        self.nat_remote = all(p.data != theirs for p in found[1:])
        if self.nat_local or self.nat_remote:
            self._note("ikev1.nat_detected", connection=self.name, peer=self.remote_str,
                       local_behind_nat=self.nat_local, peer_behind_nat=self.nat_remote)

    def _certreqs(self) -> list[Payload]:
        if self.config.psk is not None or self.config.trust is None:
            return []
        return [CertReqPayload(CertEncoding.X509_SIG,
                               a.subject.public_bytes()) for a in self.config.trust.anchors]

    def _derive(self) -> None:
        assert self.suite is not None
        prf = self.suite.prf
        if self.suite.auth_method == AuthMethod.PSK:
            assert self.config.psk is not None
            skeyid = keymat.skeyid_psk(prf, self.config.psk.reveal(), self.nonce_i, self.nonce_r)
        else:
            skeyid = keymat.skeyid_signature(prf, self.nonce_i, self.nonce_r, self.gxy)
        self.keys = keymat.derive(prf, skeyid, self.gxy, self.icookie, self.rcookie)
        enc = self.suite.encryption
        key = keymat.encryption_key(prf, self.keys.skeyid_e, enc.key_size)
        self.cipher = Phase1Cipher(enc, key, prf, keymat.phase1_iv(prf, self.gxi, self.gxr, enc.block_size))

    def _auth_prf(self) -> PrfAlgorithm:
        """HASH_I/HASH_R use the negotiated PRF, except with ECDSA, where RFC 4754 7 (and
        strongSwan) take the hash of the curve: SHA-256/384/512 for P-256/384/521."""
        assert self.suite is not None
        name = _ECDSA_PRF.get(self.suite.auth_method)  # type: ignore[call-overload]
        return PRF[name] if name else self.suite.prf

    def _id_payload(self) -> IdPayload:
        ident = self.config.local_id
        return IdPayload(int(ident.type), 0, 0, ident.data)

    def _auth_payloads(self, *, initiator: bool) -> list[Payload]:
        assert self.suite is not None and self.keys is not None
        id_p = self._id_payload()
        args = (self._auth_prf(), self.keys.skeyid, self.gxi, self.gxr, self.icookie, self.rcookie,
                self.sai_b,
                id_p.encode_body())
        digest = keymat.hash_i(*args) if initiator else keymat.hash_r(*args)
        if self.suite.auth_method == AuthMethod.PSK:
            self.auth_used = "psk"
            return [id_p, HashPayload(digest)]
        cfg = self.config
        out: list[Payload] = [id_p]
        out.append(CertPayload(CertEncoding.X509_SIG, cfg.certificate.public_bytes(Encoding.DER)))
        out += [CertPayload(CertEncoding.X509_SIG, c.public_bytes(Encoding.DER)) for c in cfg.intermediates]
        out.append(SigPayload(signatures.sign_ikev1(cfg.private_key, digest, self.suite.auth_method)))
        return out

    def _verify_peer(self, msg: Message, *, initiator_sent: bool, now: float) -> bool:
        assert self.suite is not None and self.keys is not None
        id_p = msg.find(IdPayload)
        if not isinstance(id_p, IdPayload):
            self._auth_failed("malformed", "no ID payload in the authentication message", now)
            return False
        peer_id = _wire_identity(id_p)
        if peer_id is None:
            self._auth_failed("bad_id", f"unusable ID payload type {id_p.id_type}", now)
            return False
        self.peer_id = peer_id
        if not self.config.remote_id.matches(peer_id):
            self._auth_failed("identity_mismatch", f"peer identity {peer_id} is not the configured "
                              f"{self.config.remote_id}", now)
            return False
        args = (self._auth_prf(), self.keys.skeyid, self.gxi, self.gxr, self.icookie, self.rcookie,
                self.sai_b,
                id_p.raw or id_p.encode_body())
        expected = keymat.hash_i(*args) if initiator_sent else keymat.hash_r(*args)
        if self.suite.auth_method == AuthMethod.PSK:
            got = msg.find(HashPayload)
            if not isinstance(got, HashPayload) or not hmac.compare_digest(got.data, expected):
                self._auth_failed("bad_psk", f"HASH from {peer_id} does not verify (wrong PSK?)", now)
                return False
            self.auth_used = "psk"
            return True
        if self.config.trust is None:
            self._auth_failed("method_mismatch", "peer uses signatures; we have no CA to check them", now)
            return False
        ders = [p.data for p in msg.all(CertPayload)  # CERTREQ is a subclass: not a certificate
                if type(p) is CertPayload and p.encoding == CertEncoding.X509_SIG]
        try:
            cert = certs.peer_certificate(self.config.trust, peer_id, ders, self.ctx.wall_time(now))
        except certs.PeerCertificateRejected as exc:
            self._auth_failed(exc.reason, str(exc), now)
            return False
        sig = msg.find(SigPayload)
        if not isinstance(sig, SigPayload):
            self._auth_failed("malformed", f"{peer_id} sent no SIG payload", now)
            return False
        try:
            scheme = signatures.verify_ikev1(cert.public_key(), expected, self.suite.auth_method, sig.data)
        except signatures.SignatureRejected as exc:
            self._auth_failed("bad_signature", f"signature of {peer_id}: {exc}", now)
            return False
        self.auth_used = f"pubkey ({scheme})"
        return True

    def _auth_failed(self, reason: str, detail: str, now: float) -> None:
        self.ctx.emit(AuthFailed(self.name, self.remote_str, reason, detail))
        if self.cipher is not None and reason not in ("malformed",):
            self._send_informational([NotifyPayload(NotifyType.AUTHENTICATION_FAILED, ProtocolId.ISAKMP,
                                                    self.icookie + self.rcookie)])
        self.close(f"authentication failed: {reason}", now, report=False)

    def _established(self, now: float) -> None:
        assert self.suite is not None
        cfg = self.config
        self.state = State.ESTABLISHED
        self.established_at = now
        self.last_received = now
        lifetime = min(cfg.ike_lifetime, self.suite.lifetime or cfg.ike_lifetime)
        self.expire_at = now + lifetime
        if self.initiator and cfg.remote_address is not None:
            self.rekey_at = now + self._jittered(lifetime * REKEY_FRACTION)
        if self.nat_local:
            self.keepalive_at = now + KEEPALIVE_INTERVAL
        self.ctx.emit(IkeSaUp(self.name, self.ident, f"{self.local[0]}:{self.local[1]}", self.remote_str,
                              self.initiator, f"{self.suite.name} (IKEv1)", str(cfg.local_id),
                              str(self.peer_id),
                              self.nat_local, self.nat_remote, self.auth_used, round(now - self.started, 3)))
        self.ctx.on_established(self, now)
        old, self.reauth_of = self.reauth_of, None
        if old is not None:
            self.adopt(old, now)
        elif self.initiator and not self.children:
            self.start_quick_mode(cfg.child, now)

    def adopt(self, old: IsakmpSa, now: float) -> None:
        """Phase 1 rekeyed: the IPsec SAs move to this SA and the old one goes (make-before-break)."""
        self.children += old.children
        old.children = []
        self._note("ikev1.rekeyed", connection=self.name, old=old.ident, new=self.ident,
                   children=len(self.children))
        old.replaced = True
        old.delete(now, reason="phase 1 rekeyed")

    def successor_of(self, other: IsakmpSa) -> bool:
        """Whether this SA is with the same peer as ``other`` (connection, address and port,
        identity), so it may take over other's IPsec SAs."""
        return (other.config is self.config and other.remote == self.remote and other.peer_id is not None
                and self.peer_id is not None and other.peer_id.matches(self.peer_id))

    def _jittered(self, seconds: float) -> float:
        jitter = self.config.jitter if self.config.jitter is not None else self.ctx.timing.jitter
        return seconds * (1 - jitter * int.from_bytes(self.ctx.random(2), "big") / 65535)

    # -- Quick Mode -----------------------------------------------------------------------------
    def _encapsulation(self, mode: str) -> int:
        if self.encapsulate:
            if self.natt == "draft":
                return _DRAFT_ENCAP[mode]
            return _RFC_ENCAP[mode]
        return Encapsulation.TUNNEL if mode == "tunnel" else Encapsulation.TRANSPORT

    def _new_message_id(self) -> int:
        while True:
            mid = int.from_bytes(self.ctx.random(4), "big")
            if mid and mid not in self.quick:
                return mid

    def start_quick_mode(self, child: ChildConfig, now: float, rekey: ChildSa | None = None) -> None:
        assert self.keys is not None and self.suite is not None
        spi = self.ctx.allocate_spi()
        qm = QuickMode(self._new_message_id(), True, child, spi, nonce_i=self.ctx.random(NONCE_SIZE),
                       rekey=rekey, started=now)
        groups = [g for s in child.proposals for g in s.dh]
        if groups:
            qm.keyex = groups[0].generate(self.ctx.random)
        qm.lifetime = child.lifetime
        kilobytes = (child.rekey_bytes // 1024) if child.rekey_bytes else None
        qm.proposals = phase2_proposals(child.proposals, spi.to_bytes(4, "big"),
                                        self._encapsulation(child.mode),
                                        child.lifetime, groups[0] if groups else None, kilobytes)
        qm.local_ts, qm.remote_ts = self._our_selectors(child)
        payloads: list[Payload] = [SaPayload(qm.proposals), NoncePayload(qm.nonce_i)]
        if qm.keyex is not None:
            payloads.append(KePayload(qm.keyex.public))
        payloads += [id_of_ts(qm.local_ts), id_of_ts(qm.remote_ts)]
        if child.mode == "transport" and self.encapsulate and self.natt == "rfc":
            payloads += [NatOaPayload(ipaddress.IPv4Address(self.local[0])),
                         NatOaPayload(ipaddress.IPv4Address(self.remote[0]))]
        self.quick[qm.message_id] = qm
        prf, ska, mid = self.suite.prf, self.keys.skeyid_a, qm.message_id
        datagrams = self._hashed(ExchangeType.QUICK, mid, payloads, lambda rest: keymat.qm_hash1(prf, ska,
                                                                                                 mid, rest))
        qm.retransmit = Retransmit(datagrams, now + self.ctx.timing.retransmit_timeout)
        self._send(datagrams)
        if rekey is not None:
            rekey.state = "rekeying"
        self._note("ikev1.quick_mode", connection=self.name, message_id=f"{mid:08x}",
                   rekey=f"0x{rekey.spi_in:08x}" if rekey else "no")

    def _tunnel_key(self, qm: QuickMode | None = None) -> str:
        """One dataplane tunnel per connection, or per peer for a connection open to many."""
        if qm is not None:
            child = next((c for c in self.children if c.spi_in == qm.spi_in), None)
            if child is not None:
                return child.tunnel
        if self.config.remote_address is not None:
            return self.name
        return f"{self.name}@{self.remote[0]}:{self.remote[1]}"

    def _our_selectors(self, child: ChildConfig) -> tuple[TsRange, TsRange]:
        local, remote = child.local_ts[0], child.remote_ts[0]
        if child.mode == "transport":
            me = ipaddress.IPv4Address(self.local[0])
            peer = ipaddress.IPv4Address(self.remote[0])
            local = TsRange(me, me, local.protocol, local.port_start, local.port_end)
            remote = TsRange(peer, peer, remote.protocol, remote.port_start, remote.port_end)
        return local, remote

    def _on_quick(self, msg: Message, rest: bytes, hash_data: bytes, next_iv: bytes, now: float) -> bool:
        """Returns whether the message was authentic; if so its IV chain moves on before
        anything is sent in the same exchange."""
        assert self.keys is not None and self.suite is not None and self.cipher is not None
        prf, ska, mid = self.suite.prf, self.keys.skeyid_a, msg.header.message_id
        confirm = self.cipher.confirm
        qm = self.quick.get(mid)
        if qm is None:
            if not hmac.compare_digest(hash_data, keymat.qm_hash1(prf, ska, mid, rest)):
                self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "quick_mode", "bad_hash",
                                                "HASH(1) of a Quick Mode request does not verify"))
                return False
            confirm(mid, next_iv)
            self._respond_qm1(msg, now)
            return True
        if qm.initiator:
            if not hmac.compare_digest(hash_data, keymat.qm_hash2(prf, ska, mid, qm.nonce_i, rest)):
                self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "quick_mode", "bad_hash",
                                                "HASH(2) of a Quick Mode answer does not verify"))
                return False
            confirm(mid, next_iv)
            self._on_qm2(qm, msg, now)
            return True
        if not hmac.compare_digest(hash_data, keymat.qm_hash3(prf, ska, mid, qm.nonce_i, qm.nonce_r)):
            self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "quick_mode", "bad_hash",
                                            "HASH(3) of a Quick Mode does not verify"))
            return False
        confirm(mid, next_iv)
        self._on_qm3(qm, now)
        return True

    def _respond_qm1(self, msg: Message, now: float) -> None:
        assert self.keys is not None and self.suite is not None
        cfg = self.config.child
        sa, nonce = msg.find(SaPayload), msg.find(NoncePayload)
        if not isinstance(sa, SaPayload) or not isinstance(nonce, NoncePayload):
            return self._qm_refused(msg, NotifyType.PAYLOAD_MALFORMED, "malformed", "no SA or nonce", now)
        ids = [p for p in msg.all(IdPayload) if isinstance(p, IdPayload)]
        if ids and len(ids) != 2:
            return self._qm_refused(msg, NotifyType.INVALID_ID_INFORMATION, "ts_unacceptable",
                                    f"{len(ids)} ID payloads (0 or 2 expected)", now)
        local_default, remote_default = self._our_selectors(cfg)
        if ids:
            remote_ts, local_ts = ts_of_id(ids[0]), ts_of_id(ids[1])
        else:
            me, peer = ipaddress.IPv4Address(self.local[0]), ipaddress.IPv4Address(self.remote[0])
            remote_ts, local_ts = TsRange(peer, peer), TsRange(me, me)
        if remote_ts is None or local_ts is None:
            return self._qm_refused(msg, NotifyType.INVALID_ID_INFORMATION, "ts_unacceptable",
                                    "ID payloads are not IPv4 addresses, subnets or ranges", now)
        encaps = {self._encapsulation(cfg.mode)}
        if self.encapsulate:
            encaps |= {_DRAFT_ENCAP[cfg.mode], _RFC_ENCAP[cfg.mode]}
        if cfg.mode == "transport":
            # Behind a NAT the client names its private address: what matters is the
            # protocol and port, the addresses are the IKE endpoints' (RFC 3947 5.2).
            peer = ipaddress.IPv4Address(self.remote[0])
            me = ipaddress.IPv4Address(self.local[0])
            remote_ts = TsRange(peer, peer, remote_ts.protocol, remote_ts.port_start, remote_ts.port_end)
            local_ts = TsRange(me, me, local_ts.protocol, local_ts.port_start, local_ts.port_end)
            ok = within([remote_ts], [remote_default]) or self._ports_within(remote_ts, remote_default)
            ok = ok and (within([local_ts], [local_default]) or self._ports_within(local_ts, local_default))
        else:
            ok = within([remote_ts], cfg.remote_ts) and within([local_ts], cfg.local_ts)
        if not ok:
            return self._qm_refused(msg, NotifyType.INVALID_ID_INFORMATION, "ts_unacceptable",
                                    f"peer proposed {local_ts} <=> {remote_ts}; we allow "
                                    f"{','.join(map(str, cfg.local_ts))} <=> "
                                    f"{','.join(map(str, cfg.remote_ts))}",
                                    now)
        refusal = self.ctx.refuse_child(self.name, (remote_ts,), (local_ts,))
        if refusal is not None:  # the IPsec policy says no
            return self._qm_refused(msg, NotifyType.INVALID_ID_INFORMATION, "policy_refused",
                                    f"{remote_ts} <=> {local_ts}: {refusal}", now)
        picked = select_phase2(cfg.proposals, sa.proposals, encaps)
        if picked is None:
            return self._qm_refused(msg, NotifyType.NO_PROPOSAL_CHOSEN, "no_proposal_chosen",
                                    f"peer offered {describe_phase2(sa.proposals)}; we accept "
                                    f"{', '.join(map(str, cfg.proposals))} with encapsulation "
                                    f"{sorted(int(e) for e in encaps)}", now)
        proposal, suite = picked
        if len(proposal.spi) != 4:
            return self._qm_refused(msg, NotifyType.INVALID_SPI, "malformed", "ESP SPI is not 4 octets", now)
        ke = msg.find(KePayload)
        qm = QuickMode(msg.header.message_id, False, cfg, self.ctx.allocate_spi(), nonce_i=nonce.data,
                       nonce_r=self.ctx.random(NONCE_SIZE), started=now)
        if suite.group is not None:
            if not isinstance(ke, KePayload):
                self.ctx.release_spi(qm.spi_in)
                return self._qm_refused(msg, NotifyType.INVALID_KEY_INFORMATION, "invalid_ke",
                                        "PFS group without a KE payload", now)
            qm.keyex = suite.group.generate(self.ctx.random)
            qm.peer_ke = ke.data
        qm.chosen = (proposal, suite)
        qm.local_ts, qm.remote_ts = local_ts, remote_ts
        qm.commit = msg.header.commit
        qm.lifetime = min(cfg.lifetime, suite.lifetime or cfg.lifetime)
        # the rekey of an SA we hold? (same selectors: RFC 2409 leaves it implicit)
        qm.rekey = next((c for c in self.children if c.state == "installed" and c.local_ts == (local_ts,)
                         and c.remote_ts == (remote_ts,)), None)
        answer_sa = SaPayload([Proposal(proposal.number, proposal.protocol, qm.spi_in.to_bytes(4, "big"),
                                        proposal.transforms)])
        payloads: list[Payload] = [answer_sa, NoncePayload(qm.nonce_r)]
        if qm.keyex is not None:
            payloads.append(KePayload(qm.keyex.public))
        if ids:
            payloads += [IdPayload(ids[0].id_type, ids[0].protocol, ids[0].port, ids[0].data),
                         IdPayload(ids[1].id_type, ids[1].protocol, ids[1].port, ids[1].data)]
        if cfg.mode == "transport" and self.encapsulate and self.natt == "rfc":
            payloads += [NatOaPayload(ipaddress.IPv4Address(self.remote[0])),
                         NatOaPayload(ipaddress.IPv4Address(self.local[0]))]
        if suite.lifetime is not None and suite.lifetime > cfg.lifetime:
            attrs = encode_attributes([Attribute(Phase2Attr.LIFE_TYPE, LifeType.SECONDS),
                                       Attribute(Phase2Attr.LIFE_DURATION, cfg.lifetime)])
            payloads.append(NotifyPayload(NotifyType.RESPONDER_LIFETIME, ProtocolId.ESP, proposal.spi, attrs))
            self._note("ikev1.responder_lifetime", connection=self.name, proposed=suite.lifetime,
                       ours=cfg.lifetime)
        prf, ska, mid, ni = self.suite.prf, self.keys.skeyid_a, qm.message_id, qm.nonce_i
        hash2 = lambda rest: keymat.qm_hash2(prf, ska, mid, ni, rest)  # noqa: E731
        datagrams = self._hashed(ExchangeType.QUICK, mid, payloads, hash2)
        self.quick[mid] = qm
        qm.retransmit = Retransmit(datagrams, now + self.ctx.timing.retransmit_timeout)
        self._answer(msg.raw, datagrams)

    @staticmethod
    def _ports_within(ts: TsRange, allowed: TsRange) -> bool:
        return (allowed.protocol in (0, ts.protocol) and allowed.port_start <= ts.port_start
                and ts.port_end <= allowed.port_end)

    def _qm_refused(self, msg: Message, notify: int, reason: str, detail: str, now: float) -> None:
        self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "quick_mode", reason, detail))
        self._send_informational([NotifyPayload(notify, ProtocolId.ESP, b"")])

    def _on_qm2(self, qm: QuickMode, msg: Message, now: float) -> None:
        assert self.keys is not None and self.suite is not None
        sa, nonce = msg.find(SaPayload), msg.find(NoncePayload)
        if not isinstance(sa, SaPayload) or not isinstance(nonce, NoncePayload) or len(sa.proposals) != 1:
            return self._qm_failed(qm, "malformed", "Quick Mode answer lacks SA or nonce", now)
        picked = select_phase2(qm.config.proposals, sa.proposals, {self._encapsulation(qm.config.mode)})
        if picked is None or len(picked[0].spi) != 4:
            return self._qm_failed(qm, "no_proposal_chosen",
                                   "the responder chose a transform we did not offer "
                                   f"({describe_phase2(sa.proposals)})", now)
        qm.chosen = picked
        qm.nonce_r = nonce.data
        if qm.keyex is not None:
            ke = msg.find(KePayload)
            if not isinstance(ke, KePayload):
                return self._qm_failed(qm, "invalid_ke", "PFS requested but no KE in the answer", now)
            qm.peer_ke = ke.data
        life = msg.notify(NotifyType.RESPONDER_LIFETIME)
        qm.lifetime = min(qm.lifetime, picked[1].lifetime or qm.lifetime)
        if life is not None:
            try:
                attrs = decode_attributes(life.data)
            except MalformedMessage:
                attrs = []
            kind = None
            for a in attrs:
                if a.type == Phase2Attr.LIFE_TYPE:
                    kind = a.number
                elif a.type == Phase2Attr.LIFE_DURATION and kind == LifeType.SECONDS and a.number:
                    qm.lifetime = min(qm.lifetime, a.number)
            self._note("ikev1.responder_lifetime", connection=self.name, lifetime=qm.lifetime)
        qm.retransmit = None
        prf, ska, mid = self.suite.prf, self.keys.skeyid_a, qm.message_id
        hash3 = keymat.qm_hash3(prf, ska, mid, qm.nonce_i, qm.nonce_r)
        datagrams = self._hashed(ExchangeType.QUICK, mid, [], lambda rest: hash3)
        self._answer(msg.raw, datagrams)
        try:
            self._install(qm, now, activate=not msg.header.commit)
        except InvalidKeyExchange as exc:
            return self._qm_failed(qm, "invalid_ke", f"responder's PFS KE: {exc}", now)
        if msg.header.commit:
            qm.commit = True  # wait for CONNECTED (RFC 2408 3.1) before sending on the new SA
        else:
            del self.quick[mid]

    def _on_qm3(self, qm: QuickMode, now: float) -> None:
        qm.retransmit = None
        try:
            self._install(qm, now, activate=True)
        except InvalidKeyExchange as exc:
            del self.quick[qm.message_id]
            return self._qm_failed(qm, "invalid_ke", f"initiator's PFS KE: {exc}", now)
        del self.quick[qm.message_id]
        if qm.commit:
            self._send_informational([NotifyPayload(NotifyType.CONNECTED, ProtocolId.ESP,
                                                    qm.spi_in.to_bytes(4, "big"))])

    def _qm_failed(self, qm: QuickMode, reason: str, detail: str, now: float) -> None:
        self.quick.pop(qm.message_id, None)
        self.ctx.release_spi(qm.spi_in)
        if qm.rekey is not None and qm.rekey.state == "rekeying":
            qm.rekey.state = "installed"
        self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "quick_mode", reason, detail))

    def _install(self, qm: QuickMode, now: float, *, activate: bool) -> None:
        assert self.keys is not None and self.suite is not None and qm.chosen is not None
        proposal, suite = qm.chosen
        gxy = qm.keyex.shared_secret(qm.peer_ke) if qm.keyex is not None else None
        spi_out = int.from_bytes(proposal.spi, "big")  # the SPI the peer chose for its inbound SA
        enc = suite.encryption
        assert enc is not None
        enc_len = enc.key_size + enc.salt_size
        integ_len = suite.integrity.key_size if suite.integrity else 0
        prf, skd = self.suite.prf, self.keys.skeyid_d

        def material(spi: int) -> bytes:
            return keymat.keymat(prf, skd, ProtocolId.ESP, spi.to_bytes(4, "big"), qm.nonce_i, qm.nonce_r,
                                 enc_len + integ_len, gxy)

        k_in, k_out = material(qm.spi_in), material(spi_out)
        keys = ChildSaKeys(k_out[:enc_len], k_out[enc_len:], k_in[:enc_len], k_in[enc_len:])
        assert qm.local_ts is not None and qm.remote_ts is not None
        lifetime = qm.lifetime or qm.config.lifetime
        rekey_at = now + self._jittered(lifetime * REKEY_FRACTION) if qm.initiator else None
        child = ChildSa(qm.config, qm.spi_in, spi_out, suite, qm.config.mode, (qm.local_ts,), (qm.remote_ts,),
                        qm.initiator, now, rekey_at, now + lifetime + (0 if qm.initiator else 30))
        child.tunnel = qm.rekey.tunnel if qm.rekey is not None else self._tunnel_key()
        self.children.append(child)
        encap = self.remote[1] if self.encapsulate else None
        self.ctx.emit(ChildSaUp(self.name, self.ident, qm.spi_in, spi_out, 50, qm.config.mode,
                                suite.negotiated(), keys, child.local_ts, child.remote_ts, self.local[0],
                                self.remote[0], encap, qm.rekey.spi_in if qm.rekey else None, lifetime,
                                activate=activate, tunnel=child.tunnel))
        if qm.rekey is not None:
            qm.rekey.state = "rekeyed"
            qm.rekey.delete_at = min(now + REKEY_DELETE_DELAY, qm.rekey.expire_at) if qm.initiator else None
            qm.rekey.rekey_at = None

    # -- Informational ------------------------------------------------------------------------
    def _send_informational(self, payloads: list[Payload]) -> None:
        if self.cipher is None or self.keys is None or self.suite is None:
            return
        mid = self._new_message_id()
        prf, ska = self.suite.prf, self.keys.skeyid_a
        self._send(self._hashed(ExchangeType.INFORMATIONAL, mid, payloads,
                                lambda rest: keymat.qm_hash1(prf, ska, mid, rest)))
        self.cipher.forget(mid)

    def _on_informational(self, msg: Message, rest: bytes, hash_data: bytes, next_iv: bytes,
                          now: float) -> bool:
        assert self.keys is not None and self.suite is not None
        if not hmac.compare_digest(hash_data, keymat.qm_hash1(self.suite.prf, self.keys.skeyid_a,
                                                              msg.header.message_id, rest)):
            self._note("ikev1.bad_hash", "warning", connection=self.name, peer=self.remote_str,
                       exchange="informational")
            return False
        self.last_received = now
        for p in msg.payloads:
            if isinstance(p, DeletePayload):
                self._on_delete(p, now)
            elif isinstance(p, NotifyPayload):
                self._on_notify(p, now)
        return True

    def _on_delete(self, p: DeletePayload, now: float) -> None:
        if p.protocol == ProtocolId.ISAKMP:
            if any(spi == self.icookie + self.rcookie for spi in p.spis):
                successor = self.ctx.successor(self)
                if successor is not None and self.children:
                    # The peer rekeyed Phase 1 (a new Main Mode) and drops the old SA:
                    # the IPsec SAs live on under the new one, as strongSwan expects.
                    successor.children += self.children
                    self._note("ikev1.rekeyed", connection=self.name, old=self.ident, new=successor.ident,
                               children=len(self.children))
                    self.children = []
                    self.replaced = True
                self._note("ikev1.deleted_by_peer", connection=self.name, ike_sa=self.ident)
                self.close("deleted by peer", now)
            return
        for spi in p.spis:
            value = int.from_bytes(spi, "big")
            child = next((c for c in self.children if c.spi_out == value), None)
            if child is not None:
                self._remove_child(child, "deleted by peer")

    def _on_notify(self, p: NotifyPayload, now: float) -> None:
        kind = p.notify_type
        if kind == NotifyType.R_U_THERE and len(p.data) == 4:
            self._send_informational([NotifyPayload(NotifyType.R_U_THERE_ACK, ProtocolId.ISAKMP,
                                                    self.icookie + self.rcookie, p.data)])
        elif kind == NotifyType.R_U_THERE_ACK and len(p.data) == 4:
            if self.dpd_pending is not None and int.from_bytes(p.data, "big") == self.dpd_pending[0]:
                self.dpd_pending = None
        elif kind == NotifyType.INITIAL_CONTACT:
            self.ctx.initial_contact(self)
        elif kind == NotifyType.CONNECTED:
            for mid, qm in list(self.quick.items()):
                if qm.initiator and qm.commit:
                    del self.quick[mid]
                    self.ctx.emit(ChildSaActivate(self.name, qm.spi_in, self._tunnel_key(qm)))
        elif kind < 16384 and self.state is not State.ESTABLISHED:
            self._refused(kind, now)  # e.g. AUTHENTICATION-FAILED for our message 5
        elif kind < 16384:
            pending = [qm for qm in self.quick.values() if qm.initiator]
            name = NotifyType(kind).name if kind in NotifyType._value2member_map_ else str(kind)
            if pending:
                for qm in pending:
                    self._qm_failed(qm, name.lower(), f"peer refused the Quick Mode: {name}", now)
            else:
                self._note("ikev1.peer_error", "warning", connection=self.name, peer=self.remote_str,
                           error=name)
        else:
            self._note("ikev1.notify", "debug", connection=self.name, type=kind)

    def _remove_child(self, child: ChildSa, reason: str) -> None:
        if child in self.children:
            self.children.remove(child)
            self.ctx.release_spi(child.spi_in)
            self.ctx.emit(ChildSaDown(self.name, self.ident, child.spi_in, child.spi_out, reason,
                                      child.tunnel))

    def delete_child(self, child: ChildSa, reason: str) -> None:
        self._send_informational([DeletePayload(ProtocolId.ESP, [child.spi_in.to_bytes(4, "big")])])
        self._remove_child(child, reason)

    def delete(self, now: float, reason: str) -> None:
        """Delete our IPsec SAs and this ISAKMP SA (RFC 2408 3.15), telling the peer."""
        for child in list(self.children):
            self.delete_child(child, reason)
        if self.state is State.ESTABLISHED:
            self._send_informational([DeletePayload(ProtocolId.ISAKMP, [self.icookie + self.rcookie])])
        self.close(reason, now)

    def close(self, reason: str, now: float, *, report: bool = True) -> None:
        if self.state is State.CLOSED:
            return
        was_up = self.state is State.ESTABLISHED
        for child in list(self.children):
            self._remove_child(child, reason)
        for qm in self.quick.values():
            self.ctx.release_spi(qm.spi_in)
        self.quick.clear()
        self.state = State.CLOSED
        self.ctx.sa_closed(self)
        self.retransmit = None
        if (was_up or report) and not self.replaced:
            self.ctx.emit(IkeSaDown(self.name, self.ident, self.remote_str, reason))

    # -- receiving ------------------------------------------------------------------------------
    def receive(self, data: bytes, header: Header, now: float) -> None:
        if header.next_payload == PayloadType.FRAGMENT and not header.encrypted:
            whole = self._reassemble(data, header)
            if whole is None:
                return
            try:
                header = Header.decode(whole)
            except MalformedMessage as exc:
                self._note("ikev1.malformed", "warning", connection=self.name, peer=self.remote_str,
                           detail=f"reassembled: {exc}")
                return
            data = whole[:header.length]
        answer = self._answers.get(hashlib.sha256(data).digest())
        if answer is not None:
            self._send(answer)  # a retransmitted request: say again what we said
            return
        body = data[28:header.length]
        plain = body
        next_iv = b""
        if header.encrypted:
            if self.cipher is None:
                self._note("ikev1.unexpected_encrypted", "debug", connection=self.name)
                return
            try:
                plain, next_iv = self.cipher.decrypt(header.message_id, body)
            except DecryptionError as exc:
                self._note("ikev1.malformed", "warning", connection=self.name, peer=self.remote_str,
                           detail=str(exc))
                return
        try:
            payloads = decode_payloads(header.next_payload, plain, padded=header.encrypted)
        except MalformedMessage as exc:
            if header.encrypted and header.exchange == ExchangeType.MAIN and self._awaiting_auth():
                # Message 5/6 is encrypted with a key derived from the PSK: garbage after
                # decryption means the two sides hold different keys (RFC 2409 5.4).
                reason = "bad_psk" if self.config.psk is not None else "malformed"
                self._auth_failed(reason, f"message {'5' if not self.initiator else '6'} from "
                                  f"{self.remote_str} does not decrypt to ISAKMP payloads"
                                  + (" (wrong PSK?)" if reason == "bad_psk" else ""), now)
                return
            self._note("ikev1.malformed", "warning", connection=self.name, peer=self.remote_str,
                       detail=str(exc))
            return
        msg = Message(header, payloads, data, plain)
        if header.exchange == ExchangeType.MAIN:
            self._on_main(msg, next_iv, now)
        elif header.exchange in (ExchangeType.QUICK, ExchangeType.INFORMATIONAL) and header.encrypted:
            keyed = self.state is State.ESTABLISHED or (
                header.exchange == ExchangeType.INFORMATIONAL and self.keys is not None)
            if not keyed or not payloads or not isinstance(payloads[0], HashPayload):
                return self._unexpected(header)
            length = sum(4 + len(p.raw) for p in payloads)
            rest = plain[4 + len(payloads[0].raw):length]
            handler = self._on_quick if header.exchange == ExchangeType.QUICK else self._on_informational
            if handler(msg, rest, payloads[0].data, next_iv, now):
                self.last_received = now
                if header.exchange == ExchangeType.INFORMATIONAL and self.cipher is not None:
                    self.cipher.forget(header.message_id)
        elif header.exchange == ExchangeType.INFORMATIONAL:
            self._on_clear_notify(msg, now)
        else:
            self._note("ikev1.unsupported_exchange", "warning", connection=self.name, peer=self.remote_str,
                       exchange=header.exchange)

    def _unexpected(self, header: Header) -> None:
        """A message this SA has no use for in its state: logged (as the IKEv2 core does),
        so that no input vanishes without a trace."""
        self._note("ikev1.unexpected_message", "debug", connection=self.name, peer=self.remote_str,
                   exchange=header.exchange, state=self.state.value, encrypted=header.encrypted)

    def _awaiting_auth(self) -> bool:
        return self.state is (State.MM_AUTH if self.initiator else State.MM_KE)

    def _on_main(self, msg: Message, next_iv: bytes, now: float) -> None:
        state, enc = self.state, msg.header.encrypted
        if self.initiator:
            if state is State.MM_SA and not enc:
                if msg.header.rcookie == bytes(8):
                    return self._unexpected(msg.header)
                self.rcookie = msg.header.rcookie
                self.ctx.emit(Note("ikev1.rcookie", "debug", (("ike_sa", self.ident),)))
                self._on_mm2(msg, now)
            elif state is State.MM_KE and not enc:
                self._on_mm4(msg, now)
            elif state is State.MM_AUTH and enc:
                assert self.cipher is not None
                self.cipher.confirm(0, next_iv)
                self._on_mm6(msg, now)
            else:
                self._unexpected(msg.header)
        else:
            if state is State.MM_SA and not enc:
                self._on_mm3(msg, now)
            elif state is State.MM_KE and enc:
                assert self.cipher is not None
                self.cipher.confirm(0, next_iv)
                self._on_mm5(msg, now)
            else:
                self._unexpected(msg.header)

    def _on_clear_notify(self, msg: Message, now: float) -> None:
        """An unprotected notification: believed only while Main Mode is still running."""
        if self.state not in (State.MM_SA, State.MM_KE, State.MM_AUTH):
            return self._unexpected(msg.header)
        for p in msg.all(NotifyPayload):
            assert isinstance(p, NotifyPayload)
            self._refused(p.notify_type, now)
            return

    def _refused(self, kind: int, now: float) -> None:
        """The peer refused our Main Mode with an error notification."""
        name = NotifyType(kind).name if kind in NotifyType._value2member_map_ else str(kind)
        if kind in (NotifyType.AUTHENTICATION_FAILED, NotifyType.INVALID_HASH_INFORMATION,
                    NotifyType.INVALID_SIGNATURE, NotifyType.INVALID_ID_INFORMATION):
            self.ctx.emit(AuthFailed(self.name, self.remote_str, "peer_refused", f"peer says {name}"))
            self.close(f"peer refused: {name}", now, report=False)
        else:
            self._fail_negotiation(name.lower(), "main_mode", f"peer says {name}", now)

    def _fail_negotiation(self, reason: str, stage: str, detail: str, now: float) -> None:
        self.ctx.emit(NegotiationFailed(self.name, self.remote_str, stage, reason, detail))
        self.close(f"{stage} failed: {reason}", now, report=False)

    def _reassemble(self, data: bytes, header: Header) -> bytes | None:
        try:
            payloads = decode_payloads(header.next_payload, data[28:header.length])
        except MalformedMessage as exc:
            self._note("ikev1.malformed", "warning", connection=self.name, peer=self.remote_str,
                       detail=str(exc))
            return None
        frag = payloads[0] if payloads else None
        if not isinstance(frag, FragmentPayload) or frag.number > MAX_FRAGMENTS:
            self._note("ikev1.malformed", "warning", connection=self.name, peer=self.remote_str,
                       detail="not a usable fragment")
            return None
        pieces = self._fragments.setdefault(frag.fragment_id, {})
        if len(self._fragments) > 2:
            oldest = next(iter(self._fragments))
            del self._fragments[oldest]
            self._fragment_last.pop(oldest, None)  # or forged "last" fragments pile up here
            pieces = self._fragments.setdefault(frag.fragment_id, pieces)
        pieces[frag.number] = frag.data
        if frag.last:
            self._fragment_last[frag.fragment_id] = frag.number
        last = self._fragment_last.get(frag.fragment_id)
        if last is None or any(n not in pieces for n in range(1, last + 1)):
            return None
        whole = b"".join(pieces[n] for n in range(1, last + 1))
        del self._fragments[frag.fragment_id]
        self._fragment_last.pop(frag.fragment_id, None)
        return whole

    # -- timers ---------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        times: list[float] = []
        if self.retransmit is not None:
            times.append(self.retransmit.next_at)
        if self.state in (State.MM_SA, State.MM_KE) and not self.initiator:
            times.append(self.half_open_deadline)  # initiators give up by retransmission count
        for qm in self.quick.values():
            if qm.retransmit is not None:
                times.append(qm.retransmit.next_at)
            else:
                times.append(qm.started + self.ctx.timing.half_open_timeout)
        if self.state is State.ESTABLISHED:
            for t in (self.rekey_at, self.expire_at, self.keepalive_at, self._dpd_deadline(), self.retire_at):
                if t is not None:
                    times.append(t)
            replacing = self.replacing  # Quick Mode rekeys wait for the new SA
            for c in self.children:
                for t in (None if replacing else c.rekey_at, c.expire_at, c.delete_at):
                    if t is not None:
                        times.append(t)
        return min(times) if times else None

    def _dpd_deadline(self) -> float | None:
        cfg = self.config
        if not cfg.dpd_interval or not self.peer_dpd:
            return None
        if self.dpd_pending is not None:
            _seq, sent, _tries = self.dpd_pending
            return min(sent + self.ctx.timing.retransmit_timeout, self._dpd_started + cfg.dpd_timeout)
        return self.last_received + cfg.dpd_interval

    def on_timer(self, now: float) -> None:
        timing = self.ctx.timing
        if self.retransmit is not None and now >= self.retransmit.next_at:
            r = self.retransmit
            if r.tries >= timing.retransmit_tries:
                reason = "no answer from the peer"
                self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "main_mode", "timeout",
                                                f"{reason} after {r.tries + 1} transmissions"))
                self.close(reason, now, report=False)
                return
            r.tries += 1
            r.next_at = now + timing.retransmit_timeout * timing.retransmit_base ** r.tries
            self._send(r.datagrams)
        if self.state in (State.MM_SA, State.MM_KE) and not self.initiator and now >= self.half_open_deadline:
            self.ctx.emit(NegotiationFailed(self.name, self.remote_str, "main_mode", "timeout",
                                            "Main Mode did not complete in time"))
            self.close("half-open timeout", now, report=False)
            return
        for qm in list(self.quick.values()):
            r = qm.retransmit
            if r is not None and now >= r.next_at:
                if r.tries >= timing.retransmit_tries:
                    self._qm_failed(qm, "timeout", "no answer to the Quick Mode", now)
                    continue
                r.tries += 1
                r.next_at = now + timing.retransmit_timeout * timing.retransmit_base ** r.tries
                self._send(r.datagrams)
            elif r is None and now >= qm.started + timing.half_open_timeout:
                self.quick.pop(qm.message_id, None)
                if qm.commit and qm.initiator:
                    # no CONNECTED came: use the SA anyway
                    self.ctx.emit(ChildSaActivate(self.name, qm.spi_in, self._tunnel_key(qm)))
        if self.state is not State.ESTABLISHED:
            return
        if self.retire_at is not None and now >= self.retire_at:
            self.delete(now, "replaced by a new ISAKMP SA")
            return
        if self.expire_at is not None and now >= self.expire_at:
            self._note("ikev1.expired", connection=self.name, ike_sa=self.ident)
            self.delete(now, "phase 1 lifetime expired")
            return
        if self.rekey_at is not None and now >= self.rekey_at:
            self.rekey_at = None
            self.ctx.rekey_phase1(self, now)
        if self.keepalive_at is not None and now >= self.keepalive_at:
            self.ctx.transmit([b"\xff"], self.local[1], self.remote)
            self.keepalive_at = now + KEEPALIVE_INTERVAL
        self._dpd_timer(now)
        if self.state is not State.ESTABLISHED:
            return
        for c in list(self.children):
            if c.delete_at is not None and now >= c.delete_at:
                self.delete_child(c, "rekeyed")
            elif now >= c.expire_at:
                self.delete_child(c, "rekeyed" if c.state == "rekeyed" else "lifetime expired")
            elif c.rekey_at is not None and now >= c.rekey_at and c.state == "installed" \
                    and not self.replacing:
                c.rekey_at = None
                self.start_quick_mode(c.config, now, rekey=c)

    def _dpd_timer(self, now: float) -> None:
        deadline = self._dpd_deadline()
        if deadline is None or now < deadline:
            return
        cfg = self.config
        if self.dpd_pending is None:
            self._dpd_started = now
            self._send_dpd(now, 0)
            return
        if now >= self._dpd_started + cfg.dpd_timeout:
            self.ctx.emit(PeerDead(self.name, self.ident, self.remote_str, cfg.dpd_action))
            self.close("peer dead (DPD)", now)
            return
        self._send_dpd(now, self.dpd_pending[2] + 1)

    def _send_dpd(self, now: float, tries: int) -> None:
        if tries == 0:
            self.dpd_seq = (self.dpd_seq + 1) & 0xFFFFFFFF
        self.dpd_pending = (self.dpd_seq, now, tries)
        self._send_informational([NotifyPayload(NotifyType.R_U_THERE, ProtocolId.ISAKMP,
                                                self.icookie + self.rcookie, self.dpd_seq.to_bytes(4,
                                                                                                   "big"))])

    def child_used(self, now: float) -> None:
        self.last_received = max(self.last_received, now)
        if self.dpd_pending is not None:
            self.dpd_pending = None

    def child_usage(self, spi_in: int, octets: int, packets: int, now: float) -> None:
        child = next((c for c in self.children if c.spi_in == spi_in), None)
        if child is None or child.state != "installed" or self.state is not State.ESTABLISHED \
                or self.replacing:
            return
        cfg = child.config
        over_bytes = bool(cfg.rekey_bytes) and octets >= (cfg.rekey_bytes or 0)
        if over_bytes or (bool(cfg.rekey_packets) and packets >= (cfg.rekey_packets or 0)):
            self._note("ike.child_volume_limit", connection=self.name, spi_in=f"0x{spi_in:08x}",
                       octets=octets, packets=packets)
            child.rekey_at = None
            self.start_quick_mode(child.config, now, rekey=child)

    def describe(self, now: float) -> dict[str, Any]:
        up = self.established_at
        return {
            "name": self.name, "ike_sa": self.ident, "version": 1, "state": self.state.value,
            "initiator": self.initiator, "local": f"{self.local[0]}:{self.local[1]}",
            "remote": self.remote_str,
            "local_id": str(self.config.local_id), "remote_id": str(self.peer_id) if self.peer_id else None,
            "algorithm": self.suite.name if self.suite else None, "auth": self.auth_used,
            "nat_local": self.nat_local, "nat_remote": self.nat_remote, "encap": self.encapsulate,
            "vendor_ids": self.vendors,
            "established_for": round(now - up, 1) if up is not None else None,
            "rekey_in": round(self.rekey_at - now, 1) if self.rekey_at is not None else None,
            "children": [c.describe(now) for c in self.children],
        }
