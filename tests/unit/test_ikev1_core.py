"""IKEv1 behaviour: our initiator against our responder, two sans-IO endpoints back to back.

Everything runs on the fake clock of ``ike_loopback.Wire`` with seeded randomness: Main
Mode with pre-shared keys and with RSA / ECDSA certificates, Quick Mode (tunnel and
transport, PFS, RESPONDER-LIFETIME), retransmission, Informational (DELETE,
INITIAL-CONTACT, DPD), rekeying of both phases, several clients behind one NAT, IKE
fragmentation, the refusal of Aggressive Mode and garbage on the wire.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ike_loopback import BRANCH, HQ, HQ_LAN, Wire, of_type, psk_pair, run_until, seeded, wire_digest

from gateway.config.model import Secret
from gateway.ike.events import (
    AuthFailed,
    ChildSaDown,
    ChildSaUp,
    Datagram,
    IkeSaDown,
    IkeSaUp,
    NegotiationFailed,
    Note,
    PeerDead,
)
from gateway.ike.identity import ANY, Identity
from gateway.ike.proposals import parse_child_proposal, parse_ike_proposal
from gateway.ike.settings import ChildConfig, PeerConfig, Timing
from gateway.ike.trafficselectors import TsRange
from gateway.ike.v1.constants import AuthMethod, ExchangeType, NotifyType, PayloadType, ProtocolId
from gateway.ike.v1.endpoint import IkeV1Endpoint
from gateway.ike.v1.message import (
    FragmentPayload,
    Header,
    NotifyPayload,
    Proposal,
    SaPayload,
    decode_payloads,
    encode_payloads,
)
from gateway.ike.v1.negotiation import phase1_transforms

IKE = "aes256-sha1-modp2048"
ESP = "aes128-sha1"
NAT_IP = "203.0.113.9"


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def v1_pair(ike: str = IKE, esp: str = ESP, **overrides: Any) -> tuple[PeerConfig, PeerConfig]:
    """HQ (initiator in most tests) and BRANCH, IKEv1 with a pre-shared key."""
    return psk_pair(version=1, ike=ike, esp=esp, **overrides)


def with_child(cfg: PeerConfig, **changes: Any) -> PeerConfig:
    return replace(cfg, child=replace(cfg.child, **changes))


def timing(**changes: Any) -> Timing:
    # certificates are judged at the real time: the fake clock starts at Wire.now
    return replace(Timing(), epoch=time.time() - Wire.now, **changes)


def v1_endpoint(cfg: PeerConfig | list[PeerConfig], seed: int, t: Timing | None = None) -> IkeV1Endpoint:
    cfgs = cfg if isinstance(cfg, list) else [cfg]
    return IkeV1Endpoint(cfgs[0].local_address, cfgs, random=seeded(seed), timing=t or timing())


def v1_wire(cfg_a: PeerConfig, cfg_b: PeerConfig, *, seed: int = 1, t: Timing | None = None) -> Wire:
    a = v1_endpoint(cfg_a, seed, t)
    b = v1_endpoint(cfg_b, seed + 1000, t)
    return Wire(a, b)  # type: ignore[arg-type]  # the wire only needs the sans-IO interface


def establish(cfg_a: PeerConfig | None = None, cfg_b: PeerConfig | None = None, *, seed: int = 1,
              t: Timing | None = None) -> Wire:
    if cfg_a is None or cfg_b is None:
        cfg_a, cfg_b = v1_pair()
    w = v1_wire(cfg_a, cfg_b, seed=seed, t=t)
    w.a.initiate(cfg_a.name, w.now)
    w.pump()
    return w


def up(w: Wire) -> tuple[ChildSaUp, ChildSaUp]:
    ups_a, ups_b = of_type(w.events_a, ChildSaUp), of_type(w.events_b, ChildSaUp)
    assert len(ups_a) == 1 and len(ups_b) == 1, (w.events_a, w.events_b)
    return ups_a[0], ups_b[0]


def assert_pair(ua: ChildSaUp, ub: ChildSaUp) -> None:
    """Two ends of one pair of IPsec SAs: SPIs and keys cross-match."""
    assert ua.spi_in == ub.spi_out and ua.spi_out == ub.spi_in
    assert ua.keys.encr_out == ub.keys.encr_in and ua.keys.encr_in == ub.keys.encr_out
    assert ua.keys.integ_out == ub.keys.integ_in and ua.keys.integ_in == ub.keys.integ_out
    assert ua.keys.encr_out != ua.keys.encr_in
    assert ua.keys.integ_out != ua.keys.integ_in or not ua.keys.integ_out  # AEAD: no integrity key
    assert ua.local_ts == ub.remote_ts and ua.remote_ts == ub.local_ts
    assert ua.suite == ub.suite and ua.mode == ub.mode


def notes(events: list[object], what: str) -> list[Note]:
    return [e for e in of_type(events, Note) if e.what == what]


def headers(log: list[tuple[str, Datagram]], tag: str | None = None) -> list[tuple[str, Datagram, Header]]:
    out = []
    for t, d in log:
        if (tag is None or t == tag) and len(d.data) >= 28:  # NAT-T keepalives are one octet
            out.append((t, d, Header.decode(d.data)))
    return out


def of_exchange(log: list[tuple[str, Datagram]], tag: str, exchange: int) -> list[Datagram]:
    return [d for _t, d, h in headers(log, tag) if h.exchange == exchange]


def clear_payloads(d: Datagram) -> list:
    h = Header.decode(d.data)
    assert not h.encrypted
    return decode_payloads(h.next_payload, d.data[28:h.length])


def children(ep: IkeV1Endpoint, now: float) -> list[dict[str, Any]]:
    return [c for sa in ep.sas(now) for c in sa["children"]]


def established(w: Wire) -> bool:
    return bool(of_type(w.events_a, ChildSaUp)) and bool(of_type(w.events_b, ChildSaUp))


# --------------------------------------------------------------------------------------
# certificates (made once per module: RSA keys take a while)
# --------------------------------------------------------------------------------------


@dataclass
class Pki:
    root: Any
    inter: Any
    other_root: Any
    trust: Any
    other_trust: Any
    directory: Any
    leaves: dict[tuple[str, str], Any] = field(default_factory=dict)

    def leaf(self, kind: str, address: str) -> Any:
        from appliance import pki

        key = (kind, address)
        if key not in self.leaves:
            self.leaves[key] = pki.issue(self.directory, self.inter, f"{kind}-{address}", kind=kind,
                                         san_ip=[address])
        return self.leaves[key]


@pytest.fixture(scope="module")
def certs_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    from appliance import pki
    from gateway.ike import certs

    d = tmp_path_factory.mktemp("ikev1pki")
    root = pki.make_ca(d, "Root", kind="ecdsa256")
    inter = pki.make_ca(d, "Inter", kind="ecdsa256", issuer=root)
    other = pki.make_ca(d, "Other", kind="ecdsa256")
    return Pki(root, inter, other, certs.TrustStore([root.certificate]),
               certs.TrustStore([other.certificate]), d)


def cert_pair(p: Pki, kind: str, **overrides: Any) -> tuple[PeerConfig, PeerConfig]:
    hq, branch = v1_pair(**overrides)
    out = []
    for cfg in (hq, branch):
        leaf = p.leaf(kind, cfg.local_address)
        out.append(replace(cfg, psk=None, certificate=leaf.certificate, private_key=leaf.private_key(),
                           intermediates=(p.inter.certificate,), trust=p.trust))
    return out[0], out[1]


# ======================================================================================
# Main Mode and Quick Mode
# ======================================================================================


def test_psk_main_mode_and_quick_mode() -> None:
    w = establish()
    ike_a, ike_b = of_type(w.events_a, IkeSaUp), of_type(w.events_b, IkeSaUp)
    assert len(ike_a) == 1 and len(ike_b) == 1
    assert ike_a[0].initiator and not ike_b[0].initiator
    assert ike_a[0].ike_sa == ike_b[0].ike_sa
    assert ike_a[0].auth == ike_b[0].auth == "psk"
    assert ike_a[0].suite == "aes256-sha1-modp2048 (IKEv1)"
    assert ike_a[0].remote_id == BRANCH and ike_b[0].remote_id == HQ
    ua, ub = up(w)
    assert_pair(ua, ub)
    assert ua.mode == "tunnel" and ua.protocol == 50 and ua.encap_remote_port is None
    assert ua.suite.encryption.name == "aes128" and ua.suite.integrity is not None
    assert ua.suite.integrity.name == "sha1" and ua.suite.dh is None
    assert len(ua.keys.encr_out) == 16 and len(ua.keys.integ_out) == 20
    assert ua.local_ts == (HQ_LAN,) and ua.rekey_of is None
    # Main Mode is six messages, Quick Mode three: nothing else went over the wire
    assert [(t, h.exchange) for t, _d, h in headers(w.log)] == (
        [("a>b", 2), ("b>a", 2)] * 3 + [("a>b", 32), ("b>a", 32), ("a>b", 32)])
    sa_a, sa_b = w.a.sas(w.now), w.b.sas(w.now)
    assert len(sa_a) == len(sa_b) == 1
    assert sa_a[0]["state"] == sa_b[0]["state"] == "established"
    assert sa_a[0]["version"] == 1 and len(sa_a[0]["children"]) == 1


@pytest.mark.parametrize(("ike", "esp", "encr_len", "integ_len"), [
    ("aes128-sha256-modp2048", "aes256-sha256", 32, 32),
    ("aes256-sha256-ecp256", "aes256gcm16", 36, 0),
    ("aes128-sha1-ecp384", "aes128-sha1", 16, 20),
    ("3des-sha1-modp2048", "3des-sha1", 24, 20),
])
def test_psk_other_suites(ike: str, esp: str, encr_len: int, integ_len: int) -> None:
    w = establish(*v1_pair(ike=ike, esp=esp))
    ua, ub = up(w)
    assert_pair(ua, ub)
    assert len(ua.keys.encr_out) == encr_len and len(ua.keys.integ_out) == integ_len


def test_keys_cross_match_and_differ_per_run() -> None:
    ua, ub = up(establish(seed=1))
    assert_pair(ua, ub)
    ua2, _ = up(establish(seed=2))
    assert ua2.keys.encr_out != ua.keys.encr_out


@pytest.mark.parametrize("kind", ["rsa", "ecdsa256", "ecdsa384"])
def test_certificates_with_intermediate(certs_pki: Pki, kind: str) -> None:
    w = establish(*cert_pair(certs_pki, kind))
    ua, ub = up(w)
    assert_pair(ua, ub)
    ike_a, ike_b = of_type(w.events_a, IkeSaUp)[0], of_type(w.events_b, IkeSaUp)[0]
    assert ike_a.auth.startswith("pubkey") and ike_b.auth.startswith("pubkey")
    method = {"rsa": AuthMethod.RSA_SIG, "ecdsa256": AuthMethod.ECDSA_256, "ecdsa384": AuthMethod.ECDSA_384}
    sa = clear_payloads(of_exchange(w.log, "b>a", ExchangeType.MAIN)[0])[0]
    assert isinstance(sa, SaPayload)
    attrs = {a.type: a.number for a in sa.proposals[0].transforms[0].attributes}
    assert attrs[3] == method[kind]  # Phase 1 attribute 3: authentication method
    assert not of_type(w.events_a + w.events_b, AuthFailed)


@pytest.mark.parametrize("distrusting", ["responder", "initiator"])
def test_untrusted_certificate_refused(certs_pki: Pki, distrusting: str) -> None:
    hq, branch = cert_pair(certs_pki, "ecdsa256")
    if distrusting == "responder":
        branch = replace(branch, trust=certs_pki.other_trust)
    else:
        hq = replace(hq, trust=certs_pki.other_trust)
    w = establish(hq, branch)
    events = w.events_b if distrusting == "responder" else w.events_a
    fails = of_type(events, AuthFailed)
    assert len(fails) == 1, events
    assert fails[0].reason.startswith("cert_"), fails[0]
    assert not of_type(w.events_a + w.events_b, ChildSaUp)
    ep = w.b if distrusting == "responder" else w.a
    assert ep.sas(w.now) == []


def _wrong_psk() -> Wire:
    hq, branch = v1_pair(psk_hq="one-secret-value", psk_branch="another-secret-value")
    return establish(hq, branch)


def test_wrong_psk_reported_as_bad_psk() -> None:
    w = _wrong_psk()
    w.advance(60, step=2)
    fails = of_type(w.events_b, AuthFailed)
    assert [f.reason for f in fails] == ["bad_psk"]


def test_wrong_psk_brings_nothing_up() -> None:
    w = _wrong_psk()
    assert not of_type(w.events_a + w.events_b, ChildSaUp)
    assert not of_type(w.events_b, IkeSaUp) and not of_type(w.events_a, IkeSaUp)
    w.advance(120, step=2)
    assert not of_type(w.events_a + w.events_b, ChildSaUp)
    assert not of_type(w.events_a + w.events_b, IkeSaUp)
    assert all(s["state"] != "established" for ep in (w.a, w.b) for s in ep.sas(w.now))


def test_phase1_proposal_mismatch() -> None:
    hq, _ = v1_pair(ike="aes256-sha1-modp2048")
    _, branch = v1_pair(ike="aes128-sha256-modp3072")
    w = establish(hq, branch)
    fails = of_type(w.events_b, NegotiationFailed)
    assert len(fails) == 1
    f = fails[0]
    assert (f.stage, f.reason) == ("main_mode", "no_proposal_chosen")
    assert "aes256-sha1-modp2048" in f.detail and "aes128-sha256-modp3072" in f.detail
    answer = of_exchange(w.log, "b>a", ExchangeType.INFORMATIONAL)
    assert len(answer) == 1
    notify = clear_payloads(answer[0])[0]
    assert isinstance(notify, NotifyPayload) and notify.notify_type == NotifyType.NO_PROPOSAL_CHOSEN
    assert w.b.sas(w.now) == [] and w.b.counters.get("no_proposal_chosen") == 1
    assert not of_type(w.events_a + w.events_b, IkeSaUp)


def test_phase1_proposal_mismatch_initiator_learns_at_once() -> None:
    hq, _ = v1_pair(ike="aes256-sha1-modp2048")
    _, branch = v1_pair(ike="aes128-sha256-modp3072")
    w = establish(hq, branch)
    fails = of_type(w.events_a, NegotiationFailed)
    assert len(fails) == 1 and fails[0].stage == "main_mode"
    assert "NO_PROPOSAL_CHOSEN" in fails[0].detail
    assert w.a.sas(w.now) == []


def test_phase2_proposal_mismatch() -> None:
    hq, branch = v1_pair(esp="aes128-sha1")
    branch = with_child(branch, proposals=(parse_child_proposal("aes256gcm16"),))
    w = establish(hq, branch)
    assert of_type(w.events_a, IkeSaUp) and of_type(w.events_b, IkeSaUp)
    fb = of_type(w.events_b, NegotiationFailed)
    assert [(f.stage, f.reason) for f in fb] == [("quick_mode", "no_proposal_chosen")]
    assert "aes128" in fb[0].detail and "aes256gcm16" in fb[0].detail
    fa = of_type(w.events_a, NegotiationFailed)
    assert [(f.stage, f.reason) for f in fa] == [("quick_mode", "no_proposal_chosen")]
    assert not of_type(w.events_a + w.events_b, ChildSaUp)


# ======================================================================================
# PFS, transport mode, lifetimes
# ======================================================================================


@pytest.mark.parametrize(("esp_a", "esp_b", "group"), [
    ("aes128-sha1-modp2048", "aes128-sha1-modp2048", "modp2048"),
    ("aes256-sha256-ecp256", "aes256-sha256-ecp256", "ecp256"),
    # a peer asking for PFS we did not configure gets it with its (strong) group
    ("aes128-sha1-modp3072", "aes128-sha1", "modp3072"),
])
def test_pfs(esp_a: str, esp_b: str, group: str) -> None:
    hq, branch = v1_pair(esp=esp_a)
    branch = with_child(branch, proposals=(parse_child_proposal(esp_b),))
    w = establish(hq, branch)
    ua, ub = up(w)
    assert_pair(ua, ub)
    assert ua.suite.dh is not None and ua.suite.dh.name == group


def test_pfs_keys_differ_from_no_pfs() -> None:
    """Same seeds, same nonces: only the Quick Mode's own DH makes the keys differ."""
    plain, _ = up(establish(*v1_pair(esp="aes128-sha1")))
    pfs, _ = up(establish(*v1_pair(esp="aes128-sha1-modp2048")))
    assert plain.keys.encr_out != pfs.keys.encr_out


