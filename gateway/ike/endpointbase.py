"""What the IKEv1 and IKEv2 endpoints share, behind their common sans-IO interface.

Randomness and the wall clock come in from outside (tests replay exchanges byte for
byte); datagrams and events queue until the shell collects them; SPIs for IPsec SAs are
allocated without collisions; timers run over every SA; and connections configured to
``start`` are kept up, re-initiated with exponential backoff after a failure.
"""

from __future__ import annotations

import datetime
import heapq
import itertools
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from gateway.ike.events import Datagram, Note, PeerDead
from gateway.ike.identity import ANY, Identity
from gateway.ike.settings import PeerConfig, Timing
from gateway.ike.trafficselectors import TsRange

RETRY_MIN = 5.0
RETRY_MAX = 120.0

#: The IPsec policy's say on a CHILD_SA a peer asks for: (connection, the peer's selectors,
#: ours, as narrowed) -> None to accept, or why it is refused.  The shell passes one in
#: (`gateway.policy.runtime`); without one every request the connection allows is accepted.
ChildPolicy = Callable[[str, tuple[TsRange, ...], tuple[TsRange, ...]], str | None]


class PeerIdentified:
    """An IKE or ISAKMP SA whose peer identity its endpoint indexes: setting ``peer_id``
    tells the endpoint (``ctx.peer_identified``), which files the SA under it."""

    _peer_id: Identity | None
    ctx: Any

    @property
    def peer_id(self) -> Identity | None:
        """The peer's identity (authenticated once the SA is established); the endpoint
        indexes SAs by it (`peer_identified`)."""
        return self._peer_id

    @peer_id.setter
    def peer_id(self, value: Identity | None) -> None:
        old, self._peer_id = self._peer_id, value
        if value != old:
            self.ctx.peer_identified(self, old)


