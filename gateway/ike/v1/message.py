"""ISAKMP messages (RFC 2408 3, RFC 2407 4, RFC 3947 3-4): header, payloads, attributes.

Decoding is strict about lengths (every payload must fit, proposals and transforms must
add up) and lenient about what it does not know: unknown payload types are kept as
`UnknownPayload` so a core can answer INVALID_PAYLOAD_TYPE or ignore them.  Decoded
payloads keep their body octets in ``raw``: IKEv1 hashes cover the SA and ID bodies *as
the peer sent them* (RFC 2409 5), attribute encodings included.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from gateway.ike.v1.constants import DOI_IPSEC, ISAKMP_VERSION, SIT_IDENTITY_ONLY, PayloadType, ProtocolId

HEADER_SIZE = 28
_ZERO = ipaddress.IPv4Address(0)


class MalformedMessage(ValueError):
    """A message or payload that does not parse; the text says what and where."""


@dataclass(frozen=True)
class Header:
    """The ISAKMP header (RFC 2408 3.1)."""

    icookie: bytes
    rcookie: bytes
    next_payload: int
    exchange: int
    flags: int
    message_id: int
    length: int = 0
    version: int = ISAKMP_VERSION

    def encode(self) -> bytes:
        return self.icookie + self.rcookie + struct.pack(
            "!BBBBII", self.next_payload, self.version, self.exchange, self.flags, self.message_id,
            self.length)

    @classmethod
    def decode(cls, data: bytes) -> Header:
        if len(data) < HEADER_SIZE:
            raise MalformedMessage(f"{len(data)} octets: shorter than the ISAKMP header")
        nxt, version, exchange, flags, mid, length = struct.unpack_from("!BBBBII", data, 16)
        if length < HEADER_SIZE or length > len(data):
            raise MalformedMessage(f"header length {length} but {len(data)} octets received")
        return cls(data[:8], data[8:16], nxt, exchange, flags, mid, length, version)

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & 0x01)

    @property
    def commit(self) -> bool:
        return bool(self.flags & 0x02)


# -- data attributes (RFC 2408 3.3) -----------------------------------------------------------


@dataclass(frozen=True)
class Attribute:
    """A data attribute: TV form (``value`` an int below 65536, ``basic``) or TLV (bytes)."""

    type: int
    value: int | bytes

    @property
    def number(self) -> int:
        """The value as an unsigned integer (TLV values are big-endian, RFC 2407 4.5)."""
        if isinstance(self.value, int):
            return self.value
        return int.from_bytes(self.value, "big") if self.value else 0

    def encode(self) -> bytes:
        if isinstance(self.value, int):
            if 0 <= self.value < 0x10000:
                return struct.pack("!HH", 0x8000 | self.type, self.value)
            value = self.value.to_bytes(4 if self.value < 1 << 32 else 8, "big")
        else:
            value = self.value
        return struct.pack("!HH", self.type & 0x7FFF, len(value)) + value


def encode_attributes(attributes: list[Attribute] | tuple[Attribute, ...]) -> bytes:
    return b"".join(a.encode() for a in attributes)


def decode_attributes(data: bytes) -> list[Attribute]:
    out: list[Attribute] = []
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise MalformedMessage("truncated data attribute")
        af_type, value = struct.unpack_from("!HH", data, pos)
        pos += 4
        if af_type & 0x8000:
            out.append(Attribute(af_type & 0x7FFF, value))
        else:
            if pos + value > len(data):
                raise MalformedMessage(f"attribute {af_type} length {value} runs past its transform")
            out.append(Attribute(af_type, data[pos:pos + value]))
            pos += value
    return out


# -- payloads -----------------------------------------------------------------------------------


@dataclass
class Payload:
    TYPE: ClassVar[int] = 0
    #: the body as received (empty for payloads we built)
    raw: bytes = field(default=b"", init=False, repr=False, compare=False)

    @property
    def payload_type(self) -> int:
        return self.TYPE

    def encode_body(self) -> bytes:  # pragma: no cover - every payload overrides it
        raise NotImplementedError

    @property
    def body(self) -> bytes:
        """The octets after the generic header: as received, or as we encode them."""
        return self.raw or self.encode_body()


@dataclass
class Transform:
    number: int
    transform_id: int
    attributes: list[Attribute]

    def attribute(self, kind: int) -> Attribute | None:
        return next((a for a in self.attributes if a.type == kind), None)

    def encode(self, last: bool) -> bytes:
        body = struct.pack("!BBH", self.number, self.transform_id, 0) + encode_attributes(self.attributes)
        return struct.pack("!BBH", 0 if last else PayloadType.TRANSFORM, 0, 4 + len(body)) + body


@dataclass
class Proposal:
    number: int
    protocol: int
    spi: bytes
    transforms: list[Transform]

    def encode(self, last: bool) -> bytes:
        inner = b"".join(t.encode(i == len(self.transforms) - 1) for i, t in enumerate(self.transforms))
        body = struct.pack("!BBBB", self.number, self.protocol, len(self.spi), len(self.transforms)) \
            + self.spi + inner
        return struct.pack("!BBH", 0 if last else PayloadType.PROPOSAL, 0, 4 + len(body)) + body


@dataclass
class SaPayload(Payload):
    """Security Association (RFC 2408 3.4, RFC 2407 4.6.1): DOI, situation, proposals.

    Several proposals with the same number are one proposal combining protocols (AND);
    different numbers are alternatives (OR).
    """

    TYPE: ClassVar[int] = PayloadType.SA
    proposals: list[Proposal] = field(default_factory=list)
    doi: int = DOI_IPSEC
    situation: int = SIT_IDENTITY_ONLY

    def encode_body(self) -> bytes:
        return struct.pack("!II", self.doi, self.situation) + b"".join(
            p.encode(i == len(self.proposals) - 1) for i, p in enumerate(self.proposals))

    @classmethod
    def decode_body(cls, body: bytes) -> SaPayload:
        if len(body) < 8:
            raise MalformedMessage("SA payload shorter than DOI and situation")
        doi, situation = struct.unpack_from("!II", body)
        if doi != DOI_IPSEC:
            raise MalformedMessage(f"SA payload DOI {doi} is not IPsec (1)")
        if situation & ~0x7:
            raise MalformedMessage(f"SA payload situation {situation:#x} unknown")
        proposals: list[Proposal] = []
        pos, nxt = 8, PayloadType.PROPOSAL if len(body) > 8 else 0
        while nxt:
            if nxt != PayloadType.PROPOSAL:
                raise MalformedMessage(f"payload type {nxt} inside an SA payload")
            nxt, length, content = _substructure(body, pos, "proposal")
            pos += length
            if len(content) < 4:
                raise MalformedMessage("proposal too short")
            number, protocol, spi_size, count = struct.unpack_from("!BBBB", content)
            if 4 + spi_size > len(content):
                raise MalformedMessage("proposal SPI runs past the proposal")
            spi = content[4:4 + spi_size]
            transforms = _decode_transforms(content[4 + spi_size:], count)
            proposals.append(Proposal(number, protocol, spi, transforms))
        if pos != len(body):
            raise MalformedMessage("SA payload has octets after its last proposal")
        return cls(proposals, doi, situation)


def _substructure(body: bytes, pos: int, what: str) -> tuple[int, int, bytes]:
    if pos + 4 > len(body):
        raise MalformedMessage(f"truncated {what} header")
    nxt, _reserved, length = struct.unpack_from("!BBH", body, pos)
    if length < 4 or pos + length > len(body):
        raise MalformedMessage(f"{what} length {length} out of bounds")
    return nxt, length, body[pos + 4:pos + length]


def _decode_transforms(data: bytes, count: int) -> list[Transform]:
    out: list[Transform] = []
    pos, nxt = 0, PayloadType.TRANSFORM if data else 0
    while nxt:
        if nxt != PayloadType.TRANSFORM:
            raise MalformedMessage(f"payload type {nxt} inside a proposal")
        nxt, length, content = _substructure(data, pos, "transform")
        pos += length
        if len(content) < 4:
            raise MalformedMessage("transform too short")
        number, tid = content[0], content[1]
        out.append(Transform(number, tid, decode_attributes(content[4:])))
    if pos != len(data):
        raise MalformedMessage("proposal has octets after its last transform")
    if len(out) != count:
        raise MalformedMessage(f"proposal announces {count} transforms but carries {len(out)}")
    return out


@dataclass
class _Data(Payload):
    """A payload whose body is opaque data."""

    data: bytes = b""

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, body: bytes) -> _Data:
        return cls(body)


@dataclass
class KePayload(_Data):
    TYPE: ClassVar[int] = PayloadType.KE


@dataclass
class HashPayload(_Data):
    TYPE: ClassVar[int] = PayloadType.HASH


@dataclass
class SigPayload(_Data):
    TYPE: ClassVar[int] = PayloadType.SIG


@dataclass
class NoncePayload(_Data):
    TYPE: ClassVar[int] = PayloadType.NONCE

    @classmethod
    def decode_body(cls, body: bytes) -> NoncePayload:
        if not 8 <= len(body) <= 256:
            raise MalformedMessage(f"nonce of {len(body)} octets (RFC 2409 5: 8..256)")
        return cls(body)


@dataclass
class VendorIdPayload(_Data):
    TYPE: ClassVar[int] = PayloadType.VENDOR


@dataclass
class NatDPayload(_Data):
    """NAT-D (RFC 3947 3.2): HASH(CKY-I | CKY-R | IP | Port); type 130 for the drafts."""

    TYPE: ClassVar[int] = PayloadType.NAT_D
    draft: bool = False

    @property
    def payload_type(self) -> int:
        return PayloadType.NAT_D_DRAFT if self.draft else PayloadType.NAT_D


@dataclass
class IdPayload(Payload):
    """Identification (RFC 2407 4.6.2): type, protocol, port, data."""

    TYPE: ClassVar[int] = PayloadType.ID
    id_type: int = 1
    protocol: int = 0
    port: int = 0
    data: bytes = b""

    def encode_body(self) -> bytes:
        return struct.pack("!BBH", self.id_type, self.protocol, self.port) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> IdPayload:
        if len(body) < 4:
            raise MalformedMessage("ID payload too short")
        id_type, proto, port = struct.unpack_from("!BBH", body)
        return cls(id_type, proto, port, body[4:])


@dataclass
class CertPayload(Payload):
    TYPE: ClassVar[int] = PayloadType.CERT
    encoding: int = 4
    data: bytes = b""

    def encode_body(self) -> bytes:
        return bytes([self.encoding]) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> CertPayload:
        if not body:
            raise MalformedMessage("empty CERT payload")
        return cls(body[0], body[1:])


@dataclass
class CertReqPayload(CertPayload):
    """Certificate Request (RFC 2408 3.10): for X.509, data is an acceptable CA's DN."""

    TYPE: ClassVar[int] = PayloadType.CERTREQ

    @classmethod
    def decode_body(cls, body: bytes) -> CertReqPayload:
        if not body:
            raise MalformedMessage("empty CERTREQ payload")
        return cls(body[0], body[1:])