@pytest.mark.parametrize(("esp_a", "esp_b"), [
    ("aes128-sha1-modp2048", "aes128-sha1-modp3072"),  # different groups
    ("aes128-sha1", "aes128-sha1-modp2048"),  # we require PFS, the initiator offers none
    ("aes128-sha1-modp1024", "aes128-sha1"),  # the initiator asks for a weak group
])
def test_pfs_mismatch(esp_a: str, esp_b: str) -> None:
    hq, branch = v1_pair(esp=esp_a)
    branch = with_child(branch, proposals=(parse_child_proposal(esp_b),))
    w = establish(hq, branch)
    assert of_type(w.events_a, IkeSaUp) and of_type(w.events_b, IkeSaUp)
    fb = of_type(w.events_b, NegotiationFailed)
    assert [(f.stage, f.reason) for f in fb] == [("quick_mode", "no_proposal_chosen")]
    fa = of_type(w.events_a, NegotiationFailed)
    assert [f.stage for f in fa] == ["quick_mode"]
    assert not of_type(w.events_a + w.events_b, ChildSaUp)


def l2tp(address: str) -> TsRange:
    ip = ipaddress.IPv4Address(address)
    return TsRange(ip, ip, 17, 1701, 1701)


def test_transport_mode_l2tp() -> None:
    hq, branch = v1_pair()
    hq = with_child(hq, mode="transport", local_ts=(l2tp(HQ),), remote_ts=(l2tp(BRANCH),))
    branch = with_child(branch, mode="transport", local_ts=(l2tp(BRANCH),), remote_ts=(l2tp(HQ),))
    w = establish(hq, branch)
    ua, ub = up(w)
    assert_pair(ua, ub)
    assert ua.mode == ub.mode == "transport"
    assert ua.local_ts == (l2tp(HQ),) and ua.remote_ts == (l2tp(BRANCH),)
    assert ub.local_ts == (l2tp(BRANCH),) and ub.remote_ts == (l2tp(HQ),)


