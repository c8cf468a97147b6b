"""Reliable delivery of control messages (RFC 2661 5.8): sequence numbers, windows,
retransmission with backoff, giving up, duplicates, reordering, ZLB acknowledgements."""

from __future__ import annotations

import heapq
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.l2tp.message import decode_header
from gateway.l2tp.reliable import ReliableChannel, RetransmitPolicy, seq_before, seq_next


def test_sequence_numbers_compare_across_the_wrap() -> None:
    assert seq_before(1, 2) and not seq_before(2, 1) and not seq_before(5, 5)
    assert seq_before(65535, 0) and seq_before(65000, 10) and not seq_before(10, 65000)
    assert seq_next(65535) == 0 and seq_next(65534, 3) == 1


def test_full_retransmission_cycle_is_31_seconds() -> None:
    policy = RetransmitPolicy()
    assert [policy.interval(i) for i in range(6)] == [1, 2, 4, 8, 8, 8]
    assert policy.cycle() == 31


def _headers(channel: ReliableChannel) -> list[tuple[int, int, int]]:
    out = []
    for data in channel.take():
        header, body = decode_header(data)
        out.append((header.ns, header.nr, len(body)))
    return out


def test_backoff_doubles_to_eight_seconds_then_gives_up() -> None:
    channel: ReliableChannel[bytes] = ReliableChannel(RetransmitPolicy(), 4)
    channel.send(0, b"\x80\x08\x00\x00\x00\x00\x00\x06", "HELLO", 0.0)
    sent = [0.0] if channel.take() else []
    now = 0.0
    while not channel.failed:
        now = channel.next_deadline()
        assert now is not None
        channel.poll(now)
        if channel.take():
            sent.append(now)
    assert sent == [0, 1, 3, 7, 15, 23]
    assert now == 31 and channel.next_deadline() is None and channel.stats["retransmissions"] == 5


def test_give_up_count_is_configurable() -> None:
    channel: ReliableChannel[bytes] = ReliableChannel(RetransmitPolicy(initial=0.5, maximum=2, retries=2), 4)
    channel.send(0, b"x", "HELLO", 10.0)
    times = []
    while not channel.failed:
        now = channel.next_deadline()
        assert now is not None
        channel.poll(now)
        times.append(now)
    assert times == [10.5, 11.5, 13.5]


def test_an_acknowledgement_resets_the_backoff() -> None:
    channel: ReliableChannel[bytes] = ReliableChannel(RetransmitPolicy(), 4)
    channel.send(0, b"a", "A", 0.0)
    channel.poll(1.0)
    channel.poll(3.0)
    assert channel.retries == 2
    channel.send(0, b"b", "B", 3.5)
    channel.receive(0, 1, None, 4.0)  # a ZLB acknowledges the first message only
    assert channel.retries == 0 and channel.outstanding == ["B"]
    assert channel.next_deadline() == 5.0  # one initial timeout from the acknowledgement


def test_zlb_acknowledges_after_the_delay_unless_a_message_carries_nr() -> None:
    channel: ReliableChannel[str] = ReliableChannel(RetransmitPolicy(), 4)
    channel.peer_tunnel_id = 77
    assert channel.receive(0, 0, "SCCRQ", 1.0) == ["SCCRQ"]
    assert channel.next_deadline() == 1.25
    channel.poll(1.2)
    assert channel.take() == []
    channel.poll(1.25)
    (zlb,) = channel.take()
    header, body = decode_header(zlb)
    assert (header.tunnel_id, header.ns, header.nr, body) == (77, 0, 1, b"")
    # a reply before the delay carries the acknowledgement: no ZLB
    assert channel.receive(1, 0, "HELLO", 2.0) == ["HELLO"]
    channel.send(0, b"\x00", "X", 2.1)
    assert _headers(channel) == [(0, 2, 1)]
    channel.poll(3.0)
    assert channel.take() == []


def test_duplicates_are_acknowledged_at_once_and_not_delivered() -> None:
    channel: ReliableChannel[str] = ReliableChannel(RetransmitPolicy(), 4)
    assert channel.receive(0, 0, "m0", 0.0) == ["m0"]
    channel.poll(0.3)
    channel.take()
    assert channel.receive(0, 0, "m0 again", 5.0) == []
    assert channel.next_deadline() == 5.0
    channel.poll(5.0)
    assert _headers(channel) == [(0, 1, 0)]
    assert channel.stats["duplicates"] == 1


def test_messages_ahead_wait_in_a_bounded_queue() -> None:
    channel: ReliableChannel[str] = ReliableChannel(RetransmitPolicy(), 3)
    assert channel.receive(2, 0, "m2", 0.0) == []
    assert channel.receive(1, 0, "m1", 0.0) == []
    assert channel.receive(3, 0, "m3", 0.0) == []  # beyond our window of 3: dropped
    assert channel.receive(0, 0, "m0", 0.0) == ["m0", "m1", "m2"]
    assert channel.stats == {"reordered": 2, "beyond_window": 1}
    assert channel.receive(3, 0, "m3", 1.0) == ["m3"]