class EndpointBase:
    def __init__(self, local_address: str, configs: list[PeerConfig], random: Callable[[int], bytes],
                 timing: Timing | None) -> None:
        self.local_address = local_address
        self.configs = {c.name: c for c in configs}
        self._random = random
        self._timing = timing or Timing()
        self._sas: dict[bytes, Any] = {}  # by our SPI (IKEv2) or cookie (IKEv1)
        #: timers without a pass over every SA (`get_timer`, `handle_timer`, each called per
        #: message or more): a heap of (deadline, push number, SA), where an SA's valid entry
        #: is the one with the deadline in ``_deadline``; the SAs whose deadline may have
        #: changed since (`touch`) are looked at again first (`_refresh_timers`)
        #: (the heap refers to SAs weakly: an SA dropped before its deadline, such as a
        #: half-open one evicted in a flood, must not stay in memory for its stale entry)
        self._timer_heap: list[tuple[float, int, weakref.ref[Any]]] = []
        self._deadline: dict[Any, float] = {}
        self._touched: dict[Any, None] = {}
        self._pushes = itertools.count()
        #: SAs touched since the cores' half-open tables last looked (`_settle`)
        self._unsettled: dict[Any, None] = {}
        self._spis: set[int] = set()
        self._out: list[Datagram] = []
        self._events: deque[object] = deque()
        self.keep_up: dict[str, float] = {}  # connection -> earliest next attempt
        self._backoff: dict[str, float] = {}
        self.counters: dict[str, int] = {}
        self.child_policy: ChildPolicy | None = None
        #: an SA closed since the last `_collect` (which scans every SA only then)
        self._closed_since_collect = False
        self._child_index: dict[int, Any] = {}  # inbound IPsec SPI -> IKE SA (see ike_sa_of_child)
        #: SAs by their peer's identity (`Identity.match_key`), from when it is known
        #: (`peer_identified`) until they close: where INITIAL_CONTACT and IKEv1's Phase 1
        #: rekeys look for the same peer's other SAs, instead of in every SA per handshake
        self._by_peer: dict[tuple[object, ...], dict[Any, None]] = {}

    @property
    def timing(self) -> Timing:
        return self._timing

    @timing.setter
    def timing(self, timing: Timing) -> None:
        """New timing (a reload): every SA's deadlines may move."""
        self._timing = timing
        for sa in self._sas.values():
            self.touch(sa)

    # -- what the cores implement ------------------------------------------------------------
    def _start(self, name: str, now: float) -> Any:
        raise NotImplementedError

    def _active(self, name: str) -> bool:
        raise NotImplementedError

    def _collect(self) -> None:
        """Forget closed SAs: every SA is looked at only when one closed (`sa_closed`), not
        for every message (that made each message cost O(N) in the SAs: bench/handshakes);
        then settle the half-open tables from the SAs touched since."""
        if self._closed_since_collect:
            self._closed_since_collect = False
            for key, sa in list(self._sas.items()):
                if sa.closed:
                    del self._sas[key]
                    self._forget_timer(sa)
        self._settle_touched()
        if self.check_timers:
            self._check_tables()

    def _check_tables(self) -> None:
        """The tests' check: the half-open tables as a pass over every SA would make them."""

    def _delete_sa(self, sa: Any, now: float, reason: str) -> None:
        """Delete one IKE/ISAKMP SA with its children, telling the peer."""
        raise NotImplementedError

    def terminate(self, name: str, now: float, reason: str = "terminated by operator") -> int:
        """Delete every IKE SA of a connection (and stop keeping it up)."""
        self.keep_up.pop(name, None)
        self._backoff.pop(name, None)
        count = 0
        for sa in list(self._sas.values()):
            if sa.name == name and not sa.closed:
                self._delete_sa(sa, now, reason)
                self._touch_peer(sa)
                count += 1
        self._collect()
        return count

    # -- connections at run time (a config reload) ----------------------------------------------
    def add_config(self, config: PeerConfig) -> None:
        """A connection the config gained: new exchanges may use it from now on. Nothing
        starts here (the shell initiates a ``start`` connection); other SAs are untouched."""
        if config.name in self.configs:
            raise ValueError(f"connection {config.name} exists already")
        self.configs[config.name] = config

    def remove_config(self, name: str, now: float, reason: str = "removed from the config") -> int:
        """A connection the config lost: its IKE SAs are deleted (the peer is told), it is no
        longer kept up, and no new exchange matches it. Returns the number of IKE SAs."""
        count = self.terminate(name, now, reason)
        self.configs.pop(name, None)
        return count

    # -- the Context an SA sees ---------------------------------------------------------------
    def random(self, n: int) -> bytes:
        return self._random(n)

    def wall_time(self, now: float) -> datetime.datetime | None:
        epoch = self.timing.epoch
        return None if epoch is None else datetime.datetime.fromtimestamp(epoch + now, datetime.UTC)

    def emit(self, event: object) -> None:
        self._events.append(event)
        if isinstance(event, PeerDead):
            self._dead_peer_action(event)

    def _dead_peer_action(self, event: PeerDead) -> None:
        cfg = self.configs.get(event.connection)
        if cfg is None:
            return
        if event.action == "restart" and cfg.remote_address is not None:
            self.keep_up[cfg.name] = 0.0
            self._backoff.pop(cfg.name, None)
        elif event.action == "clear":
            self.keep_up.pop(cfg.name, None)

    def transmit(self, datagrams: list[bytes], local_port: int, remote: tuple[str, int]) -> None:
        self._out += [Datagram(d, local_port, remote) for d in datagrams]

    def refuse_child(self, name: str, remote_ts: tuple[TsRange, ...],
                     local_ts: tuple[TsRange, ...]) -> str | None:
        """Why the policy refuses a peer's CHILD_SA request, or None (`ChildPolicy`)."""
        check = self.child_policy
        return None if check is None else check(name, remote_ts, local_ts)

    def allocate_spi(self) -> int:
        while True:
            spi = int.from_bytes(self._random(4), "big")
            if spi >= 0x100 and spi not in self._spis:
                self._spis.add(spi)
                return spi

    def release_spi(self, spi: int) -> None:
        self._spis.discard(spi)

    def sa_closed(self, sa: Any) -> None:
        """An SA of ours closed: the next `_collect` has something to forget."""
        self._closed_since_collect = True
        self.touch(sa)
        if sa.peer_id is not None:
            self._unindex_peer(sa, sa.peer_id)

    def peer_identified(self, sa: Any, old: Identity | None) -> None:
        """An SA's ``peer_id`` was set (it was ``old``): index it under the new identity."""
        if old is not None:
            self._unindex_peer(sa, old)
        if sa.peer_id is not None and not sa.closed:
            self._by_peer.setdefault(sa.peer_id.match_key, {})[sa] = None

    def _unindex_peer(self, sa: Any, identity: Identity) -> None:
        bucket = self._by_peer.get(identity.match_key)
        if bucket is not None:
            bucket.pop(sa, None)
            if not bucket:
                del self._by_peer[identity.match_key]

    def _same_peer(self, identity: Identity, exclude: Any) -> list[Any]:
        """The open SAs (but ``exclude``) whose peer identity may match ``identity`` either
        way, in the order of ``_sas`` (their creation order): a superset of those for which
        ``identity.matches(peer_id)`` or ``peer_id.matches(identity)``; callers check each
        as they did when they scanned every SA."""
        if identity.is_any:  # matches every identity (never one from the wire)
            return [sa for sa in self._sas.values() if sa is not exclude]
        found = [sa for key in (identity.match_key, ANY.match_key) for sa in self._by_peer.get(key, ())
                 if sa is not exclude]
        if len(found) > 1:
            found.sort(key=lambda sa: sa.seq)
        return found

    # -- the shell's interface ------------------------------------------------------------------
    def datagrams_to_send(self) -> list[Datagram]:
        if self.check_timers:
            self.get_timer()
        out, self._out = self._out, []
        return out

    def next_event(self) -> object | None:
        if self.check_timers:
            self.get_timer()
        return self._events.popleft() if self._events else None

    # -- timers ---------------------------------------------------------------------------------
    #: tests set this: every `get_timer` and `handle_timer` is checked against a pass over
    #: every SA (a change of an SA's deadline that nobody `touch`ed shows there)
    check_timers = False

    def touch(self, sa: Any) -> None:
        """``sa``'s deadline may have changed: `get_timer` looks at it again.  The endpoints
        do this for every SA they hand a message, a timer or a command to, for the SAs of
        the same peer (its other SAs, which one SA's exchange may change: rekeys, INITIAL_
        CONTACT, reauthentication) and for an SA `ike_sa_of_child` hands out (the shell
        reports its traffic to it); whoever changes an SA's timers otherwise says so here."""
        self._touched[sa] = None
        self._unsettled[sa] = None

    def _touch_peer(self, sa: Any) -> None:
        """``sa`` and the SAs one exchange of it may change: the same peer's, its
        predecessor and successor."""
        self.touch(sa)
        if sa.peer_id is not None:
            for other in self._same_peer(sa.peer_id, sa):
                self.touch(other)
        for name in ("reauth_of", "replaced_by", "replacement"):
            other = getattr(sa, name, None)
            if other is not None:
                self.touch(other)

    def _forget_timer(self, sa: Any) -> None:
        """``sa`` left ``_sas``."""
        self._deadline.pop(sa, None)

    def _settle_touched(self) -> None:
        """The cores' bookkeeping of the SAs touched since it last looked (`_settle`)."""
        if self._unsettled:
            unsettled, self._unsettled = self._unsettled, {}
            self._settle(unsettled)

    def _settle(self, sas: Iterable[Any]) -> None:
        """The cores' bookkeeping of SAs whose state may have changed (their half-open
        tables), from `_collect`."""

    def _refresh_timers(self) -> None:
        touched, self._touched = self._touched, {}
        current, heap = self._deadline, self._timer_heap
        for sa in touched:
            deadline = None if sa.closed or self._waiting(sa) else sa.next_deadline()
            if deadline == current.get(sa):
                continue
            if deadline is None:
                del current[sa]
            else:
                current[sa] = deadline
                heapq.heappush(heap, (deadline, next(self._pushes), weakref.ref(sa)))
        if len(heap) > 64 + 4 * len(current):  # stale entries: build it again
            self._timer_heap = [(d, next(self._pushes), weakref.ref(sa)) for sa, d in current.items()]
            heapq.heapify(self._timer_heap)

    def get_timer(self) -> float | None:
        self._refresh_timers()
        heap, current = self._timer_heap, self._deadline
        while heap and current.get(heap[0][2]()) != heap[0][0]:
            heapq.heappop(heap)  # an entry the SA's deadline has moved from
        times = [heap[0][0]] if heap else []
        first = next((sa for sa in self._waiting_queue() if self._waiting(sa)), None)
        if first is not None and (t := first.next_deadline()) is not None:
            times.append(t)
        times += [t for name, t in self.keep_up.items() if not self._active(name)]
        result = min(times) if times else None
        if self.check_timers:
            assert result == self._scan_timer(), (result, self._scan_timer())
        return result

    def _scan_timer(self) -> float | None:
        """What `get_timer` gives, from every SA (the check of ``check_timers``)."""
        times = [t for sa in self._sas.values()
                 if not sa.closed and not self._waiting(sa) and (t := sa.next_deadline()) is not None]
        first = next((sa for sa in self._waiting_queue() if self._waiting(sa)), None)
        if first is not None and (t := first.next_deadline()) is not None:
            times.append(t)
        times += [t for name, t in self.keep_up.items() if not self._active(name)]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        due = []
        for sa in self._waiting_queue():
            if self._waiting(sa):
                deadline = sa.next_deadline()
                if deadline is not None and now < deadline:
                    break
                due.append(sa)
        for sa in due:
            sa.on_timer(now)
            self.touch(sa)
        expected = [sa for sa in self._sas.values() if not sa.closed and not self._waiting(sa)
                    and (d := sa.next_deadline()) is not None and now >= d] if self.check_timers else []
        # The SAs that are due, each once, in the order they were made (the order of _sas);
        # then those that fell due meanwhile (one SA's timer may change another's).
        fired: set[Any] = set()
        later: list[Any] = []
        while True:
            self._refresh_timers()
            heap, current = self._timer_heap, self._deadline
            batch = []
            while heap and heap[0][0] <= now:
                deadline, _, ref = heapq.heappop(heap)
                sa = ref()
                if sa is not None and current.get(sa) == deadline:
                    del current[sa]  # (a new entry once touched below)
                    (later if sa in fired else batch).append(sa)
            if not batch:
                break
            batch.sort(key=lambda sa: sa.seq)
            for sa in batch:
                fired.add(sa)
                if not self._waiting(sa):
                    deadline = sa.next_deadline()
                    if deadline is not None and now >= deadline:
                        sa.on_timer(now)
                self._touch_peer(sa)
        for sa in later:  # due again: at the next call, as before
            self.touch(sa)
        if self.check_timers:
            assert all(sa in fired for sa in expected), [sa for sa in expected if sa not in fired]
        self._collect()
        for name, when in list(self.keep_up.items()):
            if now >= when and not self._active(name):
                self._start(name, now)

    # Half-open responder SAs can number thousands in a flood, and their only timer is the
    # half-open timeout, so they time out in the order they came: the cores list them
    # oldest first (`_waiting_queue`, where other SAs may linger until collected) and say
    # which SA is one (`_waiting`); timers then look at the first of them only.
    def _waiting_queue(self) -> Iterable[Any]:
        return ()

    def _waiting(self, sa: Any) -> bool:
        return False

    def initiate(self, name: str, now: float, *, keep_up: bool = True) -> None:
        cfg = self.configs[name]
        if cfg.remote_address is None:
            raise ValueError(f"connection {name} has no remote address to initiate to")
        if keep_up:
            self.keep_up[name] = now
        if not self._active(name):
            self._start(name, now)

    def _next_attempt(self, name: str, now: float) -> None:
        """An attempt starts: if it fails, the next waits twice as long (5 s .. 2 min)."""
        delay = self._backoff.get(name, 0.0)
        self._backoff[name] = min(RETRY_MAX, max(RETRY_MIN, delay * 2))
        if name in self.keep_up:
            self.keep_up[name] = now + self._backoff[name]

    def note_established(self, name: str) -> None:
        """A connection came up: the next failure starts its backoff from scratch."""
        self._backoff.pop(name, None)

    # -- reporting -------------------------------------------------------------------------------
    def sas(self, now: float) -> list[dict[str, Any]]:
        return [sa.describe(now) for sa in self._sas.values() if not sa.closed]

    def ike_sa_of_child(self, spi_in: int) -> Any:
        """The IKE (ISAKMP) SA that made the IPsec SA with this inbound SPI.

        From an index rebuilt only when it is wrong: the daemon asks this for every IPsec SA
        each second, and a scan of every SA per question made that O(N^2) (bench/handshakes).
        """
        if spi_in not in self._spis:
            return None  # not an SPI this core allocated
        sa = self._child_index.get(spi_in)
        if sa is None or not any(c.spi_in == spi_in for c in sa.children):
            index: dict[int, Any] = {}
            for each in self._sas.values():
                for child in each.children:
                    index.setdefault(child.spi_in, each)
            self._child_index = index
            sa = index.get(spi_in)
        if sa is not None:
            self.touch(sa)  # (the shell tells it about the child's traffic)
        return sa

    def negotiating(self, name: str) -> bool:
        """Whether any IKE SA of the connection is still alive (connecting or up)."""
        return self._active(name)

    def established(self, name: str) -> bool:
        return any(sa.name == name and sa.up for sa in self._sas.values())

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1

    def _note(self, what: str, level: str = "info", **fields: object) -> None:
        self.emit(Note(what, level, tuple((k, str(v)) for k, v in fields.items())))
