"""Attribute-value pairs (RFC 2661 4.1-4.4): the wire format with its M and H bits and vendor
id, hidden values (4.3), and the value layout of every AVP section 4.4 defines.

A decoded `Avp` holds a Python value for the AVPs we know (an int, bytes, a small
dataclass) and the raw octets for the others, so an unknown AVP can be ignored or refused
by its M bit (4.2). Strings (Host Name, Calling Number, ...) stay bytes here, exactly as
sent; events turn them into text. Every malformed input raises `L2tpMalformed`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.l2tp.constants import AvpType, avp_name
from gateway.l2tp.errors import L2tpMalformed

AVP_HEADER_SIZE = 6
MAX_AVP_LENGTH = 0x03FF  # the 10-bit Length field covers the header too (RFC 2661 4.1)
FLAG_MANDATORY = 0x8000
FLAG_HIDDEN = 0x4000
LENGTH_MASK = 0x03FF
RANDOM_VECTOR_SIZE = 16


# -- structured values (RFC 2661 4.4.2-4.4.6) ------------------------------------------------


@dataclass(frozen=True)
class ResultCode:
    """Result Code AVP: a result, an optional general error code and error message."""

    result: int
    error: int | None = None
    message: bytes = b""

    def text(self, results: dict[int, str], errors: dict[int, str]) -> str:
        parts = [f"result {self.result} ({results.get(self.result, 'unknown')})"]
        if self.error is not None:
            parts.append(f"error {self.error} ({errors.get(self.error, 'unknown')})")
        if self.message:
            parts.append(repr(self.message.decode("utf-8", "replace")))
        return ", ".join(parts)


@dataclass(frozen=True)
class Q931Cause:
    """Q.931 Cause Code AVP: the cause, its message type and an optional advisory text."""

    cause: int
    message: int
    advisory: bytes = b""


@dataclass(frozen=True)
class CallErrors:
    """Call Errors AVP of a WEN (RFC 2661 4.4.6): the LAC's error counters for the call."""

    crc: int = 0
    framing: int = 0
    hardware_overruns: int = 0
    buffer_overruns: int = 0
    timeouts: int = 0
    alignment: int = 0


@dataclass(frozen=True)
class Accm:
    """ACCM AVP of an SLI (RFC 2661 4.4.6): the async control character maps, both ways."""

    send: int
    receive: int


# -- value codecs -------------------------------------------------------------------------------

_Encode = Callable[[object], bytes]
_Decode = Callable[[bytes], object]


def _u16(value: object) -> bytes:
    return struct.pack("!H", value)


def _u32(value: object) -> bytes:
    return struct.pack("!I", value)


def _fixed(size: int) -> tuple[_Encode, _Decode]:
    def encode(value: object) -> bytes:
        data = bytes(value)  # type: ignore[call-overload]
        if len(data) != size:
            raise ValueError(f"value must be {size} octets")
        return data

    def decode(data: bytes) -> object:
        if len(data) != size:
            raise L2tpMalformed(f"{len(data)} octets where {size} belong")
        return bytes(data)

    return encode, decode


def _number(size: int) -> tuple[_Encode, _Decode]:
    fmt = "!H" if size == 2 else "!I"

    def decode(data: bytes) -> object:
        if len(data) != size:
            raise L2tpMalformed(f"{len(data)} octets where {size} belong")
        return struct.unpack(fmt, data)[0]

    return (_u16 if size == 2 else _u32), decode


def _octets(minimum: int) -> tuple[_Encode, _Decode]:
    def decode(data: bytes) -> object:
        if len(data) < minimum:
            raise L2tpMalformed(f"{len(data)} octets, at least {minimum} expected")
        return bytes(data)

    return (lambda value: bytes(value)), decode  # type: ignore[call-overload]


def _encode_result(value: object) -> bytes:
    assert isinstance(value, ResultCode)
    if value.error is None and not value.message:
        return struct.pack("!H", value.result)
    # a message needs the error code field before it
    return struct.pack("!HH", value.result, value.error or 0) + value.message


def _decode_result(data: bytes) -> object:
    if len(data) == 2:
        return ResultCode(struct.unpack("!H", data)[0])
    if len(data) < 4:
        raise L2tpMalformed(f"Result Code of {len(data)} octets")
    result, error = struct.unpack_from("!HH", data)
    return ResultCode(result, error, bytes(data[4:]))


def _encode_version(value: object) -> bytes:
    version, revision = value  # type: ignore[misc]
    return bytes((version, revision))


def _decode_version(data: bytes) -> object:
    if len(data) != 2:
        raise L2tpMalformed(f"Protocol Version of {len(data)} octets")
    return (data[0], data[1])


