"""What the PPP tests share: seeded randomness, users, both roles' configs, and a virtual
wire that carries frames between two sessions on a virtual clock (with loss on demand).

The other ``test_ppp_*`` files import it by name (``tests/unit`` is on ``sys.path``, see
conftest.py); its own tests check the harness: exchanges replay byte for byte.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.ppp import (
    ClientConfig,
    LcpConfig,
    PppConfig,
    PppSession,
    ServerConfig,
    UserSecret,
    nt_hash,
    salted_hash,
)
from gateway.ppp.events import AuthFailed, AuthSucceeded, IpPacket, LinkDown, LinkUp, Note
from gateway.ppp.frame import decode_frame

GATEWAY = "10.8.0.1"
POOL_FIRST = "10.8.0.10"
DNS = ("10.8.0.53", "10.8.0.54")

#: one user per stored form: a clear password, an NT hash, a salted hash (cheap scrypt)
USERS = {
    "alice": UserSecret(password="alice-pw"),
    "bob": UserSecret(nt_hash=nt_hash("bob-pw")),
    "carol": UserSecret(salted=salted_hash("carol-pw", b"0123456789abcdef", n=2, r=1, p=1)),
    "user": UserSecret(password="user-pw"),
}
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "user": "user-pw"}


def rng(seed: int) -> Callable[[int], bytes]:
    """Deterministic ``random(n)`` for a session."""
    return _random.Random(seed).randbytes


def lcp_config(**kw: object) -> LcpConfig:
    return LcpConfig(**kw)  # type: ignore[arg-type]


def server_config(methods: tuple[str, ...] = ("mschapv2", "chap-md5", "pap"), dns: tuple[str, ...] = DNS,
                  lcp: LcpConfig | None = None, **kw: object) -> PppConfig:
    return PppConfig(lcp=lcp or LcpConfig(),
                     server=ServerConfig(local_address=GATEWAY, dns=dns, methods=methods, **kw))  # type: ignore[arg-type]


def client_config(user: str = "alice", password: str | None = None,
                  methods: tuple[str, ...] = ("mschapv2", "chap-md5", "pap"), lcp: LcpConfig | None = None,
                  **kw: object) -> PppConfig:
    pw = PASSWORDS.get(user, "") if password is None else password
    return PppConfig(lcp=lcp or LcpConfig(),
                     client=ClientConfig(user=user, password=pw, methods=methods, **kw))  # type: ignore[arg-type]


@dataclass
class Pool:
    """The server's address callback: one address per user, recorded."""

    given: dict[str, str] = field(default_factory=dict)
    exhausted: bool = False

    def __call__(self, user: str) -> str | None:
        if self.exhausted:
            return None
        self.given[user] = POOL_FIRST
        return POOL_FIRST


def server_session(config: PppConfig | None = None, seed: int = 1, now: float = 0.0,
                   users: dict[str, UserSecret] | None = None, pool: Pool | None = None) -> PppSession:
    table = USERS if users is None else users
    return PppSession("server", config or server_config(), rng(seed), now, credentials=table.get,
                      address_for=pool or Pool())


def client_session(config: PppConfig | None = None, seed: int = 2, now: float = 0.0) -> PppSession:
    return PppSession("client", config or client_config(), rng(seed), now)


def events(session: PppSession) -> list[object]:
    out = []
    while (e := session.next_event()) is not None:
        out.append(e)
    return out


def of(kind: type, evs: list[object]) -> list:
    return [e for e in evs if isinstance(e, kind)]


Lose = Callable[[str, int, bytes], bool]  # (direction "a>b"/"b>a", index, frame) -> lose it?


@dataclass
class Wire:
    """Two sessions on one virtual clock; frames cross instantly unless ``lose`` says so."""

    a: PppSession
    b: PppSession
    now: float = 0.0
    lose: Lose | None = None
    log: list[tuple[float, str, bytes]] = field(default_factory=list)
    a_events: list[object] = field(default_factory=list)
    b_events: list[object] = field(default_factory=list)
    _count: dict[str, int] = field(default_factory=lambda: {"a>b": 0, "b>a": 0})

    def start(self) -> None:
        self.a.start(self.now)
        self.b.start(self.now)
        self.pump()

    def pump(self) -> None:
        for _ in range(10_000):
            moved = False
            for src, dst, way in ((self.a, self.b, "a>b"), (self.b, self.a, "b>a")):
                for frame in src.frames_to_send():
                    moved = True
                    index = self._count[way]
                    self._count[way] += 1
                    self.log.append((self.now, way, frame))
                    if self.lose is not None and self.lose(way, index, frame):
                        continue
                    dst.receive(frame, self.now)
            self.a_events += events(self.a)
            self.b_events += events(self.b)
            if not moved:
                return
        raise AssertionError("the sessions never stop talking")

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        """Exchange frames and fire timers until ``until`` (virtual seconds) or ``stop()``."""
        self.pump()
        while not (stop is not None and stop()):
            timers = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
            if not timers or min(timers) > until:
                self.now = max(self.now, until) if timers else self.now
                return
            self.now = max(self.now, min(timers))
            for s in (self.a, self.b):
                t = s.get_timer()
                if t is not None and t <= self.now:
                    s.handle_timer(self.now)
            self.pump()

    def up(self) -> bool:
        return bool(of(LinkUp, self.a_events)) and bool(of(LinkUp, self.b_events))

    def frames(self, way: str) -> list[bytes]:
        return [f for _, w, f in self.log if w == way]

    def protocols(self, way: str) -> list[int]:
        return [decode_frame(f).protocol for f in self.frames(way)]


def connect(method: str = "mschapv2", user: str = "alice", password: str | None = None,
            server_methods: tuple[str, ...] = ("mschapv2", "chap-md5", "pap"),
            lose: Lose | None = None, until: float = 60.0, **client_kw: object) -> Wire:
    """A client offering only ``method`` against our server, run until both are up."""
    wire = Wire(server_session(server_config(methods=server_methods)),
                client_session(client_config(user, password, methods=(method,), **client_kw)), lose=lose)
    wire.start()
    wire.run(until, stop=wire.up)
    return wire


# -- the harness's own tests -------------------------------------------------------------------
def test_a_connection_replays_byte_for_byte() -> None:
    first, second = connect(), connect()
    assert first.log == second.log
    assert first.up()


def test_events_name_no_secret() -> None:
    wire = connect("pap", "alice")
    for e in wire.a_events + wire.b_events:
        assert "alice-pw" not in repr(e)
        assert isinstance(e, AuthSucceeded | LinkUp | Note | IpPacket | AuthFailed | LinkDown)


def test_a_stuck_random_source_does_not_hang_a_session() -> None:
    zeros = lambda n: bytes(n)  # noqa: E731
    wire = Wire(PppSession("server", server_config(), zeros, 0.0, credentials=USERS.get, address_for=Pool()),
                PppSession("client", client_config(), zeros, 0.0))
    wire.start()
    wire.run(120.0, stop=lambda: wire.up() or (wire.a.finished and wire.b.finished))
    # identical magic numbers on both ends look exactly like a loop (RFC 1661 6.4): it ends, it does not hang
    assert wire.a.reason == wire.b.reason == "link is looped back (our own Magic-Number comes back)"
    assert wire.a.finished and wire.b.finished


def test_configs_never_show_the_password() -> None:
    assert "alice-pw" not in repr(client_config("alice")) + str(client_config("alice"))
