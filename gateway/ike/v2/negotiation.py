"""Proposals on the IKEv2 wire: building SA payloads and choosing from one (RFC 7296 2.7, 3.3).

The responder walks its own configured proposals in order of preference and takes the
first that one of the peer's proposals can satisfy, choosing within each transform type
by its own order too.  When nothing matches, `describe_proposals` gives both sides'
offers in readable form for the negotiation log.
"""

from __future__ import annotations

from gateway.crypto.algorithms import ENCRYPTION, INTEGRITY, EncryptionAlgorithm
from gateway.crypto.dh import DH_GROUPS
from gateway.crypto.prf import PRF_BY_ID
from gateway.ike.proposals import AlgorithmSet, NegotiatedSuite
from gateway.ike.v2.constants import ProtocolId, TransformType
from gateway.ike.v2.message import Proposal, Transform

_KEYED_ENCR = {12, 13, 14, 15, 16, 18, 19, 20}  # ciphers whose transform carries Key Length
_ENCR_NAMES = {3: "3DES", 11: "NULL", 12: "AES_CBC", 13: "AES_CTR", 14: "AES_CCM_8",
               15: "AES_CCM_12", 16: "AES_CCM_16", 18: "AES_GCM_8", 19: "AES_GCM_12",
               20: "AES_GCM_16", 23: "CAMELLIA_CBC", 28: "CHACHA20_POLY1305"}
_INTEG_NAMES = {0: "NONE", 1: "HMAC_MD5_96", 2: "HMAC_SHA1_96", 5: "AES_XCBC_96", 8: "AES_CMAC_96",
                12: "HMAC_SHA2_256_128", 13: "HMAC_SHA2_384_192", 14: "HMAC_SHA2_512_256"}
_PRF_NAMES = {1: "PRF_HMAC_MD5", 2: "PRF_HMAC_SHA1", 4: "PRF_AES128_XCBC", 5: "PRF_HMAC_SHA2_256",
              6: "PRF_HMAC_SHA2_384", 7: "PRF_HMAC_SHA2_512", 8: "PRF_AES128_CMAC"}
_DH_NAMES = {0: "NONE", 1: "MODP_768", 2: "MODP_1024", 5: "MODP_1536", 14: "MODP_2048",
             15: "MODP_3072", 16: "MODP_4096", 17: "MODP_6144", 18: "MODP_8192", 19: "ECP_256",
             20: "ECP_384", 21: "ECP_521", 27: "ECP_224_BP", 28: "ECP_256_BP", 29: "ECP_384_BP",
             30: "ECP_512_BP", 31: "CURVE_25519", 32: "CURVE_448"}


def encryption_transform(alg: EncryptionAlgorithm) -> Transform:
    return Transform(TransformType.ENCR, alg.ikev2_id,
                     alg.key_size * 8 if alg.ikev2_id in _KEYED_ENCR else None)


def build_proposals(sets: list[AlgorithmSet], protocol: int, spi: bytes, *,
                    include_dh: bool = True) -> list[Proposal]:
    """One wire proposal per configured one, numbered from 1 (3.3.1)."""
    out = []
    for number, s in enumerate(sets, 1):
        transforms = [encryption_transform(e) for e in s.encryption]
        if protocol == ProtocolId.IKE:
            transforms += [Transform(TransformType.PRF, p.ikev2_id) for p in s.prf]
        transforms += [Transform(TransformType.INTEG, i.ikev2_id) for i in s.integrity]
        if include_dh:
            transforms += [Transform(TransformType.DH, g.id) for g in s.dh]
        if protocol != ProtocolId.IKE:
            transforms += [Transform(TransformType.ESN, int(e)) for e in s.esn]
        out.append(Proposal(number, protocol, spi, transforms))
    return out


def select(ours: list[Proposal], theirs: list[Proposal], *, ignore_dh: bool = False) -> Proposal | None:
    """The first of our proposals that one of theirs satisfies, reduced to one transform
    of each type, carrying the peer's proposal number and SPI (3.3.1)."""
    for mine in ours:
        for peer in theirs:
            if peer.protocol != mine.protocol:
                continue
            chosen = _match(mine, peer, ignore_dh)
            if chosen is not None:
                return Proposal(peer.number, peer.protocol, peer.spi, chosen)
    return None


