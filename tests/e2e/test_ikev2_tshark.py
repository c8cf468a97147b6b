"""End to end: tshark dissects every IKEv2 message we send and, given our keys, decrypts them.

Two IKEv2 endpoints of the sans-IO core run back to back (``tests/unit/ike_loopback.py``,
seeded randomness, a fake clock) through IKE_SA_INIT (COOKIE and INVALID_KE_PAYLOAD
retries), IKE_AUTH with PSK (also split into SKF fragments, RFC 7383), CREATE_CHILD_SA
(CHILD_SA rekey, IKE SA rekey, either end), INFORMATIONAL (DPD, CHILD_SA and IKE SA
deletes) and, behind a simulated NAT, on port 4500 with NAT-T keepalives.  Every
datagram goes into a pcap with IPv4/UDP headers as it would be on the wire: from or to
port 4500 with the 4-octet non-ESP marker in front (RFC 3948 2.2), which the shell, not
the core, adds; a NAT-T keepalive (one 0xff octet) as is.

tshark reads the capture with its IKEv2 decryption table filled from our IKE SAs (every
one of them: the rekeyed SA's keys come from the successor IkeSa).  It must flag nothing
(no malformed packet, no expert info of severity warning or above: a bad ICV or AEAD tag,
bad padding or a bad payload length would be one), show each message with the exchange
type, SPIs and message ID we sent, verify the ICV and decrypt every SK and SKF payload,
and show what is inside: IDi/IDr, AUTH and the traffic selectors of IKE_AUTH (reassembled
from the SKF fragments: tshark 4.0 does RFC 7383 reassembly), the REKEY_SA notify, the
IKE SA proposal with its new SPI, the Delete payloads, the empty DPD message.  With wrong
keys the same capture must show bad ICVs: the decryption is really keyed.

tshark 4.0's table (``uat:ikev2_decryption_table``), one row per IKE SA:
``SPIi,SPIr,SK_ei,SK_er,"encryption",SK_ai,SK_ar,"integrity"`` with the SPIs and keys as
bare hex (a quoted value would be read as a text string) and the algorithms by their
tshark names; AES-GCM keys include the 4-octet salt (36 octets for AES-GCM-256), and an
AEAD suite leaves SK_ai/SK_ar empty with integrity "NONE [RFC4306]".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.packet import Raw
from scapy.utils import wrpcap

from gateway.ike.identity import Identity
from gateway.ike.proposals import NegotiatedSuite, parse_ike_proposal
from gateway.ike.v2.endpoint import IkeV2Endpoint
from gateway.ike.v2.ikesa import IkeSa, State
from gateway.ike.v2.keymat import IkeSaKeys

_UNIT = str(Path(__file__).resolve().parents[1] / "unit")
if _UNIT not in sys.path:
    sys.path.insert(0, _UNIT)

from ike_loopback import BRANCH, HQ, Wire, psk_pair, seeded  # noqa: E402

TSHARK = shutil.which("tshark")

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(TSHARK is None, reason="tshark (Wireshark) is not installed"),
]

NAT_PUBLIC = "203.0.113.7"  # the NAT in front of HQ in the NAT scenario
NAT_PORT_OFFSET = 40000  # the NAT maps HQ's port 500 to 40500, 4500 to 44500
NATT_PORT = 4500
NON_ESP_MARKER = bytes(4)
KEEPALIVE = b"\xff"
HQ_ID = "@hq.gateway.with-a-long-identity-to-need-ike-fragments.example.net"
BRANCH_ID = "@branch.gateway.example.net"
DPD_INTERVAL = 30.0

IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL = 34, 35, 36, 37
SK, SKF = 46, 53
COOKIE, INVALID_KE_PAYLOAD, REKEY_SA, INITIAL_CONTACT = 16390, 17, 16393, 16384
PROTO_IKE, PROTO_ESP = 1, 3
AUTH_PSK = 2
SEVERITY_WARNING = 0x00600000  # PI_WARN in _ws.expert.severity (PI_ERROR is 0x00800000)
PROBLEMS = f"_ws.malformed || _ws.expert.severity >= {SEVERITY_WARNING}"

# Our algorithm names -> tshark 4.0's names in its IKEv2 decryption table.
TSHARK_ENCRYPTION = {
    "aes128gcm16": "AES-GCM-128 with 16 octet ICV [RFC5282]",  # key with the 4-octet salt
    "aes256gcm16": "AES-GCM-256 with 16 octet ICV [RFC5282]",
    "aes128": "AES-CBC-128 [RFC3602]",
    "aes256": "AES-CBC-256 [RFC3602]",
}
TSHARK_INTEGRITY = {
    None: "NONE [RFC4306]",  # AEAD
    "sha1": "HMAC_SHA1_96 [RFC2404]",
    "sha256": "HMAC_SHA2_256_128 [RFC4868]",
    "sha384": "HMAC_SHA2_384_192 [RFC4868]",
    "sha512": "HMAC_SHA2_512_256 [RFC4868]",
}


# -- the loopback run, recorded as on the wire -------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One datagram as a capture between the two ends sees it."""

    step: str
    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    message: bytes  # the IKE message (or the keepalive octet), without the non-ESP marker
    marker: bool  # sent from a port 4500 socket: the shell puts the non-ESP marker in front

    @property
    def keepalive(self) -> bool:
        return self.message == KEEPALIVE

    @property
    def exchange(self) -> int:
        return self.message[18]

    @property
    def response(self) -> bool:
        return bool(self.message[19] & 0x20)

    @property
    def encrypted(self) -> bool:
        return not self.keepalive and self.message[16] in (SK, SKF)

    @property
    def key(self) -> tuple[bytes, bytes, bytes, bool, int]:
        """What the datagrams of one (possibly fragmented) message share."""
        m = self.message
        return m[:8], m[8:16], m[20:24], self.response, self.exchange