def test_transport_against_tunnel_refused() -> None:
    hq, branch = v1_pair()
    hq = with_child(hq, mode="transport", local_ts=(l2tp(HQ),), remote_ts=(l2tp(BRANCH),))
    w = establish(hq, branch)
    assert not of_type(w.events_a + w.events_b, ChildSaUp)
    assert [f.stage for f in of_type(w.events_b, NegotiationFailed)] == ["quick_mode"]


def test_responder_lifetime_lower_than_initiators() -> None:
    hq, branch = v1_pair()
    hq, branch = with_child(hq, lifetime=7200), with_child(branch, lifetime=1800)
    w = establish(hq, branch)
    ua, ub = up(w)
    assert_pair(ua, ub)
    said = notes(w.events_b, "ikev1.responder_lifetime")
    assert len(said) == 1 and dict(said[0].fields)["proposed"] == "7200"
    assert dict(said[0].fields)["ours"] == "1800"
    heard = notes(w.events_a, "ikev1.responder_lifetime")
    assert len(heard) == 1 and dict(heard[0].fields)["lifetime"] == "1800"
    assert ua.lifetime == 1800 and ub.lifetime == 1800
    child = children(w.a, w.now)[0]
    assert child["rekey_in"] <= 1800 and child["expire_in"] <= 1800


