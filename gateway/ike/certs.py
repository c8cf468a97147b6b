"""Certificate trust for IKE: chains to configured anchors, and identities bound to certificates.

A peer sends its certificate and intermediates in CERT payloads and learns which CAs we trust
from CERTREQ (RFC 7296 3.6, 3.7).  `TrustStore.validate` runs RFC 5280 6.1 basic path
validation with IKE's profile: no extended key usage is required (RFC 4945 5.1.3.12), and names
are read from subjectAltName as RFC 4945 3.1 says.

`cryptography.x509.verification` was considered and not used: it implements the CA/Browser
Forum Web PKI profile (its CA policy must require keyUsage and basicConstraints, v1 roots and
non-Web-PKI key sizes or algorithms are refused) and reports failures as free text, where IKE
needs its own profile and a reason the logs and the AUTHENTICATION_FAILED path can name.  The
checks here sit on `Certificate.verify_directly_issued_by` for the signatures.

Not done: revocation (CRL, OCSP) and certificate policies (policy extensions are recognised so
they may be critical, but no policy is required or mapped).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from gateway.ike.identity import Identity, IdType, dn_equal, dn_text

__all__ = [
    "MAX_CHAIN_LENGTH",
    "CertificateRejected",
    "PrivateKey",
    "TrustStore",
    "check_identity",
    "describe",
    "identity_in_certificate",
    "load_certificate",
    "load_certificates",
    "load_private_key",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

#: Certificates in a path, end entity and anchor included.
MAX_CHAIN_LENGTH = 8

#: id-kp-ipsecIKE (RFC 4945 5.1.3.12).
IPSEC_IKE = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.17")
_ACCEPTED_EKU = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH, IPSEC_IKE,
                 ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
_EKU_NAMES = {ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
              ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
              ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
              ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning"}
#: Extensions that may be critical: processed here, or (policies) recognised and accepted.
_KNOWN_EXTENSIONS = {
    ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.ISSUER_ALTERNATIVE_NAME,
    ExtensionOID.NAME_CONSTRAINTS, ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER, ExtensionOID.CERTIFICATE_POLICIES,
    ExtensionOID.POLICY_CONSTRAINTS, ExtensionOID.POLICY_MAPPINGS, ExtensionOID.INHIBIT_ANY_POLICY,
}
#: Collisions are practical for these: a certificate signed with them proves nothing.
_WEAK_HASHES = (hashes.MD5, hashes.SHA1)


class CertificateRejected(Exception):
    """A certificate failed a check; the message names the certificate and the check.

    `reason` is a short tag: ``untrusted``, ``expired``, ``not_yet_valid``, ``bad_signature``,
    ``weak_algorithm``, ``key_usage``, ``not_a_ca``, ``path_length``, ``name_constraints``,
    ``identity_mismatch`` or ``malformed``.
    """

    def __init__(self, reason: str, message: str, certificate: x509.Certificate | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.certificate = certificate


def describe(cert: x509.Certificate) -> str:
    """The subject as text (DER order, ``CN=gw,O=Acme``), or the serial when it is empty."""
    text = dn_text(cert.subject.public_bytes())
    return text or f"with empty subject, serial {cert.serial_number:#x}"


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in PEM `data` (other PEM blocks are skipped), or the one DER certificate."""
    if b"-----BEGIN" in data:
        try:
            return x509.load_pem_x509_certificates(data)
        except ValueError:
            raise ValueError("no readable PEM CERTIFICATE block") from None
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise ValueError("not a PEM or DER X.509 certificate") from None


def load_certificate(data: bytes) -> x509.Certificate:
    """One certificate from PEM (the first one) or DER `data`."""
    return load_certificates(data)[0]