@dataclass
class RecordingWire(Wire):
    """``Wire`` that also records each datagram with its wire addresses, the time and the
    step of the scenario, snapshots the keys of every IKE SA either end ever holds, and can
    put a NAT (address and port translation) in front of endpoint ``a``."""

    nat: bool = False
    step: str = ""
    frames: list[Frame] = field(default_factory=list)
    ike_sas: dict[tuple[bytes, bytes], tuple[IkeSaKeys, NegotiatedSuite]] = field(default_factory=dict)

    def _outside(self, port: int) -> tuple[str, int]:
        """The source address of ``a``'s datagrams from ``port`` as ``b`` sees them."""
        return (NAT_PUBLIC, port + NAT_PORT_OFFSET) if self.nat else (self.a.local_address, port)

    def _inside(self, remote: tuple[str, int]) -> int:
        """The port of ``a`` that a datagram ``b`` sends to ``remote`` reaches."""
        if not self.nat:
            assert remote[0] == self.a.local_address, remote
            return remote[1]
        assert remote[0] == NAT_PUBLIC and remote[1] > NAT_PORT_OFFSET, remote
        return remote[1] - NAT_PORT_OFFSET

    def pump(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            moved = False
            for tag in ("a>b", "b>a"):
                src = self.a if tag == "a>b" else self.b
                for d in src.datagrams_to_send():
                    moved = True
                    self.log.append((tag, d))
                    if tag == "a>b":
                        wire_src, wire_dst = self._outside(d.local_port), d.remote
                        self.b.receive(d.data, d.remote[1], wire_src, self.now)
                    else:
                        wire_src, wire_dst = (self.b.local_address, d.local_port), d.remote
                        self.a.receive(d.data, self._inside(d.remote), (self.b.local_address, d.local_port),
                                       self.now)
                    self.frames.append(Frame(self.step, self.now, wire_src, wire_dst, d.data,
                                             d.local_port == NATT_PORT and d.data != KEEPALIVE))
                    self._snapshot()
            self._drain()
            if not moved:
                return

    def _snapshot(self) -> None:
        for ep in (self.a, self.b):
            for sa in list(ep._sas.values()):
                if sa.protection is None or sa.suite is None or sa.spi_r == bytes(8):
                    continue
                known = self.ike_sas.setdefault((sa.spi_i, sa.spi_r), (sa.protection.keys, sa.suite))
                assert known[0] == sa.protection.keys, "the two ends derived different IKE SA keys"


@dataclass(frozen=True)
class Scenario:
    id: str
    ike: str  # the responder's IKE proposal (and the initiator's, unless initiator_ike)
    esp: str
    initiator_ike: str | None = None  # offered first with another KE group: INVALID_KE_PAYLOAD
    cookie: bool = False  # the responder asks for a COOKIE (cookie_threshold=0)
    nat: bool = False  # HQ behind a NAT: port 4500 after IKE_SA_INIT, NAT-T keepalives
    fragment_size: int | None = None  # small enough for IKE_AUTH to go out in SKF fragments
    child_rekey_by: str = "a"
    ike_rekey_by: str = "a"
    delete_by: str = "a"


SCENARIOS = [
    Scenario("aes256gcm16-prfsha256-ecp256", "aes256gcm16-prfsha256-ecp256", "aes256gcm16",
             initiator_ike="aes256gcm16-prfsha256-modp2048-ecp256", cookie=True, fragment_size=300,
             ike_rekey_by="b"),
    Scenario("aes256-sha256-modp2048-nat", "aes256-sha256-modp2048", "aes128-sha256", nat=True,
             fragment_size=320, child_rekey_by="b", delete_by="b"),
    Scenario("aes128-sha1-modp2048", "aes128-sha1-modp2048", "aes128-sha1"),
]


@dataclass
class Run:
    scenario: Scenario
    frames: list[Frame]
    ike_sas: dict[tuple[bytes, bytes], tuple[IkeSaKeys, NegotiatedSuite]]
    old_child: tuple[int, int] = (0, 0)  # (inbound, outbound) SPI at the child rekeyer
    rekeyed_ike: tuple[bytes, bytes] = (b"", b"")  # the successor IKE SA's SPIs

    def step(self, name: str) -> list[Frame]:
        return [f for f in self.frames if f.step == name]


def established(ep: IkeV2Endpoint) -> IkeSa:
    sas = [sa for sa in ep._sas.values() if sa.state is State.ESTABLISHED]
    assert len(sas) == 1, f"expected one established IKE SA, found {[sa.ident for sa in sas]}"
    return sas[0]


def run_scenario(sc: Scenario, seed: int) -> Run:
    hq, branch = psk_pair(ike=sc.ike, esp=sc.esp, dpd_interval=DPD_INTERVAL)
    hq = replace(hq, local_id=Identity.parse(HQ_ID), remote_id=Identity.parse(BRANCH_ID))
    branch = replace(branch, local_id=Identity.parse(BRANCH_ID), remote_id=Identity.parse(HQ_ID))
    if sc.initiator_ike:
        hq = replace(hq, ike_proposals=(parse_ike_proposal(sc.initiator_ike),))
    if sc.nat:  # HQ's address is not known behind its NAT: BRANCH accepts it from anywhere
        branch = replace(branch, remote_address=None)
    if sc.fragment_size:
        hq, branch = (replace(c, fragment_size=sc.fragment_size) for c in (hq, branch))
    a = IkeV2Endpoint(HQ, [hq], random=seeded(seed))
    b = IkeV2Endpoint(BRANCH, [branch], random=seeded(seed + 1000), cookie_threshold=0 if sc.cookie else 10)
    wire = RecordingWire(a, b, nat=sc.nat)
    ends = {"a": (a, hq.name), "b": (b, branch.name)}

    wire.step = "setup"
    a.initiate(hq.name, wire.now, keep_up=False)
    wire.pump()
    assert a.established(hq.name) and b.established(branch.name), "the IKE SA did not come up"
    assert established(a).encapsulate == sc.nat and established(a).local[1] == (NATT_PORT if sc.nat else 500)

    wire.step = "child_rekey"
    wire.advance(1.0)
    ep, name = ends[sc.child_rekey_by]
    child = established(ep).children[0]
    old_child = (child.spi_in, child.spi_out)
    assert ep.rekey(name, wire.now) == 1
    wire.pump()
    assert [c.spi_in for c in established(ep).children] != [old_child[0]], "the CHILD_SA was not rekeyed"

    wire.step = "ike_rekey"
    wire.advance(1.0)
    ep, name = ends[sc.ike_rekey_by]
    old = established(ep)
    assert ep.rekey(name, wire.now, ike=True) == 1
    wire.pump()
    new = established(ep)
    assert new is not old and old.replaced_by is new, "the IKE SA was not rekeyed"

    wire.step = "idle"  # DPD both ways; behind the NAT also keepalives
    wire.advance(DPD_INTERVAL + 5.0)

    wire.step = "delete"
    ep, name = ends[sc.delete_by]
    assert ep.terminate(name, wire.now) == 1
    wire.pump()
    assert not a._sas and not b._sas, "IKE SAs left after the delete"
    return Run(sc, wire.frames, wire.ike_sas, old_child, (new.spi_i, new.spi_r))


# -- pcap and tshark ----------------------------------------------------------------------


def write_pcap(frames: list[Frame], path: Path) -> None:
    packets = []
    for f in frames:
        payload = NON_ESP_MARKER + f.message if f.marker else f.message
        p = IP(src=f.src[0], dst=f.dst[0]) / UDP(sport=f.src[1], dport=f.dst[1]) / Raw(payload)
        p.time = 1_700_000_000 + f.time
        packets.append(p)
    wrpcap(str(path), packets)


def uat_rows(ike_sas: dict[tuple[bytes, bytes], tuple[IkeSaKeys, NegotiatedSuite]], *,
             wrong: bool = False) -> list[str]:
    """tshark 4.0's IKEv2 decryption table: SPIi, SPIr, SK_ei, SK_er, encryption algorithm,
    SK_ai, SK_ar, integrity algorithm; bytes as bare hex, algorithm names quoted."""
    def hexed(key: bytes) -> str:
        return (bytes(len(key)) if wrong else key).hex()

    rows = []
    for (spi_i, spi_r), (keys, suite) in ike_sas.items():
        integrity = suite.integrity.name if suite.integrity else None
        rows.append(",".join([spi_i.hex(), spi_r.hex(), hexed(keys.sk_ei), hexed(keys.sk_er),
                              f'"{TSHARK_ENCRYPTION[suite.encryption.name]}"', hexed(keys.sk_ai),
                              hexed(keys.sk_ar), f'"{TSHARK_INTEGRITY[integrity]}"']))
    return rows


def tshark(pcap: Path, workdir: Path, rows: list[str], *args: str) -> str:
    """tshark on ``pcap`` with ``rows`` as its IKEv2 decryption table, in a fresh, empty
    configuration directory (no personal preferences or key tables leak in)."""
    assert TSHARK is not None
    conf = workdir / "wireshark"
    conf.mkdir(exist_ok=True)
    cmd = [TSHARK, "-n", "-r", str(pcap)]
    for row in rows:
        cmd += ["-o", f"uat:ikev2_decryption_table:{row}"]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "WIRESHARK_CONFIG_DIR": str(conf), "HOME": str(workdir)})
    assert proc.returncode == 0, f"tshark failed ({proc.returncode}): {proc.stderr}"
    errors = [ln for ln in proc.stderr.splitlines() if "Running as user" not in ln and ln.strip()]
    assert not errors, f"tshark complained: {errors}"
    return proc.stdout