def test_responder_lifetime_higher_is_not_announced() -> None:
    hq, branch = v1_pair()
    hq, branch = with_child(hq, lifetime=1800), with_child(branch, lifetime=7200)
    w = establish(hq, branch)
    ua, ub = up(w)
    assert not notes(w.events_a + w.events_b, "ikev1.responder_lifetime")
    assert ua.lifetime == ub.lifetime == 1800


# ======================================================================================
# loss, retransmission, replay
# ======================================================================================


def _lose_every_message_once(t: Timing) -> Wire:
    w = v1_wire(*v1_pair(), t=t)
    seen: set[bytes] = set()

    def drop_first(_tag: str, d: Datagram) -> bool:
        if d.data in seen:
            return False
        seen.add(d.data)
        return True

    w.drop = drop_first
    w.a.initiate("to-branch", w.now)
    w.pump()
    run_until(w, lambda: established(w), 300)
    return w


def _check_every_message_sent_twice(w: Wire) -> None:
    ua, ub = up(w)
    assert_pair(ua, ub)
    assert not of_type(w.events_a + w.events_b, NegotiationFailed)
    sent = [d.data for _t, d in w.log]
    assert len(set(sent)) == 9 and all(sent.count(s) >= 2 for s in sent)


def test_retransmission_when_every_message_is_lost_once_given_time() -> None:
    """Each of the nine messages lost once: retransmissions (of requests, and answers
    repeated for retransmitted requests) bring both phases up.  Main Mode needs about
    3 x (4 + 7.2) s here, so the half-open limit is raised above that."""
    _check_every_message_sent_twice(_lose_every_message_once(timing(half_open_timeout=120.0)))


def test_retransmission_when_every_message_is_lost_once() -> None:
    _check_every_message_sent_twice(_lose_every_message_once(timing()))


def test_lost_quick_mode_3_responder_retransmits_qm2() -> None:
    w = v1_wire(*v1_pair())
    quick_a: list[bytes] = []
    dropped: list[bytes] = []

    def drop_qm3(tag: str, d: Datagram) -> bool:
        if tag != "a>b" or Header.decode(d.data).exchange != ExchangeType.QUICK:
            return False
        if d.data not in quick_a:
            quick_a.append(d.data)
        if len(quick_a) == 2 and d.data == quick_a[1] and not dropped:
            dropped.append(d.data)
            return True
        return False

    w.drop = drop_qm3
    w.a.initiate("to-branch", w.now)
    w.pump()
    assert of_type(w.events_a, ChildSaUp) and not of_type(w.events_b, ChildSaUp)
    start = w.now
    done = run_until(w, lambda: bool(of_type(w.events_b, ChildSaUp)), 60)
    assert done is not None and done - start >= Timing().retransmit_timeout
    qm2 = of_exchange(w.log, "b>a", ExchangeType.QUICK)
    assert len(qm2) == 2 and qm2[0].data == qm2[1].data  # the same QM2, sent again
    qm3 = [d for d in of_exchange(w.log, "a>b", ExchangeType.QUICK) if d.data == dropped[0]]
    assert len(qm3) == 2  # answered again from the initiator's cache
    ua, ub = up(w)
    assert_pair(ua, ub)


def test_main_mode_gives_up_without_answers() -> None:
    w = v1_wire(*v1_pair())
    w.drop = lambda tag, d: True
    w.a.initiate("to-branch", w.now)
    w.pump()
    # like IKEv2, an initiator gives up by retransmission count: 4 s x 1.8^n, 6 sends ~ 165 s
    run_until(w, lambda: bool(of_type(w.events_a, NegotiationFailed)), 200, step=1)
    fails = of_type(w.events_a, NegotiationFailed)
    assert fails and fails[0].stage == "main_mode" and fails[0].reason == "timeout"
    first = next(d for t, d in w.log if t == "a>b").data
    assert sum(1 for t, d in w.log if t == "a>b" and d.data == first) >= 2


def _replay_run(seed: int) -> str:
    w = v1_wire(*v1_pair(esp="aes128-sha1-modp2048"), seed=seed)
    w.a.initiate("to-branch", w.now)
    w.pump()
    w.a.rekey("to-branch", w.now)
    w.pump()
    w.a.terminate("to-branch", w.now)
    w.pump()
    assert len(of_type(w.events_b, ChildSaUp)) == 2
    return wire_digest(w.log)


def test_byte_for_byte_replay_with_seeded_randomness() -> None:
    assert _replay_run(7) == _replay_run(7)
    assert _replay_run(7) != _replay_run(8)


# ======================================================================================
# Informational: DPD, DELETE, INITIAL-CONTACT
# ======================================================================================


def test_dpd_answered_keeps_the_sa() -> None:
    hq, branch = v1_pair(dpd_interval=10.0, dpd_timeout=30.0, dpd_action="clear")
    w = establish(hq, branch)
    w.advance(100, step=1)
    assert not of_type(w.events_a + w.events_b, PeerDead)
    assert len(of_exchange(w.log, "a>b", ExchangeType.INFORMATIONAL)) >= 5  # R-U-THERE
    assert len(of_exchange(w.log, "b>a", ExchangeType.INFORMATIONAL)) >= 5  # R-U-THERE-ACK
    assert len(w.a.sas(w.now)) == 1 and len(children(w.a, w.now)) == 1


def test_dpd_peer_dead_after_interval_and_timeout() -> None:
    hq, branch = v1_pair(dpd_interval=10.0, dpd_timeout=30.0, dpd_action="clear")
    w = establish(hq, branch)
    start = w.now
    w.drop = lambda tag, d: True  # the peer is gone
    dead = run_until(w, lambda: bool(of_type(w.events_a, PeerDead)), 120)
    assert dead is not None
    assert 40.0 <= dead - start <= 41.0, dead - start
    pd = of_type(w.events_a, PeerDead)
    assert len(pd) == 1 and pd[0].action == "clear" and pd[0].remote == f"{BRANCH}:500"
    sent = [d for _t, d, h in headers(w.log, "a>b") if h.exchange == ExchangeType.INFORMATIONAL]
    assert len(sent) >= 2  # R-U-THERE, retransmitted
    ua, _ = up(w)
    assert [d.spi_in for d in of_type(w.events_a, ChildSaDown)] == [ua.spi_in]
    assert w.a.sas(w.now) == []


