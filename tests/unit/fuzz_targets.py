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
import struct
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fuzzing import mutant
from ike_loopback import BRANCH, HQ, endpoints, psk_pair, seeded

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