@dataclass
class Dissection:
    """One frame as tshark shows it (from PDML): every field and protocol, flattened."""

    number: int
    items: list[tuple[str, str, str, str]]  # (name, show, value, showname)

    def shows(self, name: str) -> list[str]:
        return [show for n, show, _, _ in self.items if n == name]

    def values(self, name: str) -> list[str]:
        return [value for n, _, value, _ in self.items if n == name]

    def shownames(self, name: str) -> list[str]:
        return [showname for n, _, _, showname in self.items if n == name]

    def has(self, name: str) -> bool:
        return any(n == name for n, _, _, _ in self.items)

    def one(self, name: str) -> str:
        shows = self.shows(name)
        assert len(shows) == 1, f"frame {self.number}: {name} = {shows}"
        return shows[0]


def dissect(pcap: Path, workdir: Path, rows: list[str]) -> list[Dissection]:
    # Two passes: a fragment then also shows the frame it is reassembled in.
    root = ET.fromstring(tshark(pcap, workdir, rows, "-2", "-T", "pdml"))
    out = []
    for packet in root.iter("packet"):
        items = [(el.get("name", ""), el.get("show", ""), el.get("value", ""), el.get("showname", ""))
                 for el in packet.iter() if el.tag in ("field", "proto")]
        out.append(Dissection(len(out) + 1, items))
    return out


