"""Configured proposals: strongSwan-style strings parsed into sets of algorithms.

``aes256gcm16-prfsha256-ecp256`` and ``aes256-sha256-modp2048`` for IKE,
``aes128gcm16``, ``aes256-sha256-modp3072`` (a DH group means PFS on rekey) and
``aes128-sha1-esn`` for ESP.  One string is one proposal; several algorithms of the same
kind in a string (``aes128-aes256-sha256-ecp256-modp2048``) are alternatives inside it,
in order of preference, as in strongSwan.  Which wire format carries them is up to the
IKE version (IKEv2 transforms, IKEv1 attributes).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.crypto.algorithms import (
    ENCRYPTION,
    INTEGRITY,
    EncryptionAlgorithm,
    IntegrityAlgorithm,
    UnknownAlgorithm,
)
from gateway.crypto.dh import DH_BY_NAME, DhGroup
from gateway.crypto.prf import PRF, PrfAlgorithm

#: RFC 8247: what an IKE proposal without an explicit PRF uses for a given integrity.
_PRF_FOR_INTEGRITY = {"sha1": "prfsha1", "sha256": "prfsha256", "sha384": "prfsha384",
                      "sha512": "prfsha512", "md5": "prfmd5"}


@dataclass(frozen=True)
class AlgorithmSet:
    """One configured proposal.  Empty tuples mean "this kind is not in the proposal"."""

    text: str
    encryption: tuple[EncryptionAlgorithm, ...]
    integrity: tuple[IntegrityAlgorithm, ...] = ()
    prf: tuple[PrfAlgorithm, ...] = ()
    dh: tuple[DhGroup, ...] = ()
    esn: tuple[bool, ...] = (False,)

    @property
    def weak(self) -> bool:
        return (any(e.weak for e in self.encryption) or any(i.weak for i in self.integrity)
                or any(g.weak for g in self.dh))

    def __str__(self) -> str:
        return self.text


def _split(text: str) -> list[str]:
    tokens = [t for t in text.strip().lower().split("-") if t]
    if not tokens:
        raise UnknownAlgorithm("empty proposal")
    return tokens


def _classify(text: str, *, ike: bool) -> AlgorithmSet:
    enc: list[EncryptionAlgorithm] = []
    integ: list[IntegrityAlgorithm] = []
    prf: list[PrfAlgorithm] = []
    dh: list[DhGroup] = []
    esn: list[bool] = []
    for token in _split(text):
        if token in ENCRYPTION:
            enc.append(ENCRYPTION[token])
        elif token in INTEGRITY:
            integ.append(INTEGRITY[token])
        elif token in PRF:
            prf.append(PRF[token])
        elif token in DH_BY_NAME:
            dh.append(DH_BY_NAME[token])
        elif token in ("esn", "noesn") and not ike:
            esn.append(token == "esn")
        else:
            kinds = "encryption, integrity, PRF or DH group" if ike else \
                "encryption, integrity, DH group or esn/noesn"
            raise UnknownAlgorithm(f"{text!r}: unknown {kinds} {token!r}")
    if not enc:
        raise UnknownAlgorithm(f"{text!r}: no encryption algorithm")
    aead = [e for e in enc if e.aead]
    if aead and len(aead) != len(enc):
        raise UnknownAlgorithm(f"{text!r}: do not mix AEAD and non-AEAD ciphers in one proposal")
    if aead and integ:
        raise UnknownAlgorithm(f"{text!r}: an AEAD cipher takes no integrity algorithm")
    if not aead and not integ:
        raise UnknownAlgorithm(f"{text!r}: {enc[0].name} needs an integrity algorithm")
    if any(e.name == "null" for e in enc) and ike:
        raise UnknownAlgorithm(f"{text!r}: IKE cannot use NULL encryption")
    for e in enc:
        if e.name == "3des" and any(i.name not in ("md5", "sha1") for i in integ):
            raise UnknownAlgorithm(f"{text!r}: 3des pairs only with md5 or sha1")
    if ike:
        if not dh:
            raise UnknownAlgorithm(f"{text!r}: an IKE proposal needs a DH group")
        if not prf:
            if not integ:
                raise UnknownAlgorithm(f"{text!r}: an AEAD IKE proposal needs a PRF (e.g. prfsha256)")
            prf = [PRF[_PRF_FOR_INTEGRITY[i.name]] for i in integ]
            prf = list(dict.fromkeys(prf))
    elif prf:
        raise UnknownAlgorithm(f"{text!r}: an ESP proposal has no PRF")
    return AlgorithmSet(text, tuple(enc), tuple(integ), tuple(prf), tuple(dh),
                        tuple(esn) if esn else (False,))


def parse_ike_proposal(text: str) -> AlgorithmSet:
    """An IKE SA proposal: encryption, integrity (unless AEAD), PRF and DH group."""
    return _classify(text, ike=True)


def parse_child_proposal(text: str) -> AlgorithmSet:
    """An ESP/AH proposal; a DH group asks for PFS when the CHILD_SA is rekeyed."""
    return _classify(text, ike=False)


@dataclass(frozen=True)
class NegotiatedSuite:
    """The algorithms one chosen proposal names (any may be None when not applicable)."""

    encryption: EncryptionAlgorithm
    integrity: IntegrityAlgorithm | None
    prf: PrfAlgorithm | None
    dh: DhGroup | None
    esn: bool

    @property
    def name(self) -> str:
        parts = [self.encryption.name]
        if self.integrity is not None:
            parts.append(self.integrity.name)
        if self.prf is not None:
            parts.append(self.prf.name)
        if self.dh is not None:
            parts.append(self.dh.name)
        if self.esn:
            parts.append("esn")
        return "-".join(parts)

    @property
    def esp_name(self) -> str:
        """The dataplane's name for the ESP transform (``aes256-sha256``)."""
        if self.integrity is None:
            return self.encryption.name
        return f"{self.encryption.name}-{self.integrity.name}"