def test_delete_of_an_ipsec_sa() -> None:
    w = establish()
    ua, ub = up(w)
    sa = w.a.ike_sa_of_child(ua.spi_in)
    assert sa is not None
    child = next(c for c in sa.children if c.spi_in == ua.spi_in)
    sa.delete_child(child, "operator")
    w.pump()
    da, db = of_type(w.events_a, ChildSaDown), of_type(w.events_b, ChildSaDown)
    assert [(d.spi_in, d.spi_out) for d in da] == [(ua.spi_in, ua.spi_out)]
    assert [(d.spi_in, d.spi_out, d.reason) for d in db] == [(ub.spi_in, ub.spi_out, "deleted by peer")]
    # the ISAKMP SA stays
    assert [s["state"] for s in w.a.sas(w.now)] == ["established"]
    assert [s["state"] for s in w.b.sas(w.now)] == ["established"]
    assert children(w.a, w.now) == [] and children(w.b, w.now) == []
    assert not of_type(w.events_a + w.events_b, IkeSaDown)


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_delete_of_the_isakmp_sa(side: str) -> None:
    w = establish()
    ua, ub = up(w)
    if side == "initiator":
        assert w.a.terminate("to-branch", w.now) == 1
    else:
        assert w.b.terminate("to-hq", w.now) == 1
    w.pump()
    assert [d.spi_in for d in of_type(w.events_a, ChildSaDown)] == [ua.spi_in]
    assert [d.spi_in for d in of_type(w.events_b, ChildSaDown)] == [ub.spi_in]
    peer_events = w.events_b if side == "initiator" else w.events_a
    assert [d.reason for d in of_type(peer_events, IkeSaDown)] == ["deleted by peer"]
    assert [d.reason for d in of_type(peer_events, ChildSaDown)] == ["deleted by peer"]
    assert w.a.sas(w.now) == [] and w.b.sas(w.now) == []
    w.advance(30, step=1)
    if side == "initiator":  # terminated: no keep-up
        assert len(of_type(w.events_a, IkeSaUp)) == 1


def test_initial_contact_replaces_the_old_sa() -> None:
    hq, branch = v1_pair()
    w = establish(hq, branch)
    _, ub_old = up(w)
    old_ike = of_type(w.events_b, IkeSaUp)[0].ike_sa
    # HQ reboots: a new endpoint (its state lost) connects again to the same BRANCH
    w2 = Wire(v1_endpoint(hq, 77), w.b, now=w.now + 60)  # type: ignore[arg-type]
    w2.a.initiate("to-branch", w2.now)
    w2.pump()
    ups = of_type(w2.events_b, ChildSaUp)
    assert len(ups) == 1 and ups[0].rekey_of is None
    downs = of_type(w2.events_b, ChildSaDown)
    assert [d.spi_in for d in downs] == [ub_old.spi_in]
    assert "INITIAL-CONTACT" in downs[0].reason
    assert [d.ike_sa for d in of_type(w2.events_b, IkeSaDown)] == [old_ike]
    sas = w2.b.sas(w2.now)
    assert len(sas) == 1 and sas[0]["ike_sa"] != old_ike and len(sas[0]["children"]) == 1


def test_without_initial_contact_the_old_sa_stays() -> None:
    hq, branch = v1_pair(initial_contact=False)
    w = establish(hq, branch)
    w2 = Wire(v1_endpoint(hq, 77), w.b, now=w.now + 60)  # type: ignore[arg-type]
    w2.a.initiate("to-branch", w2.now)
    w2.pump()
    assert not of_type(w2.events_b, ChildSaDown)
    assert len(w2.b.sas(w2.now)) == 2


# ======================================================================================
# rekeying
# ======================================================================================


def _make_before_break(events: list[object], old_spi: int) -> ChildSaUp:
    new = [i for i, e in enumerate(events) if isinstance(e, ChildSaUp) and e.rekey_of == old_spi]
    gone = [i for i, e in enumerate(events) if isinstance(e, ChildSaDown) and e.spi_in == old_spi]
    assert len(new) == 1 and len(gone) == 1, events
    assert new[0] < gone[0]
    ev = events[new[0]]
    assert isinstance(ev, ChildSaUp)
    return ev


def test_ipsec_sa_rekey_by_lifetime_make_before_break() -> None:
    hq, branch = v1_pair()
    hq, branch = with_child(hq, lifetime=600), with_child(branch, lifetime=600)
    w = establish(hq, branch)
    ua, ub = up(w)
    w.advance(610, step=2)
    new_a = _make_before_break(w.events_a, ua.spi_in)
    new_b = _make_before_break(w.events_b, ub.spi_in)
    assert_pair(new_a, new_b)
    assert new_a.spi_in != ua.spi_in and new_a.keys.encr_out != ua.keys.encr_out
    assert new_a.tunnel == ua.tunnel and new_b.tunnel == ub.tunnel
    assert [c["spi_in"] for c in children(w.a, w.now)] == [f"0x{new_a.spi_in:08x}"]
    assert [c["spi_in"] for c in children(w.b, w.now)] == [f"0x{new_b.spi_in:08x}"]
    assert len(of_type(w.events_a, IkeSaUp)) == 1  # Phase 1 untouched
    assert not of_type(w.events_a + w.events_b, NegotiationFailed)


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_ipsec_sa_rekey_on_demand(side: str) -> None:
    w = establish(*v1_pair(esp="aes128-sha1-modp2048"))
    ua, ub = up(w)
    ep, name = (w.a, "to-branch") if side == "initiator" else (w.b, "to-hq")
    assert ep.rekey(name, w.now) == 1
    w.pump()
    w.advance(10, step=1)
    new_a = _make_before_break(w.events_a, ua.spi_in)
    new_b = _make_before_break(w.events_b, ub.spi_in)
    assert_pair(new_a, new_b)
    assert new_a.suite.dh is not None  # PFS again on the rekey
    assert len(children(w.a, w.now)) == 1 and len(children(w.b, w.now)) == 1


def _phase1_rekey() -> tuple[Wire, ChildSaUp, ChildSaUp]:
    hq, branch = v1_pair(ike_lifetime=300)
    w = establish(hq, branch)
    ua, ub = up(w)
    w.advance(310, step=2)
    assert len(of_type(w.events_a, IkeSaUp)) == 2 and len(of_type(w.events_b, IkeSaUp)) == 2
    return w, ua, ub


def test_phase1_rekey_initiator_moves_children() -> None:
    w, ua, _ = _phase1_rekey()
    new_ike = of_type(w.events_a, IkeSaUp)[1].ike_sa
    assert not of_type(w.events_a, ChildSaDown)
    assert len(of_type(w.events_a, ChildSaUp)) == 1
    sas = w.a.sas(w.now)
    assert [s["ike_sa"] for s in sas] == [new_ike]
    assert [c["spi_in"] for c in sas[0]["children"]] == [f"0x{ua.spi_in:08x}"]
    assert w.a.ike_sa_of_child(ua.spi_in) is not None
    assert notes(w.events_a, "ikev1.rekeyed")