def _encode_q931(value: object) -> bytes:
    assert isinstance(value, Q931Cause)
    return struct.pack("!HB", value.cause, value.message) + value.advisory


def _decode_q931(data: bytes) -> object:
    if len(data) < 3:
        raise L2tpMalformed(f"Q.931 Cause Code of {len(data)} octets")
    cause, message = struct.unpack_from("!HB", data)
    return Q931Cause(cause, message, bytes(data[3:]))


def _encode_call_errors(value: object) -> bytes:
    assert isinstance(value, CallErrors)
    return struct.pack("!HIIIIII", 0, value.crc, value.framing, value.hardware_overruns,
                       value.buffer_overruns, value.timeouts, value.alignment)


def _decode_call_errors(data: bytes) -> object:
    if len(data) != 26:
        raise L2tpMalformed(f"Call Errors of {len(data)} octets")
    return CallErrors(*struct.unpack("!HIIIIII", data)[1:])


def _encode_accm(value: object) -> bytes:
    assert isinstance(value, Accm)
    return struct.pack("!HII", 0, value.send, value.receive)


def _decode_accm(data: bytes) -> object:
    if len(data) != 10:
        raise L2tpMalformed(f"ACCM of {len(data)} octets")
    _, send, receive = struct.unpack("!HII", data)
    return Accm(send, receive)


def _encode_flag(value: object) -> bytes:
    return b""


def _decode_flag(data: bytes) -> object:
    if data:
        raise L2tpMalformed(f"Sequencing Required carries {len(data)} octets")
    return True


def _encode_authen_id(value: object) -> bytes:
    return struct.pack("!BB", 0, value)


def _decode_authen_id(data: bytes) -> object:
    if len(data) != 2:
        raise L2tpMalformed(f"Proxy Authen ID of {len(data)} octets")
    return data[1]


_U16 = _number(2)
_U32 = _number(4)
_TEXT = _octets(0)
_CODECS: dict[int, tuple[_Encode, _Decode]] = {
    AvpType.MESSAGE_TYPE: _U16,
    AvpType.RESULT_CODE: (_encode_result, _decode_result),
    AvpType.PROTOCOL_VERSION: (_encode_version, _decode_version),
    AvpType.FRAMING_CAPABILITIES: _U32,
    AvpType.BEARER_CAPABILITIES: _U32,
    AvpType.TIE_BREAKER: _fixed(8),
    AvpType.FIRMWARE_REVISION: _U16,
    AvpType.HOST_NAME: _octets(1),
    AvpType.VENDOR_NAME: _TEXT,
    AvpType.ASSIGNED_TUNNEL_ID: _U16,
    AvpType.RECEIVE_WINDOW_SIZE: _U16,
    AvpType.CHALLENGE: _octets(1),
    AvpType.Q931_CAUSE_CODE: (_encode_q931, _decode_q931),
    AvpType.CHALLENGE_RESPONSE: _fixed(16),
    AvpType.ASSIGNED_SESSION_ID: _U16,
    AvpType.CALL_SERIAL_NUMBER: _U32,
    AvpType.MINIMUM_BPS: _U32,
    AvpType.MAXIMUM_BPS: _U32,
    AvpType.BEARER_TYPE: _U32,
    AvpType.FRAMING_TYPE: _U32,
    AvpType.CALLED_NUMBER: _TEXT,
    AvpType.CALLING_NUMBER: _TEXT,
    AvpType.SUB_ADDRESS: _TEXT,
    AvpType.TX_CONNECT_SPEED: _U32,
    AvpType.PHYSICAL_CHANNEL_ID: _U32,
    AvpType.INITIAL_RECEIVED_LCP_CONFREQ: _TEXT,
    AvpType.LAST_SENT_LCP_CONFREQ: _TEXT,
    AvpType.LAST_RECEIVED_LCP_CONFREQ: _TEXT,
    AvpType.PROXY_AUTHEN_TYPE: _U16,
    AvpType.PROXY_AUTHEN_NAME: _TEXT,
    AvpType.PROXY_AUTHEN_CHALLENGE: _TEXT,
    AvpType.PROXY_AUTHEN_ID: (_encode_authen_id, _decode_authen_id),
    AvpType.PROXY_AUTHEN_RESPONSE: _TEXT,
    AvpType.CALL_ERRORS: (_encode_call_errors, _decode_call_errors),
    AvpType.ACCM: (_encode_accm, _decode_accm),
    AvpType.RANDOM_VECTOR: _octets(1),
    AvpType.PRIVATE_GROUP_ID: _TEXT,
    AvpType.RX_CONNECT_SPEED: _U32,
    AvpType.SEQUENCING_REQUIRED: (_encode_flag, _decode_flag),
}