@dataclass
class NotifyPayload(Payload):
    """Notification (RFC 2408 3.14); DPD puts the ISAKMP cookies in the SPI (RFC 3706)."""

    TYPE: ClassVar[int] = PayloadType.NOTIFY
    notify_type: int = 0
    protocol: int = ProtocolId.ISAKMP
    spi: bytes = b""
    data: bytes = b""
    doi: int = DOI_IPSEC

    def encode_body(self) -> bytes:
        return struct.pack("!IBBH", self.doi, self.protocol, len(self.spi), self.notify_type) \
            + self.spi + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> NotifyPayload:
        if len(body) < 8:
            raise MalformedMessage("notification payload too short")
        doi, proto, spi_size, kind = struct.unpack_from("!IBBH", body)
        if 8 + spi_size > len(body):
            raise MalformedMessage("notification SPI runs past the payload")
        return cls(kind, proto, body[8:8 + spi_size], body[8 + spi_size:], doi)


@dataclass
class DeletePayload(Payload):
    """Delete (RFC 2408 3.15): ISAKMP SAs by their cookie pair, IPsec SAs by 4-octet SPIs."""

    TYPE: ClassVar[int] = PayloadType.DELETE
    protocol: int = ProtocolId.ESP
    spis: list[bytes] = field(default_factory=list)
    doi: int = DOI_IPSEC

    def encode_body(self) -> bytes:
        size = len(self.spis[0]) if self.spis else (16 if self.protocol == ProtocolId.ISAKMP else 4)
        return struct.pack("!IBBH", self.doi, self.protocol, size, len(self.spis)) + b"".join(self.spis)

    @classmethod
    def decode_body(cls, body: bytes) -> DeletePayload:
        if len(body) < 8:
            raise MalformedMessage("delete payload too short")
        doi, proto, size, count = struct.unpack_from("!IBBH", body)
        if len(body) != 8 + size * count:
            raise MalformedMessage(f"delete payload of {count} SPIs of {size} octets has {len(body) - 8}")
        return cls(proto, [body[8 + i * size:8 + (i + 1) * size] for i in range(count)], doi)


