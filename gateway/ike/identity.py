"""IKE identities: the ID payload's type and data (RFC 7296 3.5), parsed from config text.

The text forms follow strongSwan, so one configuration reads the same on both:

* ``192.0.2.1``, ``2001:db8::1``: IPV4_ADDR / IPV6_ADDR (4 or 16 octets);
* ``gw.example`` or ``@gw.example``: FQDN (``@`` forces FQDN, no address parsing);
* ``user@example.com`` or ``@@user@example.com``: RFC822_ADDR;
* ``C=US, O=Acme, CN=gw`` (anything with ``=``): DER_ASN1_DN, the RDNs *in the order written*;
* ``@#0a0b`` or ``#0a0b``: KEY_ID, opaque octets in hex;
* ``%any``: `ANY`, the wildcard that matches every identity.

Explicit prefixes work too: ``fqdn:``, ``dns:``, ``email:``, ``rfc822:``, ``ipv4:``, ``ipv6:``,
``asn1dn:``, ``asn1gn:``, ``keyid:`` (the last three take ``#hex``).  DNs are printed the way
they are read, in DER order with RFC 4514 escaping (``CN=gw,O=Acme``), so ``str`` round-trips.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509

__all__ = ["ANY", "IdType", "Identity", "dn_equal", "dn_text"]


class IdType(enum.IntEnum):
    """IKEv2 Identification Payload ID Types (RFC 7296 3.5); only the wire values."""

    IPV4_ADDR = 1
    FQDN = 2
    RFC822_ADDR = 3
    IPV6_ADDR = 5
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11


_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,254}}$){_LABEL}(\.{_LABEL})*\.?$")
_WHITE = " \t\r\n"  # what config text may carry around a value; other spaces are data
_LOCAL_PART = re.compile(r"^[!-~]{1,64}$")  # printable ASCII, no space
_ADDRESS_SIZES = {IdType.IPV4_ADDR: 4, IdType.IPV6_ADDR: 16}
_PREFIXES = {
    "ipv4:": IdType.IPV4_ADDR, "ipv6:": IdType.IPV6_ADDR, "fqdn:": IdType.FQDN, "dns:": IdType.FQDN,
    "email:": IdType.RFC822_ADDR, "rfc822:": IdType.RFC822_ADDR, "userfqdn:": IdType.RFC822_ADDR,
    "asn1dn:": IdType.DER_ASN1_DN, "asn1gn:": IdType.DER_ASN1_GN, "keyid:": IdType.KEY_ID,
}


@dataclass(frozen=True)
class Identity:
    """An IKE identity: the ID payload's type and its identification data, as sent."""

    type: IdType
    data: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", IdType(self.type))
        object.__setattr__(self, "data", bytes(self.data))
        size = _ADDRESS_SIZES.get(self.type)
        if size is not None and len(self.data) != size:
            raise ValueError(f"an {self.type.name} identity is {size} octets, got {len(self.data)}")
        if not self.data:
            raise ValueError(f"an empty {self.type.name} identity")

    # ----------------------------------------------------------------------------------
    # Constructors
    # ----------------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> Identity:
        """Parse an identity the way strongSwan reads ``id =`` (see the module docstring)."""
        s = _strip(text)
        if not s:
            raise ValueError("an empty identity (write %any to accept any identity)")
        if s in ("%any", "%any6", "*"):
            return ANY
        lowered = s.lower()
        for prefix, id_type in _PREFIXES.items():
            if lowered.startswith(prefix):
                return cls._typed(id_type, s[len(prefix):])
        if s.startswith("@#") or s.startswith("#"):
            return cls(IdType.KEY_ID, _unhex(s.lstrip("@")[1:], text))
        if s.startswith("@@"):
            return cls._typed(IdType.RFC822_ADDR, s[2:])
        if s.startswith("@"):
            return cls._typed(IdType.FQDN, s[1:])
        if "=" in s:
            return cls(IdType.DER_ASN1_DN, _parse_dn(s))
        if "@" in s:
            return cls._typed(IdType.RFC822_ADDR, s)
        try:
            return cls.from_address(s)
        except ValueError:
            pass
        if not _HOSTNAME.match(s) or s.rstrip(".").replace(".", "").isdigit():
            raise ValueError(f"{text!r} is not an IP address, host name (FQDN), e-mail address, "
                             "DN (attribute=value, ...), @#hex key id or %any")
        return cls(IdType.FQDN, s.encode("ascii"))

    @classmethod
    def _typed(cls, id_type: IdType, value: str) -> Identity:
        value = _strip(value)
        if id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
            ident = cls.from_address(value)
            if ident.type is not id_type:
                raise ValueError(f"{value!r} is not an {id_type.name[:4]} address")
            return ident
        if id_type is IdType.FQDN:
            if not _HOSTNAME.match(value):
                raise ValueError(f"{value!r} is not a host name (FQDN)")
            return cls(IdType.FQDN, value.encode("ascii"))
        if id_type is IdType.RFC822_ADDR:
            local, at, domain = value.rpartition("@")
            if not at or not _LOCAL_PART.match(local) or not _HOSTNAME.match(domain):
                raise ValueError(f"{value!r} is not an e-mail address (user@domain)")
            return cls(IdType.RFC822_ADDR, value.encode("ascii"))
        if id_type is IdType.DER_ASN1_DN:
            if not value.startswith("#"):
                return cls(IdType.DER_ASN1_DN, _parse_dn(value))
            data = _unhex(value[1:], value)
            try:
                _parse_name_der(data)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a DER DN ({exc})") from None
            return cls(IdType.DER_ASN1_DN, data)
        if id_type is IdType.DER_ASN1_GN:
            if not value.startswith("#"):
                raise ValueError(f"{value!r}: write an ASN.1 GeneralName as asn1gn:#<hex DER>")
            return cls(IdType.DER_ASN1_GN, _unhex(value[1:], value))
        # KEY_ID: hex, or the text's octets
        return cls(IdType.KEY_ID, _unhex(value[1:], value) if value.startswith("#") else value.encode())

    @classmethod
    def from_address(cls, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> Identity:
        """IPV4_ADDR or IPV6_ADDR of an address (the default identity, RFC 7296 3.5)."""
        try:
            ip = ipaddress.ip_address(str(address).strip())
        except ValueError:
            raise ValueError(f"{address!r} is not an IP address") from None
        return cls(IdType.IPV4_ADDR if ip.version == 4 else IdType.IPV6_ADDR, ip.packed)

    @classmethod
    def subject_of(cls, cert: x509.Certificate) -> Identity:
        """DER_ASN1_DN of the certificate's subject (RFC 4945 3.1.5)."""
        return cls(IdType.DER_ASN1_DN, cert.subject.public_bytes())

    # ----------------------------------------------------------------------------------
    # Use
    # ----------------------------------------------------------------------------------

    @property
    def is_any(self) -> bool:
        """True only for the `ANY` wildcard."""
        return False

    def matches(self, other: Identity) -> bool:
        """Whether `other` (a presented identity) satisfies this (configured) one.

        `ANY` on this side matches everything, and as `other` only `ANY`.  Otherwise the types
        must agree and the data be equal, with DNs compared RDN by RDN (RFC 5280 7.1: case and
        inner spaces ignored, multi-valued RDNs in any order), FQDNs case-insensitively without
        a trailing dot, e-mail domains case-insensitively (RFC 5321 2.4: the local part keeps
        its case).
        """
        if self.type is not other.type or other.is_any:
            return False
        if self.type is IdType.DER_ASN1_DN:
            return dn_equal(self.data, other.data)
        if self.type is IdType.FQDN:
            return _fqdn_key(self.data) == _fqdn_key(other.data)
        if self.type is IdType.RFC822_ADDR:
            return _email_key(self.data) == _email_key(other.data)
        return self.data == other.data

    @cached_property
    def match_key(self) -> tuple[object, ...]:
        """A hashable key, equal for two presented identities exactly when one `matches` the
        other (the same comparison: DNs RDN by RDN, FQDNs and e-mail domains without case),
        so SAs can be found by their peer's identity without comparing it with each.
        `ANY` has a key of its own that equals no other's, though it matches every one:
        callers treat it apart."""
        if self.type is IdType.DER_ASN1_DN:
            try:
                return (self.type, _dn_key(self.data))
            except ValueError:  # compared as octets only (dn_equal)
                return (self.type, None, self.data)
        if self.type is IdType.FQDN:
            return (self.type, _fqdn_key(self.data))
        if self.type is IdType.RFC822_ADDR:
            return (self.type, _email_key(self.data))
        return (self.type, self.data)

    def __str__(self) -> str:
        if self.type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
            return str(ipaddress.ip_address(self.data))
        if self.type in (IdType.FQDN, IdType.RFC822_ADDR):
            text = self.data.decode("ascii", "backslashreplace")
            try:
                plain = Identity.parse(text) == self
            except ValueError:
                plain = False
            return text if plain else ("@" if self.type is IdType.FQDN else "@@") + text
        if self.type is IdType.DER_ASN1_DN:
            return dn_text(self.data)
        if self.type is IdType.DER_ASN1_GN:
            return f"asn1gn:#{self.data.hex()}"
        return f"#{self.data.hex()}"

    def __repr__(self) -> str:
        return f"Identity({self.type.name}, {str(self)!r})"


@dataclass(frozen=True, repr=False)
class _AnyIdentity(Identity):
    """The ``%any`` wildcard: a pattern for configured peer identities, with no wire form.

    Its `type` and `data` only fill the fields; check `is_any` before building an ID payload.
    """

    def __post_init__(self) -> None:
        pass

    @property
    def is_any(self) -> bool:
        return True

    def matches(self, other: Identity) -> bool:
        return True

    @cached_property
    def match_key(self) -> tuple[object, ...]:
        return ("%any",)

    def __str__(self) -> str:
        return "%any"

    def __repr__(self) -> str:
        return "ANY"


#: The wildcard the configuration writes as ``%any``: ``ANY.matches(x)`` for every x.
ANY: Identity = _AnyIdentity(IdType.KEY_ID, b"")


def _fqdn_key(data: bytes) -> bytes:
    return data.rstrip(b".").lower()


def _email_key(data: bytes) -> tuple[bytes, bytes]:
    local, _, domain = data.rpartition(b"@")
    return local, _fqdn_key(domain)


def _strip(text: str) -> str:
    """Strip surrounding ASCII white space, but not a space escaped by a final backslash."""
    s, end = text.strip(_WHITE), len(text.rstrip(_WHITE))
    if (len(s) - len(s.rstrip("\\"))) % 2 and text[end:end + 1] == " ":
        return s + " "
    return s


def _unhex(digits: str, text: str) -> bytes:
    cleaned = digits.replace(":", "").replace(" ", "")
    try:
        data = bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(f"{text!r}: not hexadecimal octets after '#'") from None
    if not data:
        raise ValueError(f"{text!r}: no octets after '#'")
    return data


# --------------------------------------------------------------------------------------
# Distinguished names: text <-> DER (RFC 4514 syntax, DER order), semantic comparison
# --------------------------------------------------------------------------------------

#: Keywords read (case-insensitively) -> OID; strongSwan's names plus RFC 4519's.
_KEYWORDS: dict[str, str] = {
    "c": "2.5.4.6", "st": "2.5.4.8", "l": "2.5.4.7", "o": "2.5.4.10", "ou": "2.5.4.11",
    "cn": "2.5.4.3", "sn": "2.5.4.5", "serialnumber": "2.5.4.5", "s": "2.5.4.4", "surname": "2.5.4.4",
    "street": "2.5.4.9", "t": "2.5.4.12", "title": "2.5.4.12", "d": "2.5.4.13", "description": "2.5.4.13",
    "postalcode": "2.5.4.17", "n": "2.5.4.41", "name": "2.5.4.41", "g": "2.5.4.42",
    "gn": "2.5.4.42", "givenname": "2.5.4.42", "i": "2.5.4.43", "initials": "2.5.4.43",
    "generationqualifier": "2.5.4.44", "dnqualifier": "2.5.4.46",
    "pseudonym": "2.5.4.65", "e": "1.2.840.113549.1.9.1", "email": "1.2.840.113549.1.9.1",
    "emailaddress": "1.2.840.113549.1.9.1", "un": "1.2.840.113549.1.9.2",
    "unstructuredname": "1.2.840.113549.1.9.2", "dc": "0.9.2342.19200300.100.1.25",
    "uid": "0.9.2342.19200300.100.1.1",
}
#: OID -> keyword printed (strongSwan's spelling where it has one).
_PRINTED: dict[str, str] = {
    "2.5.4.6": "C", "2.5.4.8": "ST", "2.5.4.7": "L", "2.5.4.10": "O", "2.5.4.11": "OU",
    "2.5.4.3": "CN", "2.5.4.5": "serialNumber", "2.5.4.4": "surname", "2.5.4.9": "street",
    "2.5.4.12": "title", "2.5.4.13": "description", "2.5.4.17": "postalCode", "2.5.4.41": "name",
    "2.5.4.42": "givenName", "2.5.4.43": "initials", "2.5.4.44": "generationQualifier",
    "2.5.4.45": "ID", "2.5.4.46": "dnQualifier", "2.5.4.65": "pseudonym",
    "1.2.840.113549.1.9.1": "E", "1.2.840.113549.1.9.2": "unstructuredName",
    "0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID",
}
_OID_TEXT = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_SPECIAL = set(',+"\\<>;=')

# ASN.1 universal string tags and their codecs.
_STRING_CODECS = {0x0C: "utf-8", 0x12: "ascii", 0x13: "ascii", 0x14: "latin-1", 0x16: "ascii",
                  0x1A: "ascii", 0x1C: "utf-32-be", 0x1E: "utf-16-be"}


def _parse_dn(text: str) -> bytes:
    """DER of a DN written ``C=US, O=Acme, CN=gw`` (or ``/C=US/O=Acme/CN=gw``), RDNs in order."""
    rdns = []
    for rdn in _split_dn(text):
        attrs = []
        for keyword, value in rdn:
            oid = _KEYWORDS.get(keyword.lower())
            if oid is None:
                if not _OID_TEXT.match(keyword):
                    raise ValueError(f"DN {text!r}: unknown attribute {keyword!r} "
                                     "(use e.g. C, ST, L, O, OU, CN, E, DC, UID or a dotted OID)")
                oid = keyword
            if not value:
                raise ValueError(f"DN {text!r}: {keyword} has an empty value")
            try:
                attrs.append(x509.NameAttribute(x509.ObjectIdentifier(oid), value))
            except ValueError as exc:
                raise ValueError(f"DN {text!r}: {keyword}={value!r}: {exc}") from None
        rdns.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(rdns).public_bytes()


def _split_dn(text: str) -> list[list[tuple[str, str]]]:
    """RDNs of attribute/value pairs, with RFC 4514 escapes and strongSwan's separators."""
    s = _strip(text)
    separators = {"/"} if s.startswith("/") else {",", ";"}
    if s.startswith("/"):
        s = s[1:]
    rdns: list[list[tuple[str, str]]] = [[]]
    i, n = 0, len(s)
    while True:
        eq = s.find("=", i)
        if eq < 0:
            raise ValueError(f"DN {text!r}: expected attribute=value at {s[i:]!r}")
        keyword = s[i:eq].strip()
        if not keyword or any(c in separators or c in "+\\\"" for c in keyword):
            raise ValueError(f"DN {text!r}: bad attribute name {keyword!r}")
        value, i = _read_value(s, eq + 1, separators, text)
        rdns[-1].append((keyword, value))
        if i >= n:
            return rdns
        if s[i] != "+":
            rdns.append([])
        i += 1


def _read_value(s: str, i: int, separators: set[str], text: str) -> tuple[str, int]:
    """An attribute value from s[i:], up to an unescaped separator or '+'."""
    n = len(s)
    while i < n and s[i] == " ":
        i += 1
    pieces: list[tuple[bytes, bool]] = []  # (octets, escaped): escaped spaces are kept
    if i < n and s[i] == '"':
        end = s.find('"', i + 1)
        if end < 0:
            raise ValueError(f"DN {text!r}: unterminated quote")
        pieces.append((s[i + 1:end].encode(), True))
        i = end + 1
        while i < n and s[i] == " ":
            i += 1
        if i < n and s[i] not in separators and s[i] != "+":
            raise ValueError(f"DN {text!r}: unexpected {s[i]!r} after a quoted value")
    while i < n and s[i] not in separators and s[i] != "+":
        if s[i] != "\\":
            pieces.append((s[i].encode(), False))
            i += 1
            continue
        pair = s[i + 1:i + 3]
        if len(pair) == 2 and all(ch in "0123456789abcdefABCDEF" for ch in pair):
            pieces.append((bytes([int(pair, 16)]), True))
            i += 3
        elif i + 1 < n:
            pieces.append((s[i + 1].encode(), True))
            i += 2
        else:
            raise ValueError(f"DN {text!r}: dangling backslash")
    while pieces and pieces[-1] == (b" ", False):
        pieces.pop()
    try:
        value = b"".join(octets for octets, _ in pieces).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"DN {text!r}: escaped octets are not UTF-8") from None
    return value, i