def test_the_peer_window_limits_what_is_in_flight() -> None:
    channel: ReliableChannel[str] = ReliableChannel(RetransmitPolicy(), 4, peer_window=2)
    for i in range(5):
        channel.send(0, bytes([i]), f"m{i}", 0.0)
    assert [ns for ns, _, _ in _headers(channel)] == [0, 1]
    channel.receive(0, 1, None, 0.1)
    assert [ns for ns, _, _ in _headers(channel)] == [2]
    channel.receive(0, 3, None, 0.2)
    assert [ns for ns, _, _ in _headers(channel)] == [3, 4]
    channel.poll(1.2)  # a timeout retransmits the oldest message in flight
    assert [ns for ns, _, _ in _headers(channel)] == [3]
    channel.receive(0, 4, None, 1.3)  # a partial acknowledgement: the next one goes at once
    assert [ns for ns, _, _ in _headers(channel)] == [4]
    channel.receive(0, 5, None, 1.4)
    assert channel.idle and channel.take() == []


def test_acknowledgements_of_unsent_messages_are_ignored() -> None:
    channel: ReliableChannel[str] = ReliableChannel(RetransmitPolicy(), 4)
    channel.send(0, b"a", "A", 0.0)
    channel.receive(0, 9, None, 0.1)
    assert channel.outstanding == ["A"] and channel.stats["bad_nr"] == 1


# -- two channels over a bad network ----------------------------------------------------------------


_DELAYS = {"ok": [0.01], "drop": [], "dup": [0.01, 0.02], "late": [1.7], "later": [4.3]}


class _Link:
    """Two channels, each sending a numbered series of messages, over a faulty network."""

    def __init__(self, actions: list[str], *, window: int, start: int, count: int) -> None:
        policy = RetransmitPolicy(retries=1000)  # never give up: the faults are finite
        self.ends = {name: ReliableChannel[bytes](policy, window, peer_window=window) for name in "ab"}
        for channel in self.ends.values():
            channel.ns = channel.nr = start
        self.delivered: dict[str, list[bytes]] = {"a": [], "b": []}
        self.sent = {name: [f"{name}{i}".encode() for i in range(count)] for name in "ab"}
        self.actions = actions
        self.index = 0
        self.now = 0.0
        self.queue: list[tuple[float, int, str, bytes]] = []
        self.seq = itertools.count()

    def flush(self) -> None:
        for name, channel in self.ends.items():
            other = "b" if name == "a" else "a"
            for data in channel.take():
                action = self.actions[self.index] if self.index < len(self.actions) else "ok"
                self.index += 1
                for delay in _DELAYS[action]:
                    heapq.heappush(self.queue, (self.now + delay, next(self.seq), other, data))

    def run(self) -> None:
        pending = {name: list(msgs) for name, msgs in self.sent.items()}
        send_at = 0.0
        while True:
            self.flush()
            if any(pending.values()) and (not self.queue or self.queue[0][0] >= send_at):
                self.now = max(self.now, send_at)
                for name, msgs in pending.items():
                    if msgs:
                        self.ends[name].send(0, msgs.pop(0), "M", self.now)
                send_at = self.now + 0.05
                continue
            times = [t for t in (c.next_deadline() for c in self.ends.values()) if t is not None]
            if self.queue:
                times.append(self.queue[0][0])
            if not times:
                break
            self.now = max(self.now, min(times))
            assert self.now < 10_000, "no progress"
            if self.queue and self.queue[0][0] <= self.now:
                _, _, dest, data = heapq.heappop(self.queue)
                header, body = decode_header(data)
                assert header.ns is not None and header.nr is not None
                self.delivered[dest] += self.ends[dest].receive(header.ns, header.nr, body or None, self.now)
            for channel in self.ends.values():
                channel.poll(self.now)


@settings(max_examples=150, deadline=None)
@given(actions=st.lists(st.sampled_from(["ok", "ok", "drop", "dup", "late", "later"]), max_size=80),
       window=st.integers(1, 8), start=st.sampled_from([0, 65530]), count=st.integers(1, 20))
def test_exactly_once_in_order_whatever_the_faults(actions: list[str], window: int, start: int,
                                                   count: int) -> None:
    link = _Link(actions, window=window, start=start, count=count)
    link.run()
    assert link.delivered["b"] == link.sent["a"]
    assert link.delivered["a"] == link.sent["b"]
    for channel in link.ends.values():
        assert channel.idle and not channel.failed
        assert channel.ns == channel.nr == (start + count) & 0xFFFF


@pytest.mark.parametrize("every", [2, 3, 5])
def test_dropping_every_nth_datagram(every: int) -> None:
    actions = ["drop" if i % every == every - 1 else "ok" for i in range(500)]
    link = _Link(actions, window=4, start=0, count=30)
    link.run()
    assert link.delivered["b"] == link.sent["a"] and link.delivered["a"] == link.sent["b"]
