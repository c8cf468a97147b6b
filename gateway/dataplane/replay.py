"""Anti-replay window (RFC 4303 3.4.3) with extended sequence numbers (RFC 4303 A.2).

The check is split in two, as the RFC requires: ``check`` before the ICV is verified
(cheap rejection, no state change), ``accept`` only after the packet authenticated, so
a forged packet can never advance the window.
"""

from __future__ import annotations

_MASK32 = 0xFFFFFFFF


class ReplayWindow:
    """A sliding window of ``size`` sequence numbers ending at the highest one seen."""

    __slots__ = ("_bitmap", "_mask", "esn", "size", "top")

    def __init__(self, size: int = 1024, esn: bool = False) -> None:
        if size < 0:
            raise ValueError("replay window size must be >= 0")
        self.size = size
        self.esn = esn
        self.top = 0  # highest authenticated sequence number (64-bit when ESN)
        self._bitmap = 0  # bit i set: sequence number top - i was received
        self._mask = (1 << size) - 1

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def infer(self, seq_low: int) -> int:
        """The full sequence number for the 32 low-order bits on the wire (A.2.2)."""
        if not self.esn:
            return seq_low
        top_low = self.top & _MASK32
        top_high = self.top >> 32
        window = max(self.size, 1)
        if top_low >= window - 1:
            # Case A: the window does not span a 2^32 boundary.
            high = top_high if seq_low >= top_low - window + 1 else top_high + 1
        else:
            # Case B: the window spans the boundary; old numbers belong to the subspace below.
            high = top_high - 1 if seq_low >= ((top_low - window + 1) & _MASK32) else top_high
        if high < 0:
            return -1
        return (high << 32) | seq_low

    def check(self, seq_low: int) -> int | None:
        """The inferred sequence number, or None if it is a replay or too old."""
        seq = self.infer(seq_low)
        if seq <= 0:
            return None  # sequence number 0 is never sent (RFC 4303 3.3.3)
        if not self.size or seq > self.top:
            return seq
        offset = self.top - seq
        if offset >= self.size or (self._bitmap >> offset) & 1:
            return None
        return seq

    def accept(self, seq: int) -> None:
        """Record an authenticated sequence number."""
        if not self.size:
            self.top = max(self.top, seq)
            return
        if seq > self.top:
            shift = seq - self.top
            self._bitmap = ((self._bitmap << shift) | 1) & self._mask if shift < self.size else 1
            self.top = seq
        else:
            self._bitmap |= 1 << (self.top - seq)

    def __repr__(self) -> str:
        return f"ReplayWindow(size={self.size}, esn={self.esn}, top={self.top})"