def dn_text(der: bytes) -> str:
    """A DN's DER as text: RDNs in DER order, ``,`` between them, RFC 4514 2.4 escaping.

    Malformed DER is shown as ``asn1dn:#`` and its hex rather than raising.
    """
    try:
        rdns = _parse_name_der(der)
    except ValueError:
        return f"asn1dn:#{der.hex()}"
    parts = []
    for rdn in rdns:
        avas = []
        for oid, tag, value in rdn:
            key = _PRINTED.get(oid, oid)
            text = _decode_string(tag, value)
            if text is None:
                avas.append(f"{key}=#{_tlv(tag, value).hex()}")
            else:
                avas.append(f"{key}={_escape(text)}")
        parts.append("+".join(avas))
    return ",".join(parts)


def dn_equal(a: bytes, b: bytes) -> bool:
    """Whether two DER DNs name the same entity (RFC 5280 7.1, RFC 4518 simplified)."""
    if a == b:
        return True
    try:
        return _dn_key(a) == _dn_key(b)
    except ValueError:
        return False


def _dn_key(der: bytes) -> tuple[frozenset[tuple[str, object]], ...]:
    key = []
    for rdn in _parse_name_der(der):
        values: set[tuple[str, object]] = set()
        for oid, tag, value in rdn:
            text = _decode_string(tag, value)
            if text is None:
                values.add((oid, _tlv(tag, value)))
            else:
                folded = unicodedata.normalize("NFKC", text).casefold()
                values.add((oid, " ".join(folded.split())))
        key.append(frozenset(values))
    return tuple(key)