def test_phase1_rekey_responder_moves_children() -> None:
    w, _, ub = _phase1_rekey()
    new_ike = of_type(w.events_b, IkeSaUp)[1].ike_sa
    assert not of_type(w.events_b, ChildSaDown), of_type(w.events_b, ChildSaDown)
    assert not of_type(w.events_b, IkeSaDown) and notes(w.events_b, "ikev1.rekeyed")
    sas = w.b.sas(w.now)
    assert [s["ike_sa"] for s in sas] == [new_ike]
    assert [c["spi_in"] for c in sas[0]["children"]] == [f"0x{ub.spi_in:08x}"]


def test_moved_children_rekey_and_delete_through_the_new_isakmp_sa() -> None:
    w, ua, ub = _phase1_rekey()
    new_ike = of_type(w.events_a, IkeSaUp)[1].ike_sa
    assert w.a.rekey("to-branch", w.now) == 1
    w.pump()
    w.advance(10, step=1)
    new_a = _make_before_break(w.events_a, ua.spi_in)
    new_b = _make_before_break(w.events_b, ub.spi_in)
    assert_pair(new_a, new_b)
    assert new_a.ike_sa == new_b.ike_sa == new_ike
    w.a.terminate("to-branch", w.now)
    w.pump()
    assert [d.spi_in for d in of_type(w.events_b, ChildSaDown)] == [ub.spi_in, new_b.spi_in]
    assert w.a.sas(w.now) == [] and w.b.sas(w.now) == []


def _isakmp_sas(ep: IkeV1Endpoint) -> list[Any]:
    return [sa for sa in ep._sas.values() if sa.up and not sa.replaced]


def test_phase1_rekey_waits_for_a_quick_mode_under_way() -> None:
    """The peer adopts the IPsec SAs the old ISAKMP SA has when the new one is up: one that
    a Quick Mode still running on the old SA makes would stay behind and die with it."""
    w = establish(*v1_pair())
    ua, ub = up(w)
    assert w.a.rekey("to-branch", w.now) == 1  # a Quick Mode rekey, not pumped yet
    assert w.a.rekey("to-branch", w.now, ike=True) == 1
    w.pump()
    assert notes(w.events_a, "ikev1.rekey_deferred")
    assert len(of_type(w.events_a, IkeSaUp)) == 1  # no Main Mode while the Quick Mode ran
    w.advance(8, step=0.5)
    assert len(of_type(w.events_a, IkeSaUp)) == 2 and len(of_type(w.events_b, IkeSaUp)) == 2
    new_a = _make_before_break(w.events_a, ua.spi_in)
    new_b = _make_before_break(w.events_b, ub.spi_in)
    assert_pair(new_a, new_b)
    for ep, spi in ((w.a, new_a.spi_in), (w.b, new_b.spi_in)):
        sas = ep.sas(w.now)
        assert len(sas) == 1 and [c["spi_in"] for c in sas[0]["children"]] == [f"0x{spi:08x}"], sas


def test_quick_mode_rekeys_due_during_a_phase1_rekey_run_on_the_new_sa() -> None:
    w = establish(*v1_pair())
    ua, ub = up(w)
    old = _isakmp_sas(w.a)[0]
    assert w.a.rekey("to-branch", w.now, ike=True) == 1  # Main Mode 1 sent, not pumped
    old.children[0].rekey_at = w.now  # the IPsec SA falls due meanwhile
    assert w.a.get_timer() != w.now  # no busy timer while it waits
    w.a.handle_timer(w.now)
    assert not old.quick  # no Quick Mode on the SA being replaced
    w.pump()
    new_ike = of_type(w.events_a, IkeSaUp)[1].ike_sa
    w.advance(8, step=0.5)
    new_a = _make_before_break(w.events_a, ua.spi_in)
    new_b = _make_before_break(w.events_b, ub.spi_in)
    assert_pair(new_a, new_b)
    assert new_a.ike_sa == new_b.ike_sa == new_ike
    assert len(w.a.sas(w.now)) == 1 and len(w.b.sas(w.now)) == 1


def test_phase1_rekey_of_a_failed_replacement_lets_quick_mode_rekeys_resume() -> None:
    w = establish(*v1_pair(dpd_interval=None))
    ua, _ = up(w)
    w.drop = lambda tag, d: tag == "a>b"  # the new Main Mode never reaches the peer
    old = _isakmp_sas(w.a)[0]
    assert w.a.rekey("to-branch", w.now, ike=True) == 1
    old.children[0].rekey_at = w.now + 1
    w.advance(5, step=0.5)
    assert old.replacing and not old.quick
    w.advance(250, step=2)  # the Main Mode gives up after its retransmissions
    assert not old.replacing
    w.drop = None
    w.advance(30, step=0.5)
    assert _make_before_break(w.events_a, ua.spi_in).ike_sa == old.ident


# ======================================================================================
# several clients behind one NAT
# ======================================================================================


@dataclass
class NatWire:
    """A responder and clients behind one NAT (NAT_IP); each client's flows get their own
    public ports (500 -> 40001, 40002, ...; 4500 -> 41001, ...)."""

    server: IkeV1Endpoint
    clients: list[IkeV1Endpoint]
    now: float = 1000.0
    events: dict[str, list[object]] = field(default_factory=dict)

    def public_port(self, index: int, local_port: int) -> int:
        return (40001 if local_port == 500 else 41001) + index

    def pump(self, rounds: int = 60) -> None:
        for _ in range(rounds):
            moved = False
            for i, c in enumerate(self.clients):
                for d in c.datagrams_to_send():
                    moved = True
                    assert d.remote[0] == self.server.local_address
                    self.server.receive(d.data, d.remote[1], (NAT_IP, self.public_port(i, d.local_port)),
                                        self.now)
            for d in self.server.datagrams_to_send():
                moved = True
                assert d.remote[0] == NAT_IP
                i, local = next((i, lp) for i in range(len(self.clients)) for lp in (500, 4500)
                                if self.public_port(i, lp) == d.remote[1])
                self.clients[i].receive(d.data, local, (self.server.local_address, d.local_port), self.now)
            for ep in (self.server, *self.clients):
                out = self.events.setdefault(ep.local_address, [])
                while (ev := ep.next_event()) is not None:
                    out.append(ev)
            if not moved:
                return


