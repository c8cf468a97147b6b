"""IKE identities: strongSwan-style text, ID payload data, matching (RFC 7296 3.5)."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.pki import issue, make_ca
from gateway.ike.identity import ANY, Identity, IdType, dn_equal, dn_text


def dn(*pairs: tuple[x509.ObjectIdentifier, str]) -> bytes:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs]).public_bytes()


C, ORG, OU, CN = NameOID.COUNTRY_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, \
    NameOID.COMMON_NAME


@pytest.mark.parametrize(("text", "id_type", "data"), [
    ("192.0.2.1", IdType.IPV4_ADDR, bytes([192, 0, 2, 1])),
    ("2001:db8::1", IdType.IPV6_ADDR, ipaddress.IPv6Address("2001:db8::1").packed),
    ("host.example", IdType.FQDN, b"host.example"),
    ("@host.example", IdType.FQDN, b"host.example"),
    ("gw", IdType.FQDN, b"gw"),
    ("fqdn:192.0.2.1", IdType.FQDN, b"192.0.2.1"),
    ("user@example.com", IdType.RFC822_ADDR, b"user@example.com"),
    ("@@user@example.com", IdType.RFC822_ADDR, b"user@example.com"),
    ("email:user@example.com", IdType.RFC822_ADDR, b"user@example.com"),
    ("C=US, O=Acme, CN=gw", IdType.DER_ASN1_DN, dn((C, "US"), (ORG, "Acme"), (CN, "gw"))),
    ("CN=gw,O=Acme", IdType.DER_ASN1_DN, dn((CN, "gw"), (ORG, "Acme"))),
    ("/C=US/O=Acme/CN=gw", IdType.DER_ASN1_DN, dn((C, "US"), (ORG, "Acme"), (CN, "gw"))),
    ("2.5.4.3=gw", IdType.DER_ASN1_DN, dn((CN, "gw"))),
    ("@#0a0b", IdType.KEY_ID, b"\x0a\x0b"),
    ("#0a0b", IdType.KEY_ID, b"\x0a\x0b"),
    ("keyid:#0a:0b", IdType.KEY_ID, b"\x0a\x0b"),
    ("keyid:my-key", IdType.KEY_ID, b"my-key"),
    ("  192.0.2.1 ", IdType.IPV4_ADDR, bytes([192, 0, 2, 1])),
])
def test_parse(text: str, id_type: IdType, data: bytes) -> None:
    ident = Identity.parse(text)
    assert (ident.type, ident.data) == (id_type, data)


@pytest.mark.parametrize("text", ["%any", "%any6", "*"])
def test_any(text: str) -> None:
    assert Identity.parse(text) is ANY
    assert str(ANY) == "%any" and ANY.is_any
    for other in ("192.0.2.1", "gw.example", "a@b.example", "CN=x", "@#01"):
        assert ANY.matches(Identity.parse(other))
        assert not Identity.parse(other).matches(ANY)  # a wildcard is never a presented identity


def test_id_types_are_the_wire_values_only() -> None:
    # A peer's ID payload type is checked against IdType: the %any wildcard has no wire value.
    assert sorted(IdType) == [1, 2, 3, 5, 9, 10, 11]


@pytest.mark.parametrize(("ident", "text"), [
    (Identity(IdType.IPV4_ADDR, bytes([192, 0, 2, 1])), "192.0.2.1"),
    (Identity(IdType.IPV6_ADDR, ipaddress.IPv6Address("2001:db8::1").packed), "2001:db8::1"),
    (Identity(IdType.FQDN, b"gw.example"), "gw.example"),
    (Identity(IdType.FQDN, b"192.0.2.1"), "@192.0.2.1"),
    (Identity(IdType.RFC822_ADDR, b"ops@gw.example"), "ops@gw.example"),
    (Identity(IdType.DER_ASN1_DN, dn((CN, "gw"), (ORG, "Acme"))), "CN=gw,O=Acme"),
    (Identity(IdType.DER_ASN1_DN, dn((CN, "a,b+c"), (ORG, " x "))), "CN=a\\,b\\+c,O=\\ x\\ "),
    (Identity(IdType.DER_ASN1_DN, dn((CN, "#1"), (NameOID.EMAIL_ADDRESS, "a@b.c"))), "CN=\\#1,E=a@b.c"),
    (Identity(IdType.KEY_ID, b"\x0a\x0b"), "#0a0b"),
    (Identity(IdType.DER_ASN1_GN, b"\x82\x01a"), "asn1gn:#820161"),
])
def test_str_and_round_trip(ident: Identity, text: str) -> None:
    assert str(ident) == text
    assert Identity.parse(text) == ident


def test_dn_escapes_and_multi_valued_rdns() -> None:
    ident = Identity.parse('CN=a\\,b+OU=x, O=" quoted ", L=caf\\c3\\a9, ST=\\ lead')
    expected = x509.Name([
        x509.RelativeDistinguishedName([x509.NameAttribute(CN, "a,b"), x509.NameAttribute(OU, "x")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(ORG, " quoted ")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.LOCALITY_NAME, "café")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, " lead")]),
    ]).public_bytes()
    assert ident.data == expected
    assert Identity.parse(str(ident)) == ident


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20),
                min_size=1, max_size=4))
def test_dn_text_round_trips(values: list[str]) -> None:
    ident = Identity(IdType.DER_ASN1_DN, dn(*[(OU, v) for v in values]))
    assert Identity.parse(str(ident)) == ident


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty identity"),
    ("foo bar", "not an IP address, host name"),
    ("1.2.3", "not an IP address, host name"),
    ("bücher.example", "not an IP address, host name"),
    ("CN=", "CN has an empty value"),
    ("XX=1, CN=gw", "unknown attribute 'XX'"),
    ("C=USA", "C='USA'"),
    ("CN=gw,junk", "expected attribute=value"),
    ("CN=a\\", "dangling backslash"),
    ('CN="a"b', "after a quoted value"),
    ("a@", "not an e-mail address"),
    ("@#zz", "not hexadecimal"),
    ("@#", "no octets"),
    ("ipv4:2001:db8::1", "not an IPV4 address"),
    ("ipv6:192.0.2.1", "not an IPV6 address"),
    ("asn1dn:#3000ff", "not a DER DN"),
    ("asn1gn:foo", "asn1gn:#"),
])
def test_parse_errors_are_clear(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        Identity.parse(text)
    assert message in str(info.value)


def test_wire_data_is_validated() -> None:
    with pytest.raises(ValueError, match="IPV4_ADDR identity is 4 octets"):
        Identity(IdType.IPV4_ADDR, b"\x01\x02\x03")
    with pytest.raises(ValueError, match="empty FQDN"):
        Identity(IdType.FQDN, b"")
    assert Identity(1, b"\x01\x02\x03\x04").type is IdType.IPV4_ADDR  # plain ints are coerced


def test_from_address() -> None:
    assert Identity.from_address("192.0.2.7") == Identity(IdType.IPV4_ADDR, bytes([192, 0, 2, 7]))
    assert Identity.from_address(ipaddress.IPv6Address("::1")).type is IdType.IPV6_ADDR
    with pytest.raises(ValueError, match="not an IP address"):
        Identity.from_address("gw.example")


@pytest.mark.parametrize(("configured", "presented", "expected"), [
    ("CN=gw,O=Acme Corp", "cn=GW, o=acme   corp", True),  # case and inner spaces
    ("CN=gw+OU=x,O=Acme", "OU=x+CN=gw,O=Acme", True),  # multi-valued RDN order
    ("CN=gw,O=Acme", "O=Acme,CN=gw", False),  # RDN order is significant
    ("CN=gw,O=Acme", "CN=gw", False),
    ("CN=gw", "CN=gw2", False),
    ("gw.example", "GW.Example.", True),
    ("gw.example", "gw.example.org", False),
    ("ops@GW.example", "ops@gw.EXAMPLE", True),
    ("ops@gw.example", "Ops@gw.example", False),  # local parts keep their case
    ("192.0.2.1", "192.0.2.1", True),
    ("192.0.2.1", "192.0.2.2", False),
    ("::ffff:192.0.2.1", "192.0.2.1", False),
    ("gw.example", "CN=gw.example", False),
    ("@#0102", "#0102", True),
])
def test_matches(configured: str, presented: str, expected: bool) -> None:
    assert Identity.parse(configured).matches(Identity.parse(presented)) is expected


def test_dn_matching_ignores_string_types() -> None:
    # strongSwan encodes "CN=gw" as a PrintableString; cryptography as a UTF8String.
    printable = bytes.fromhex("300d310b3009060355040313026777")
    utf8 = Identity.parse("CN=gw")
    assert utf8.data != printable
    assert utf8.matches(Identity(IdType.DER_ASN1_DN, printable))
    assert dn_equal(printable, utf8.data)
    assert str(Identity(IdType.DER_ASN1_DN, printable)) == "CN=gw"


def test_malformed_dn_data_is_shown_not_raised() -> None:
    garbage = Identity(IdType.DER_ASN1_DN, b"\x30\x05\x31")
    assert str(garbage) == "asn1dn:#300531"
    assert dn_text(b"") == "asn1dn:#"
    assert not garbage.matches(Identity.parse("CN=gw"))
    assert garbage.matches(Identity(IdType.DER_ASN1_DN, b"\x30\x05\x31"))


def test_subject_of_certificate(tmp_path) -> None:
    root = make_ca(tmp_path, "Lab Root", kind="ecdsa256")
    leaf = issue(tmp_path, root, "gw", kind="ecdsa256")
    ident = Identity.subject_of(leaf.certificate)
    assert ident.type is IdType.DER_ASN1_DN
    assert ident.data == leaf.certificate.subject.public_bytes()
    assert str(ident) == "CN=gw,O=Gateway Lab"
    assert Identity.parse("CN=gw, O=Gateway Lab") == ident  # same DER as the certificate
    assert repr(ident) == "Identity(DER_ASN1_DN, 'CN=gw,O=Gateway Lab')"


def test_match_key_is_equal_exactly_when_identities_match() -> None:
    """The endpoints index SAs by `Identity.match_key`: it must agree with `matches`."""
    texts = ["C=US, O=Acme, CN=gw", "c=us,o=ACME,  cn=GW", "C=US, O=Acme, CN=gw2", "O=Acme, C=US, CN=gw",
             "gw.example", "GW.Example.", "gw2.example", "user@Example.COM", "user@example.com",
             "User@example.com", "192.0.2.1", "192.0.2.2", "2001:db8::1", "#0a0b", "keyid:#0a0b",
             "asn1gn:#300a"]
    # DNs that do not parse compare as octets
    ids = [Identity.parse(t) for t in texts] + [Identity(IdType.DER_ASN1_DN, bytes([0x30, 3, 2, 1, n]))
                                                 for n in (1, 1, 2)]
    for a in ids:
        for b in ids:
            assert a.matches(b) == (a.match_key == b.match_key), (a, b)
            if a.match_key == b.match_key:
                assert hash(a.match_key) == hash(b.match_key)
    assert ANY.match_key not in {i.match_key for i in ids}
