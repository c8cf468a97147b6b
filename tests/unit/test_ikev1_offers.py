"""What real IKEv1 clients offer in Main Mode message 1, and what our responder answers.

The offers are built with scapy's ISAKMP layers, independently of our codec, in the shape
the clients send them:

* the Windows 10/11 built-in L2TP/IPsec client (PSK, life 28800 s, ECP before MODP, the
  MS NT5 ISAKMPOAKLEY / NAT-T / FRAGMENTATION / MS-Negotiation Discovery / CGA vendor IDs);
* macOS / iOS (racoon: AES-256 with SHA2-256, SHA1, MD5 over MODP-2048/1536/1024, then
  3DES, life 3600 s, RFC 3947 and the NAT-T draft vendor IDs, DPD);
* strongSwan's default shape, whose second transform names only group, auth method and life.

The responder is configured like a production IKEv1 connection for road warriors
(``DEFAULT_PROPOSALS[1]``, remote %any, PSK); its answer is dissected with scapy.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest
from ike_loopback import seeded
from scapy.layers.isakmp import (
    ISAKMP,
    ISAKMP_payload_Notify,
    ISAKMP_payload_Proposal,
    ISAKMP_payload_SA,
    ISAKMP_payload_Transform,
    ISAKMP_payload_VendorID,
    ISAKMPTransformSetField,
)
from scapy.packet import Packet, Raw

from gateway.config.model import DEFAULT_PROPOSALS, Secret
from gateway.ike.events import NegotiationFailed, Note
from gateway.ike.identity import ANY, Identity
from gateway.ike.proposals import parse_child_proposal, parse_ike_proposal
from gateway.ike.settings import ChildConfig, PeerConfig, Timing
from gateway.ike.trafficselectors import TsRange
from gateway.ike.v1.endpoint import IkeV1Endpoint

GATEWAY = "192.0.2.1"
CLIENT = "198.51.100.77"
NOW = 1000.0

# -- vendor IDs (MD5 of a string unless said otherwise) ---------------------------------------------

VID_MS_NT5 = bytes.fromhex("1e2b516905991c7d7c96fcbfb587e461") + (9).to_bytes(4, "big")  # + version 9
VID_RFC3947 = bytes.fromhex("4a131c81070358455c5728f20e95452f")
VID_DRAFT02N = bytes.fromhex("90cb80913ebb696e086381b5ec427b1f")  # "draft-ietf-ipsec-nat-t-ike-02\n"
VID_DRAFT02 = bytes.fromhex("cd60464335df21f87cfdb2fc68b6a448")
VID_DRAFT03 = bytes.fromhex("7d9419a65310ca6f2c179d9215529d56")
VID_DRAFT04 = bytes.fromhex("9909b64eed937c6573de52ace952fa6b")
VID_DRAFT05 = bytes.fromhex("80d0bb3def54565ee84645d4c85ce3ee")
VID_DRAFT06 = bytes.fromhex("4d1e0e136deafa34c4f3ea9f02ec7285")
VID_DRAFT07 = bytes.fromhex("439b59f8ba676c4c7737ae22eab8f582")
VID_DRAFT08 = bytes.fromhex("8f8d83826d246b6fc7a8a6a428c11de8")
VID_FRAGMENTATION = bytes.fromhex("4048b7d56ebce88525e7de7f00d6c2d3")  # as Windows sends it: 16 octets
VID_MS_NDC = bytes.fromhex("fb1de3cdf341b7ea16b7e5be0855f120")  # MS-Negotiation Discovery Capable
VID_CGA = bytes.fromhex("e3a5966a76379fe707228231e5ce8652")  # IKE CGA version 1
VID_DPD = bytes.fromhex("afcad71368a1f1c96b8696fc77570100")  # RFC 3706
NATT_VIDS = {VID_RFC3947, VID_DRAFT02N, VID_DRAFT02, VID_DRAFT03, VID_DRAFT04, VID_DRAFT05, VID_DRAFT06,
             VID_DRAFT07, VID_DRAFT08}

WINDOWS_VIDS = [VID_MS_NT5, VID_RFC3947, VID_DRAFT02N, VID_FRAGMENTATION, VID_MS_NDC, VID_CGA]
#: racoon (macOS / iOS) sends RFC 3947, the NAT-T drafts newest first, then DPD
RACOON_VIDS = [VID_RFC3947, VID_DRAFT08, VID_DRAFT07, VID_DRAFT06, VID_DRAFT05, VID_DRAFT04, VID_DRAFT03,
               VID_DRAFT02, VID_DRAFT02N, VID_DPD]

# -- transforms ----------------------------------------------------------------------------

Attrs = list[tuple[str, Any]]


def transform(enc: str, keylen: int | None, hash_: str, group: int | str, life: int,
              auth: str = "PSK") -> Attrs:
    attrs: Attrs = [("Encryption", enc)]
    if keylen is not None:
        attrs.append(("KeyLength", keylen))
    attrs += [("Hash", hash_), ("GroupDesc", group), ("Authentication", auth), ("LifeType", "Seconds"),
              ("LifeDuration", life)]
    return attrs


WINDOWS_TRANSFORMS = [
    transform("AES-CBC", 256, "SHA", 20, 28800),  # ECP-384
    transform("AES-CBC", 128, "SHA", 19, 28800),  # ECP-256
    transform("AES-CBC", 256, "SHA", "2048MODPgr", 28800),
    transform("AES-CBC", 128, "SHA", "2048MODPgr", 28800),
    transform("3DES-CBC", None, "SHA", "2048MODPgr", 28800),
    transform("3DES-CBC", None, "SHA", "1024MODPgr", 28800),
]

MACOS_TRANSFORMS = [
    transform("AES-CBC", 256, hash_, group, 3600)
    for hash_ in ("SHA2-256", "SHA", "MD5")
    for group in ("2048MODPgr", "1536MODPgr", "1024MODPgr")
] + [transform("3DES-CBC", None, "SHA", "1024MODPgr", 3600)]

LEGACY_ONLY = [transform("3DES-CBC", None, "SHA", "1024MODPgr", 28800)]

#: strongSwan's shape: a complete first transform, then one with only group, auth method
#: and life (what an IKEv1 proposal with an extra DH group turns into)
STRONGSWAN_TRANSFORMS: list[Attrs] = [
    transform("AES-CBC", 128, "SHA2-256", "3072MODPgr", 10800),
    [("GroupDesc", "2048MODPgr"), ("Authentication", "PSK"), ("LifeType", "Seconds"),
     ("LifeDuration", 10800)],
]


def _transform_tlv_life(n: int, attrs: Attrs, last: bool) -> bytes:
    """One transform with Life Duration in the variable-length form (4 octets), as some
    clients send it; scapy only picks that form for values above 65535."""
    body = b""
    for kind, value in attrs:
        if kind == "LifeDuration":
            body += struct.pack("!HHI", 12, 4, value)
        else:
            body += ISAKMPTransformSetField.type2num((kind, value), proto=1)
    return struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(body), n, 1, 0) + body


def main_mode_1(transforms: list[Attrs], vids: list[bytes], icookie: bytes = b"\xc1\x1e\x47" + bytes(5),
                *, life_tlv: bool = False) -> bytes:
    """Main Mode message 1 (RFC 2409 5): header, SA with one ISAKMP proposal, vendor IDs."""
    trans: Packet | None = None
    if life_tlv:
        trans = Raw(load=b"".join(_transform_tlv_life(n, attrs, n == len(transforms))
                                  for n, attrs in enumerate(transforms, 1)))
    for n, attrs in enumerate([] if life_tlv else transforms, 1):
        t = ISAKMP_payload_Transform(transform_count=n, transform_id=1, transforms=attrs)
        trans = t if trans is None else trans / t
    assert trans is not None
    sa = ISAKMP_payload_SA(doi=1, situation=1,
                           prop=ISAKMP_payload_Proposal(proposal=1, proto=1, trans_nb=len(transforms),
                                                        trans=trans))
    pkt: Packet = ISAKMP(init_cookie=icookie, resp_cookie=bytes(8), exch_type=2, flags=0, id=0) / sa
    for v in vids:
        pkt = pkt / ISAKMP_payload_VendorID(VendorID=v)
    return bytes(pkt)


# -- the responder ---------------------------------------------------------------------------


def l2tp_any() -> TsRange:
    return TsRange(ipaddress.IPv4Address(0), ipaddress.IPv4Address("255.255.255.255"), 17, 1701, 1701)


def responder_config(extra_ike: tuple[str, ...] = ()) -> PeerConfig:
    ike, esp = DEFAULT_PROPOSALS[1]
    gw = ipaddress.IPv4Address(GATEWAY)
    child = ChildConfig("l2tp", (TsRange(gw, gw, 17, 1701, 1701),), (l2tp_any(),),
                        tuple(parse_child_proposal(p) for p in esp), mode="transport")
    return PeerConfig("l2tp-rw", GATEWAY, None, tuple(parse_ike_proposal(p) for p in (*ike, *extra_ike)),
                      child, Identity.parse(GATEWAY), ANY, psk=Secret(b"windows-and-mac-psk"), version=1)


def answer(offer: bytes, cfg: PeerConfig | None = None) -> tuple[IkeV1Endpoint, list[Packet], list[object]]:
    ep = IkeV1Endpoint(GATEWAY, [cfg or responder_config()], random=seeded(5),
                       timing=Timing())
    ep.receive(offer, 500, (CLIENT, 500), NOW)
    out = ep.datagrams_to_send()
    for d in out:
        assert d.remote == (CLIENT, 500) and d.local_port == 500
    events = []
    while (ev := ep.next_event()) is not None:
        events.append(ev)
    return ep, [ISAKMP(d.data) for d in out], events


def chosen(pkt: Packet) -> tuple[int, Attrs]:
    """(transform number, attributes) of the single transform in our answer."""
    sa = pkt[ISAKMP_payload_SA]
    prop = sa.prop
    assert isinstance(prop, ISAKMP_payload_Proposal) and prop.proto == 1 and prop.trans_nb == 1
    trans = prop.trans
    assert isinstance(trans, ISAKMP_payload_Transform)
    assert not trans.payload or trans.payload.__class__.__name__ in ("NoPayload", "Padding")
    return trans.transform_count, list(trans.transforms)


def first_transform_attributes(data: bytes) -> bytes:
    """The attribute octets of the first transform of a Main Mode message with one proposal
    without SPI: header (28), SA payload header (12), proposal header (8), transform header (8)."""
    length = struct.unpack_from("!H", data, 48 + 2)[0]
    return data[48 + 8:48 + length]


def vendor_ids(pkt: Packet) -> list[bytes]:
    out = []
    layer = pkt.getlayer(ISAKMP_payload_VendorID)
    while layer is not None:
        out.append(bytes(layer.VendorID))
        layer = layer.payload.getlayer(ISAKMP_payload_VendorID)
    return out


def main_mode_note(events: list[object]) -> dict[str, str]:
    found = [e for e in events if isinstance(e, Note) and e.what == "ikev1.main_mode"]
    assert len(found) == 1, events
    return dict(found[0].fields)


def attrs_of(expected: Attrs) -> Attrs:
    """The attributes as scapy dissects them (group numbers without a name stay numbers)."""
    return list(ISAKMP_payload_Transform(bytes(ISAKMP_payload_Transform(transforms=expected))).transforms)


# ======================================================================================
# the offers, parsed by scapy the way we build them (a check of the test itself)
# ======================================================================================


@pytest.mark.parametrize("life_tlv", [False, True])
def test_offers_are_well_formed(life_tlv: bool) -> None:
    for transforms, vids in ((WINDOWS_TRANSFORMS, WINDOWS_VIDS), (MACOS_TRANSFORMS, RACOON_VIDS)):
        data = main_mode_1(transforms, vids, life_tlv=life_tlv)
        assert (b"\x00\x0c\x00\x04" in data) == life_tlv
        pkt = ISAKMP(data)
        assert pkt.exch_type == 2 and pkt.length == len(bytes(pkt))
        prop = pkt[ISAKMP_payload_SA].prop
        assert prop.trans_nb == len(transforms)
        got = []
        t = prop.trans
        while isinstance(t, ISAKMP_payload_Transform):
            got.append(list(t.transforms))
            t = t.payload
        assert got == [attrs_of(x) for x in transforms]
        assert vendor_ids(pkt) == vids
    assert len(MACOS_TRANSFORMS) == 10


# ======================================================================================
# Windows 10/11
# ======================================================================================


@pytest.mark.parametrize("life_tlv", [False, True])
def test_windows_offer_gets_aes256_sha1_ecp384(life_tlv: bool) -> None:
    offer = main_mode_1(WINDOWS_TRANSFORMS, WINDOWS_VIDS, life_tlv=life_tlv)
    ep, out, events = answer(offer)
    assert len(out) == 1
    mm2 = out[0]
    # the chosen transform comes back octet for octet (attribute forms included)
    assert first_transform_attributes(mm2.original) == first_transform_attributes(offer)
    assert mm2.exch_type == 2 and mm2.init_cookie == b"\xc1\x1e\x47" + bytes(5)
    assert mm2.resp_cookie != bytes(8)
    number, attrs = chosen(mm2)
    assert number == 1
    assert attrs == attrs_of(WINDOWS_TRANSFORMS[0])
    assert ("GroupDesc", 20) in attrs and ("KeyLength", 256) in attrs and ("Hash", "SHA") in attrs
    assert ("LifeDuration", 28800) in attrs
    note = main_mode_note(events)
    assert note["proposal"] == "aes256-sha1-ecp384" and note["connection"] == "l2tp-rw"
    assert [s["state"] for s in ep.sas(NOW)] == ["connecting"]
    assert not [e for e in events if isinstance(e, NegotiationFailed)]


def test_windows_vendor_ids_answered() -> None:
    _, out, _ = answer(main_mode_1(WINDOWS_TRANSFORMS, WINDOWS_VIDS))
    vids = vendor_ids(out[0])
    assert [v for v in vids if v in NATT_VIDS] == [VID_RFC3947]  # RFC 3947 wins over the draft
    assert any(v[:16] == VID_FRAGMENTATION for v in vids)  # Windows asked for fragmentation
    assert VID_DPD not in vids  # Windows did not send DPD
    assert not any(v[:16] == VID_MS_NT5[:16] for v in vids)


def test_windows_vendor_ids_named_in_the_log() -> None:
    _, _, events = answer(main_mode_1(WINDOWS_TRANSFORMS, WINDOWS_VIDS))
    named = main_mode_note(events)["vendor_ids"].split(", ")
    assert named == ["MS NT5 ISAKMPOAKLEY (Windows 8+)", "RFC 3947", "draft-ietf-ipsec-nat-t-ike-02\\n",
                     "FRAGMENTATION", "MS-Negotiation Discovery Capable", "IKE CGA version 1"]


def test_windows_without_fragmentation_vid_gets_none() -> None:
    vids = [v for v in WINDOWS_VIDS if v != VID_FRAGMENTATION]
    _, out, _ = answer(main_mode_1(WINDOWS_TRANSFORMS, vids))
    assert not any(v[:16] == VID_FRAGMENTATION for v in vendor_ids(out[0]))


def test_older_windows_with_only_the_draft_gets_the_draft() -> None:
    vids = [VID_MS_NT5, VID_DRAFT02N, VID_FRAGMENTATION]
    _, out, _ = answer(main_mode_1(WINDOWS_TRANSFORMS, vids))
    assert [v for v in vendor_ids(out[0]) if v in NATT_VIDS] == [VID_DRAFT02N]


# ======================================================================================
# macOS / iOS (racoon)
# ======================================================================================


def test_macos_offer_gets_aes256_sha256_modp2048() -> None:
    _, out, events = answer(main_mode_1(MACOS_TRANSFORMS, RACOON_VIDS))
    assert len(out) == 1
    number, attrs = chosen(out[0])
    assert number == 1
    assert attrs == attrs_of(MACOS_TRANSFORMS[0])
    assert ("Hash", "SHA2-256") in attrs and ("GroupDesc", "2048MODPgr") in attrs
    assert ("LifeDuration", 3600) in attrs
    assert main_mode_note(events)["proposal"] == "aes256-sha256-modp2048"


def test_macos_vendor_ids_answered() -> None:
    _, out, events = answer(main_mode_1(MACOS_TRANSFORMS, RACOON_VIDS))
    vids = vendor_ids(out[0])
    assert [v for v in vids if v in NATT_VIDS] == [VID_RFC3947]
    assert VID_DPD in vids  # racoon sent DPD
    assert not any(v[:16] == VID_FRAGMENTATION for v in vids)  # racoon did not ask for fragmentation
    named = main_mode_note(events)["vendor_ids"].split(", ")
    assert named[0] == "RFC 3947" and named[-1] == "DPD"
    for name in ("draft-ietf-ipsec-nat-t-ike-03", "draft-ietf-ipsec-nat-t-ike-02",
                 "draft-ietf-ipsec-nat-t-ike-02\\n"):
        assert name in named


def test_drafts_only_get_draft_02n() -> None:
    """A racoon without RFC 3947 (older releases): the answer names draft-02\\n."""
    vids = [v for v in RACOON_VIDS if v != VID_RFC3947]
    _, out, _ = answer(main_mode_1(MACOS_TRANSFORMS, vids))
    answered = vendor_ids(out[0])
    assert [v for v in answered if v in NATT_VIDS] == [VID_DRAFT02N]
    assert VID_DPD in answered


def test_no_natt_no_dpd_no_fragmentation_vids() -> None:
    _, out, _ = answer(main_mode_1(MACOS_TRANSFORMS, []))
    assert vendor_ids(out[0]) == []


# ======================================================================================
# legacy-only offers, strongSwan's shape
# ======================================================================================


def test_3des_modp1024_only_refused_by_default() -> None:
    ep, out, events = answer(main_mode_1(LEGACY_ONLY, [VID_MS_NT5, VID_RFC3947]))
    assert len(out) == 1
    reply = out[0]
    assert reply.exch_type == 5 and reply.init_cookie == b"\xc1\x1e\x47" + bytes(5)
    notify = reply[ISAKMP_payload_Notify]
    assert notify.notify_msg_type == 14  # NO-PROPOSAL-CHOSEN
    fails = [e for e in events if isinstance(e, NegotiationFailed)]
    assert len(fails) == 1
    f = fails[0]
    assert (f.stage, f.reason, f.connection) == ("main_mode", "no_proposal_chosen", "l2tp-rw")
    assert "3des-sha1-modp1024" in f.detail  # what the peer offered
    assert "aes256-sha256-ecp384" in f.detail and "aes128-sha1-modp2048" in f.detail  # what we accept
    assert ep.sas(NOW) == []


def test_3des_modp1024_accepted_when_configured() -> None:
    cfg = responder_config(extra_ike=("3des-sha1-modp1024",))
    _, out, events = answer(main_mode_1(LEGACY_ONLY, [VID_MS_NT5, VID_RFC3947]), cfg)
    number, attrs = chosen(out[0])
    assert number == 1 and attrs == attrs_of(LEGACY_ONLY[0])
    assert main_mode_note(events)["proposal"] == "3des-sha1-modp1024"


def test_windows_still_gets_aes_when_3des_is_allowed() -> None:
    cfg = responder_config(extra_ike=("3des-sha1-modp1024",))
    _, out, _ = answer(main_mode_1(WINDOWS_TRANSFORMS, WINDOWS_VIDS), cfg)
    assert chosen(out[0]) == (1, attrs_of(WINDOWS_TRANSFORMS[0]))


def test_strongswan_incomplete_second_transform_answered_with_the_first() -> None:
    vids = [bytes.fromhex("882fe56d6fd20dbc2251613b2ebe5beb"), VID_RFC3947, VID_DPD]
    _, out, events = answer(main_mode_1(STRONGSWAN_TRANSFORMS, vids))
    assert len(out) == 1 and out[0].exch_type == 2
    number, attrs = chosen(out[0])
    assert number == 1 and attrs == attrs_of(STRONGSWAN_TRANSFORMS[0])
    assert main_mode_note(events)["proposal"] == "aes128-sha256-modp3072"
    assert not [e for e in events if isinstance(e, NegotiationFailed)]


def test_only_the_incomplete_transform_is_refused() -> None:
    _, out, events = answer(main_mode_1(STRONGSWAN_TRANSFORMS[1:], [VID_RFC3947]))
    assert out[0][ISAKMP_payload_Notify].notify_msg_type == 14
    assert [e.reason for e in events if isinstance(e, NegotiationFailed)] == ["no_proposal_chosen"]


@pytest.mark.parametrize("auth", ["RSA Sig", "XAUTHInitPreShared"])
def test_other_auth_methods_refused_for_a_psk_connection(auth: str) -> None:
    offer = [transform("AES-CBC", 256, "SHA", 20, 28800, auth=auth)]
    _, out, events = answer(main_mode_1(offer, [VID_RFC3947]))
    assert out[0][ISAKMP_payload_Notify].notify_msg_type == 14
    assert [e.reason for e in events if isinstance(e, NegotiationFailed)] == ["no_proposal_chosen"]


def test_retransmitted_offer_gets_the_same_answer() -> None:
    offer = main_mode_1(WINDOWS_TRANSFORMS, WINDOWS_VIDS)
    cfg = responder_config()
    ep = IkeV1Endpoint(GATEWAY, [cfg], random=seeded(5), timing=Timing())
    ep.receive(offer, 500, (CLIENT, 500), NOW)
    first = ep.datagrams_to_send()
    ep.receive(offer, 500, (CLIENT, 500), NOW + 4)
    again = ep.datagrams_to_send()
    assert [d.data for d in first] == [d.data for d in again]
    assert len(ep.sas(NOW + 4)) == 1


def test_two_windows_clients_behind_one_nat_get_separate_sas() -> None:
    cfg = responder_config()
    ep = IkeV1Endpoint(GATEWAY, [cfg], random=seeded(5), timing=Timing())
    ep.receive(main_mode_1(WINDOWS_TRANSFORMS, WINDOWS_VIDS, icookie=b"\x01" * 8), 500, (CLIENT, 40001), NOW)
    ep.receive(main_mode_1(WINDOWS_TRANSFORMS, WINDOWS_VIDS, icookie=b"\x02" * 8), 500, (CLIENT, 40002), NOW)
    out = ep.datagrams_to_send()
    assert sorted(d.remote for d in out) == [(CLIENT, 40001), (CLIENT, 40002)]
    cookies = {ISAKMP(d.data).resp_cookie for d in out}
    assert len(cookies) == 2
    assert sorted(s["remote"] for s in ep.sas(NOW)) == [f"{CLIENT}:40001", f"{CLIENT}:40002"]