def decrypted_ok(d: Dissection) -> bool:
    """tshark decrypted an SK/SKF payload and found its ICV (or AEAD tag) correct."""
    icvs = d.shownames("isakmp.enc.icd")
    return d.has("isakmp.enc.decrypted") and len(icvs) == 1 and icvs[0].endswith("[correct]")


# -- the test -----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=SCENARIOS, ids=[s.id for s in SCENARIOS])
def captured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Run, Path, list[Dissection]]]:
    sc: Scenario = request.param
    run = run_scenario(sc, seed=SCENARIOS.index(sc) + 7)
    workdir = tmp_path_factory.mktemp(sc.id)
    pcap = workdir / "ike.pcap"
    write_pcap(run.frames, pcap)
    yield run, pcap, dissect(pcap, workdir, uat_rows(run.ike_sas))


@dataclass
class Message:
    """One IKE message: its frames (several for SKF fragments), their frame numbers, and the
    dissection of the last one, where tshark shows the (reassembled) payloads."""

    frames: list[Frame]
    numbers: list[int]
    d: Dissection

    @property
    def exchange(self) -> tuple[int, bool]:
        return self.frames[0].exchange, self.frames[0].response


def messages(run: Run, dissected: list[Dissection], step: str,
             keep: Callable[[Frame], bool] = lambda f: True) -> list[Message]:
    out: list[Message] = []
    for i, f in enumerate(run.frames):
        if f.step != step or f.keepalive or not keep(f):
            continue
        if out and out[-1].frames[-1].key == f.key and f.message[16] == SKF:
            out[-1] = Message([*out[-1].frames, f], [*out[-1].numbers, i + 1], dissected[i])
        else:
            out.append(Message([f], [i + 1], dissected[i]))
    return out


