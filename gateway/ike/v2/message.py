"""IKEv2 messages and payloads as dataclasses, with their wire encoding (RFC 7296 3).

Decoding never trusts a length: every bad field raises `MalformedMessage` with what was
wrong, so a garbled datagram becomes a counted drop and a log line, not an exception
escaping the core.  The Encrypted payload (SK/SKF) is only framed here; the cipher work
is in `gateway.ike.v2.protection`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from gateway.ike.trafficselectors import TsRange
from gateway.ike.v2.constants import (
    IKE_VERSION,
    ExchangeType,
    Flag,
    PayloadType,
    ProtocolId,
    TransformType,
    TsType,
    notify_name,
)

HEADER_SIZE = 28
_HEADER = struct.Struct("!8s8sBBBBII")


class MalformedMessage(ValueError):
    """A message or payload that does not parse (RFC 7296 3: INVALID_SYNTAX)."""


class UnsupportedCriticalPayload(MalformedMessage):
    """A payload we do not know, with the critical bit set (RFC 7296 2.5)."""

    def __init__(self, payload_type: int) -> None:
        super().__init__(f"unsupported critical payload type {payload_type}")
        self.payload_type = payload_type


# --------------------------------------------------------------------------------------
# header
# --------------------------------------------------------------------------------------


@dataclass
class Header:
    spi_i: bytes
    spi_r: bytes
    next_payload: int
    exchange: int
    flags: int
    message_id: int
    length: int = 0
    version: int = IKE_VERSION

    @property
    def is_response(self) -> bool:
        return bool(self.flags & Flag.RESPONSE)

    @property
    def from_initiator(self) -> bool:
        """Set by the original initiator of the IKE SA (RFC 7296 3.1, the I flag)."""
        return bool(self.flags & Flag.INITIATOR)

    def encode(self) -> bytes:
        return _HEADER.pack(self.spi_i, self.spi_r, self.next_payload, self.version,
                            self.exchange, self.flags, self.message_id, self.length)

    @classmethod
    def decode(cls, data: bytes) -> Header:
        if len(data) < HEADER_SIZE:
            raise MalformedMessage(f"{len(data)} octets: shorter than an IKE header")
        spi_i, spi_r, nxt, version, exchange, flags, mid, length = _HEADER.unpack_from(data)
        if length != len(data):
            raise MalformedMessage(f"header says {length} octets, datagram has {len(data)}")
        return cls(spi_i, spi_r, nxt, exchange, flags, mid, length, version)

    def describe(self) -> str:
        try:
            name = ExchangeType(self.exchange).name
        except ValueError:
            name = f"EXCHANGE_{self.exchange}"
        kind = "response" if self.is_response else "request"
        return f"{name} {kind} {self.message_id}"


# --------------------------------------------------------------------------------------
# payloads
# --------------------------------------------------------------------------------------


class Payload:
    """Base of all payloads; ``TYPE`` is the payload type number."""

    TYPE: ClassVar[int] = 0

    def encode_body(self) -> bytes:  # pragma: no cover - every payload overrides
        raise NotImplementedError

    @classmethod
    def decode_body(cls, body: bytes) -> Payload:  # pragma: no cover
        raise NotImplementedError


@dataclass
class Transform:
    type: int
    id: int
    key_length: int | None = None  # the Key Length attribute (RFC 7296 3.3.5), in bits

    def encode(self, last: bool) -> bytes:
        attrs = b"" if self.key_length is None else struct.pack("!HH", 0x800E, self.key_length)
        return struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(attrs), self.type, 0,
                           self.id) + attrs

    def key(self) -> tuple[int, int, int | None]:
        return (self.type, self.id, self.key_length)


@dataclass
class Proposal:
    number: int
    protocol: int
    spi: bytes
    transforms: list[Transform]

    def of_type(self, kind: int) -> list[Transform]:
        return [t for t in self.transforms if t.type == kind]

    def encode(self, last: bool) -> bytes:
        body = b"".join(t.encode(i == len(self.transforms) - 1) for i, t in enumerate(self.transforms))
        head = struct.pack("!BBHBBBB", 0 if last else 2, 0, 8 + len(self.spi) + len(body),
                           self.number, self.protocol, len(self.spi), len(self.transforms))
        return head + self.spi + body


def _decode_transforms(data: bytes, count: int) -> list[Transform]:
    out = []
    pos = 0
    while pos < len(data):
        if pos + 8 > len(data):
            raise MalformedMessage("truncated transform")
        more, _, length, ttype, _, tid = struct.unpack_from("!BBHBBH", data, pos)
        if length < 8 or pos + length > len(data):
            raise MalformedMessage(f"transform length {length} out of bounds")
        key_length = None
        apos = pos + 8
        while apos < pos + length:
            if apos + 4 > pos + length:
                raise MalformedMessage("truncated transform attribute")
            atype, avalue = struct.unpack_from("!HH", data, apos)
            if atype & 0x8000:
                if atype & 0x7FFF == 14:
                    key_length = avalue
                apos += 4
            else:  # TLV attributes: none defined for IKEv2 transforms, skip them
                apos += 4 + avalue
        out.append(Transform(ttype, tid, key_length))
        pos += length
        if more == 0:
            break
    if len(out) != count or pos != len(data):
        raise MalformedMessage(f"proposal announces {count} transforms, has {len(out)}")
    return out


@dataclass
class SaPayload(Payload):
    TYPE: ClassVar[int] = PayloadType.SA
    proposals: list[Proposal]

    def encode_body(self) -> bytes:
        return b"".join(p.encode(i == len(self.proposals) - 1) for i, p in enumerate(self.proposals))

    @classmethod
    def decode_body(cls, body: bytes) -> SaPayload:
        proposals = []
        pos = 0
        while pos < len(body):
            if pos + 8 > len(body):
                raise MalformedMessage("truncated proposal")
            more, _, length, number, proto, spi_size, count = struct.unpack_from("!BBHBBBB", body, pos)
            if length < 8 + spi_size or pos + length > len(body):
                raise MalformedMessage(f"proposal length {length} out of bounds")
            spi = body[pos + 8:pos + 8 + spi_size]
            transforms = _decode_transforms(body[pos + 8 + spi_size:pos + length], count)
            proposals.append(Proposal(number, proto, spi, transforms))
            pos += length
            if more == 0:
                break
        if pos != len(body) or not proposals:
            raise MalformedMessage("SA payload: bad proposal list")
        return cls(proposals)


@dataclass
class KePayload(Payload):
    TYPE: ClassVar[int] = PayloadType.KE
    group: int
    data: bytes = field(repr=False)

    def encode_body(self) -> bytes:
        return struct.pack("!HH", self.group, 0) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> KePayload:
        if len(body) < 4:
            raise MalformedMessage("KE payload too short")
        return cls(struct.unpack_from("!H", body)[0], body[4:])


@dataclass
class IdPayload(Payload):
    """IDi; `IdrPayload` is the same shape with another type number (RFC 7296 3.5)."""

    TYPE: ClassVar[int] = PayloadType.IDI
    id_type: int
    data: bytes

    def encode_body(self) -> bytes:
        return bytes([self.id_type, 0, 0, 0]) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> IdPayload:
        if len(body) < 5:
            raise MalformedMessage("ID payload too short")
        return cls(body[0], body[4:])

    def body_for_auth(self) -> bytes:
        """RestOfInitIDPayload / RestOfRespIDPayload of RFC 7296 2.15."""
        return self.encode_body()


@dataclass
class IdrPayload(IdPayload):
    TYPE: ClassVar[int] = PayloadType.IDR


@dataclass
class CertPayload(Payload):
    TYPE: ClassVar[int] = PayloadType.CERT
    encoding: int
    data: bytes

    def encode_body(self) -> bytes:
        return bytes([self.encoding]) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> CertPayload:
        if len(body) < 1:
            raise MalformedMessage("CERT payload too short")
        return cls(body[0], body[1:])


@dataclass
class CertReqPayload(CertPayload):
    TYPE: ClassVar[int] = PayloadType.CERTREQ


@dataclass
class AuthPayload(Payload):
    TYPE: ClassVar[int] = PayloadType.AUTH
    method: int
    data: bytes = field(repr=False)

    def encode_body(self) -> bytes:
        return bytes([self.method, 0, 0, 0]) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> AuthPayload:
        if len(body) < 5:
            raise MalformedMessage("AUTH payload too short")
        return cls(body[0], body[4:])


@dataclass
class NoncePayload(Payload):
    TYPE: ClassVar[int] = PayloadType.NONCE
    data: bytes

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, body: bytes) -> NoncePayload:
        if not 16 <= len(body) <= 256:  # RFC 7296 3.9
            raise MalformedMessage(f"nonce of {len(body)} octets (16..256 allowed)")
        return cls(body)


@dataclass
class NotifyPayload(Payload):
    TYPE: ClassVar[int] = PayloadType.NOTIFY
    type: int
    data: bytes = b""
    protocol: int = 0
    spi: bytes = b""

    def encode_body(self) -> bytes:
        return struct.pack("!BBH", self.protocol, len(self.spi), self.type) + self.spi + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> NotifyPayload:
        if len(body) < 4:
            raise MalformedMessage("NOTIFY payload too short")
        proto, spi_size, ntype = struct.unpack_from("!BBH", body)
        if 4 + spi_size > len(body):
            raise MalformedMessage("NOTIFY SPI exceeds the payload")
        return cls(ntype, body[4 + spi_size:], proto, body[4:4 + spi_size])

    @property
    def name(self) -> str:
        return notify_name(self.type)


@dataclass
class DeletePayload(Payload):
    TYPE: ClassVar[int] = PayloadType.DELETE
    protocol: int
    spis: list[bytes] = field(default_factory=list)

    def encode_body(self) -> bytes:
        size = 0 if self.protocol == ProtocolId.IKE else 4
        return struct.pack("!BBH", self.protocol, size, len(self.spis)) + b"".join(self.spis)

    @classmethod
    def decode_body(cls, body: bytes) -> DeletePayload:
        if len(body) < 4:
            raise MalformedMessage("DELETE payload too short")
        proto, size, count = struct.unpack_from("!BBH", body)
        if len(body) != 4 + size * count:
            raise MalformedMessage("DELETE payload length does not match its SPI count")
        return cls(proto, [body[4 + i * size:4 + (i + 1) * size] for i in range(count)])


@dataclass
class VendorPayload(Payload):
    TYPE: ClassVar[int] = PayloadType.VENDOR
    data: bytes

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, body: bytes) -> VendorPayload:
        return cls(body)


def _encode_ts(ts: TsRange) -> bytes:
    return struct.pack("!BBHHH", TsType.IPV4_ADDR_RANGE, ts.protocol, 16, ts.port_start,
                       ts.port_end) + ts.start.packed + ts.end.packed


@dataclass
class TsPayload(Payload):
    TYPE: ClassVar[int] = PayloadType.TSI
    selectors: list[TsRange]
    #: selectors of other types (IPv6, RFC 4595 FC) we cannot use but must not choke on
    skipped: int = 0

    def encode_body(self) -> bytes:
        return bytes([len(self.selectors), 0, 0, 0]) + b"".join(_encode_ts(s) for s in self.selectors)

    @classmethod
    def decode_body(cls, body: bytes) -> TsPayload:
        if len(body) < 4:
            raise MalformedMessage("TS payload too short")
        count = body[0]
        pos = 4
        out: list[TsRange] = []
        skipped = 0
        for _ in range(count):
            if pos + 4 > len(body):
                raise MalformedMessage("truncated traffic selector")
            ts_type, proto, length = struct.unpack_from("!BBH", body, pos)
            if length < 8 or pos + length > len(body):
                raise MalformedMessage(f"traffic selector length {length} out of bounds")
            if ts_type == TsType.IPV4_ADDR_RANGE:
                if length != 16:
                    raise MalformedMessage("IPv4 traffic selector must be 16 octets")
                sp, ep = struct.unpack_from("!HH", body, pos + 4)
                start = ipaddress.IPv4Address(body[pos + 8:pos + 12])
                end = ipaddress.IPv4Address(body[pos + 12:pos + 16])
                out.append(TsRange(start, end, proto, sp, ep))
            else:
                skipped += 1
            pos += length
        if pos != len(body):
            raise MalformedMessage("TS payload has trailing octets")
        return cls(out, skipped)


@dataclass
class TsrPayload(TsPayload):
    TYPE: ClassVar[int] = PayloadType.TSR


@dataclass
class CpPayload(Payload):
    """Configuration payload (RFC 7296 3.15): attributes as (type, value) pairs."""

    TYPE: ClassVar[int] = PayloadType.CP
    cfg_type: int
    attributes: list[tuple[int, bytes]] = field(default_factory=list)

    def encode_body(self) -> bytes:
        out = bytes([self.cfg_type, 0, 0, 0])
        for atype, value in self.attributes:
            out += struct.pack("!HH", atype & 0x7FFF, len(value)) + value
        return out

    @classmethod
    def decode_body(cls, body: bytes) -> CpPayload:
        if len(body) < 4:
            raise MalformedMessage("CP payload too short")
        attrs = []
        pos = 4
        while pos < len(body):
            if pos + 4 > len(body):
                raise MalformedMessage("truncated configuration attribute")
            atype, length = struct.unpack_from("!HH", body, pos)
            if pos + 4 + length > len(body):
                raise MalformedMessage("configuration attribute exceeds the payload")
            attrs.append((atype & 0x7FFF, body[pos + 4:pos + 4 + length]))
            pos += 4 + length
        return cls(body[0], attrs)


@dataclass
class EapPayload(Payload):
    TYPE: ClassVar[int] = PayloadType.EAP
    data: bytes

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, body: bytes) -> EapPayload:
        return cls(body)


@dataclass
class EncryptedPayload(Payload):
    """SK (3.14): the still-encrypted body; ``first_inner`` is its Next Payload field."""

    TYPE: ClassVar[int] = PayloadType.SK
    first_inner: int
    body: bytes = field(repr=False)
    offset: int = 0  # where the payload's generic header starts in the message


@dataclass
class EncryptedFragment(Payload):
    """SKF (RFC 7383 2.5): one fragment of an encrypted message."""

    TYPE: ClassVar[int] = PayloadType.SKF
    first_inner: int  # only meaningful in fragment 1
    number: int
    total: int
    body: bytes = field(repr=False)
    offset: int = 0


@dataclass
class UnknownPayload(Payload):
    type: int
    body: bytes
    critical: bool = False


_DECODERS: dict[int, type[Payload]] = {
    cls.TYPE: cls for cls in (SaPayload, KePayload, IdPayload, IdrPayload, CertPayload,
                              CertReqPayload, AuthPayload, NoncePayload, NotifyPayload,
                              DeletePayload, VendorPayload, TsPayload, TsrPayload, CpPayload,
                              EapPayload)
}


def payload_type(p: Payload) -> int:
    return p.type if isinstance(p, UnknownPayload) else p.TYPE


def encode_payloads(payloads: list[Payload]) -> tuple[int, bytes]:
    """Chain payloads; returns (type of the first, encoded chain)."""
    out = bytearray()
    for i, p in enumerate(payloads):
        nxt = payload_type(payloads[i + 1]) if i + 1 < len(payloads) else PayloadType.NONE
        body = p.body if isinstance(p, UnknownPayload) else p.encode_body()
        if len(body) + 4 > 0xFFFF:
            raise ValueError(f"payload {payload_type(p)} too large ({len(body)} octets)")
        crit = 0x80 if isinstance(p, UnknownPayload) and p.critical else 0
        out += struct.pack("!BBH", nxt, crit, len(body) + 4) + body
    return (payload_type(payloads[0]) if payloads else PayloadType.NONE), bytes(out)


def decode_payloads(first: int, data: bytes, base: int = 0) -> list[Payload]:
    """Parse a payload chain; an SK/SKF payload ends it (its body is the rest)."""
    out: list[Payload] = []
    nxt = first
    pos = 0
    while nxt != PayloadType.NONE:
        if pos + 4 > len(data):
            raise MalformedMessage(f"truncated payload header (type {nxt})")
        following, flags, length = struct.unpack_from("!BBH", data, pos)
        if length < 4 or pos + length > len(data):
            raise MalformedMessage(f"payload type {nxt}: length {length} out of bounds")
        body = data[pos + 4:pos + length]
        if nxt == PayloadType.SK:
            if pos + length != len(data):
                raise MalformedMessage("the Encrypted payload must be the last payload")
            out.append(EncryptedPayload(following, body, base + pos))
            return out
        if nxt == PayloadType.SKF:
            if pos + length != len(data) or len(body) < 4:
                raise MalformedMessage("bad Encrypted Fragment payload")
            number, total = struct.unpack_from("!HH", body)
            out.append(EncryptedFragment(following, number, total, body[4:], base + pos))
            return out
        decoder = _DECODERS.get(nxt)
        if decoder is None:
            if flags & 0x80:
                raise UnsupportedCriticalPayload(nxt)
            out.append(UnknownPayload(nxt, body, False))
        else:
            try:
                out.append(decoder.decode_body(body))
            except (struct.error, ValueError, IndexError) as exc:
                if isinstance(exc, MalformedMessage):
                    raise
                raise MalformedMessage(f"payload type {nxt}: {exc}") from None
        pos += length
        nxt = following
    if pos != len(data):
        raise MalformedMessage(f"{len(data) - pos} octets after the last payload")
    return out


@dataclass
class Message:
    """A decoded (and, if it was encrypted, decrypted) IKEv2 message."""

    header: Header
    payloads: list[Payload]
    raw: bytes = field(default=b"", repr=False)  # as received: AUTH signs IKE_SA_INIT verbatim

    def find(self, cls: type[Payload]) -> Payload | None:
        for p in self.payloads:
            if type(p) is cls:
                return p
        return None

    def all(self, cls: type[Payload]) -> list[Payload]:
        return [p for p in self.payloads if type(p) is cls]

    def notify(self, ntype: int) -> NotifyPayload | None:
        for p in self.payloads:
            if isinstance(p, NotifyPayload) and p.type == ntype:
                return p
        return None

    def notifies(self) -> list[NotifyPayload]:
        return [p for p in self.payloads if isinstance(p, NotifyPayload)]

    def error_notify(self) -> NotifyPayload | None:
        for p in self.payloads:
            if isinstance(p, NotifyPayload) and p.type < 16384:
                return p
        return None

    def summary(self) -> str:
        """Like strongSwan's "parsed IKE_AUTH request 1 [ IDi AUTH SA TSi TSr ]"."""
        names = []
        for p in self.payloads:
            if isinstance(p, NotifyPayload):
                names.append(f"N({p.name})")
            else:
                t = payload_type(p)
                try:
                    names.append(PayloadType(t).name)
                except ValueError:
                    names.append(f"#{t}")
        return f"{self.header.describe()} [ {' '.join(names)} ]"


TRANSFORM_TYPE_NAMES = {t.value: t.name for t in TransformType}