@dataclass
class NatOaPayload(Payload):
    """NAT-OA (RFC 3947 5.2): a peer's original address; type 131 for the drafts."""

    TYPE: ClassVar[int] = PayloadType.NAT_OA
    address: ipaddress.IPv4Address = _ZERO
    draft: bool = False

    @property
    def payload_type(self) -> int:
        return PayloadType.NAT_OA_DRAFT if self.draft else PayloadType.NAT_OA

    def encode_body(self) -> bytes:
        return bytes([1, 0, 0, 0]) + self.address.packed

    @classmethod
    def decode_body(cls, body: bytes) -> NatOaPayload:
        if len(body) != 8 or body[0] != 1:
            raise MalformedMessage("NAT-OA payload is not one IPv4 address")
        return cls(ipaddress.IPv4Address(body[4:8]))


@dataclass
class FragmentPayload(Payload):
    """One piece of a fragmented message (the Cisco/Microsoft IKEv1 extension)."""

    TYPE: ClassVar[int] = PayloadType.FRAGMENT
    fragment_id: int = 0
    number: int = 1
    last: bool = False
    data: bytes = b""

    def encode_body(self) -> bytes:
        return struct.pack("!HBB", self.fragment_id, self.number, 1 if self.last else 0) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> FragmentPayload:
        if len(body) < 4:
            raise MalformedMessage("fragment payload too short")
        fid, number, flags = struct.unpack_from("!HBB", body)
        if number == 0:
            raise MalformedMessage("fragment number 0")
        return cls(fid, number, bool(flags & 1), body[4:])


