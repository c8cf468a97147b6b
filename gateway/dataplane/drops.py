"""Why a packet was dropped: one reason per counter, never an exception that escapes."""

from __future__ import annotations

import enum
from collections import Counter


class DropReason(enum.StrEnum):
    TOO_SHORT = "too_short"
    MALFORMED = "malformed"
    NOT_IPV4 = "not_ipv4"  # the dataplane carries IPv4 (IPv6 is future work)
    UNKNOWN_SPI = "unknown_spi"
    REPLAY = "replay"
    BAD_ICV = "bad_icv"
    BAD_PADDING = "bad_padding"
    BAD_LENGTH = "bad_length"
    BAD_NEXT_HEADER = "bad_next_header"
    DUMMY = "dummy"  # ESP next header 59: traffic-flow confidentiality padding
    POLICY_MISMATCH = "policy_mismatch"  # inner packet outside the SA's selectors
    NO_POLICY = "no_policy"  # outbound packet no policy covers
    POLICY_DISCARD = "policy_discard"
    NO_SA = "no_sa"  # policy says protect but there is no SA yet
    HOLD_FULL = "hold_full"  # a demand-dial queue was full while the tunnel came up
    HOLD_EXPIRED = "hold_expired"  # held packets whose tunnel did not come up
    SEQ_EXHAUSTED = "seq_exhausted"
    EDGE_FILTER = "edge_filter"
    CLEAR_L2TP = "clear_l2tp"
    TOO_BIG = "too_big"
    SEND_FAILED = "send_failed"


class Dropped(Exception):
    """Raised inside the per-packet functions; caught and counted by the dataplane."""

    __slots__ = ("reason",)

    def __init__(self, reason: DropReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


class DropCounters(Counter[str]):
    """Drops by reason (the keys are `DropReason` values)."""

    def count(self, reason: DropReason) -> None:
        self[reason.value] += 1