def test_tshark_flags_nothing(captured: tuple[Run, Path, list[Dissection]], tmp_path: Path) -> None:
    run, pcap, _ = captured
    problems = tshark(pcap, tmp_path, uat_rows(run.ike_sas), "-Y", PROBLEMS, "-T", "fields",
                      "-e", "frame.number", "-e", "_ws.col.Info", "-e", "_ws.expert.message",
                      "-E", "occurrence=a", "-E", "aggregator=; ")
    assert not problems.strip(), f"tshark flags malformed packets / warnings:\n{problems}"
    # The same on the two-pass dissection (reassembly settled) the other tests read.
    for d in captured[2]:
        severities = [int(s) for s in d.shows("_ws.expert.severity")]
        flagged = [m for m, s in zip(d.shows("_ws.expert.message"), severities, strict=True)
                   if s >= SEVERITY_WARNING]
        assert not d.has("_ws.malformed") and not flagged, f"frame {d.number}: {flagged}"


def test_every_message_dissected_and_decrypted(captured: tuple[Run, Path, list[Dissection]]) -> None:
    run, _, dissected = captured
    assert len(dissected) == len(run.frames), f"tshark read {len(dissected)} of {len(run.frames)} frames"
    for f, d in zip(run.frames, dissected, strict=True):
        if f.keepalive:
            assert d.has("udpencap.nat_keepalive") and not d.has("isakmp"), f"frame {d.number}: keepalive?"
            continue
        assert d.has("isakmp"), f"frame {d.number} ({f.step}) is not dissected as ISAKMP"
        assert d.has("udpencap") == f.marker, f"frame {d.number}: UDP encapsulation (non-ESP marker)"
        assert d.one("isakmp.exchangetype") == str(f.exchange), (
            f"frame {d.number}: exchange type {d.one('isakmp.exchangetype')}, we sent {f.exchange}")
        assert d.values("isakmp.ispi") == [f.message[:8].hex()], f"frame {d.number}: SPIi"
        assert d.values("isakmp.rspi") == [f.message[8:16].hex()], f"frame {d.number}: SPIr"
        assert d.values("isakmp.messageid") == [f.message[20:24].hex()], f"frame {d.number}: message ID"
        assert d.one("isakmp.flag_r") == str(int(f.response)), f"frame {d.number}: R flag"

    encrypted = [d.number for f, d in zip(run.frames, dissected, strict=True) if f.encrypted]
    decrypted = [d.number for d in dissected if decrypted_ok(d)]
    assert decrypted == encrypted, (
        f"encrypted frames {encrypted}, tshark decrypted with a correct ICV {decrypted}")
    # Every IKE SA of the run (the rekeyed one too) carried encrypted messages.
    used = {(f.message[:8], f.message[8:16]) for f in run.frames if f.encrypted}
    assert used == set(run.ike_sas), f"{len(used)} IKE SAs used, {len(run.ike_sas)} in the table"


