"""The two exceptions of the L2TP core: input that does not parse, and a local request
the endpoint cannot carry out."""

from __future__ import annotations


class L2tpMalformed(ValueError):
    """A datagram, header or AVP that does not parse (RFC 2661 3.1, 4.1); the endpoint counts
    it as a drop under ``reason`` and never lets it escape. The text never holds a secret."""

    def __init__(self, text: str, reason: str = "malformed") -> None:
        super().__init__(text)
        self.reason = reason


class L2tpRefused(RuntimeError):
    """A call of the shell that cannot be carried out: a table is full, or the tunnel or
    session it names does not exist (any more)."""