#: AVPs RFC 2661 4.4 sends with the M bit clear; every other known AVP is mandatory
OPTIONAL_AVPS = frozenset({
    AvpType.TIE_BREAKER, AvpType.FIRMWARE_REVISION, AvpType.VENDOR_NAME, AvpType.PHYSICAL_CHANNEL_ID,
    AvpType.INITIAL_RECEIVED_LCP_CONFREQ, AvpType.LAST_SENT_LCP_CONFREQ, AvpType.LAST_RECEIVED_LCP_CONFREQ,
    AvpType.PROXY_AUTHEN_TYPE, AvpType.PROXY_AUTHEN_NAME, AvpType.PROXY_AUTHEN_CHALLENGE,
    AvpType.PROXY_AUTHEN_ID, AvpType.PROXY_AUTHEN_RESPONSE, AvpType.PRIVATE_GROUP_ID,
    AvpType.RX_CONNECT_SPEED,
})
#: AVPs that can never be hidden: hiding them would make the message unreadable
NEVER_HIDDEN = frozenset({AvpType.MESSAGE_TYPE, AvpType.RANDOM_VECTOR})
#: AVPs whose value never shows in a repr (a PAP password travels in Proxy Authen Response)
SENSITIVE_AVPS = frozenset({AvpType.CHALLENGE_RESPONSE, AvpType.PROXY_AUTHEN_RESPONSE})


def known(vendor: int, attribute: int) -> bool:
    """Whether we understand the AVP (an IETF AVP of RFC 2661 4.4)."""
    return vendor == 0 and attribute in _CODECS


# -- one AVP ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Avp:
    """One AVP. ``value`` is decoded for known AVPs (see `make`) and raw octets otherwise.

    ``readable`` is False for a hidden AVP we could not unhide (no shared secret): then
    ``value`` holds the hidden octets and the AVP counts as not understood (RFC 2661 4.2).
    """

    type: int
    value: object
    mandatory: bool = True
    hidden: bool = False
    vendor: int = 0
    readable: bool = True

    def __repr__(self) -> str:
        flags = ("M" if self.mandatory else "") + ("H" if self.hidden else "")
        if not self.readable or (self.vendor == 0 and self.type in SENSITIVE_AVPS):
            shown = "***"
        else:
            shown = repr(self.value)
        return f"Avp({avp_name(self.vendor, self.type)}{', ' + flags if flags else ''}, {shown})"

    @property
    def known(self) -> bool:
        return self.readable and known(self.vendor, self.type)

    def value_octets(self) -> bytes:
        """The cleartext Attribute Value as it goes on the wire."""
        if not known(self.vendor, self.type):
            return bytes(self.value)  # type: ignore[call-overload]
        return _CODECS[self.type][0](self.value)


def make(attribute: AvpType | int, value: object, *, mandatory: bool | None = None,
         hidden: bool = False) -> Avp:
    """An IETF AVP with RFC 2661's M bit unless told otherwise; ``str`` values become UTF-8."""
    if isinstance(value, str):
        value = value.encode()
    if mandatory is None:
        mandatory = attribute not in OPTIONAL_AVPS
    return Avp(int(attribute), value, mandatory, hidden)


def decode_value(attribute: int, data: bytes) -> object:
    """The value of a known IETF AVP from its cleartext octets."""
    try:
        return _CODECS[attribute][1](data)
    except L2tpMalformed as exc:
        raise L2tpMalformed(f"{avp_name(0, attribute)}: {exc}") from None


# -- hiding (RFC 2661 4.3) ----------------------------------------------------------------------


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=False))


def hide(attribute: int, subformat: bytes, secret: bytes, vector: bytes) -> bytes:
    """Hide a Hidden AVP Subformat: c(1) = p1 xor MD5(type + secret + RV), c(i) = pi xor
    MD5(secret + c(i-1)); a last chunk shorter than 16 octets is XORed with the start of its
    hash (RFC 2661 4.3)."""
    out = bytearray()
    digest = hashlib.md5(struct.pack("!H", attribute) + secret + vector).digest()
    for pos in range(0, len(subformat), 16):
        chunk = _xor(subformat[pos:pos + 16], digest)
        out += chunk
        digest = hashlib.md5(secret + chunk).digest()
    return bytes(out)


def unhide(attribute: int, hidden: bytes, secret: bytes, vector: bytes) -> bytes:
    """The Hidden AVP Subformat back from the hidden octets (the inverse of `hide`)."""
    out = bytearray()
    digest = hashlib.md5(struct.pack("!H", attribute) + secret + vector).digest()
    for pos in range(0, len(hidden), 16):
        chunk = hidden[pos:pos + 16]
        out += _xor(chunk, digest)
        digest = hashlib.md5(secret + chunk).digest()
    return bytes(out)