def test_ike_sa_init(captured: tuple[Run, Path, list[Dissection]]) -> None:
    run, _, dissected = captured
    sc = run.scenario
    exchanges = messages(run, dissected, "setup", lambda f: f.exchange == IKE_SA_INIT)
    requests = [m.d for m in exchanges if not m.frames[0].response]
    responses = [m.d for m in exchanges if m.frames[0].response]
    assert len(requests) == len(responses) == 1 + sc.cookie + bool(sc.initiator_ike), [
        m.numbers for m in exchanges]
    for d in requests:
        assert d.has("isakmp.nonce") and d.has("isakmp.key_exchange.data"), f"frame {d.number}: Ni, KEi"
    rounds = list(zip(requests, responses, strict=True))
    if sc.cookie:  # RFC 7296 2.6: N(COOKIE) back, then echoed first in every retry
        request, response = rounds.pop(0)
        assert str(COOKIE) not in request.shows("isakmp.notify.msgtype"), f"frame {request.number}"
        assert response.shows("isakmp.notify.msgtype") == [str(COOKIE)], f"frame {response.number}"
        for r in requests[1:]:
            assert r.shows("isakmp.notify.msgtype")[0] == str(COOKIE), f"frame {r.number}: no COOKIE"
            assert r.shows("isakmp.typepayload")[0] == "41", f"frame {r.number}: COOKIE is not first"
    if sc.initiator_ike:  # RFC 7296 1.2: INVALID_KE_PAYLOAD names the group the responder wants
        request, response = rounds.pop(0)
        assert request.shows("isakmp.key_exchange.dh_group") == ["14"], f"frame {request.number}"
        assert response.shows("isakmp.notify.msgtype") == [str(INVALID_KE_PAYLOAD)], response.number
        assert response.shows("isakmp.notify.data.accepted_dh_group") == ["19"], response.number
    ((request, response),) = rounds
    group = "19" if "ecp256" in sc.ike else "14"
    assert request.shows("isakmp.key_exchange.dh_group") == [group], f"frame {request.number}"
    assert response.shows("isakmp.key_exchange.dh_group") == [group], f"frame {response.number}"
    assert response.has("isakmp.nonce") and response.has("isakmp.prop.protoid"), f"frame {response.number}"
    assert response.values("isakmp.rspi")[0] != "00" * 8, f"frame {response.number}: no SPIr"