def _match(mine: Proposal, peer: Proposal, ignore_dh: bool) -> list[Transform] | None:
    types = [t for t in TransformType if not (ignore_dh and t == TransformType.DH)]
    chosen: list[Transform] = []
    for kind in types:
        my_list = mine.of_type(kind)
        peer_keys = {t.key() for t in peer.of_type(kind)}
        if kind in (TransformType.INTEG, TransformType.DH):
            peer_keys.discard((kind, 0, None))  # "NONE" transforms count as absence (3.3.2)
        if not my_list:
            if peer_keys:
                return None
            continue
        if not peer_keys:
            return None
        pick = next((t for t in my_list if t.key() in peer_keys), None)
        if pick is None:
            return None
        chosen.append(Transform(pick.type, pick.id, pick.key_length))
    return chosen


def accept_response(offered: list[Proposal], answer: list[Proposal], *,
                    ignore_dh: bool = False) -> Proposal | None:
    """The initiator's check that the responder chose exactly one of what was offered."""
    if len(answer) != 1:
        return None
    got = answer[0]
    for mine in offered:
        if mine.number != got.number or mine.protocol != got.protocol:
            continue
        offered_keys = {t.key() for t in mine.transforms}
        kinds = [t.type for t in got.transforms]
        if len(kinds) != len(set(kinds)):
            return None
        if all(t.key() in offered_keys or (ignore_dh and t.type == TransformType.DH)
               for t in got.transforms):
            needed = {t.type for t in mine.transforms if not (ignore_dh and t.type == TransformType.DH)}
            if needed <= set(kinds):
                return got
    return None


def suite_of(proposal: Proposal) -> NegotiatedSuite:
    """Map a chosen wire proposal back to our algorithm objects (ValueError if unknown)."""
    enc = integ = prf = dh = None
    esn = False
    for t in proposal.transforms:
        if t.type == TransformType.ENCR:
            enc = _encryption_by_transform(t)
        elif t.type == TransformType.INTEG and t.id != 0:
            integ = next((i for i in INTEGRITY.values() if i.ikev2_id == t.id), None)
            if integ is None:
                raise ValueError(f"unsupported integrity transform {t.id}")
        elif t.type == TransformType.PRF:
            prf = PRF_BY_ID.get(t.id)
            if prf is None:
                raise ValueError(f"unsupported PRF transform {t.id}")
        elif t.type == TransformType.DH and t.id != 0:
            dh = DH_GROUPS.get(t.id)
            if dh is None:
                raise ValueError(f"unsupported DH group {t.id}")
        elif t.type == TransformType.ESN:
            esn = t.id == 1
    if enc is None:
        raise ValueError("proposal without an encryption transform")
    return NegotiatedSuite(enc, integ, prf, dh, esn)


def _encryption_by_transform(t: Transform) -> EncryptionAlgorithm:
    for alg in ENCRYPTION.values():
        if alg.ikev2_id == t.id and (t.key_length is None or alg.key_size * 8 == t.key_length):
            if t.id in _KEYED_ENCR and t.key_length is None:
                continue
            return alg
    raise ValueError(f"unsupported encryption transform {t.id}/{t.key_length}")


def describe_transform(t: Transform) -> str:
    if t.type == TransformType.ENCR:
        name = _ENCR_NAMES.get(t.id, f"ENCR_{t.id}")
        return f"{name}_{t.key_length}" if t.key_length else name
    if t.type == TransformType.INTEG:
        return _INTEG_NAMES.get(t.id, f"INTEG_{t.id}")
    if t.type == TransformType.PRF:
        return _PRF_NAMES.get(t.id, f"PRF_{t.id}")
    if t.type == TransformType.DH:
        return _DH_NAMES.get(t.id, f"DH_{t.id}")
    if t.type == TransformType.ESN:
        return "ESN" if t.id else "NO_EXT_SEQ"
    return f"T{t.type}_{t.id}"


def describe_proposals(proposals: list[Proposal]) -> str:
    """``IKE:AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048, ESP:...``."""
    out = []
    for p in proposals:
        try:
            proto = ProtocolId(p.protocol).name
        except ValueError:
            proto = f"PROTO{p.protocol}"
        out.append(proto + ":" + "/".join(describe_transform(t) for t in p.transforms))
    return ", ".join(out) or "(none)"