def _escape(text: str) -> str:
    out = []
    for i, ch in enumerate(text):
        if ch in _SPECIAL or (ch == "#" and i == 0) or (ch == " " and i in (0, len(text) - 1)):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _decode_string(tag: int, value: bytes) -> str | None:
    codec = _STRING_CODECS.get(tag)
    if codec is None:
        return None
    try:
        return value.decode(codec)
    except UnicodeDecodeError:
        return None


# --------------------------------------------------------------------------------------
# A minimal DER reader (X.690), enough for Name
# --------------------------------------------------------------------------------------


def _read_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end) of the TLV at `pos`; ValueError when malformed."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-octet DER tags are not supported")
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    items = []
    while start < end:
        item = _read_tlv(data[:end], start)
        items.append(item)
        start = item[2]
    return items


def _oid_text(body: bytes) -> str:
    if not body or body[-1] & 0x80:
        raise ValueError("bad OBJECT IDENTIFIER")
    arcs, value = [], 0
    for octet in body:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + value


def _parse_name_der(der: bytes) -> list[list[tuple[str, int, bytes]]]:
    """Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY } (RFC 5280 4.1.2.4)."""
    tag, start, end = _read_tlv(der, 0)
    if tag != 0x30 or end != len(der):
        raise ValueError("a DN is one DER SEQUENCE")
    rdns = []
    for set_tag, s_start, s_end in _children(der, start, end):
        if set_tag != 0x31:
            raise ValueError("an RDN is a SET")
        avas = []
        for seq_tag, a_start, a_end in _children(der, s_start, s_end):
            fields = _children(der, a_start, a_end) if seq_tag == 0x30 else []
            if len(fields) != 2 or fields[0][0] != 0x06:
                raise ValueError("an attribute is SEQUENCE { OID, value }")
            (_, o_start, o_end), (v_tag, v_start, v_end) = fields
            avas.append((_oid_text(der[o_start:o_end]), v_tag, der[v_start:v_end]))
        if not avas:
            raise ValueError("an empty RDN")
        rdns.append(avas)
    return rdns
