"""Proposals on the IKEv1 wire: Phase 1 transforms and Phase 2 proposals (RFC 2409 5,
Appendix A; RFC 2407 4.4-4.5).

An IKEv1 transform names exactly one algorithm of each kind, so a configured proposal
with alternatives (``aes256-aes128-sha256-sha1-ecp384-modp2048``) becomes the product
of its alternatives, in order of preference.  The responder walks its own preferences
and takes the first of the peer's transforms that satisfies one; transforms it cannot
read (unknown algorithms, or incomplete ones such as strongSwan's second default
transform with only group, auth method and lifetime) are skipped, not fatal.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from gateway.crypto.algorithms import ENCRYPTION, INTEGRITY, EncryptionAlgorithm, IntegrityAlgorithm
from gateway.crypto.dh import DH_GROUPS, DhGroup
from gateway.crypto.prf import PRF, PrfAlgorithm
from gateway.ike.proposals import AlgorithmSet, NegotiatedSuite
from gateway.ike.v1.constants import (
    KEY_IKE,
    AuthAlgorithm,
    AuthMethod,
    EspTransform,
    LifeType,
    Phase1Attr,
    Phase1Encryption,
    Phase1Hash,
    Phase2Attr,
    ProtocolId,
)
from gateway.ike.v1.message import Attribute, Proposal, Transform

#: integrity name -> IKEv1 Phase 1 hash and the HMAC PRF built on it (RFC 2409 4)
HASH_OF_INTEGRITY = {"md5": Phase1Hash.MD5, "sha1": Phase1Hash.SHA1, "sha256": Phase1Hash.SHA2_256,
                     "sha384": Phase1Hash.SHA2_384, "sha512": Phase1Hash.SHA2_512}
PRF_OF_HASH = {Phase1Hash.MD5: "prfmd5", Phase1Hash.SHA1: "prfsha1", Phase1Hash.SHA2_256: "prfsha256",
               Phase1Hash.SHA2_384: "prfsha384", Phase1Hash.SHA2_512: "prfsha512"}
_HASH_NAMES = {v: k for k, v in HASH_OF_INTEGRITY.items()}
#: Phase 1 cipher name -> (encryption algorithm attribute, key length attribute or None)
P1_CIPHERS = {"aes128": (Phase1Encryption.AES_CBC, 128), "aes192": (Phase1Encryption.AES_CBC, 192),
              "aes256": (Phase1Encryption.AES_CBC, 256), "3des": (Phase1Encryption.TRIPLE_DES_CBC, None)}
#: ESP cipher name -> (ESP transform ID, key length attribute or None)
ESP_CIPHERS = {"aes128": (EspTransform.AES_CBC, 128), "aes192": (EspTransform.AES_CBC, 192),
               "aes256": (EspTransform.AES_CBC, 256), "3des": (EspTransform.TRIPLE_DES, None),
               "null": (EspTransform.NULL, None), "aes128gcm16": (EspTransform.AES_GCM_16, 128),
               "aes256gcm16": (EspTransform.AES_GCM_16, 256)}
AUTH_OF_INTEGRITY = {"md5": AuthAlgorithm.HMAC_MD5, "sha1": AuthAlgorithm.HMAC_SHA1,
                     "sha256": AuthAlgorithm.HMAC_SHA2_256, "sha384": AuthAlgorithm.HMAC_SHA2_384,
                     "sha512": AuthAlgorithm.HMAC_SHA2_512}
_INTEGRITY_OF_AUTH = {v: k for k, v in AUTH_OF_INTEGRITY.items()}
AUTH_METHOD_NAMES = {AuthMethod.PSK: "psk", AuthMethod.RSA_SIG: "rsa", AuthMethod.DSS: "dss",
                     AuthMethod.ECDSA_256: "ecdsa256", AuthMethod.ECDSA_384: "ecdsa384",
                     AuthMethod.ECDSA_521: "ecdsa521", AuthMethod.XAUTH_INIT_PSK: "xauth-psk",
                     AuthMethod.XAUTH_INIT_RSA: "xauth-rsa"}


def _life(attrs: list[Attribute], type_attr: int, duration_attr: int) -> tuple[int | None, int | None]:
    """(seconds, kilobytes) from Life Type/Life Duration pairs (each type precedes its duration)."""
    seconds = kilobytes = None
    kind = None
    for a in attrs:
        if a.type == type_attr:
            kind = a.number
        elif a.type == duration_attr and kind is not None:
            if kind == LifeType.SECONDS:
                seconds = a.number
            elif kind == LifeType.KILOBYTES:
                kilobytes = a.number
    return seconds, kilobytes


# -- Phase 1 ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase1Suite:
    encryption: EncryptionAlgorithm
    hash_id: int
    prf: PrfAlgorithm
    group: DhGroup
    auth_method: int
    lifetime: int | None

    @property
    def name(self) -> str:
        return f"{self.encryption.name}-{_HASH_NAMES[Phase1Hash(self.hash_id)]}-{self.group.name}"


def phase1_transforms(sets: list[AlgorithmSet] | tuple[AlgorithmSet, ...], auth_method: int,
                      lifetime: int) -> list[Transform]:
    """Our Main Mode offer: one transform per combination, in order of preference."""
    out: list[Transform] = []
    for s in sets:
        for enc, integ, group in product(s.encryption, s.integrity, s.dh):
            if enc.name not in P1_CIPHERS or integ.name not in HASH_OF_INTEGRITY:
                continue
            cipher, keylen = P1_CIPHERS[enc.name]
            attrs = [Attribute(Phase1Attr.ENCRYPTION, cipher)]
            if keylen:
                attrs.append(Attribute(Phase1Attr.KEY_LENGTH, keylen))
            attrs += [Attribute(Phase1Attr.HASH, HASH_OF_INTEGRITY[integ.name]),
                      Attribute(Phase1Attr.AUTH_METHOD, auth_method),
                      Attribute(Phase1Attr.GROUP, group.id),
                      Attribute(Phase1Attr.LIFE_TYPE, LifeType.SECONDS),
                      Attribute(Phase1Attr.LIFE_DURATION, lifetime)]
            out.append(Transform(len(out) + 1, KEY_IKE, attrs))
    return out


def parse_phase1(t: Transform) -> Phase1Suite | None:
    """Our reading of one Phase 1 transform, or None when it is incomplete or unsupported."""
    if t.transform_id != KEY_IKE:
        return None
    get = {a.type: a.number for a in t.attributes}
    if not {Phase1Attr.ENCRYPTION, Phase1Attr.HASH, Phase1Attr.AUTH_METHOD, Phase1Attr.GROUP} <= get.keys():
        return None
    if Phase1Attr.GROUP_TYPE in get or Phase1Attr.PRF in get:
        return None  # private groups and PRF attributes: nobody sends them, we do not support them
    keylen = get.get(Phase1Attr.KEY_LENGTH)
    enc = next((ENCRYPTION[name] for name, (cid, kl) in P1_CIPHERS.items()
                if cid == get[Phase1Attr.ENCRYPTION] and (kl is None or kl == keylen)), None)
    if enc is None or get[Phase1Attr.HASH] not in PRF_OF_HASH or get[Phase1Attr.GROUP] not in DH_GROUPS:
        return None
    seconds, _kb = _life(t.attributes, Phase1Attr.LIFE_TYPE, Phase1Attr.LIFE_DURATION)
    hash_id = Phase1Hash(get[Phase1Attr.HASH])
    return Phase1Suite(enc, hash_id, PRF[PRF_OF_HASH[hash_id]], DH_GROUPS[get[Phase1Attr.GROUP]],
                       get[Phase1Attr.AUTH_METHOD], seconds)


def select_phase1(sets: list[AlgorithmSet] | tuple[AlgorithmSet, ...], auth_methods: set[int],
                  theirs: list[Transform]) -> tuple[Transform, Phase1Suite] | None:
    """The peer transform that best fits our preferences, with our reading of it."""
    parsed = [(t, s) for t in theirs if (s := parse_phase1(t)) is not None]
    for ours in sets:
        for enc, integ, group in product(ours.encryption, ours.integrity, ours.dh):
            hash_id = HASH_OF_INTEGRITY.get(integ.name)
            for t, s in parsed:
                if s.encryption == enc and s.hash_id == hash_id and s.group == group \
                        and s.auth_method in auth_methods:
                    return t, s
    return None


def describe_phase1(transforms: list[Transform]) -> str:
    parts = []
    for t in transforms:
        s = parse_phase1(t)
        if s is None:
            parts.append("(" + ",".join(f"{a.type}={a.number}" for a in t.attributes) + ")")
        else:
            method = AUTH_METHOD_NAMES.get(s.auth_method, str(s.auth_method))  # type: ignore[call-overload]
            parts.append(f"{s.name}/{method}")
    return ", ".join(parts) or "nothing"


# -- Phase 2 ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase2Suite:
    protocol: int
    encryption: EncryptionAlgorithm | None
    integrity: IntegrityAlgorithm | None
    group: DhGroup | None
    encapsulation: int
    lifetime: int | None
    kilobytes: int | None

    def negotiated(self) -> NegotiatedSuite:
        assert self.encryption is not None
        return NegotiatedSuite(self.encryption, self.integrity, None, self.group, False)

    @property
    def name(self) -> str:
        parts = [self.encryption.name if self.encryption else "none"]
        if self.integrity is not None:
            parts.append(self.integrity.name)
        if self.group is not None:
            parts.append(self.group.name)
        return "-".join(parts)


def phase2_proposals(sets: list[AlgorithmSet] | tuple[AlgorithmSet, ...], spi: bytes, encapsulation: int,
                     lifetime: int, pfs: DhGroup | None, kilobytes: int | None = None) -> list[Proposal]:
    """Our Quick Mode offer: one ESP proposal per configured set, one transform per combination."""
    out: list[Proposal] = []
    for s in sets:
        transforms: list[Transform] = []
        integs: list[IntegrityAlgorithm | None] = list(s.integrity) or [None]
        for enc, integ in product(s.encryption, integs):
            if enc.name not in ESP_CIPHERS or (integ is not None and integ.name not in AUTH_OF_INTEGRITY):
                continue
            tid, keylen = ESP_CIPHERS[enc.name]
            attrs = [Attribute(Phase2Attr.LIFE_TYPE, LifeType.SECONDS),
                     Attribute(Phase2Attr.LIFE_DURATION, lifetime)]
            if kilobytes:
                attrs += [Attribute(Phase2Attr.LIFE_TYPE, LifeType.KILOBYTES),
                          Attribute(Phase2Attr.LIFE_DURATION, kilobytes)]
            if pfs is not None:
                attrs.append(Attribute(Phase2Attr.GROUP, pfs.id))
            attrs.append(Attribute(Phase2Attr.ENCAPSULATION, encapsulation))
            if integ is not None:
                attrs.append(Attribute(Phase2Attr.AUTH_ALGORITHM, AUTH_OF_INTEGRITY[integ.name]))
            if keylen:
                attrs.append(Attribute(Phase2Attr.KEY_LENGTH, keylen))
            transforms.append(Transform(len(transforms) + 1, tid, attrs))
        if transforms:
            out.append(Proposal(len(out) + 1, ProtocolId.ESP, spi, transforms))
    return out


def parse_phase2(protocol: int, t: Transform) -> Phase2Suite | None:
    if protocol != ProtocolId.ESP:
        return None
    get = {a.type: a.number for a in t.attributes}
    keylen = get.get(Phase2Attr.KEY_LENGTH)
    enc = None
    for name, (tid, kl) in ESP_CIPHERS.items():
        if tid == t.transform_id and (kl is None or kl == keylen or (keylen is None and kl == 128
                                                                       and tid == EspTransform.AES_CBC)):
            enc = ENCRYPTION[name]
            break
    if enc is None:
        return None
    auth = get.get(Phase2Attr.AUTH_ALGORITHM)
    integ = None
    if enc.aead:
        if auth is not None:
            return None
    else:
        if auth not in _INTEGRITY_OF_AUTH:
            return None
        integ = INTEGRITY[_INTEGRITY_OF_AUTH[AuthAlgorithm(auth)]]
    group = None
    if Phase2Attr.GROUP in get:
        group = DH_GROUPS.get(get[Phase2Attr.GROUP])
        if group is None:
            return None
    if Phase2Attr.ENCAPSULATION not in get or Phase2Attr.ESN in get:
        return None
    seconds, kilobytes = _life(t.attributes, Phase2Attr.LIFE_TYPE, Phase2Attr.LIFE_DURATION)
    return Phase2Suite(protocol, enc, integ, group, get[Phase2Attr.ENCAPSULATION], seconds, kilobytes)


def select_phase2(sets: list[AlgorithmSet] | tuple[AlgorithmSet, ...], theirs: list[Proposal],
                  encapsulations: set[int]) -> tuple[Proposal, Phase2Suite] | None:
    """The peer's proposal and transform that best fit our preferences (one transform kept).

    A DH group in our set means we require PFS with one of those groups; a peer asking for
    PFS we did not configure gets it with its group, if we support the group and it is not
    weak (what road-warrior clients expect)."""
    parsed = [(p, t, s) for p in theirs for t in p.transforms
              if (s := parse_phase2(p.protocol, t)) is not None and s.encapsulation in encapsulations]
    if len({p.number for p in theirs}) != len(theirs):
        # several protocols under one number are an AH+ESP bundle: not supported
        parsed = [x for x in parsed if sum(1 for q in theirs if q.number == x[0].number) == 1]
    for ours in sets:
        integs: list[IntegrityAlgorithm | None] = list(ours.integrity) or [None]
        for enc, integ in product(ours.encryption, integs):
            for p, t, s in parsed:
                if s.encryption != enc or s.integrity != integ:
                    continue
                if ours.dh and s.group not in ours.dh:
                    continue
                if not ours.dh and s.group is not None and s.group.weak:
                    continue
                return Proposal(p.number, p.protocol, p.spi, [t]), s
    return None


def describe_phase2(proposals: list[Proposal]) -> str:
    parts = []
    for p in proposals:
        for t in p.transforms:
            s = parse_phase2(p.protocol, t)
            parts.append(f"{s.name}/encap={s.encapsulation}" if s else
                         f"(proto {p.protocol} id {t.transform_id} " +
                         ",".join(f"{a.type}={a.number}" for a in t.attributes) + ")")
    return ", ".join(parts) or "nothing"