def test_ike_auth(captured: tuple[Run, Path, list[Dissection]]) -> None:
    run, _, dissected = captured
    exchanges = messages(run, dissected, "setup", lambda f: f.exchange == IKE_AUTH)
    assert [m.exchange for m in exchanges] == [(IKE_AUTH, False), (IKE_AUTH, True)], [
        m.numbers for m in exchanges]
    request, response = exchanges
    # IDi (and IDr), AUTH, the CHILD_SA's proposal and TSi/TSr, decrypted.
    for m, ids in ((request, [HQ_ID[1:], BRANCH_ID[1:]]), (response, [BRANCH_ID[1:]])):
        d = m.d
        assert d.shows("isakmp.id.data.fqdn") == ids, f"frame {d.number}: IDs"
        assert d.shows("isakmp.auth.method") == [str(AUTH_PSK)], f"frame {d.number}: AUTH"
        assert d.shows("isakmp.prop.protoid") == [str(PROTO_ESP)], f"frame {d.number}: CHILD_SA proposal"
        assert d.shows("isakmp.ts.start_ipv4") == ["10.1.0.0", "10.2.0.0"], f"frame {d.number}: TSi/TSr"
        assert d.shows("isakmp.ts.end_ipv4") == ["10.1.0.255", "10.2.0.255"], f"frame {d.number}: TSi/TSr"
        assert str(INITIAL_CONTACT) in d.shows("isakmp.notify.msgtype") or m is response, d.number
        if len(m.frames) == 1:
            assert m.frames[0].message[16] == SK, f"frame {d.number}"
            continue
        # RFC 7383: SKF fragments, each decrypted on its own, reassembled in the last one.
        total = len(m.frames)
        assert [f.message[16] for f in m.frames] == [SKF] * total
        for k, n in enumerate(m.numbers, 1):
            frag = dissected[n - 1]
            assert frag.shows("isakmp.frag.number") == [str(k)], f"frame {n}: fragment number"
            assert frag.shows("isakmp.frag.total") == [str(total)], f"frame {n}: total fragments"
            if n != d.number:
                assert frag.shows("isakmp.reassembled.in") == [str(d.number)], f"frame {n}: reassembly"
                assert not frag.has("isakmp.id.data.fqdn"), f"frame {n}"
        assert d.shows("isakmp.fragment") == [str(n) for n in m.numbers], f"frame {d.number}: fragments"
    if run.scenario.fragment_size:
        assert len(request.frames) > 1, "the IKE_AUTH request was not fragmented"
    else:
        assert len(request.frames) == len(response.frames) == 1


def test_create_child_sa(captured: tuple[Run, Path, list[Dissection]]) -> None:
    run, _, dissected = captured
    expected = [(CREATE_CHILD_SA, False), (CREATE_CHILD_SA, True),
                (INFORMATIONAL, False), (INFORMATIONAL, True)]

    # CHILD_SA rekey (RFC 7296 1.3.3), then the old CHILD_SA's delete, answered with the other half.
    exchanges = messages(run, dissected, "child_rekey")
    assert [m.exchange for m in exchanges] == expected, [m.numbers for m in exchanges]
    rekey, answer, delete, delete_answer = (m.d for m in exchanges)
    spi_in, spi_out = (f"{s:08x}" for s in run.old_child)
    assert rekey.shows("isakmp.notify.msgtype") == [str(REKEY_SA)], f"frame {rekey.number}"
    assert rekey.values("isakmp.spi")[0] == spi_in, f"frame {rekey.number}: REKEY_SA names the old SPI"
    # TSi is the side of this exchange's initiator (RFC 7296 2.9).
    ts = ["10.1.0.0", "10.2.0.0"] if run.scenario.child_rekey_by == "a" else ["10.2.0.0", "10.1.0.0"]
    for d in (rekey, answer):
        assert d.has("isakmp.nonce") and d.shows("isakmp.prop.protoid") == [str(PROTO_ESP)], d.number
        assert d.shows("isakmp.ts.start_ipv4") == ts, f"frame {d.number}: TSi/TSr"
    assert delete.shows("isakmp.delete.protoid") == [str(PROTO_ESP)], f"frame {delete.number}"
    assert delete.values("isakmp.delete.spi") == [spi_in], f"frame {delete.number}"
    assert delete_answer.shows("isakmp.delete.protoid") == [str(PROTO_ESP)], f"frame {delete_answer.number}"
    assert delete_answer.values("isakmp.delete.spi") == [spi_out], f"frame {delete_answer.number}"

    # IKE SA rekey (1.3.2): an IKE proposal with the new 8-octet SPI, KE and nonce both ways;
    # then the old IKE SA is deleted on itself, and the new one carries everything after.
    exchanges = messages(run, dissected, "ike_rekey")
    assert [m.exchange for m in exchanges] == expected, [m.numbers for m in exchanges]
    rekey, answer, delete, delete_answer = (m.d for m in exchanges)
    new_i, new_r = run.rekeyed_ike
    for d, spi in ((rekey, new_i), (answer, new_r)):
        assert d.shows("isakmp.prop.protoid") == [str(PROTO_IKE)], f"frame {d.number}: IKE SA proposal"
        assert d.shows("isakmp.spisize") == ["8"], f"frame {d.number}"
        assert d.values("isakmp.spi") == [spi.hex()], f"frame {d.number}: the new IKE SA's SPI"
        assert d.has("isakmp.nonce") and d.has("isakmp.key_exchange.data"), d.number
        assert not d.has("isakmp.ts.start_ipv4") and not d.has("isakmp.notify.msgtype"), d.number
    assert exchanges[2].frames[0].message[:16] != new_i + new_r, "the old IKE SA is deleted on itself"
    assert delete.shows("isakmp.delete.protoid") == [str(PROTO_IKE)], f"frame {delete.number}"
    assert delete_answer.shows("isakmp.typepayload") == [str(SK)], f"frame {delete_answer.number}"
    later = [f for f in run.frames if f.step in ("idle", "delete") and not f.keepalive]
    assert later and all(f.message[:16] == new_i + new_r for f in later), "not on the new IKE SA"