@dataclass
class UnknownPayload(Payload):
    type: int = 0
    data: bytes = b""

    @property
    def payload_type(self) -> int:
        return self.type

    def encode_body(self) -> bytes:
        return self.data


_DECODERS: dict[int, type] = {
    PayloadType.SA: SaPayload, PayloadType.KE: KePayload, PayloadType.ID: IdPayload,
    PayloadType.CERT: CertPayload, PayloadType.CERTREQ: CertReqPayload, PayloadType.HASH: HashPayload,
    PayloadType.SIG: SigPayload, PayloadType.NONCE: NoncePayload, PayloadType.NOTIFY: NotifyPayload,
    PayloadType.DELETE: DeletePayload, PayloadType.VENDOR: VendorIdPayload,
    PayloadType.NAT_D: NatDPayload, PayloadType.NAT_OA: NatOaPayload,
    PayloadType.NAT_D_DRAFT: NatDPayload, PayloadType.NAT_OA_DRAFT: NatOaPayload,
    PayloadType.FRAGMENT: FragmentPayload,
}


def decode_payloads(first: int, data: bytes, *, padded: bool = False) -> list[Payload]:
    """The payload chain; ``padded``: trailing octets after the last payload are the
    encryption padding (RFC 2409 5.3) and are ignored."""
    out: list[Payload] = []
    pos, nxt = 0, first
    while nxt:
        if pos + 4 > len(data):
            raise MalformedMessage(f"truncated header of payload type {nxt}")
        following, _reserved, length = struct.unpack_from("!BBH", data, pos)
        if length < 4 or pos + length > len(data):
            raise MalformedMessage(f"payload type {nxt} length {length} out of bounds")
        body = data[pos + 4:pos + length]
        decoder = _DECODERS.get(nxt)
        if decoder is None:
            payload: Payload = UnknownPayload(nxt, body)
        else:
            payload = decoder.decode_body(body)
            if isinstance(payload, NatDPayload | NatOaPayload):
                payload.draft = nxt >= 128
        payload.raw = body
        out.append(payload)
        pos += length
        nxt = following
    if pos != len(data) and not padded:
        raise MalformedMessage(f"{len(data) - pos} octets after the last payload")
    return out


def encode_payloads(payloads: list[Payload]) -> tuple[int, bytes]:
    """(type of the first payload, the chain with generic headers)."""
    parts = []
    for i, p in enumerate(payloads):
        nxt = payloads[i + 1].payload_type if i + 1 < len(payloads) else 0
        body = p.encode_body()
        parts.append(struct.pack("!BBH", nxt, 0, 4 + len(body)) + body)
    return (payloads[0].payload_type if payloads else 0), b"".join(parts)


def encode_payload(payload: Payload, next_type: int = 0) -> bytes:
    """One payload with its generic header (what HASH(1)..(3) cover, RFC 2409 5.5)."""
    body = payload.encode_body()
    return struct.pack("!BBH", next_type, 0, 4 + len(body)) + body


@dataclass
class Message:
    """A decoded message: its header, its (decrypted) payloads and the octets received."""

    header: Header
    payloads: list[Payload]
    raw: bytes = field(default=b"", repr=False)
    #: the decrypted payload chain (what QM and informational hashes cover)
    plain: bytes = field(default=b"", repr=False)

    def find(self, kind: type[Payload]) -> Payload | None:
        return next((p for p in self.payloads if isinstance(p, kind)), None)

    def all(self, kind: type[Payload]) -> list[Payload]:
        return [p for p in self.payloads if isinstance(p, kind)]

    def notify(self, notify_type: int) -> NotifyPayload | None:
        found = [p for p in self.payloads if isinstance(p, NotifyPayload) and p.notify_type == notify_type]
        return found[0] if found else None
