"""L2TP messages (RFC 2661 3.1, 3.2, 6): the header with its T, L, S, O and P bits, control
messages as a Message Type and a list of AVPs, and data messages that carry a PPP frame.

A control message always has the Length and sequence fields and never an offset (3.1); a
control message without AVPs is a ZLB acknowledgement (5.8). The first AVP of any other
control message is its Message Type (4.4.1). Every malformed input raises `L2tpMalformed`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.l2tp.avp import Avp, decode_avps, encode_avps, make
from gateway.l2tp.constants import VERSION, AvpType, MessageType, message_name
from gateway.l2tp.errors import L2tpMalformed

FLAG_TYPE = 0x8000  # T: control message
FLAG_LENGTH = 0x4000  # L: Length field present
FLAG_SEQUENCE = 0x0800  # S: Ns and Nr present
FLAG_OFFSET = 0x0200  # O: Offset Size present
FLAG_PRIORITY = 0x0100  # P: data message with priority
VERSION_MASK = 0x000F
CONTROL_HEADER_SIZE = 12

#: the AVPs RFC 2661 6.1-6.16 require in each message (besides the Message Type)
REQUIRED_AVPS: dict[int, tuple[AvpType, ...]] = {
    MessageType.SCCRQ: (AvpType.PROTOCOL_VERSION, AvpType.HOST_NAME, AvpType.FRAMING_CAPABILITIES,
                        AvpType.ASSIGNED_TUNNEL_ID),
    MessageType.SCCRP: (AvpType.PROTOCOL_VERSION, AvpType.FRAMING_CAPABILITIES, AvpType.HOST_NAME,
                        AvpType.ASSIGNED_TUNNEL_ID),
    MessageType.SCCCN: (),
    MessageType.STOPCCN: (AvpType.ASSIGNED_TUNNEL_ID, AvpType.RESULT_CODE),
    MessageType.HELLO: (),
    MessageType.OCRQ: (AvpType.ASSIGNED_SESSION_ID, AvpType.CALL_SERIAL_NUMBER, AvpType.MINIMUM_BPS,
                       AvpType.MAXIMUM_BPS, AvpType.BEARER_TYPE, AvpType.FRAMING_TYPE, AvpType.CALLED_NUMBER),
    MessageType.OCRP: (AvpType.ASSIGNED_SESSION_ID,),
    MessageType.OCCN: (AvpType.TX_CONNECT_SPEED, AvpType.FRAMING_TYPE),
    MessageType.ICRQ: (AvpType.ASSIGNED_SESSION_ID, AvpType.CALL_SERIAL_NUMBER),
    MessageType.ICRP: (AvpType.ASSIGNED_SESSION_ID,),
    MessageType.ICCN: (AvpType.TX_CONNECT_SPEED, AvpType.FRAMING_TYPE),
    MessageType.CDN: (AvpType.RESULT_CODE, AvpType.ASSIGNED_SESSION_ID),
    MessageType.WEN: (AvpType.CALL_ERRORS,),
    MessageType.SLI: (AvpType.ACCM,),
}


@dataclass(frozen=True)
class Header:
    """The L2TP header (RFC 2661 3.1). Optional fields are None when their bit is clear."""

    control: bool
    tunnel_id: int
    session_id: int
    ns: int | None = None
    nr: int | None = None
    length: int | None = None
    offset_size: int | None = None
    priority: bool = False


def decode_header(data: bytes) -> tuple[Header, bytes]:
    """The header and what follows it (up to Length, past any offset padding)."""
    if len(data) < 6:
        raise L2tpMalformed(f"{len(data)} octets: shorter than an L2TP header")
    flags = struct.unpack_from("!H", data)[0]
    version = flags & VERSION_MASK
    if version != VERSION:
        raise L2tpMalformed(f"L2TP version {version}", reason="bad_version")
    control = bool(flags & FLAG_TYPE)
    if control and (flags & (FLAG_LENGTH | FLAG_SEQUENCE)) != (FLAG_LENGTH | FLAG_SEQUENCE):
        raise L2tpMalformed("control message without its Length and sequence fields")
    if control and flags & (FLAG_OFFSET | FLAG_PRIORITY):
        raise L2tpMalformed("control message with the O or P bit set")
    pos = 2
    length = None
    end = len(data)
    if flags & FLAG_LENGTH:
        length = struct.unpack_from("!H", data, pos)[0]
        pos += 2
        if length > len(data):
            raise L2tpMalformed(f"Length {length} but {len(data)} octets received")
        end = length
    if pos + 4 > end:
        raise L2tpMalformed("truncated L2TP header")
    tunnel_id, session_id = struct.unpack_from("!HH", data, pos)
    pos += 4
    ns = nr = None
    if flags & FLAG_SEQUENCE:
        if pos + 4 > end:
            raise L2tpMalformed("truncated Ns/Nr")
        ns, nr = struct.unpack_from("!HH", data, pos)
        pos += 4
    offset = None
    if flags & FLAG_OFFSET:
        if pos + 2 > end:
            raise L2tpMalformed("truncated Offset Size")
        offset = struct.unpack_from("!H", data, pos)[0]
        pos += 2 + offset
        if pos > end:
            raise L2tpMalformed(f"Offset Size {offset} runs past the message")
    if length is not None and length < pos:
        raise L2tpMalformed(f"Length {length} shorter than the header")
    header = Header(control, tunnel_id, session_id, ns, nr, length, offset, bool(flags & FLAG_PRIORITY))
    return header, bytes(data[pos:end])


def encode_control(tunnel_id: int, session_id: int, ns: int, nr: int, body: bytes) -> bytes:
    """A control message (or, with an empty body, a ZLB) around already encoded AVPs."""
    return struct.pack("!HHHHHH", FLAG_TYPE | FLAG_LENGTH | FLAG_SEQUENCE | VERSION,
                       CONTROL_HEADER_SIZE + len(body), tunnel_id, session_id, ns, nr) + body


@dataclass(frozen=True)
class ControlMessage:
    """A control message: ``type`` None is a ZLB. ``avps`` leaves out the Message Type AVP,
    whose M bit is ``type_mandatory`` (RFC 2661 4.4.1: tear down if the type is unknown)."""

    type: int | None
    avps: tuple[Avp, ...] = ()
    tunnel_id: int = 0
    session_id: int = 0
    ns: int = 0
    nr: int = 0
    type_mandatory: bool = True

    def __repr__(self) -> str:
        return (f"ControlMessage({message_name(self.type)}, tunnel={self.tunnel_id}, "
                f"session={self.session_id}, ns={self.ns}, nr={self.nr}, avps={list(self.avps)!r})")

    @property
    def name(self) -> str:
        return message_name(self.type)

    @property
    def is_zlb(self) -> bool:
        return self.type is None

    def find(self, attribute: int, vendor: int = 0) -> Avp | None:
        return next((a for a in self.avps if a.type == attribute and a.vendor == vendor and a.readable), None)

    def value(self, attribute: int, default: object = None) -> object:
        avp = self.find(attribute)
        return default if avp is None else avp.value

    def missing(self) -> list[AvpType]:
        """The AVPs RFC 2661 6 requires in this message type that it lacks."""
        required = REQUIRED_AVPS.get(self.type, ()) if self.type is not None else ()
        return [t for t in required if self.find(t) is None]

    def body(self, *, secret: bytes | None = None, random: Callable[[int], bytes] | None = None) -> bytes:
        """The encoded AVPs, Message Type first (empty for a ZLB)."""
        if self.type is None:
            return b""
        first = make(AvpType.MESSAGE_TYPE, self.type, mandatory=self.type_mandatory)
        return encode_avps((first, *self.avps), secret=secret, random=random)

    def encode(self, *, secret: bytes | None = None, random: Callable[[int], bytes] | None = None) -> bytes:
        return encode_control(self.tunnel_id, self.session_id, self.ns, self.nr,
                              self.body(secret=secret, random=random))


def control(kind: MessageType, avps: Iterable[Avp] = (), **fields: int) -> ControlMessage:
    return ControlMessage(int(kind), tuple(avps), **fields)


def decode_control(header: Header, body: bytes, *, secret: bytes | None = None) -> ControlMessage:
    """The control message whose header and body `decode_header` returned."""
    assert header.ns is not None and header.nr is not None
    if not body:
        return ControlMessage(None, (), header.tunnel_id, header.session_id, header.ns, header.nr)
    avps = decode_avps(body, secret=secret)
    first = avps[0]
    if first.vendor != 0 or first.type != AvpType.MESSAGE_TYPE:
        raise L2tpMalformed("the first AVP is not the Message Type")
    return ControlMessage(int(first.value), tuple(avps[1:]), header.tunnel_id,  # type: ignore[call-overload]
                          header.session_id, header.ns, header.nr, first.mandatory)


@dataclass(frozen=True)
class DataMessage:
    """A data message carrying one PPP frame (RFC 2661 3.1); Ns/Nr only with sequencing."""

    tunnel_id: int
    session_id: int
    payload: bytes = field(repr=False)
    ns: int | None = None
    nr: int | None = None
    length_field: bool = False
    offset_size: int | None = None
    priority: bool = False

    def encode(self) -> bytes:
        flags = VERSION
        fields = [struct.pack("!HH", self.tunnel_id, self.session_id)]
        if self.ns is not None:
            flags |= FLAG_SEQUENCE
            fields.append(struct.pack("!HH", self.ns, self.nr or 0))
        if self.offset_size is not None:
            flags |= FLAG_OFFSET
            fields.append(struct.pack("!H", self.offset_size) + bytes(self.offset_size))
        if self.priority:
            flags |= FLAG_PRIORITY
        rest = b"".join(fields) + self.payload
        if self.length_field:
            flags |= FLAG_LENGTH
            return struct.pack("!HH", flags, 4 + len(rest)) + rest
        return struct.pack("!H", flags) + rest


def decode_data(header: Header, body: bytes) -> DataMessage:
    return DataMessage(header.tunnel_id, header.session_id, body, header.ns, header.nr,
                       header.length is not None, header.offset_size, header.priority)


def decode(data: bytes, *, secret: bytes | None = None) -> ControlMessage | DataMessage:
    """Any L2TP message (a convenience for tests and tools; the endpoint decodes in steps)."""
    header, body = decode_header(data)
    if header.control:
        return decode_control(header, body, secret=secret)
    return decode_data(header, body)
