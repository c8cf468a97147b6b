"""Fuzz targets: each parser family behind the core entry point the daemon calls, with
live state to aim at and the invariants of issue 7 checked after every input.

A target turns one input (``mode octet | body``) into one call into a core and raises
`Finding` when an invariant breaks; any other exception out of ``feed`` is a crash that
escaped a core.  The same targets serve the hypothesis tests in the suite (``test_fuzz_*``,
a moderate budget) and the long runs of ``tests/fuzz/run.py`` (atheris or a long
hypothesis-free loop), so a finding of one reproduces in the other.

What "accounted for" means: every input that a core rejects shows up as a counted drop
(the endpoint's counters, the dataplane's `DropReason` counters, the L2TP ``drops``), a
protocol answer (a datagram back: INVALID_SYNTAX, a NOTIFY, a StopCCN, a ZLB), or an event
(a negotiation-log line the daemon logs and counts); never as silence, never as an
exception.
"""

from __future__ import annotations

import random
import re
import struct
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fuzzing import mutant
from ike_loopback import BRANCH, HQ, endpoints, psk_pair, seeded

from gateway.config import ConfigError, LoadedConfig, load_config_text
from gateway.ike.endpoints import IkeEndpoints
from gateway.ike.events import AuthFailed, ChildSaDown, IkeSaDown, PeerDead
from gateway.ike.v1 import keymat as v1keymat
from gateway.ike.v1.constants import ExchangeType as V1Exchange
from gateway.ike.v1.constants import PayloadType as V1Payload
from gateway.ike.v1.endpoint import IkeV1Endpoint
from gateway.ike.v1.isakmpsa import State as V1State
from gateway.ike.v1.message import Header as V1Header
from gateway.ike.v1.protection import Phase1Cipher
from gateway.ike.v2.constants import ExchangeType, Flag
from gateway.ike.v2.endpoint import IkeV2Endpoint
from gateway.ike.v2.ikesa import State
from gateway.ike.v2.message import Header
from gateway.ike.v2.protection import SkProtection

THIRD = "203.0.113.66"  # an address no connection is configured for
LIVE_SEED = 2  # the pairs under test; their messages were recorded with seed 1

#: Events garbage must never cause: a torn-down SA, a failed authentication, a dead peer.
TEARDOWN = (IkeSaDown, ChildSaDown, AuthFailed, PeerDead)


class Finding(AssertionError):
    """An invariant of issue 7 broke (an exception escaping a core is a crash instead)."""


def drain(core: Any) -> list[object]:
    out = []
    while (ev := core.next_event()) is not None:
        out.append(ev)
    return out


class Target:
    """One parser family: ``seeds()`` are valid inputs to mutate, ``feed`` checks one."""

    name = ""

    def seeds(self) -> list[bytes]:
        raise NotImplementedError

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def run_random(self, rng: random.Random) -> None:
        """One mutated seed (the loop of the long run without atheris)."""
        self.feed(mutant(rng, self.seeds()))


# ======================================================================================
# IKE (both versions behind IkeEndpoints, as the daemon calls them)
# ======================================================================================