def _nat_setup(mode: str) -> NatWire:
    ike, esp = (parse_ike_proposal(IKE),), (parse_child_proposal(ESP),)
    psk = Secret(b"road-warrior-psk")
    if mode == "transport":
        server_child = ChildConfig("l2tp", (l2tp(HQ),), (TsRange(ipaddress.IPv4Address(0),
                                                                 ipaddress.IPv4Address("255.255.255.255"),
                                                                 17, 1701, 1701),), esp, mode="transport")
    else:
        clients_net = TsRange.of_network(ipaddress.IPv4Network("10.0.0.0/24"))
        server_child = ChildConfig("net", (HQ_LAN,), (clients_net,), esp)
    server_cfg = PeerConfig("rw", HQ, None, ike, server_child, Identity.parse(HQ), ANY, psk=psk,
                            dpd_interval=None, version=1)
    server = v1_endpoint(server_cfg, 500)
    clients = []
    for n, private in enumerate(("10.0.0.2", "10.0.0.3")):
        if mode == "transport":
            child = ChildConfig("l2tp", (l2tp(private),), (l2tp(HQ),), esp, mode="transport")
        else:
            child = ChildConfig("net", (TsRange.of_network(ipaddress.IPv4Network(f"{private}/32")),),
                                (HQ_LAN,), esp)
        cfg = PeerConfig("to-gw", private, HQ, ike, child, Identity.parse(private), Identity.parse(HQ),
                         psk=psk, dpd_interval=None, version=1)
        clients.append(v1_endpoint(cfg, 600 + n))
    return NatWire(server, clients)


@pytest.mark.parametrize("mode", ["transport", "tunnel"])
def test_several_clients_behind_one_nat(mode: str) -> None:
    nw = _nat_setup(mode)
    for c in nw.clients:
        c.initiate("to-gw", nw.now)
    nw.pump()
    server_ev = nw.events[HQ]
    assert not of_type(server_ev, NegotiationFailed) and not of_type(server_ev, AuthFailed)
    ups = of_type(server_ev, ChildSaUp)
    assert len(ups) == 2
    assert ups[0].tunnel != ups[1].tunnel
    assert {u.encap_remote_port for u in ups} == {41001, 41002}
    assert {u.remote for u in ups} == {NAT_IP}
    assert len({u.spi_in for u in ups}) == 2
    sas = nw.server.sas(nw.now)
    assert sorted(s["remote"] for s in sas) == [f"{NAT_IP}:41001", f"{NAT_IP}:41002"]
    assert all(len(s["children"]) == 1 and s["nat_remote"] and s["encap"] for s in sas)
    for c in nw.clients:
        cu = of_type(nw.events[c.local_address], ChildSaUp)
        assert len(cu) == 1 and cu[0].encap_remote_port == 4500
        ike_up = of_type(nw.events[c.local_address], IkeSaUp)
        assert ike_up[0].nat_local
        mine = next(u for u in ups if u.spi_in == cu[0].spi_out)
        assert cu[0].keys.encr_out == mine.keys.encr_in and cu[0].keys.encr_in == mine.keys.encr_out
        assert cu[0].keys.integ_out == mine.keys.integ_in
        assert mine.mode == cu[0].mode == mode
        if mode == "transport":
            assert mine.remote_ts == (l2tp(NAT_IP),)
            assert mine.local_ts == (l2tp(HQ),)
    # the clients floated to 4500 after message 4
    assert notes(nw.events["10.0.0.2"], "ikev1.float") and notes(nw.events["10.0.0.3"], "ikev1.float")


def test_two_clients_behind_one_nat_deleting_one_keeps_the_other() -> None:
    nw = _nat_setup("transport")
    for c in nw.clients:
        c.initiate("to-gw", nw.now)
    nw.pump()
    first = of_type(nw.events["10.0.0.2"], ChildSaUp)[0]
    nw.clients[0].terminate("to-gw", nw.now)
    nw.pump()
    downs = of_type(nw.events[HQ], ChildSaDown)
    assert [d.spi_in for d in downs] == [first.spi_out]
    sas = nw.server.sas(nw.now)
    assert [s["remote"] for s in sas] == [f"{NAT_IP}:41002"] and len(sas[0]["children"]) == 1


def test_open_connection_rekeys_phase1_toward_each_peers_mapping() -> None:
    """A responder for any peer (the clients behind a NAT) rekeys Phase 1 with a new Main Mode
    from port 4500 to the address and port each client's SA uses: the NAT's mapping."""
    nw = _nat_setup("tunnel")
    for c in nw.clients:
        c.initiate("to-gw", nw.now)
    nw.pump()
    before = {s["remote"]: s for s in nw.server.sas(nw.now)}
    assert nw.server.rekey("rw", nw.now, ike=True) == 2
    nw.pump()
    assert len(notes(nw.events[HQ], "ikev1.rekeyed")) == 2
    after = {s["remote"]: s for s in nw.server.sas(nw.now)}
    assert sorted(after) == sorted(before) == [f"{NAT_IP}:41001", f"{NAT_IP}:41002"]
    for remote, sa in after.items():
        assert sa["ike_sa"] != before[remote]["ike_sa"] and sa["initiator"]
        assert sa["children"] == before[remote]["children"]
    for c in nw.clients:
        sas = c.sas(nw.now)
        assert len(sas) == 1 and not sas[0]["initiator"] and len(sas[0]["children"]) == 1
    assert not of_type(nw.events[HQ], ChildSaDown) and not of_type(nw.events[HQ], NegotiationFailed)


# ======================================================================================
# IKE fragmentation
# ======================================================================================


def test_fragmentation_with_certificates(certs_pki: Pki) -> None:
    w = establish(*cert_pair(certs_pki, "rsa", fragment_size=576))
    ua, ub = up(w)
    assert_pair(ua, ub)
    for tag in ("a>b", "b>a"):
        frags = [(d, h) for _t, d, h in headers(w.log, tag) if h.next_payload == PayloadType.FRAGMENT]
        assert len(frags) >= 2, tag
        parsed = [decode_payloads(h.next_payload, d.data[28:h.length])[0] for d, h in frags]
        assert all(isinstance(p, FragmentPayload) for p in parsed)
        assert [p.number for p in parsed] == list(range(1, len(parsed) + 1))
        assert [p.last for p in parsed] == [False] * (len(parsed) - 1) + [True]
        assert all(len(d.data) + 28 <= 576 for d, _h in frags)
    assert notes(w.events_a, "ikev1.fragmented") and notes(w.events_b, "ikev1.fragmented")


def test_fragmentation_survives_loss_of_one_fragment(certs_pki: Pki) -> None:
    w = v1_wire(*cert_pair(certs_pki, "rsa", fragment_size=576))
    lost: list[bytes] = []

    def drop_one_fragment(tag: str, d: Datagram) -> bool:
        if not lost and tag == "b>a" and Header.decode(d.data).next_payload == PayloadType.FRAGMENT:
            lost.append(d.data)
            return True
        return False

    w.drop = drop_one_fragment
    w.a.initiate("to-branch", w.now)
    w.pump()
    assert run_until(w, lambda: established(w), 60) is not None
    assert_pair(*up(w))


