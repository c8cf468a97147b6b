"""Anti-replay window: RFC 4303 3.4.3 and, for extended sequence numbers, appendix A2."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dataplane.replay import ReplayWindow

M32 = 0xFFFFFFFF
SUBSPACE = 1 << 32


def test_defaults() -> None:
    w = ReplayWindow()
    assert w.size == 1024
    assert w.esn is False
    assert w.enabled
    assert w.top == 0


def test_negative_size_rejected() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(-1)


@pytest.mark.parametrize("esn", [False, True])
def test_sequence_number_zero_is_never_valid(esn: bool) -> None:
    w = ReplayWindow(64, esn)
    assert w.check(0) is None  # RFC 4303 3.3.3: the first packet sent carries 1
    w.accept(5)
    assert w.check(0) is None


@pytest.mark.parametrize("esn", [False, True])
def test_first_packet(esn: bool) -> None:
    w = ReplayWindow(64, esn)
    assert w.check(1) == 1
    w.accept(1)
    assert w.top == 1
    assert w.check(1) is None
    assert w.check(2) == 2


def test_first_packet_need_not_be_one() -> None:
    w = ReplayWindow(64)
    assert w.check(5000) == 5000
    w.accept(5000)
    assert w.check(5000 - 63) == 5000 - 63
    assert w.check(5000 - 64) is None


def test_duplicates_rejected_in_any_order() -> None:
    w = ReplayWindow(32)
    order = [10, 3, 7, 11, 4, 12, 9]
    for seq in order:
        assert w.check(seq) == seq
        w.accept(seq)
        assert w.check(seq) is None
    for seq in order:
        assert w.check(seq) is None
    for seq in (1, 2, 5, 6, 8):  # never received, still inside the window (top 12)
        assert w.check(seq) == seq


@pytest.mark.parametrize("size", [2, 32, 64, 1024])
def test_left_edge(size: int) -> None:
    w = ReplayWindow(size)
    top = 10_000
    w.accept(top)
    assert w.check(top - size + 1) == top - size + 1  # oldest number the window holds
    assert w.check(top - size) is None  # one further left: too old
    w.accept(top - size + 1)
    assert w.check(top - size + 1) is None


def test_size_one_accepts_only_new_numbers() -> None:
    w = ReplayWindow(1)
    w.accept(7)
    assert w.check(7) is None
    assert w.check(6) is None
    assert w.check(8) == 8


def test_jump_by_more_than_the_window_clears_the_bitmap() -> None:
    w = ReplayWindow(32)
    for seq in (100, 99, 98, 97):
        w.accept(seq)
    w.accept(100 + 40)  # more than a window ahead
    assert w.top == 140
    assert w.check(140) is None
    for seq in range(109, 140):  # everything in the new window is fresh
        assert w.check(seq) == seq
    assert w.check(108) is None  # left of the new window


def test_jump_by_exactly_the_window() -> None:
    w = ReplayWindow(32)
    w.accept(100)
    w.accept(99)
    w.accept(132)
    assert w.check(101) == 101  # offset 31: in the window, never seen
    assert w.check(100) is None  # offset 32: out of the window


def test_jump_by_less_than_the_window_keeps_history() -> None:
    w = ReplayWindow(32)
    w.accept(100)
    w.accept(131)  # shift 31: 100 is now the window's leftmost slot
    assert w.check(100) is None  # still remembered as received
    assert w.check(101) == 101


def test_check_does_not_change_state() -> None:
    """A forged packet (check passes, ICV fails, accept never called) advances nothing."""
    w = ReplayWindow(64)
    w.accept(100)
    assert w.check(1_000_000) == 1_000_000
    assert w.check(101) == 101
    assert w.check(101) == 101  # checking twice is not receiving twice
    assert w.top == 100
    assert w.check(100 - 63) == 100 - 63  # the window did not move
    assert w.check(100) is None


def test_size_zero_disables_replay_protection() -> None:
    w = ReplayWindow(0)
    assert not w.enabled
    w.accept(5)
    assert w.check(5) == 5  # duplicates pass
    assert w.check(1) == 1  # so do old numbers
    w.accept(3)
    assert w.top == 5
    assert w.check(0) is None  # 0 remains invalid


# --------------------------------------------------------------------------------------
# Extended sequence numbers (RFC 4303 appendix A2.2)
# --------------------------------------------------------------------------------------


def _esn_at(top: int, size: int = 1024) -> ReplayWindow:
    w = ReplayWindow(size, esn=True)
    w.accept(top)
    return w


def test_esn_case_a_window_within_one_subspace() -> None:
    # Tl >= W - 1: the window [Tl - W + 1, Tl] lies inside subspace Th.
    th, tl, size = 3, 5000, 1024
    w = _esn_at((th << 32) | tl, size)
    bottom = tl - size + 1
    assert w.check(tl + 1) == (th << 32) | (tl + 1)  # ahead, same subspace
    assert w.check(bottom) == (th << 32) | bottom  # left edge
    assert w.check(tl - 10) == (th << 32) | (tl - 10)  # inside, not seen
    assert w.check(tl) is None  # duplicate
    # Below the window: assumed to be from the next subspace (its ICV will then fail).
    assert w.check(bottom - 1) == ((th + 1) << 32) | (bottom - 1)
    assert w.check(0) == (th + 1) << 32


def test_esn_case_b_window_spans_the_boundary() -> None:
    # Tl < W - 1: the window reaches back into subspace Th - 1.
    th, tl, size = 3, 5, 1024
    w = _esn_at((th << 32) | tl, size)
    bl = (tl - size + 1) & M32  # 0xFFFFFC06
    assert w.check(tl + 1) == (th << 32) | (tl + 1)
    assert w.check(0) == th << 32  # low half 0 is valid in subspace 3
    assert w.check(M32) == ((th - 1) << 32) | M32  # previous subspace, in the window
    assert w.check(bl) == ((th - 1) << 32) | bl  # left edge of the window
    # Just left of the window: A2.2 infers subspace Th (a far-future number).
    assert w.check(bl - 1) == (th << 32) | (bl - 1)


def test_esn_initial_state_has_no_previous_subspace() -> None:
    w = ReplayWindow(64, esn=True)
    assert w.check(M32) is None  # would be subspace -1
    assert w.check(1) == 1


def test_esn_low_half_zero_after_the_wrap_is_valid() -> None:
    w = _esn_at(SUBSPACE - 1, 64)
    assert w.check(0) == SUBSPACE  # 2^32: low half 0, not "sequence number 0"
    w.accept(SUBSPACE)
    assert w.check(0) is None


def test_esn_crossing_the_boundary_in_order() -> None:
    w = _esn_at(SUBSPACE - 20, 64)
    for full in range(SUBSPACE - 19, SUBSPACE + 20):
        assert w.check(full & M32) == full
        w.accept(full)
    assert w.top == SUBSPACE + 19
    assert w.check((SUBSPACE - 5) & M32) is None  # replay from before the wrap


def test_esn_late_packet_from_previous_subspace_after_the_wrap() -> None:
    w = _esn_at(SUBSPACE - 4, 64)  # ... 0xFFFFFFFC received
    w.accept(SUBSPACE + 2)  # wrapped: 0x1_00000002 received, 0xFFFFFFFD..0x1_00000001 not
    assert w.check(0xFFFFFFFE) == SUBSPACE - 2  # late, from subspace 0, accepted
    w.accept(SUBSPACE - 2)
    assert w.check(0xFFFFFFFE) is None  # and now a replay
    assert w.check(0xFFFFFFFC) is None  # received before the wrap
    assert w.check(0xFFFFFFFD) == SUBSPACE - 3
    assert w.check(1) == SUBSPACE + 1


def test_esn_reordering_across_the_boundary() -> None:
    w = _esn_at(SUBSPACE - 3, 32)
    arrivals = [SUBSPACE + 1, SUBSPACE - 1, SUBSPACE + 3, SUBSPACE, SUBSPACE - 2, SUBSPACE + 2]
    for full in arrivals:
        assert w.check(full & M32) == full
        w.accept(full)
    for full in arrivals:
        assert w.check(full & M32) is None


# --------------------------------------------------------------------------------------
# Properties: the window against a plain set-based model
# --------------------------------------------------------------------------------------


class _Model:
    def __init__(self, size: int) -> None:
        self.size = size
        self.top = 0
        self.seen: set[int] = set()

    def ok(self, seq: int) -> bool:
        if seq <= 0:
            return False
        if self.size == 0 or seq > self.top:
            return True
        return self.top - seq < self.size and seq not in self.seen

    def accept(self, seq: int) -> None:
        self.seen.add(seq)
        self.top = max(self.top, seq)


_SEQS = st.one_of(st.integers(0, 300), st.integers(0, M32))


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(size=st.sampled_from([0, 1, 2, 7, 31, 32, 33, 64, 1024]),
       ops=st.lists(st.tuples(_SEQS, st.booleans()), max_size=80))
def test_window_matches_set_model(size: int, ops: list[tuple[int, bool]]) -> None:
    w, model = ReplayWindow(size), _Model(size)
    for seq, authentic in ops:
        got = w.check(seq)
        assert (got is not None) == model.ok(seq), (seq, model.top)
        if got is not None:
            assert got == seq
            if authentic:  # only authenticated packets update the window
                w.accept(seq)
                model.accept(seq)
        assert w.top == model.top


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(size=st.sampled_from([1, 32, 64, 1024]),
       start=st.sampled_from([1, SUBSPACE - 100, 5 * SUBSPACE - 3, 0x7FFF_FFFF_FFFF_FF00]),
       ops=st.lists(st.tuples(st.integers(-1100, 400), st.booleans()), max_size=80))
def test_esn_inference_matches_model(size: int, start: int, ops: list[tuple[int, bool]]) -> None:
    """The full 64-bit number is recovered from its low half for any packet that is not
    older than the window, across 2^32 boundaries, and duplicates are caught."""
    w, model = ReplayWindow(size, esn=True), _Model(size)
    w.accept(start)
    model.accept(start)
    for delta, authentic in ops:
        true = model.top + delta
        if true <= 0:
            continue
        got = w.check(true & M32)
        if true > model.top - size:  # in the window or ahead: inferred exactly
            assert got == (true if model.ok(true) else None)
        else:  # older than the window: never mistaken for the true number
            assert got != true
        if got == true and authentic:
            w.accept(true)
            model.accept(true)
        assert w.top == model.top