def load_private_key(path: str | Path) -> PrivateKey:
    """An unencrypted RSA or EC private key from a PEM (PKCS#8 or traditional) or DER file.

    Errors name the file and what is wrong with it, never anything read from it.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the private key ({exc.strerror})") from None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError:
        raise ValueError(f"{path}: the private key is encrypted; an unencrypted key is needed") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"{path}: not a readable PEM or DER private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: a {type(key).__name__.removeprefix('_')} key; RSA or EC is needed")
    return key


# --------------------------------------------------------------------------------------
# Path validation (RFC 5280 6.1)
# --------------------------------------------------------------------------------------


class TrustStore:
    """Trust anchors: the CA (or directly trusted end-entity) certificates we accept."""

    def __init__(self, anchors: Sequence[x509.Certificate]) -> None:
        unique: dict[bytes, x509.Certificate] = {}
        for cert in anchors:
            if not isinstance(cert, x509.Certificate):
                raise TypeError(f"a trust anchor must be an x509.Certificate, not {type(cert).__name__}")
            unique.setdefault(cert.public_bytes(serialization.Encoding.DER), cert)
        self._anchors = tuple(unique.values())
        self._anchor_der = frozenset(unique)

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> TrustStore:
        """Anchors from PEM (several certificates per file allowed) or DER files."""
        anchors: list[x509.Certificate] = []
        for path in map(Path, paths):
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ValueError(f"{path}: cannot read ({exc.strerror})") from None
            try:
                anchors += load_certificates(data)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
        return cls(anchors)

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        return self._anchors

    def __len__(self) -> int:
        return len(self._anchors)

    def __repr__(self) -> str:
        return f"<TrustStore {len(self._anchors)} anchors>"

    def certreq_hashes(self) -> list[bytes]:
        """SHA-1 of each anchor's SubjectPublicKeyInfo: CERTREQ's Certification Authority field
        (RFC 7296 3.7), without duplicates."""
        seen: dict[bytes, None] = {}
        for cert in self._anchors:
            seen.setdefault(hashlib.sha1(_spki(cert)).digest(), None)
        return list(seen)

    def validate(self, end_entity: x509.Certificate, intermediates: Sequence[x509.Certificate],
                 now: datetime) -> list[x509.Certificate]:
        """The path end_entity .. anchor, or CertificateRejected saying which check failed.

        Every certificate must be valid at `now` (naive means UTC) and its signature verify
        with its issuer's key; issuers must be CAs (basicConstraints cA, keyUsage keyCertSign
        when present) within their pathLenConstraint and name constraints; the end entity's
        keyUsage, when present, must allow digitalSignature or nonRepudiation, and its extended
        key usage, when present, one of serverAuth, clientAuth, ipsecIKE or anyExtendedKeyUsage.
        Intermediates may come in any order and include unrelated certificates.
        """
        when = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
        ee_der = end_entity.public_bytes(serialization.Encoding.DER)
        if ee_der in self._anchor_der:
            chain = [end_entity]  # trusted directly
        else:
            pool: dict[bytes, x509.Certificate] = {}
            for cert in intermediates:
                der = cert.public_bytes(serialization.Encoding.DER)
                if der != ee_der and der not in self._anchor_der:
                    pool.setdefault(der, cert)
            search = _PathSearch(self._anchors, list(pool.values()), when)
            try:
                found = search.extend([end_entity])
            except _SearchExhausted:
                raise CertificateRejected(
                    "untrusted", f"certificate {describe(end_entity)}: no path to a trust anchor among "
                    f"the first {_PathSearch.MAX_CANDIDATES} candidate issuers", end_entity) from None
            if found is None:
                raise search.best_failure()
            chain = found
        _check_end_entity(end_entity, when)
        _check_name_constraints(chain)
        return chain


class _SearchExhausted(Exception):
    pass


class _PathSearch:
    """Depth-first search for a path to an anchor, backtracking over candidates that fail.

    Each candidate issuer costs a signature check; `MAX_CANDIDATES` bounds the work a peer can
    cause with many certificates sharing names.
    """

    MAX_CANDIDATES = 32

    def __init__(self, anchors: Sequence[x509.Certificate], pool: list[x509.Certificate],
                 now: datetime) -> None:
        self.anchors, self.pool, self.now = anchors, pool, now
        self.failures: list[CertificateRejected] = []
        self.budget = self.MAX_CANDIDATES

    def best_failure(self) -> CertificateRejected:
        """The first specific failure; "untrusted" only when nothing more precise went wrong."""
        return next((f for f in self.failures if f.reason != "untrusted"), self.failures[0])

    def extend(self, chain: list[x509.Certificate]) -> list[x509.Certificate] | None:
        cert = chain[-1]
        candidates = [(a, True) for a in self.anchors if a.subject == cert.issuer]
        candidates += [(c, False) for c in self.pool
                       if c.subject == cert.issuer and not any(c is x for x in chain)]
        if not candidates:
            self.failures.append(CertificateRejected(
                "untrusted", f"certificate {describe(cert)}: issuer {dn_text(cert.issuer.public_bytes())} "
                "not trusted", cert))
            return None
        for issuer, is_anchor in candidates:
            try:
                self._check_candidate(chain, issuer, is_anchor)
            except CertificateRejected as exc:
                self.failures.append(exc)
                continue
            if is_anchor:
                return [*chain, issuer]
            found = self.extend([*chain, issuer])
            if found is not None:
                return found
        return None

    def _check_candidate(self, chain: list[x509.Certificate], issuer: x509.Certificate,
                         is_anchor: bool) -> None:
        cert = chain[-1]
        if self.budget <= 0:
            raise _SearchExhausted
        self.budget -= 1
        _check_signature(cert, issuer)
        _check_issuer(issuer, chain, self.now, is_anchor)
        if is_anchor:
            return
        if _self_signed(issuer):
            raise CertificateRejected("untrusted", f"certificate {describe(cert)}: issuer {describe(issuer)} "
                                      "not trusted (self-signed, and not a trust anchor)", cert)
        if len(chain) + 1 >= MAX_CHAIN_LENGTH:
            raise CertificateRejected("path_length", f"certificate {describe(cert)}: no trust anchor "
                                      f"within {MAX_CHAIN_LENGTH} certificates", cert)


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _check_signature(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    try:
        digest = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        raise CertificateRejected("malformed", f"certificate {describe(cert)}: unsupported signature "
                                  f"algorithm {cert.signature_algorithm_oid.dotted_string}", cert) from None
    if isinstance(digest, _WEAK_HASHES):
        raise CertificateRejected("weak_algorithm", f"certificate {describe(cert)}: signed with "
                                  f"{digest.name.upper()}, which is not accepted", cert)
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        raise CertificateRejected("bad_signature", f"certificate {describe(cert)}: signature does not "
                                  f"verify with the key of {describe(issuer)}", cert) from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateRejected("bad_signature", f"certificate {describe(cert)}: cannot verify its "
                                  f"signature with {describe(issuer)} ({exc})", cert) from None


def _check_validity(cert: x509.Certificate, now: datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise CertificateRejected("not_yet_valid", f"certificate {describe(cert)}: not yet valid "
                                  f"(notBefore {_when(cert.not_valid_before_utc)})", cert)
    if now > cert.not_valid_after_utc:
        raise CertificateRejected("expired", f"certificate {describe(cert)}: expired "
                                  f"(notAfter {_when(cert.not_valid_after_utc)})", cert)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _extensions(cert: x509.Certificate) -> x509.Extensions:
    try:
        return cert.extensions
    except ValueError as exc:
        raise CertificateRejected("malformed", f"certificate {describe(cert)}: unreadable extensions "
                                  f"({exc})", cert) from None


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return _extensions(cert).get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_critical(cert: x509.Certificate) -> None:
    """RFC 5280 6.1.3/6.1.4(o): an unrecognised critical extension rejects the certificate."""
    for ext in _extensions(cert):
        if ext.critical and ext.oid not in _KNOWN_EXTENSIONS:
            raise CertificateRejected("malformed", f"certificate {describe(cert)}: unsupported critical "
                                      f"extension {ext.oid.dotted_string}", cert)


def _check_issuer(issuer: x509.Certificate, chain: list[x509.Certificate], now: datetime,
                  is_anchor: bool) -> None:
    """RFC 5280 6.1.4 (k), (l), (m), (n) for the certificate that issued chain[-1]."""
    child = describe(chain[-1])
    _check_validity(issuer, now)
    _check_critical(issuer)
    bc = _extension(issuer, x509.BasicConstraints)
    if not isinstance(bc, x509.BasicConstraints):
        # A version 1 root has no extensions at all; trusting it was the operator's choice.
        if not (is_anchor and issuer.version is x509.Version.v1):
            raise CertificateRejected("not_a_ca", f"certificate {describe(issuer)}: not a CA (no "
                                      f"basicConstraints) but it issued {child}", issuer)
    elif not bc.ca:
        raise CertificateRejected("not_a_ca", f"certificate {describe(issuer)}: not a CA "
                                  f"(basicConstraints cA=FALSE) but it issued {child}", issuer)
    elif bc.path_length is not None:
        below = sum(1 for c in chain[1:] if c.subject != c.issuer)  # self-issued ones do not count
        if below > bc.path_length:
            raise CertificateRejected("path_length", f"certificate {describe(issuer)}: pathLenConstraint "
                                      f"{bc.path_length} exceeded by {below} CA certificate(s) below it",
                                      issuer)
    ku = _extension(issuer, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
        raise CertificateRejected("key_usage", f"certificate {describe(issuer)}: key usage lacks "
                                  f"keyCertSign but it issued {child}", issuer)


def _check_end_entity(cert: x509.Certificate, now: datetime) -> None:
    _check_validity(cert, now)
    _check_critical(cert)
    ku = _extension(cert, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not (ku.digital_signature or ku.content_commitment):
        raise CertificateRejected("key_usage", f"certificate {describe(cert)}: key usage lacks "
                                  "digitalSignature", cert)
    eku = _extension(cert, x509.ExtendedKeyUsage)
    if isinstance(eku, x509.ExtendedKeyUsage) and not _ACCEPTED_EKU.intersection(eku):
        names = ", ".join(_EKU_NAMES.get(oid, oid.dotted_string) for oid in eku)
        raise CertificateRejected("key_usage", f"certificate {describe(cert)}: extended key usage "
                                  f"({names}) has none of serverAuth, clientAuth, ipsecIKE, "
                                  "anyExtendedKeyUsage", cert)


# --------------------------------------------------------------------------------------
# Name constraints (RFC 5280 4.2.1.10, 6.1.3 (b), (c))
# --------------------------------------------------------------------------------------


def _check_name_constraints(chain: list[x509.Certificate]) -> None:
    for i in range(1, len(chain)):
        constraints = _extension(chain[i], x509.NameConstraints)
        if not isinstance(constraints, x509.NameConstraints):
            continue
        for j, cert in enumerate(chain[:i]):
            if j > 0 and cert.subject == cert.issuer:
                continue  # self-issued intermediates are exempt
            problem = _constraint_violation(cert, constraints)
            if problem:
                raise CertificateRejected("name_constraints", f"certificate {describe(cert)}: {problem} "
                                          f"(name constraints of {describe(chain[i])})", cert)


def _constraint_violation(cert: x509.Certificate, constraints: x509.NameConstraints) -> str | None:
    names: list[x509.GeneralName] = []
    san = _extension(cert, x509.SubjectAlternativeName)
    if isinstance(san, x509.SubjectAlternativeName):
        names += list(san)
    if len(cert.subject):
        names.append(x509.DirectoryName(cert.subject))
    names += [x509.RFC822Name(str(a.value))
              for a in cert.subject.get_attributes_for_oid(x509.NameOID.EMAIL_ADDRESS)]
    for name in names:
        kind = type(name)
        permitted = [t for t in constraints.permitted_subtrees or () if type(t) is kind]
        excluded = [t for t in constraints.excluded_subtrees or () if type(t) is kind]
        if not permitted and not excluded:
            continue
        within = _WITHIN.get(kind)
        if within is None:
            return f"{kind.__name__} names cannot be checked against name constraints"
        if any(within(name.value, t.value) for t in excluded):
            return f"{_general_name_text(name)} is in an excluded subtree"
        if permitted and not any(within(name.value, t.value) for t in permitted):
            return f"{_general_name_text(name)} is outside the permitted subtrees"
    return None


def _dns_within(name: str, base: str) -> bool:
    name, base = name.lower().rstrip("."), base.lower().rstrip(".")
    if not base:
        return True
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


def _email_within(mailbox: str, base: str) -> bool:
    if "@" in base:
        local, _, domain = mailbox.rpartition("@")
        base_local, _, base_domain = base.rpartition("@")
        return local == base_local and domain.lower() == base_domain.lower()
    domain = mailbox.rpartition("@")[2].lower()
    base = base.lower()
    return domain.endswith(base) if base.startswith(".") else domain == base


def _ip_within(address: object, network: object) -> bool:
    return (isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network)
            and isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
            and address.version == network.version and address in network)


def _dn_within(name: x509.Name, base: x509.Name) -> bool:
    return list(name.rdns)[:len(base.rdns)] == list(base.rdns)


_WITHIN = {x509.DNSName: _dns_within, x509.RFC822Name: _email_within,
           x509.IPAddress: _ip_within, x509.DirectoryName: _dn_within}


def _general_name_text(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DirectoryName):
        return f"DN {dn_text(name.value.public_bytes())}"
    return f"{type(name).__name__} {name.value}"


# --------------------------------------------------------------------------------------
# Identities in certificates (RFC 4945 3.1)
# --------------------------------------------------------------------------------------


def identity_in_certificate(cert: x509.Certificate, identity: Identity) -> bool:
    """Whether the certificate vouches for `identity` (RFC 4945 3.1).

    Addresses, FQDNs and e-mail addresses must be subjectAltName entries (iPAddress, dNSName,
    rfc822Name); a subject CN or emailAddress attribute is never taken for them (RFC 4945
    3.1.2-3.1.4 leave the subject to ID_DER_ASN1_DN).  A DN must equal the subject, compared
    RDN by RDN.  A KEY_ID matches the subjectKeyIdentifier or the SHA-1 of the public key (as
    strongSwan's ``keyid:`` does).  `ANY` matches every certificate.
    """
    if identity.is_any:
        return True
    if identity.type is IdType.DER_ASN1_DN:
        return dn_equal(cert.subject.public_bytes(), identity.data)
    if identity.type is IdType.KEY_ID:
        return identity.data in _key_ids(cert)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return any(identity.matches(presented) for presented in _san_identities(san))


def check_identity(cert: x509.Certificate, identity: Identity) -> None:
    """`identity_in_certificate` or CertificateRejected ``identity_mismatch`` naming both."""
    if not identity_in_certificate(cert, identity):
        where = "subject" if identity.type is IdType.DER_ASN1_DN else "subjectAltName"
        raise CertificateRejected("identity_mismatch", f"certificate {describe(cert)}: identity "
                                  f"{identity} not in its {where}", cert)


def _san_identities(san: x509.SubjectAlternativeName) -> list[Identity]:
    found = [Identity.from_address(str(ip)) for ip in san.get_values_for_type(x509.IPAddress)]
    for id_type, values in ((IdType.FQDN, san.get_values_for_type(x509.DNSName)),
                            (IdType.RFC822_ADDR, san.get_values_for_type(x509.RFC822Name))):
        found += [Identity(id_type, v.encode("ascii", "replace")) for v in values if v]
    return found


def _key_ids(cert: x509.Certificate) -> set[bytes]:
    public_key = cert.public_key()
    ids = {hashlib.sha1(_spki(cert)).digest()}
    try:
        ids.add(x509.SubjectKeyIdentifier.from_public_key(public_key).digest)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        pass
    try:
        ids.add(cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest)
    except (x509.ExtensionNotFound, ValueError):
        pass
    return ids


class PeerCertificateRejected(Exception):
    """The certificate(s) a peer sent do not prove its identity; ``reason`` is a metrics tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def peer_certificate(trust: TrustStore, peer_id: Identity, ders: Sequence[bytes],
                     now: datetime | None) -> x509.Certificate:
    """The peer's end-entity certificate (the first of ``ders``), once its path to one of our
    anchors validates at ``now`` and it contains ``peer_id``; both IKE versions use this."""
    if not ders:
        raise PeerCertificateRejected("no_certificate", f"peer {peer_id} sent no certificate")
    try:
        loaded = [load_certificate(d) for d in ders]
    except ValueError as exc:
        raise PeerCertificateRejected("malformed_certificate",
                                      f"peer {peer_id}: cannot parse its certificate: {exc}") from None
    if now is None:
        raise PeerCertificateRejected("no_clock",
                                      "certificate validity cannot be judged: the endpoint has no wall clock")
    try:
        trust.validate(loaded[0], loaded[1:], now)
    except CertificateRejected as exc:
        raise PeerCertificateRejected(f"cert_{exc.reason}", str(exc)) from None
    if not identity_in_certificate(loaded[0], peer_id):
        raise PeerCertificateRejected("identity_mismatch",
                                      f"identity {peer_id} is not in the peer's certificate")
    return loaded[0]