def test_no_fragments_when_messages_fit(certs_pki: Pki) -> None:
    w = establish(*cert_pair(certs_pki, "ecdsa256"))
    assert not [h for _t, _d, h in headers(w.log) if h.next_payload == PayloadType.FRAGMENT]


# ======================================================================================
# Aggressive Mode, garbage
# ======================================================================================


def _aggressive_mode_packet() -> bytes:
    transforms = phase1_transforms((parse_ike_proposal(IKE),), AuthMethod.PSK, 28800)
    first, body = encode_payloads([SaPayload([Proposal(1, ProtocolId.ISAKMP, b"", transforms)])])
    header = Header(b"\x11" * 8, bytes(8), first, ExchangeType.AGGRESSIVE, 0, 0, 28 + len(body))
    return header.encode() + body


def test_aggressive_mode_refused() -> None:
    _, branch = v1_pair()
    b = v1_endpoint(branch, 3)
    b.receive(_aggressive_mode_packet(), 500, (HQ, 500), 1000.0)
    assert b.counters.get("aggressive_mode_refused") == 1
    events = []
    while (ev := b.next_event()) is not None:
        events.append(ev)
    refused = notes(events, "ikev1.aggressive_mode_refused")
    assert len(refused) == 1 and refused[0].level == "warning"
    assert dict(refused[0].fields)["peer"] == f"{HQ}:500"
    assert b.sas(1000.0) == []
    out = b.datagrams_to_send()
    assert len(out) == 1 and out[0].remote == (HQ, 500)
    h = Header.decode(out[0].data)
    assert h.exchange == ExchangeType.INFORMATIONAL and h.icookie == b"\x11" * 8
    notify = clear_payloads(out[0])[0]
    assert isinstance(notify, NotifyPayload) and notify.notify_type == NotifyType.INVALID_EXCHANGE_TYPE
    b.receive(_aggressive_mode_packet(), 500, (HQ, 500), 1001.0)
    assert b.counters["aggressive_mode_refused"] == 2


FUZZ_ESP = "aes128-sha1-modp2048"


@pytest.fixture(scope="module")
def recorded() -> list[tuple[str, Datagram]]:
    """A complete exchange (Main Mode, Quick Mode with PFS, DPD, deletes) to mutate.  The
    fuzz targets below are built with the same seed, so mutations of these messages carry
    the cookies (and meet the keys) of live ISAKMP SAs."""
    w = establish(*v1_pair(dpd_interval=5.0, esp=FUZZ_ESP), seed=1)
    w.advance(6, step=1)
    w.a.terminate("to-branch", w.now)
    w.pump()
    return list(w.log)


class _Targets:
    """Long-lived endpoints in the states mutations can reach (shared by examples): an
    established pair, a pair stopped in the middle of Main Mode (message 5 lost), and a
    responder that has seen nothing yet."""

    def __init__(self) -> None:
        cfgs = v1_pair(dpd_interval=5.0, esp=FUZZ_ESP)
        self.w = establish(*cfgs, seed=1)
        self.w.advance(6, step=1)
        self.half = v1_wire(*cfgs, seed=1)
        self.half.drop = lambda tag, d: tag == "a>b" and Header.decode(d.data).encrypted
        self.half.a.initiate("to-branch", self.half.now)
        self.half.pump()
        self.fresh = v1_endpoint(cfgs[1], 9)
        self.now = self.w.now

    def feed(self, data: bytes, port: int = 500) -> None:
        self.now += 0.25
        for ep, remote in ((self.w.a, (BRANCH, 500)), (self.w.b, (HQ, 500)), (self.half.a, (BRANCH, 500)),
                           (self.half.b, (HQ, 500)), (self.fresh, (HQ, 500))):
            ep.receive(data, port, remote, self.now)
            t = ep.get_timer()
            if t is not None and t <= self.now:
                ep.handle_timer(self.now)
            ep.datagrams_to_send()
            while ep.next_event() is not None:
                pass


_TARGETS: list[_Targets] = []


def targets() -> _Targets:
    if not _TARGETS or not _TARGETS[0].w.a.sas(_TARGETS[0].w.now):
        _TARGETS[:] = [_Targets()]
    return _TARGETS[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    targets().feed(data)
    targets().feed(data, 4500)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_bodies_under_real_cookies_never_raise(data: st.DataObject) -> None:
    t = targets()
    ike = t.w.a.sas(t.w.now)[0]["ike_sa"]
    icookie, rcookie = bytes.fromhex(ike[:16]), bytes.fromhex(ike[19:35])
    first = data.draw(st.sampled_from([0, 1, 4, 5, 8, 10, 11, 12, 13, 20, 130, 132, 200]))
    exchange = data.draw(st.sampled_from([2, 4, 5, 6, 32, 99]))
    flags = data.draw(st.integers(0, 7))
    mid = data.draw(st.sampled_from([0, 1, 0xDEADBEEF]))
    body = data.draw(st.binary(max_size=200))
    header = Header(icookie, rcookie, first, exchange, flags, mid, 28 + len(body)).encode()
    t.feed(header + body)


def _mutations(recorded: list[tuple[str, Datagram]]) -> Iterator[bytes]:
    for _tag, d in recorded:
        data = d.data
        yield data[: len(data) // 2]
        yield data[:-1]
        yield data + b"\x00" * 4


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_messages_never_raise(recorded: list[tuple[str, Datagram]], data: st.DataObject) -> None:
    _tag, d = data.draw(st.sampled_from(recorded))
    msg = bytearray(d.data)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(msg) - 1))
        msg[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        msg = msg[: data.draw(st.integers(0, len(msg)))]
    targets().feed(bytes(msg))


def test_truncated_and_padded_messages_never_raise(recorded: list[tuple[str, Datagram]]) -> None:
    for m in _mutations(recorded):
        targets().feed(m)


def test_payload_lengths_lying() -> None:
    """A Main Mode message 1 whose payload lengths point past the end is counted, not fatal."""
    transforms = phase1_transforms((parse_ike_proposal(IKE),), AuthMethod.PSK, 3600)
    first, body = encode_payloads([SaPayload([Proposal(1, ProtocolId.ISAKMP, b"", transforms)])])
    bad = body[:2] + struct.pack("!H", len(body) + 40) + body[4:]
    header = Header(os.urandom(8), bytes(8), first, ExchangeType.MAIN, 0, 0, 28 + len(bad))
    b = v1_endpoint(v1_pair()[1], 4)
    b.receive(header.encode() + bad, 500, (HQ, 500), 1.0)
    assert b.counters.get("malformed") == 1 and b.sas(1.0) == []

