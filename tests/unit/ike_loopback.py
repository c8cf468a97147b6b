"""Two IKEv2 endpoints wired back to back, with a fake clock: exchanges without sockets."""

from __future__ import annotations

import ipaddress
import random as _random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from gateway.config.model import Secret
from gateway.ike.events import Datagram
from gateway.ike.identity import Identity
from gateway.ike.proposals import parse_child_proposal, parse_ike_proposal
from gateway.ike.settings import ChildConfig, PeerConfig, Timing
from gateway.ike.trafficselectors import TsRange
from gateway.ike.v2.endpoint import IkeV2Endpoint

HQ = "192.0.2.1"
BRANCH = "198.51.100.1"
HQ_LAN = TsRange.of_network(ipaddress.IPv4Network("10.1.0.0/24"))
BRANCH_LAN = TsRange.of_network(ipaddress.IPv4Network("10.2.0.0/24"))


def seeded(seed: int) -> Callable[[int], bytes]:
    rng = _random.Random(seed)
    return lambda n: rng.randbytes(n)


def psk_pair(psk_hq: str = "s3cret-psk-value", psk_branch: str | None = None,
             ike: str = "aes256gcm16-prfsha256-ecp256", esp: str = "aes256gcm16",
             **overrides: object) -> tuple[PeerConfig, PeerConfig]:
    def make(name: str, local: str, remote: str, lts: TsRange, rts: TsRange, psk: str) -> PeerConfig:
        child = ChildConfig("net", (lts,), (rts,), (parse_child_proposal(esp),))
        cfg = PeerConfig(name, local, remote, (parse_ike_proposal(ike),), child, Identity.parse(local),
                         Identity.parse(remote), psk=Secret(psk.encode()), dpd_interval=None)
        return replace(cfg, **overrides) if overrides else cfg

    return (make("to-branch", HQ, BRANCH, HQ_LAN, BRANCH_LAN, psk_hq),
            make("to-hq", BRANCH, HQ, BRANCH_LAN, HQ_LAN, psk_branch or psk_hq))


@dataclass
class Wire:
    """Delivers datagrams between two endpoints; can drop or record them."""

    a: IkeV2Endpoint
    b: IkeV2Endpoint
    now: float = 1000.0
    log: list[tuple[str, Datagram]] = field(default_factory=list)
    drop: Callable[[str, Datagram], bool] | None = None
    events_a: list[object] = field(default_factory=list)
    events_b: list[object] = field(default_factory=list)

    def pump(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            moved = False
            for src, dst, tag in ((self.a, self.b, "a>b"), (self.b, self.a, "b>a")):
                for d in src.datagrams_to_send():
                    moved = True
                    self.log.append((tag, d))
                    if self.drop is not None and self.drop(tag, d):
                        continue
                    dst.receive(d.data, d.remote[1], (src.local_address, d.local_port), self.now)
            self._drain()
            if not moved:
                return

    def _drain(self) -> None:
        for ep, out in ((self.a, self.events_a), (self.b, self.events_b)):
            while (ev := ep.next_event()) is not None:
                out.append(ev)

    def advance(self, seconds: float, step: float = 0.5) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for ep in (self.a, self.b):
                t = ep.get_timer()
                if t is not None and t <= self.now:
                    ep.handle_timer(self.now)
            self.pump()


def endpoints(cfg_a: PeerConfig, cfg_b: PeerConfig, *, seed: int = 1,
              timing: Timing | None = None) -> Wire:
    # The fake clock starts at Wire.now; certificates are judged at the real time (the
    # test is the shell here, and the shell owns the clocks).
    timing = replace(timing or Timing(), epoch=time.time() - Wire.now)
    a = IkeV2Endpoint(cfg_a.local_address, [cfg_a], random=seeded(seed), timing=timing)
    b = IkeV2Endpoint(cfg_b.local_address, [cfg_b], random=seeded(seed + 1000), timing=timing)
    return Wire(a, b)


def of_type(events: list[object], cls: type) -> list:
    return [e for e in events if isinstance(e, cls)]


# -- more helpers (several peers, timed runs, digests) ----------------------------------


@dataclass
class Net:
    """Any number of endpoints on one wire; each datagram goes to the endpoint at its
    destination address.  ``drop(src, dst, datagram)`` may drop it; ``log`` keeps all."""

    endpoints: dict[str, IkeV2Endpoint]
    now: float = 1000.0
    log: list[tuple[str, str, Datagram]] = field(default_factory=list)
    drop: Callable[[str, str, Datagram], bool] | None = None
    events: dict[str, list[object]] = field(default_factory=dict)

    @classmethod
    def of(cls, *eps: IkeV2Endpoint) -> Net:
        return cls({ep.local_address: ep for ep in eps})

    def pump(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            moved = False
            for addr, src in self.endpoints.items():
                for d in src.datagrams_to_send():
                    moved = True
                    self.log.append((addr, d.remote[0], d))
                    dst = self.endpoints.get(d.remote[0])
                    if dst is None or (self.drop is not None and self.drop(addr, d.remote[0], d)):
                        continue
                    dst.receive(d.data, d.remote[1], (addr, d.local_port), self.now)
            for addr, ep in self.endpoints.items():
                out = self.events.setdefault(addr, [])
                while (ev := ep.next_event()) is not None:
                    out.append(ev)
            if not moved:
                return

    def advance(self, seconds: float, step: float = 0.5) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for ep in self.endpoints.values():
                t = ep.get_timer()
                if t is not None and t <= self.now:
                    ep.handle_timer(self.now)
            self.pump()


def run_until(wire: Wire | Net, done: Callable[[], bool], limit: float, step: float = 0.5) -> float | None:
    """Advance the clock in steps until ``done()``; the time it became true, or None."""
    end = wire.now + limit
    while wire.now < end:
        wire.advance(step, step)
        if done():
            return wire.now
    return None


def wire_digest(log: list[tuple[str, Datagram]]) -> str:
    """SHA-256 over direction tags and datagram bytes, in order."""
    import hashlib

    h = hashlib.sha256()
    for tag, d in log:
        h.update(tag.encode() + len(d.data).to_bytes(4, "big") + d.data)
    return h.hexdigest()
