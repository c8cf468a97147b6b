"""Reliable delivery of control messages over one control connection (RFC 2661 5.8).

Every control message but a ZLB takes the next Ns; every message we send carries Nr, the
Ns we expect next, which acknowledges everything before it. At most the peer's Receive
Window Size messages are unacknowledged at once; the rest wait in order. The oldest
unacknowledged message is retransmitted after 1 s, then 2, 4, 8, 8... seconds; after the
configured number of retransmissions without progress the connection has failed. An
acknowledgement that covers the retransmitted message but not all that was outstanding
names the next message the peer lacks, which goes again at once (TCP NewReno's partial
acknowledgement, RFC 6582): the peer holds what came after a loss, so one retransmission
per hole suffices, and no loss pattern can starve one message forever. Received messages
are delivered exactly once and in order: duplicates are acknowledged again (the ack was
lost), messages ahead of the expected Ns wait in a bounded queue, and when no message
goes out to carry an acknowledgement a ZLB does, after a short delay.

The channel knows nothing of message types: it moves encoded AVP bodies out and hands
whatever it is given for received messages back in order. Time is a parameter.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.l2tp.constants import DEFAULT_PEER_WINDOW
from gateway.l2tp.message import encode_control

T = TypeVar("T")
SEQ_MASK = 0xFFFF


def seq_before(a: int, b: int) -> bool:
    """Whether sequence number ``a`` comes before ``b`` (16-bit serial arithmetic, RFC 1982)."""
    return a != b and ((b - a) & SEQ_MASK) < 0x8000


def seq_next(a: int, n: int = 1) -> int:
    return (a + n) & SEQ_MASK


@dataclass(frozen=True)
class RetransmitPolicy:
    """Timers of RFC 2661 5.8: first timeout, its cap, retransmissions before giving up,
    and how long an acknowledgement may wait for a message to ride on before a ZLB goes."""

    initial: float = 1.0
    maximum: float = 8.0
    retries: int = 5
    ack_delay: float = 0.25

    def interval(self, retransmissions: int) -> float:
        """The wait after the message was (re)transmitted ``retransmissions`` times."""
        return min(self.initial * (2 ** retransmissions), self.maximum)

    def cycle(self) -> float:
        """A full retransmission cycle: from the first transmission to giving up (31 s by
        default); how long a closed connection lingers to acknowledge a StopCCN (5.7)."""
        return sum(self.interval(i) for i in range(self.retries + 1))


@dataclass
class _Pending:
    ns: int
    session_id: int
    body: bytes
    label: str


class ReliableChannel(Generic[T]):
    """The sequence and acknowledgement state of one control connection, both directions."""

    def __init__(self, policy: RetransmitPolicy, receive_window: int,
                 peer_window: int = DEFAULT_PEER_WINDOW, now: float = 0.0,
                 counter: Callable[[str], None] | None = None) -> None:
        self.policy = policy
        self.receive_window = max(1, receive_window)  # what we advertise: the reorder bound
        self.peer_window = max(1, peer_window)
        self.peer_tunnel_id = 0  # where our messages go (0 until the peer assigned its id)
        self.ns = 0  # the Ns of our next new message
        self.nr = 0  # the Ns we expect next from the peer
        self._unacked: deque[_Pending] = deque()
        self._queued: deque[_Pending] = deque()  # beyond the peer's window
        self._ahead: dict[int, T] = {}
        self._rto = policy.initial
        self._recover: int | None = None  # the last Ns outstanding when a timeout struck
        self.retries = 0
        self._retransmit_at: float | None = None
        self._ack_at: float | None = None
        self.failed = False
        self.last_heard = now
        self._out: list[bytes] = []
        #: retransmissions, duplicates, reordered, beyond_window, bad_nr, zlb_sent
        self.stats: dict[str, int] = {}
        self._counter = counter  # told of every count too (the endpoint's totals)

    # -- sending -----------------------------------------------------------------------------

    def send(self, session_id: int, body: bytes, label: str, now: float) -> int:
        """Queue a message (its encoded AVPs) and send it when the window allows; its Ns."""
        pending = _Pending(self.ns, session_id, body, label)
        self.ns = seq_next(self.ns)
        self._queued.append(pending)
        self._fill_window(now)
        return pending.ns

    def _fill_window(self, now: float) -> None:
        while self._queued and len(self._unacked) < self.peer_window and not self.failed:
            pending = self._queued.popleft()
            self._unacked.append(pending)
            self._transmit(pending)
            if self._retransmit_at is None:
                self._retransmit_at = now + self._rto

    def _transmit(self, pending: _Pending) -> None:
        self._out.append(encode_control(self.peer_tunnel_id, pending.session_id, pending.ns, self.nr,
                                        pending.body))
        self._ack_at = None  # Nr rides on this message

    def ack_now(self, now: float) -> None:
        """Acknowledge at once instead of after the delay (a StopCCN, a duplicate)."""
        self._ack_at = now

    def drop_pending(self) -> None:
        """Forget what we still had to send (the peer closed the connection)."""
        self._unacked.clear()
        self._queued.clear()
        self._retransmit_at = None

    @property
    def idle(self) -> bool:
        """Nothing of ours waits for an acknowledgement."""
        return not self._unacked and not self._queued

    @property
    def outstanding(self) -> list[str]:
        return [p.label for p in (*self._unacked, *self._queued)]

    # -- receiving ---------------------------------------------------------------------------

    def receive(self, ns: int, nr: int, message: T | None, now: float) -> list[T]:
        """Take a received control message (None for a ZLB); the messages now deliverable."""
        self.last_heard = now
        self._acknowledge(nr, now)
        if message is None:
            return []
        if ns == self.nr:
            ready = [message]
            self.nr = seq_next(self.nr)
            while self.nr in self._ahead:
                ready.append(self._ahead.pop(self.nr))
                self.nr = seq_next(self.nr)
            if self._ack_at is None:
                self._ack_at = now + self.policy.ack_delay
            return ready
        if seq_before(ns, self.nr):
            self._count("duplicates")
            self.ack_now(now)
            return []
        if ((ns - self.nr) & SEQ_MASK) < self.receive_window:
            if ns in self._ahead:
                self._count("duplicates")
            else:
                self._ahead[ns] = message
                self._count("reordered")
            return []
        self._count("beyond_window")
        return []

    def _acknowledge(self, nr: int, now: float) -> None:
        if not self._unacked:
            return
        if seq_before(seq_next(self._unacked[-1].ns), nr):
            self._count("bad_nr")  # acknowledges what we never sent
            return
        progressed = False
        while self._unacked and seq_before(self._unacked[0].ns, nr):
            self._unacked.popleft()
            progressed = True
        if progressed:
            self.retries = 0
            self._rto = self.policy.initial
            self._retransmit_at = now + self._rto if self._unacked else None
            if self._recover is not None:
                if self._unacked and not seq_before(self._recover, self._unacked[0].ns):
                    self._transmit(self._unacked[0])  # a partial acknowledgement: this one is missing too
                    self._count("retransmissions")
                else:
                    self._recover = None
            self._fill_window(now)

    # -- time ----------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        times = [t for t in (self._retransmit_at, self._ack_at) if t is not None]
        return min(times) if times else None

    def poll(self, now: float) -> None:
        """Retransmit, give up, or send a ZLB, whichever is due."""
        if self._retransmit_at is not None and now >= self._retransmit_at:
            if self.retries >= self.policy.retries:
                self.failed = True
                self._retransmit_at = None
                self._ack_at = None
                return
            self.retries += 1
            self._transmit(self._unacked[0])
            self._recover = self._unacked[-1].ns
            self._count("retransmissions")
            self._rto = self.policy.interval(self.retries)
            self._retransmit_at = now + self._rto
        if self._ack_at is not None and now >= self._ack_at:
            ns = self._queued[0].ns if self._queued else self.ns
            self._out.append(encode_control(self.peer_tunnel_id, 0, ns, self.nr, b""))
            self._ack_at = None
            self._count("zlb_sent")

    def take(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1
        if self._counter is not None:
            self._counter(what)