def subformat(value: bytes, padding: bytes = b"") -> bytes:
    """The Hidden AVP Subformat: the original length, the value, then padding (RFC 2661 4.3)."""
    return struct.pack("!H", len(value)) + value + padding


def original_value(sub: bytes) -> bytes:
    if len(sub) < 2:
        raise L2tpMalformed("hidden AVP shorter than its length subfield")
    length = struct.unpack_from("!H", sub)[0]
    if length > len(sub) - 2:
        raise L2tpMalformed("hidden AVP does not unhide (a wrong shared secret?)")
    return sub[2:2 + length]


# -- a list of AVPs -----------------------------------------------------------------------------


def _header(flags: int, length: int, vendor: int, attribute: int) -> bytes:
    if length > MAX_AVP_LENGTH:
        raise ValueError(f"AVP {avp_name(vendor, attribute)} of {length} octets exceeds {MAX_AVP_LENGTH}")
    return struct.pack("!HHH", flags | length, vendor, attribute)


def encode_avps(avps: Iterable[Avp], *, secret: bytes | None = None,
                random: Callable[[int], bytes] | None = None, pad_hidden: bool = True) -> bytes:
    """The wire form of ``avps`` in order. A hidden AVP needs ``secret`` and the Random Vector
    AVP before it; when none precedes it, one is drawn from ``random`` and inserted. With
    ``pad_hidden`` a hidden subformat gets random padding up to a multiple of 16 octets."""
    out = bytearray()
    vector: bytes | None = None
    for avp in avps:
        flags = (FLAG_MANDATORY if avp.mandatory else 0)
        if avp.vendor == 0 and avp.type == AvpType.RANDOM_VECTOR:
            vector = bytes(avp.value)  # type: ignore[call-overload]
        value = avp.value_octets()
        if avp.hidden:
            if secret is None or random is None:
                raise ValueError("hiding an AVP needs the tunnel secret and a random source")
            if avp.vendor == 0 and avp.type in NEVER_HIDDEN:
                raise ValueError(f"{avp_name(avp.vendor, avp.type)} is never hidden")
            if vector is None:
                vector = random(RANDOM_VECTOR_SIZE)
                out += _header(FLAG_MANDATORY, AVP_HEADER_SIZE + len(vector), 0, AvpType.RANDOM_VECTOR)
                out += vector
            padding = random(-(len(value) + 2) % 16) if pad_hidden else b""
            value = hide(avp.type, subformat(value, padding), secret, vector)
            flags |= FLAG_HIDDEN
        out += _header(flags, AVP_HEADER_SIZE + len(value), avp.vendor, avp.type) + value
    return bytes(out)


def decode_avps(data: bytes, *, secret: bytes | None = None) -> list[Avp]:
    """Parse AVPs; hidden ones are unhidden with ``secret`` and the last Random Vector before
    them (RFC 2661 4.3), or kept unreadable when there is no secret."""
    avps: list[Avp] = []
    vector: bytes | None = None
    pos = 0
    while pos < len(data):
        if pos + AVP_HEADER_SIZE > len(data):
            raise L2tpMalformed(f"truncated AVP header at octet {pos}")
        word, vendor, attribute = struct.unpack_from("!HHH", data, pos)
        length = word & LENGTH_MASK
        if length < AVP_HEADER_SIZE or pos + length > len(data):
            raise L2tpMalformed(f"AVP {avp_name(vendor, attribute)} length {length} does not fit")
        raw = data[pos + AVP_HEADER_SIZE:pos + length]
        pos += length
        mandatory = bool(word & FLAG_MANDATORY)
        hidden = bool(word & FLAG_HIDDEN)
        if hidden:
            if vendor == 0 and attribute in NEVER_HIDDEN:
                raise L2tpMalformed(f"{avp_name(vendor, attribute)} is hidden")
            if vector is None:
                raise L2tpMalformed(f"hidden AVP {avp_name(vendor, attribute)} without a Random Vector")
            if secret is None:
                avps.append(Avp(attribute, bytes(raw), mandatory, True, vendor, readable=False))
                continue
            raw = original_value(unhide(attribute, raw, secret, vector))
        if known(vendor, attribute):
            value = decode_value(attribute, raw)
            if attribute == AvpType.RANDOM_VECTOR:
                vector = bytes(raw)
        else:
            value = bytes(raw)
        avps.append(Avp(attribute, value, mandatory, hidden, vendor))
    return avps