def test_informational(captured: tuple[Run, Path, list[Dissection]]) -> None:
    run, _, dissected = captured
    probes = messages(run, dissected, "idle")
    assert probes and {m.exchange[0] for m in probes} == {INFORMATIONAL}, [m.numbers for m in probes]
    assert any(not m.frames[0].response for m in probes), "no DPD was sent"
    for m in probes:  # DPD (RFC 7296 2.4): an empty Encrypted payload, both ways
        assert m.d.shows("isakmp.typepayload") == [str(SK)] and decrypted_ok(m.d), f"frame {m.d.number}"
    keepalives = [f for f in run.step("idle") if f.keepalive]
    if run.scenario.nat:  # RFC 3948 4: from behind the NAT, to port 4500
        assert keepalives, "no NAT-T keepalive from behind the NAT"
        for f in keepalives:
            assert f.src == (NAT_PUBLIC, NATT_PORT + NAT_PORT_OFFSET) and f.dst == (BRANCH, NATT_PORT), f
    else:
        assert not keepalives

    exchanges = messages(run, dissected, "delete")
    assert [m.exchange for m in exchanges] == [(INFORMATIONAL, False), (INFORMATIONAL, True)]
    delete, answer = exchanges
    by_branch = run.scenario.delete_by == "b"
    assert delete.frames[0].src[0] == (BRANCH if by_branch else NAT_PUBLIC if run.scenario.nat else HQ)
    assert delete.d.shows("isakmp.delete.protoid") == [str(PROTO_IKE)], f"frame {delete.d.number}"
    assert answer.d.shows("isakmp.typepayload") == [str(SK)], f"frame {answer.d.number}"


def test_wrong_keys_fail(captured: tuple[Run, Path, list[Dissection]], tmp_path: Path) -> None:
    """Negative control: with zeroed keys tshark finds every ICV / AEAD tag bad."""
    run, pcap, _ = captured
    dissected = dissect(pcap, tmp_path, uat_rows(run.ike_sas, wrong=True))
    for f, d in zip(run.frames, dissected, strict=True):
        if f.encrypted:
            icvs = d.shownames("isakmp.enc.icd")
            assert icvs and "[incorrect" in icvs[0], f"frame {d.number}: {icvs}"
            assert not d.has("isakmp.id.data.fqdn")
    problems = tshark(pcap, tmp_path, uat_rows(run.ike_sas, wrong=True), "-Y", PROBLEMS)
    assert len(problems.splitlines()) == sum(f.encrypted for f in run.frames)