def _recording(fn: Callable[..., None], errors: list[str]) -> Callable[..., None]:
    """A core's receive that keeps the traceback of what escaped it (IkeEndpoints keeps
    only the exception's name)."""

    def receive(*args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            errors.append(traceback.format_exc())
            raise

    return receive


class _IkeBase(Target):
    RESET_EVERY = 400

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.fed = 0
        self.now = 1000.0
        self.ep: IkeEndpoints
        self._seeds: list[bytes] = []

    def seeds(self) -> list[bytes]:
        return self._seeds

    def _wrap(self, v2: IkeV2Endpoint, v1: IkeV1Endpoint) -> IkeEndpoints:
        ep = IkeEndpoints(v2, v1)
        v2.receive = _recording(v2.receive, self.errors)  # type: ignore[method-assign]
        v1.receive = _recording(v1.receive, self.errors)  # type: ignore[method-assign]
        return ep

    def deliver(self, data: bytes, port: int, remote: tuple[str, int], *, garbage: bool,
                quiet_ok: bool = False) -> tuple[list[object], list[Any]]:
        """One datagram into the endpoints; checks the invariants, returns what came out.
        ``quiet_ok``: the input is authentic and may be taken without an answer."""
        ep = self.ep
        ep.datagrams_to_send()
        drain(ep)
        counted = sum(v for k, v in ep.counters.items() if k != "internal_error")
        internal = ep.counters.get("internal_error", 0)
        self.now += 0.01
        ep.receive(data, port, remote, self.now)
        out = ep.datagrams_to_send()
        events = drain(ep)
        if ep.counters.get("internal_error", 0) != internal:
            raise Finding(f"an exception escaped the IKE core:\n{self.errors[-1] if self.errors else events}")
        if sum(v for k, v in ep.counters.items() if k != "internal_error") == counted \
                and not out and not events and not quiet_ok and not self.kept(data):
            self.silent(f"input from {remote} neither counted, answered nor logged: {data[:64].hex()}")
        if garbage:
            torn = [e for e in events if isinstance(e, TEARDOWN)]
            if torn or not self.ep.established("to-hq"):
                raise Finding(f"garbage from {remote} tore state down: {torn or 'the SA is gone'}")
        return events, out

    def kept(self, data: bytes) -> bool:
        """Whether the core took the input in without an answer yet (a fragment)."""
        return False

    def silent(self, what: str) -> None:
        raise Finding(what)

    def feed(self, data: bytes) -> None:
        self.fed += 1
        if self.fed % self.RESET_EVERY == 0:
            self.build()
        mode, body = (data[0], data[1:]) if data else (0, b"")
        self.dispatch(mode, body)

    def build(self) -> None:
        raise NotImplementedError

    def dispatch(self, mode: int, body: bytes) -> None:
        raise NotImplementedError


@contextmanager
def _seals(into: list[tuple[int, bool, int, bytes]]) -> Iterator[None]:
    """Record every IKEv2 plaintext sealed meanwhile: (exchange, response, first, inner)."""
    original = SkProtection.seal

    def seal(self: SkProtection, header: Header, first_inner: int, inner: bytes,
             fragment_size: int | None = None) -> list[bytes]:
        into.append((header.exchange, bool(header.flags & Flag.RESPONSE), first_inner, inner))
        return original(self, header, first_inner, inner, fragment_size)

    SkProtection.seal = seal  # type: ignore[method-assign]
    try:
        yield
    finally:
        SkProtection.seal = original  # type: ignore[method-assign]


class Ike2Target(_IkeBase):
    """The IKEv2 core of a responder (BRANCH) that has one IKE SA up with HQ.

    Modes: 0 a datagram from an address no connection names; 1 one from the peer's
    address and port 500; 2 the same on port 4500; 3 a request sealed with the live IKE
    SA's keys (so its inner payloads reach the exchange handlers); 4 an IKE_AUTH request
    sealed for a fresh half-open IKE SA (after an IKE_SA_INIT from HQ).
    """

    name = "ike2"

    def __init__(self) -> None:
        super().__init__()
        self.hq, self.branch = psk_pair(esp="aes128gcm16-ecp256")
        plain: list[tuple[int, bool, int, bytes]] = []
        with _seals(plain):
            w = endpoints(self.hq, self.branch, seed=1)
            w.a.initiate("to-branch", w.now)
            w.pump()
            w.a.rekey("to-branch", w.now)  # CREATE_CHILD_SA (child rekey, PFS)
            w.pump()
            w.b.rekey("to-hq", w.now, ike=True)  # CREATE_CHILD_SA (IKE rekey), then DELETE
            w.pump()
            w.advance(3)
            w.a.terminate("to-branch", w.now)
            w.pump()
        self.halves = 0
        self.build()
        # The live pair is another IKE SA than the recorded one (seed 2, not 1): no recorded
        # message is authentic for it.  Each datagram goes in as recorded and under the
        # live SA's SPIs, so its mutations reach the live SA's decryption and checks.
        sa_a, _ = self._live()
        datagrams = sorted({d.data for _tag, d in w.log})
        datagrams += [sa_a.spi_i + sa_a.spi_r + d[16:] for d in datagrams]
        self._seeds = [bytes([m]) + d for d in datagrams for m in (0, 1, 2)]
        self._seeds += [bytes([3, ex, first]) + inner for ex, resp, first, inner in plain
                        if not resp and ex != ExchangeType.IKE_AUTH]
        self._seeds += [bytes([3, ExchangeType.INFORMATIONAL, 0])]  # an empty liveness check
        self._seeds += [bytes([4, first]) + inner for ex, resp, first, inner in plain
                        if not resp and ex == ExchangeType.IKE_AUTH]

    def build(self) -> None:
        w = endpoints(self.hq, self.branch, seed=LIVE_SEED)
        w.a.initiate("to-branch", w.now)
        w.pump()
        w.b.cookie_threshold = 1 << 30  # half-open SAs pile up here: no COOKIE round trips
        self.w = w
        self.now = w.now
        self.ep = self._wrap(w.b, IkeV1Endpoint(BRANCH, []))

    def _live(self) -> tuple[Any, Any]:
        """(our IKE SA at HQ, the responder's) if the pair is still up, else rebuilt."""
        for _ in range(2):
            sa_b = next((sa for sa in self.w.b._sas.values() if sa.state is State.ESTABLISHED), None)
            sa_a = self.w.a._sas.get(sa_b.spi_i) if sa_b is not None else None
            if sa_a is not None and sa_a.protection is not None:
                return sa_a, sa_b
            self.build()
        raise Finding("could not bring the IKE SA under test up")

    def dispatch(self, mode: int, body: bytes) -> None:
        mode %= 5
        if mode in (0, 1, 2):
            self._live()  # what went before (an authentic DELETE, say) may have closed it
            remote = (THIRD, 500) if mode == 0 else (HQ, 500 if mode == 1 else 4500)
            self.deliver(body, 500 if mode != 2 else 4500, remote, garbage=True)
        elif mode == 3:
            self._sealed(body)
        else:
            self._half_open_auth(body)

    def _sealed(self, body: bytes) -> None:
        if len(body) < 2:
            body = body + bytes(2 - len(body))
        exchange, first, inner = body[0], body[1], body[2:]
        sa_a, sa_b = self._live()
        header = Header(sa_a.spi_i, sa_a.spi_r, 0, exchange, Flag.INITIATOR, sa_b.next_expected)
        try:
            datagrams = sa_a.protection.seal(header, first, inner)
        except ValueError:  # more than fits one payload: not a datagram anyone can send
            return
        for d in datagrams:
            self.deliver(d, 500, (HQ, 500), garbage=False)

    def _half_open_auth(self, body: bytes) -> None:
        first, inner = (body[0], body[1:]) if body else (0, b"")
        self.halves += 1
        a2 = IkeV2Endpoint(HQ, [self.hq], random=seeded(10_000 + self.halves))
        a2.initiate("to-branch", self.now)
        sa2 = None
        for _ in range(4):
            for d in a2.datagrams_to_send():
                if Header.decode(d.data).exchange == ExchangeType.IKE_AUTH:
                    sa2 = next(iter(a2._sas.values()))
                    break
                self.ep.receive(d.data, 500, (HQ, 500), self.now)
            if sa2 is not None:
                break
            for d in self.ep.datagrams_to_send():
                a2.receive(d.data, 500, (BRANCH, 500), self.now)
        drain(self.ep)
        if sa2 is None or sa2.protection is None:
            raise Finding("IKE_SA_INIT with the responder did not complete")
        header = Header(sa2.spi_i, sa2.spi_r, 0, ExchangeType.IKE_AUTH, Flag.INITIATOR, 1)
        try:
            datagrams = sa2.protection.seal(header, first, inner)
        except ValueError:
            return
        for d in datagrams:
            self.deliver(d, 500, (HQ, 500), garbage=False)


# -- IKEv1 ----------------------------------------------------------------------------------


@contextmanager
def _v1_plaintexts(into: list[tuple[Phase1Cipher, int, bytes, bytes]]) -> Iterator[None]:
    """Record every IKEv1 plaintext encrypted meanwhile: (cipher, message id, IV, plaintext)."""
    original = Phase1Cipher.encrypt

    def encrypt(self: Phase1Cipher, message_id: int, plain: bytes) -> bytes:
        into.append((self, message_id, self.iv(message_id), plain))
        return original(self, message_id, plain)

    Phase1Cipher.encrypt = encrypt  # type: ignore[method-assign]
    try:
        yield
    finally:
        Phase1Cipher.encrypt = original  # type: ignore[method-assign]


V1_IKE = "aes128-sha256-ecp256"
V1_ESP = "aes128-sha1-ecp256"


class Ike1Target(_IkeBase):
    """The IKEv1 core of a responder (BRANCH) with one ISAKMP SA up with HQ.

    Modes: 0..2 datagrams as for IKEv2; 3 a Quick Mode or Informational message (HASH(1)
    computed with the live SA's SKEYID_a, then encrypted), so the payloads behind the hash
    reach the handlers; 4 Main Mode message 5 encrypted for a fresh responder in MM_KE
    (after messages 1 to 4 with HQ).
    """

    name = "ike1"

    def __init__(self) -> None:
        super().__init__()
        self.hq, self.branch = psk_pair(version=1, ike=V1_IKE, esp=V1_ESP, dpd_interval=5.0)
        plain: list[tuple[Phase1Cipher, int, bytes, bytes]] = []
        with _v1_plaintexts(plain):
            w = self._pair(1)
            w.advance(6, step=1)  # DPD R-U-THERE / ACK
            w.a.rekey("to-branch", w.now)  # a new Quick Mode
            w.pump()
            w.a.terminate("to-branch", w.now)  # Informational DELETEs
            w.pump()
        self.halves = 0
        self.build()
        sa_a = self._live()  # as for IKEv2: recorded as they were and under the live cookies
        datagrams = sorted({d.data for _tag, d in w.log})
        datagrams += [sa_a.icookie + sa_a.rcookie + d[16:] for d in datagrams]
        self._seeds = [bytes([m]) + d for d in datagrams for m in (0, 1, 2)]
        for _cipher, mid, _iv, p in plain:
            if mid and len(p) >= 4:
                # Quick Mode and Informational: HASH(1) first; keep what follows (the hash
                # is computed anew over the mutated rest)
                length = struct.unpack_from("!H", p, 2)[0]
                if 4 <= length <= len(p):
                    for exchange in (V1Exchange.QUICK, V1Exchange.INFORMATIONAL):
                        self._seeds.append(bytes([3, exchange, p[0]]) + p[length:])
            elif mid == 0:
                self._seeds.append(bytes([4, V1Payload.ID]) + p)  # message 5 (and 6)

    def _pair(self, seed: int) -> Any:
        w = endpoints(self.hq, self.branch, seed=seed)
        w.a = IkeV1Endpoint(HQ, [self.hq], random=seeded(seed), timing=w.a.timing)  # type: ignore[assignment]
        w.b = IkeV1Endpoint(BRANCH, [self.branch], random=seeded(seed + 1000),  # type: ignore[assignment]
                            timing=w.b.timing)
        w.a.initiate("to-branch", w.now)
        w.pump()
        return w

    def build(self) -> None:
        self.w = self._pair(LIVE_SEED)
        self.now = self.w.now
        self.ep = self._wrap(IkeV2Endpoint(BRANCH, []), self.w.b)

    def _live(self) -> Any:
        """Our ISAKMP SA at HQ, if the pair is still up (else it is built again)."""
        for _ in range(2):
            sa_b = next((sa for sa in self.w.b._sas.values() if sa.state is V1State.ESTABLISHED), None)
            sa_a = self.w.a._sas.get(sa_b.icookie) if sa_b is not None else None
            if sa_a is not None and sa_a.cipher is not None and sa_a.state is V1State.ESTABLISHED:
                return sa_a
            self.build()
        raise Finding("could not bring the ISAKMP SA under test up")

    def dispatch(self, mode: int, body: bytes) -> None:
        mode %= 5
        if mode in (0, 1, 2):
            self._live()  # what went before (an authentic DELETE, say) may have closed it
            remote = (THIRD, 500) if mode == 0 else (HQ, 500 if mode == 1 else 4500)
            self.deliver(body, 500 if mode != 2 else 4500, remote, garbage=True)
        elif mode == 3:
            self._hashed(body)
        else:
            self._mm5(body)

    def _hashed(self, body: bytes) -> None:
        body = body.ljust(2, b"\0")
        exchange, first, rest = body[0], body[1], body[2:]
        sa_a = self._live()
        mid = int.from_bytes(self.w.a._random(4), "big") or 1
        digest = v1keymat.qm_hash1(sa_a.suite.prf, sa_a.keys.skeyid_a, mid, rest)
        chain = struct.pack("!BBH", first, 0, 4 + len(digest)) + digest + rest
        encrypted = sa_a.cipher.encrypt(mid, chain)
        header = V1Header(sa_a.icookie, sa_a.rcookie, V1Payload.HASH, exchange, 0x01, mid,
                          28 + len(encrypted))
        self.deliver(header.encode() + encrypted, 500, (HQ, 500), garbage=False,
                     quiet_ok=exchange == V1Exchange.INFORMATIONAL)  # authentic, nothing to answer

    def kept(self, data: bytes) -> bool:
        """A clear fragment (RFC-less IKE fragmentation) is buffered until the rest comes."""
        return len(data) > 16 and data[16] == V1Payload.FRAGMENT and any(
            sa._fragments for sa in self.w.b._sas.values())

    def _mm5(self, body: bytes) -> None:
        body = body.ljust(1, b"\0")
        first, plain = body[0], body[1:]
        self.halves += 1
        a2 = IkeV1Endpoint(HQ, [self.hq], random=seeded(10_000 + self.halves), timing=self.w.a.timing)
        sent: list[tuple[Phase1Cipher, int, bytes, bytes]] = []
        with _v1_plaintexts(sent):
            a2.initiate("to-branch", self.now)
            for _ in range(4):
                for d in a2.datagrams_to_send():
                    if not V1Header.decode(d.data).encrypted:  # message 5 stays with us
                        self.ep.receive(d.data, 500, (HQ, 500), self.now)
                if sent:
                    break
                for d in self.ep.datagrams_to_send():
                    a2.receive(d.data, 500, (BRANCH, 500), self.now)
        drain(self.ep)
        if not sent:
            raise Finding("Main Mode messages 1 to 4 with the responder did not complete")
        cipher, _mid, iv, _p = sent[0]
        cipher._remember(0, iv)  # the chain as it was before message 5: ours replaces it
        encrypted = cipher.encrypt(0, plain) if plain else b""
        sa2 = next(iter(a2._sas.values()))
        header = V1Header(sa2.icookie, sa2.rcookie, first, V1Exchange.MAIN, 0x01, 0, 28 + len(encrypted))
        self.deliver(header.encode() + encrypted, 500, (HQ, 500), garbage=False)


# ======================================================================================
# the configuration loader
# ======================================================================================

_CONFIGS = Path(__file__).resolve().parents[2] / "configs"

#: A road-warrior and L2TP configuration with every kind of secret the loader reads.
SECRETS_CONFIG = """\
gateway: {name: hq, public_interface: wan0, public_address: 192.0.2.1}
pools:
  dialin: {subnet: 10.9.0.0/24, dns: [10.1.0.53]}
users:
  branch1: {nt_hash: "0a1b2c3d4e5f60718293a4b5c6d7e8f9", password: branch-password-7QX}
  carol: {password: carol-secret-pw-91, address: 10.77.0.5}
connections:
  dialin:
    remote: "%any"
    auth: {method: psk, psk: group-key-for-l2tp-Zk8}
    l2tp: {role: lns, pool: dialin, auth: [mschapv2, chap-md5, pap]}
  to-branch:
    remote: 198.51.100.1
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.2.0.0/24]
    auth: {method: psk, psk: "site-to-site-psk-Hq2Br"}
    ike: {version: 2, start: start}
    proposals: {ike: [aes256gcm16-prfsha256-ecp256], esp: [aes256gcm16]}
"""

#: Secret values in the seeds: none may appear in what the loader says about a document.
SECRETS = ("branch-password-7QX", "carol-secret-pw-91", "group-key-for-l2tp-Zk8", "site-to-site-psk-Hq2Br",
           "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "5a1d7c3e0b9f24a6c8e1d3f5a7b9c0e2deadbeef",
           "0f1e2d3c4b5a69788796a5b4c3d2e1f0cafef00d")


class ConfigTarget(Target):
    """`load_config_text`: any text gives a LoadedConfig or a ConfigError whose messages
    carry no secret (mode octet ignored; the body is the document, UTF-8 with
    replacement)."""

    name = "config"

    def __init__(self) -> None:
        texts = [p.read_text() for p in sorted(_CONFIGS.glob("*.yaml"))] + [SECRETS_CONFIG]
        self._seeds = [b"\0" + t.encode() for t in texts]

    def seeds(self) -> list[bytes]:
        return self._seeds

    def feed(self, data: bytes) -> None:
        self.check(data[1:].decode("utf-8", "replace"))

    @staticmethod
    def check(text: str) -> LoadedConfig | None:
        try:
            return load_config_text(text, "fuzz.yaml")
        except ConfigError as exc:
            if not exc.issues:
                raise Finding("a ConfigError without issues") from None
            # a secret counts where the document still has it as a secret (a splice may
            # have moved its text into, say, a subnet, whose value an error may quote)
            kept = [s for s in SECRETS if re.search(
                rf"(psk|password|nt_hash|secret|_key)[\"']?\s*:\s*[\"']?(0x)?{re.escape(s)}", text)]
            for issue in exc.issues:
                leaked = [s for s in kept if s in issue.message.lower() or s in issue.message]
                if leaked:
                    raise Finding(f"a secret in the error text: {issue}") from None
                if issue.line < 0 or issue.file != "fuzz.yaml":
                    raise Finding(f"an issue without its place: {issue!r}") from None
            return None


# ======================================================================================
# the dataplane: ESP, AH, UDP 4500, the outbound path
# ======================================================================================

#: Drops that come before the ICV verified: the replay window must not move.
_BEFORE_AUTH = {"too_short", "malformed", "unknown_spi", "replay", "bad_icv", "bad_padding", "bad_length",
                "edge_filter", "clear_l2tp", "not_ipv4"}


class DataplaneTarget(Target):
    """Gateway B's `Dataplane` with four inbound SAs from A (ESP AES-GCM tunnel, ESP
    AES-CBC+HMAC tunnel with ESN, AH tunnel, ESP AES-GCM transport in UDP 4500 carrying
    L2TP) and an outbound policy.

    Modes: 0 ``inbound_ip`` (raw ESP/AH socket), 1 ``inbound_udp`` (UDP 4500 from A),
    2 ``outbound`` (a packet from the TUN).  After each input: one counted drop per
    rejected packet, a replay window moved only by an authentic packet, and each SA
    still takes A's next packet.
    """

    name = "esp"

    def __init__(self) -> None:
        from ipsec_testkit import (
            A_PUB,
            B_PUB,
            NET_A,
            NET_B,
            ah_sa,
            esp_sa,
            icmp_echo,
            outer_ip,
            selector_pair,
            tcp_packet,
            udp_packet,
        )

        from gateway.dataplane import ah, esp, ip
        from gateway.dataplane.edge import EdgePolicy
        from gateway.dataplane.engine import Dataplane
        from gateway.dataplane.sa import Direction, Mode, UdpEncap
        from gateway.dataplane.spd import Policy

        self.ip, self.esp, self.ah, self.outer_ip = ip, esp, ah, outer_ip
        self.A, self.B = A_PUB, B_PUB
        b = Dataplane(EdgePolicy("eth0", B_PUB, ()))
        self.dp = b
        self.l2tp: list[tuple[str, tuple[str, int], bytes]] = []
        b.l2tp_handler = lambda tunnel, peer, payload: self.l2tp.append((tunnel, peer, payload))
        tunnel_sel = (selector_pair(str(NET_B), str(NET_A)),)
        host_sel = (selector_pair(f"{B_PUB}/32", f"{A_PUB}/32"),)
        specs = [  # (kind, suite, spi, mode, esn, encap, selectors)
            ("esp", "aes128gcm16", 0xA0B0, Mode.TUNNEL, False, None, tunnel_sel),
            ("esp", "aes256-sha256", 0xA0B1, Mode.TUNNEL, True, None, tunnel_sel),
            ("ah", "sha256", 0xA0B2, Mode.TUNNEL, False, None, tunnel_sel),
            ("esp", "aes256gcm16", 0xA0B3, Mode.TRANSPORT, False, UdpEncap(), host_sel),
        ]
        self.pairs = []  # (kind, A's outbound SA, B's inbound SA, encap)
        for kind, suite, spi, mode, esn, encap, sel in specs:
            make = esp_sa if kind == "esp" else ah_sa
            extra: dict[str, Any] = {"encap": encap} if kind == "esp" else {}
            out = make(suite, spi, Direction.OUT, mode=mode, local=A_PUB, remote=B_PUB, esn=esn, seed=spi,
                       **extra)
            inb = make(suite, spi, Direction.IN, mode=mode, local=B_PUB, remote=A_PUB, esn=esn, seed=spi,
                       selectors=sel, name=f"in-{spi:x}", **extra)
            b.install_inbound(inb)
            self.pairs.append((kind, out, inb, encap))
        back = esp_sa("aes128gcm16", 0xB0A0, Direction.OUT, local=B_PUB, remote=A_PUB, seed=0xB0A0)
        b.install_policy(Policy("b-a", (selector_pair(str(NET_B), str(NET_A)),), mode=Mode.TUNNEL,
                                esp_out=back))
        host_a, host_b = "10.1.0.5", "10.2.0.7"
        inner = [icmp_echo(host_a, host_b), udp_packet(host_a, host_b), tcp_packet(host_a, host_b)]
        self._seeds: list[bytes] = []
        for _kind, out, _inb, encap in self.pairs:
            for packet in inner:
                mode, data = self._protect(out, packet, encap)
                self._seeds.append(bytes([mode]) + data)
        l2tp = udp_packet(A_PUB, B_PUB, 1701, 1701, b"\xc8\x02\x00\x0c\x00\x01\x00\x00\x00\x00\x00\x00")
        _kind, out, _inb, encap = self.pairs[3]
        self._seeds.append(bytes([1]) + self._protect(out, l2tp, encap)[1])
        self._seeds += [b"\x01\xff", b"\x01\0\0\0\0" + bytes(28)]  # a keepalive, IKE after the marker
        self._seeds += [bytes([2]) + udp_packet(host_b, host_a), bytes([2]) + icmp_echo(host_b, host_a),
                        bytes([2]) + tcp_packet(host_b, "10.3.0.1")]
        self.fresh = {host_a: udp_packet(host_a, host_b), str(A_PUB): l2tp}

    def _protect(self, out: Any, packet: bytes, encap: Any) -> tuple[int, bytes]:
        """What A sends for ``packet`` on ``out``: (mode, bytes)."""
        ip = self.ip
        if out.protocol == ip.PROTO_AH:
            header = ip.build_header(self.A.packed, self.B.packed, ip.PROTO_AH, 0, ident=7)
            return 0, self.ah.protect(out, header, ip.PROTO_IPIP, packet)
        if encap is not None:  # transport mode inside UDP 4500
            ihl = ip.header_length(packet)
            return 1, self.esp.encapsulate(out, packet[ihl:], packet[9])
        sealed = self.esp.encapsulate(out, packet, ip.PROTO_IPIP)
        return 0, self.outer_ip(self.A, self.B, ip.PROTO_ESP, sealed)

    def seeds(self) -> list[bytes]:
        return self._seeds

    def feed(self, data: bytes) -> None:
        mode, body = (data[0] % 3, data[1:]) if data else (0, b"")
        dp = self.dp
        windows = [(inb.replay.top, inb.replay._bitmap) for _k, _o, inb, _e in self.pairs]
        drops, keepalives, l2tp = dict(dp.drops), dp.keepalives_received, len(self.l2tp)
        if mode == 0:
            result: Any = dp.inbound_ip(body)
        elif mode == 1:
            result = dp.inbound_udp(body, (str(self.A), 4500))
        else:
            result = dp.outbound(body)
        delta = {k: v - drops.get(k, 0) for k, v in dp.drops.items() if v != drops.get(k, 0)}
        taken = (result is not None) + (dp.keepalives_received - keepalives) + (len(self.l2tp) - l2tp)
        passed = mode == 0 and result is None and not delta and len(body) >= 20 and body[9] not in (50, 51)
        if sum(delta.values()) + taken != 1 and not passed:
            raise Finding(f"mode {mode}: drops {delta}, result {result!r:.60}: not one counted outcome")
        for (top, bitmap), (_k, _o, inb, _e) in zip(windows, self.pairs, strict=True):
            moved = (inb.replay.top, inb.replay._bitmap) != (top, bitmap)
            if moved and (not taken and set(delta) & _BEFORE_AUTH):
                raise Finding(f"a packet dropped before authentication ({delta}) moved {inb.name}'s window")
        self._still_working()

    def _still_working(self) -> None:
        """A's next packet on every SA gets through, whatever came before (then the window
        is put back, so the seeds stay fresh)."""
        for _kind, out, inb, encap in self.pairs:
            replay = inb.replay
            saved = replay.top, replay._bitmap
            out.seq = max(replay.top, 5000)
            packet = self.fresh[str(self.A) if encap is not None else "10.1.0.5"]
            mode, data = self._protect(out, packet, encap)
            before = len(self.l2tp)
            result = self.dp.inbound_ip(data) if mode == 0 else self.dp.inbound_udp(data, (str(self.A), 4500))
            if result is None and len(self.l2tp) == before:
                raise Finding(f"{inb.name} no longer takes authentic traffic: {dict(self.dp.drops)}")
            replay.top, replay._bitmap = saved


# ======================================================================================
# L2TP
# ======================================================================================


class L2tpTarget(Target):
    """An LNS and a LAC with a tunnel and a call up (a shared secret, hidden AVPs, data
    sequencing), fed mutations of their whole conversation (SCCRQ..ICCN, HELLO, data,
    CDN, StopCCN).

    Modes: 0 to the LNS from the LAC's address, 1 to the LNS from an address it has no
    tunnel with, 2 to the LAC from the LNS's address.  Nothing escapes ``receive``; each
    input is counted (drops, refusals, control), answered, reported or held for
    acknowledgement; the tunnel survives anything from another address.
    """

    name = "l2tp"
    STRANGER = ("192.0.2.99", 1701)

    def __init__(self) -> None:
        from test_l2tp_wire import LAC_ADDR, LNS_ADDR

        self.lac_addr, self.lns_addr = LAC_ADDR, LNS_ADDR
        wire, tid, keys = self._up()
        for key in keys:
            wire["lac"].endpoint.send_frame(key, b"\xff\x03\xc0\x21\x01\x01\x00\x04")
        wire.run_for(70)  # HELLO
        wire["lac"].endpoint.close_session(keys[0], wire.now)
        wire["lac"].endpoint.close_tunnel(tid, wire.now)
        wire.run_for(10)
        self._seeds = [bytes([0 if to == "lns" else 2]) + data for _t, to, data in wire.log]
        self._seeds += [bytes([1]) + data for _t, to, data in wire.log if to == "lns"]
        self.fed = 0
        self.build()

    def _up(self) -> tuple[Any, int, list[Any]]:
        from test_l2tp_wire import pair, up

        from gateway.l2tp.constants import AvpType

        hidden = frozenset({AvpType.CALLING_NUMBER, AvpType.ASSIGNED_SESSION_ID})
        wire = pair(lac={"default_secret": b"tunnel-secret", "hide_avps": hidden, "data_sequencing": True},
                    lns={"default_secret": b"tunnel-secret", "hide_avps": hidden})
        tid, keys = up(wire, calls=2)
        return wire, tid, keys

    def build(self) -> None:
        self.wire, self.tid, _keys = self._up()
        self.wire.collect()
        self.now = self.wire.now

    def seeds(self) -> list[bytes]:
        return self._seeds

    def feed(self, data: bytes) -> None:
        from gateway.l2tp import SessionDown, TunnelDown

        self.fed += 1
        lac, lns = self.wire["lac"].endpoint, self.wire["lns"].endpoint
        if self.fed % 300 == 0 or lac.tunnel_state(self.tid) != "established":
            self.build()
            lac, lns = self.wire["lac"].endpoint, self.wire["lns"].endpoint
        mode, body = (data[0] % 3, data[1:]) if data else (0, b"")
        ep = lac if mode == 2 else lns
        source = {0: self.lac_addr, 1: self.STRANGER, 2: self.lns_addr}[mode]
        ep.datagrams_to_send()
        drain(ep)
        before = sum(ep.drops.values()) + sum(ep.refusals.values()) + sum(ep.control.values())
        timer = ep.get_timer()
        ep.receive(body, source, self.now)  # any exception here escaped the core
        out = ep.datagrams_to_send()
        events = drain(ep)
        counted = sum(ep.drops.values()) + sum(ep.refusals.values()) + sum(ep.control.values()) > before
        zlb = len(body) >= 12 and body[0] & 0x80 and int.from_bytes(body[2:4], "big") == 12
        if not (counted or out or events or ep.get_timer() != timer or zlb):  # a ZLB only acknowledges
            raise Finding(f"mode {mode}: L2TP input neither counted, answered, reported nor acknowledged "
                          f"later: {body[:48].hex()}")
        if mode == 1 and [e for e in events if isinstance(e, SessionDown)
                          or (isinstance(e, TunnelDown) and e.peer != self.STRANGER)]:
            raise Finding(f"a stranger's datagram tore the tunnel down: {events}")
        ep.handle_timer(self.now + 1.0)  # acknowledgements and retransmissions still run
        ep.datagrams_to_send()
        drain(ep)


# ======================================================================================
# PPP (LCP, PAP, CHAP-MD5, MS-CHAPv2, IPCP) and the dial-up service around it
# ======================================================================================

PPP_METHODS = ("mschapv2", "chap-md5", "pap")


class PppTarget(Target):
    """A fresh session (server or client) brought to step k of a real conversation by
    replaying the peer's first k frames, then given a mutation of frame k: every state
    of LCP, authentication (each method) and IPCP sees hostile input.

    Input: ``mode`` (method = mode % 3, the server when mode // 3 is even), ``k``, frame.
    Nothing escapes; drops only grow; timers and close still work afterwards.
    """

    name = "ppp"

    def __init__(self) -> None:
        from test_ppp_harness import connect

        self.conversations = {m: connect(m).log for m in PPP_METHODS}
        self._seeds = []
        for i, method in enumerate(PPP_METHODS):
            for side in (0, 1):
                way = "b>a" if side == 0 else "a>b"  # to the server (a) or to the client (b)
                frames = [f for _t, w, f in self.conversations[method] if w == way]
                self._seeds += [bytes([i + 3 * side, k]) + f for k, f in enumerate(frames)]

    def seeds(self) -> list[bytes]:
        return self._seeds

    def feed(self, data: bytes) -> None:
        from test_ppp_harness import client_config, client_session, server_config, server_session

        data = data.ljust(2, b"\0")
        method, server = PPP_METHODS[data[0] % 3], data[0] // 3 % 2 == 0
        way = "b>a" if server else "a>b"
        frames = [f for _t, w, f in self.conversations[method] if w == way]
        k = data[1] % (len(frames) + 1)
        session = server_session(server_config()) if server else \
            client_session(client_config("alice", None, methods=(method,)))
        session.start(0.0)
        for i, frame in enumerate(frames[:k]):
            session.receive(frame, 0.1 * i)
        session.frames_to_send()
        drain(session)
        before = sum(session.drops.values())
        session.receive(data[2:], 10.0)
        session.frames_to_send()
        drain(session)
        if sum(session.drops.values()) < before:
            raise Finding("a drop counter went down")
        for t in (20.0, 60.0):
            timer = session.get_timer()
            session.handle_timer(t if timer is None else max(t, timer))
        session.close(100.0, "done")
        session.handle_timer(200.0)
        session.frames_to_send()
        drain(session)


class DialupTarget(Target):
    """`DialupService.receive` of the LNS in the unit tests' lab (IKEv1 + L2TP + PPP with a
    LAC up), fed mutations of what the LAC sent it: L2TP control and data carrying PPP."""

    name = "dialup"

    def __init__(self) -> None:
        import test_dialup

        self.lab_module = test_dialup
        recorded: list[tuple[str, tuple[str, int], bytes]] = []
        gw = test_dialup.gateway
        lab = test_dialup.Lab(gw(test_dialup.LNS, 1), gw(test_dialup.LAC, 2))
        original = lab.hq.dialup.receive

        def receive(tunnel: str, peer: tuple[str, int], data: bytes, now: float) -> None:
            recorded.append((tunnel, peer, data))
            original(tunnel, peer, data, now)

        lab.hq.dialup.receive = receive  # type: ignore[method-assign]
        lab.branch.ike.initiate("to-hq", lab.now)  # as test_dialup.lab() does, recorded
        lab.pump()
        lab.advance(70)  # the call, PPP, then HELLO and LCP echo
        lab.branch.dialup.hang_up("to-hq", lab.now)
        lab.advance(5)
        self._seeds = [b"\0" + data for _t, _p, data in recorded]
        self.tunnel, self.peer, _data = recorded[0]
        self.fed = 0
        self.build()

    def build(self) -> None:
        self.lab = self.lab_module.lab()

    def seeds(self) -> list[bytes]:
        return self._seeds

    def feed(self, data: bytes) -> None:
        self.fed += 1
        if self.fed % 200 == 0:
            self.build()
        hq = self.lab.hq
        hq.dialup.receive(self.tunnel, self.peer, data[1:], self.lab.now)  # nothing may escape
        hq.dialup.transmits.clear()
        hq.dialup.to_tun.clear()
        timer = hq.dialup.get_timer()
        if timer is not None and timer <= self.lab.now + 1:
            hq.dialup.handle_timer(self.lab.now + 1)


TARGETS: dict[str, type[Target]] = {cls.name: cls for cls in (
    Ike2Target, Ike1Target, DataplaneTarget, L2tpTarget, PppTarget, ConfigTarget, DialupTarget)}
