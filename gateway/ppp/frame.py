"""PPP frames, control packets and options as they travel inside L2TP (RFC 1661 2, 5, 6).

L2TP carries whole PPP frames (RFC 2661 1): no flags, no byte stuffing, no FCS.  A frame
may start with the HDLC Address and Control fields ``FF 03`` (RFC 1662 3.1) or, once
Address-and-Control-Field-Compression is in force, without them (RFC 1661 6.6); its
Protocol field is two octets or, with Protocol-Field-Compression, one (RFC 1661 2, 6.5).
Decoding accepts every form at any time; encoding compresses only when told to.

Control packets (LCP, IPCP, and the authentication protocols' own packets) share one
header: Code, Identifier, Length (RFC 1661 5).  Octets beyond Length are padding and are
ignored.  Configuration options are type-length-value triples (RFC 1661 6).

Everything malformed raises `PppMalformed`, and nothing else raises: a session counts it as
a drop.  Its text says what was wrong and never quotes the octets (a PAP frame carries a
password).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# -- protocol numbers (RFC 1661 2; IANA "PPP DLL Protocol Numbers") -------------------------
PROTO_IPV4 = 0x0021
PROTO_IPV6 = 0x0057
PROTO_IPCP = 0x8021
PROTO_IPV6CP = 0x8057
PROTO_CCP = 0x80FD
PROTO_LCP = 0xC021
PROTO_PAP = 0xC023
PROTO_LQR = 0xC025
PROTO_CHAP = 0xC223
PROTO_EAP = 0xC227
PROTO_CBCP = 0xC029

PROTOCOL_NAMES = {
    PROTO_IPV4: "IPv4", PROTO_IPV6: "IPv6", PROTO_IPCP: "IPCP", PROTO_IPV6CP: "IPv6CP",
    PROTO_CCP: "CCP", 0x80FB: "compression on single link in multilink group (CCP)",
    0x8053: "ECP", 0x8029: "AppleTalk CP", 0x802B: "IPXCP", 0x803D: "BACP", 0x003D: "Multilink",
    PROTO_LCP: "LCP", PROTO_PAP: "PAP", PROTO_LQR: "LQR", PROTO_CHAP: "CHAP", PROTO_EAP: "EAP",
    PROTO_CBCP: "CBCP", 0xC02B: "BACP", 0xC02D: "BAP",
}

# -- control packet codes (RFC 1661 5; 8-11 LCP only; 12-13 RFC 1570) ------------------------
CONF_REQ = 1
CONF_ACK = 2
CONF_NAK = 3
CONF_REJ = 4
TERM_REQ = 5
TERM_ACK = 6
CODE_REJ = 7
PROTO_REJ = 8
ECHO_REQ = 9
ECHO_REP = 10
DISCARD_REQ = 11
IDENTIFICATION = 12
TIME_REMAINING = 13

HEADER_SIZE = 4
ADDRESS_CONTROL = b"\xff\x03"


class PppMalformed(ValueError):
    """A frame, packet or option that does not parse; the text says what, never the octets."""


def protocol_name(protocol: int) -> str:
    """A readable name for the log: ``"IPv6CP (0x8057)"``."""
    name = PROTOCOL_NAMES.get(protocol)
    return f"{name} (0x{protocol:04x})" if name else f"0x{protocol:04x}"


@dataclass(frozen=True)
class Frame:
    """A decoded PPP frame: its protocol and the information field."""

    protocol: int
    payload: bytes = field(repr=False)  # may hold a PAP password


def decode_frame(data: bytes) -> Frame:
    """Split a PPP frame into protocol and payload (RFC 1661 2; RFC 1662 3.1).

    ``FF 03`` in front is optional.  An odd first Protocol octet is a compressed
    (one-octet) Protocol field; otherwise the field is two octets.  A two-octet value whose
    low octet is even breaks RFC 1661 2's rule and is returned as is: the session treats it
    as an unrecognized protocol, as that section says.
    """
    i = 0
    if data[:1] == b"\xff":
        if data[1:2] != b"\x03":
            raise PppMalformed("address octet 0xff without control octet 0x03")
        i = 2
    if len(data) <= i:
        raise PppMalformed("frame without a protocol field")
    first = data[i]
    if first & 1:
        return Frame(first, bytes(data[i + 1:]))
    if len(data) < i + 2:
        raise PppMalformed("truncated protocol field")
    return Frame((first << 8) | data[i + 1], bytes(data[i + 2:]))


def encode_frame(protocol: int, payload: bytes, *, address_control: bool = True,
                 compress_protocol: bool = False) -> bytes:
    """A PPP frame for L2TP.  ``address_control=False`` omits ``FF 03`` (ACFC, RFC 1661 6.6);
    ``compress_protocol`` sends protocols below 0x100 in one octet (PFC, RFC 1661 6.5).  The
    caller decides (never for LCP)."""
    if not 0 < protocol <= 0xFFFF:
        raise ValueError(f"protocol {protocol:#x} out of range")
    head = ADDRESS_CONTROL if address_control else b""
    if compress_protocol and protocol < 0x100:
        return head + bytes([protocol]) + payload
    return head + protocol.to_bytes(2, "big") + payload


@dataclass(frozen=True)
class ControlPacket:
    """Code, Identifier and Data of a control packet (RFC 1661 5); Length is implied."""

    code: int
    identifier: int
    data: bytes = field(default=b"", repr=False)  # PAP data holds a password

    def __repr__(self) -> str:
        return f"ControlPacket(code={self.code}, identifier={self.identifier}, {len(self.data)} octets)"

    def encode(self) -> bytes:
        length = HEADER_SIZE + len(self.data)
        if length > 0xFFFF:
            raise ValueError("control packet longer than 65535 octets")
        return bytes([self.code, self.identifier & 0xFF]) + length.to_bytes(2, "big") + self.data


def decode_control(payload: bytes) -> ControlPacket:
    """Decode a control packet; octets after Length are padding (RFC 1661 5)."""
    if len(payload) < HEADER_SIZE:
        raise PppMalformed(f"control packet of {len(payload)} octets, shorter than its header")
    length = int.from_bytes(payload[2:4], "big")
    if length < HEADER_SIZE:
        raise PppMalformed(f"control packet length field {length} below the header size")
    if length > len(payload):
        raise PppMalformed(f"control packet length field {length} beyond the {len(payload)} octets received")
    return ControlPacket(payload[0], payload[1], bytes(payload[HEADER_SIZE:length]))


@dataclass(frozen=True)
class Option:
    """One configuration option (RFC 1661 6): Type and Data; Length is implied."""

    type: int
    data: bytes = b""

    def encode(self) -> bytes:
        if len(self.data) > 253:
            raise ValueError("option data longer than 253 octets")
        return bytes([self.type, len(self.data) + 2]) + self.data


def decode_options(data: bytes) -> list[Option]:
    """The options of a Configure-Request/Ack/Nak/Reject, in order (RFC 1661 6)."""
    out: list[Option] = []
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise PppMalformed(f"option header truncated at offset {i}")
        kind, length = data[i], data[i + 1]
        if length < 2 or i + length > len(data):
            raise PppMalformed(f"option type {kind} with length {length} at offset {i} does not fit")
        out.append(Option(kind, bytes(data[i + 2:i + length])))
        i += length
    return out


def encode_options(options: list[Option] | tuple[Option, ...]) -> bytes:
    return b"".join(o.encode() for o in options)


def printable(data: bytes, limit: int = 80) -> str:
    """A peer's free text (a message, a name) made safe for one log line."""
    text = data[:limit].decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text + ("..." if len(data) > limit else "")
