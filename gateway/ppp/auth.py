"""The authentication phase (RFC 1661 3.5): users' secrets and what every method shares.

A server looks users up through a callback, ``credentials(user_name) -> UserSecret | None``.
A `UserSecret` holds any of three stored forms of one password:

* ``password``: the clear password.  CHAP-MD5 needs it (RFC 1994 2.2: both ends know the
  secret); MS-CHAPv2 and PAP can use it too.
* ``nt_hash``: MD4 of the UTF-16LE password (RFC 2759 8.3, NtPasswordHash).  Enough for
  MS-CHAPv2, and for PAP (we hash what the peer sent).
* ``salted``: a salted, slow hash (``scrypt$N$r$p$salt$hash`` or
  ``pbkdf2-sha256$iterations$salt$hash``, base64 without padding).  Enough for PAP only.

`nt_hash()` and `salted_hash()` produce the stored forms from a password for the
configuration.  Every comparison of secret material is constant-time
(`hmac.compare_digest`).  No repr, log line or exception shows a secret.

`AuthRole` is one side of one method: the retransmission timer (the Restart timer's
interval and Max-Configure count, RFC 1661 4.6, reused as RFC 1334 and RFC 1994 ask for "a
timer"), the overall authentication timeout, and the outcome the session collects.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from Crypto.Hash import MD4

from gateway.ppp.frame import ControlPacket

_SCRYPT_DEFAULTS = (1 << 14, 8, 1)


def nt_hash(password: str) -> bytes:
    """NtPasswordHash (RFC 2759 8.3): MD4 of the UTF-16LE password, the stored form
    MS-CHAPv2 needs.  MD4 comes from pycryptodome (OpenSSL 3 and `cryptography` lack it)."""
    return MD4.new(password.encode("utf-16-le")).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def salted_hash(password: str, salt: bytes | None = None, *, n: int = _SCRYPT_DEFAULTS[0],
                r: int = _SCRYPT_DEFAULTS[1], p: int = _SCRYPT_DEFAULTS[2]) -> str:
    """``scrypt$N$r$p$salt$hash`` of ``password``, the stored form PAP can check.  ``salt``
    defaults to 16 fresh random octets (a helper for the configuration, not the core)."""
    if salt is None:
        salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def _parse_salted(stored: str) -> tuple[str, tuple[int, ...], bytes, bytes]:
    parts = stored.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = (int(x) for x in parts[1:4])
            return "scrypt", (n, r, p), _unb64(parts[4]), _unb64(parts[5])
        if parts[0] == "pbkdf2-sha256" and len(parts) == 4:
            return "pbkdf2-sha256", (int(parts[1]),), _unb64(parts[2]), _unb64(parts[3])
    except ValueError:
        pass
    raise ValueError("salted hash: expected scrypt$N$r$p$salt$hash or pbkdf2-sha256$iterations$salt$hash")


def check_salted(password: bytes, stored: str) -> bool:
    """Whether ``password`` (as the peer sent it) matches the salted hash ``stored``."""
    kind, params, salt, digest = _parse_salted(stored)
    if kind == "scrypt":
        n, r, p = params
        got = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=1 << 28, dklen=len(digest))
    else:
        got = hashlib.pbkdf2_hmac("sha256", password, salt, params[0], dklen=len(digest))
    return hmac.compare_digest(got, digest)


@dataclass(frozen=True, repr=False)
class UserSecret:
    """A user's stored secret in one or more forms (see the module text); never printed."""

    password: str | None = None
    nt_hash: bytes | None = None
    salted: str | None = None

    def __post_init__(self) -> None:
        if self.nt_hash is not None and len(self.nt_hash) != 16:
            raise ValueError("UserSecret: an NT hash has 16 octets")
        if self.salted is not None:
            _parse_salted(self.salted)

    def __repr__(self) -> str:
        forms = [name for name in ("password", "nt_hash", "salted") if getattr(self, name) is not None]
        return f"UserSecret(forms={'+'.join(forms) or 'none'}, ***)"

    def nt_password_hash(self) -> bytes | None:
        """The NT hash, stored or derived from the clear password; None if neither is stored."""
        if self.nt_hash is not None:
            return self.nt_hash
        return None if self.password is None else nt_hash(self.password)

    def check_password(self, password: bytes) -> bool | None:
        """PAP: does the password the peer sent match?  None: no stored form to check with."""
        if self.salted is not None:
            return check_salted(password, self.salted)
        if self.nt_hash is not None:
            text = password.decode("utf-8", "replace")
            return hmac.compare_digest(nt_hash(text), self.nt_hash)
        if self.password is not None:
            return hmac.compare_digest(password, self.password.encode("utf-8"))
        return None


Credentials = Callable[[str], UserSecret | None]

_DUMMY_NT_HASH = bytes(16)


def dummy_nt_hash() -> bytes:
    """Something to compute with for an unknown user, so the answer takes as long."""
    return _DUMMY_NT_HASH


@dataclass(frozen=True)
class AuthTiming:
    """Retransmission interval and count of our requests/challenges, and the deadline of
    the whole phase."""

    interval: float = 3.0
    max_transmits: int = 10
    timeout: float = 30.0


@dataclass(frozen=True)
class AuthOutcome:
    """How one authentication ended; ``reason`` only when it failed."""

    ok: bool
    user: str
    method: str
    reason: str = ""
    #: more for the log (the peer's message), when there is more
    detail: str = ""


class AuthRole:
    """One side of one authentication method; subclasses fill in the packets.

    ``send`` takes a control packet of ``protocol`` (the session frames it).  `outcome` is
    set once; the role then keeps answering duplicates (a lost Success is asked for again).
    """

    protocol = 0
    method = ""

    def __init__(self, send: Callable[[ControlPacket], None], random: Callable[[int], bytes],
                 timing: AuthTiming, drop: Callable[[str], None] = lambda reason: None) -> None:
        self._send = send
        self._drop = drop
        self._random = random
        self.timing = timing
        self.outcome: AuthOutcome | None = None
        self._retransmit_at: float | None = None
        self._give_up_at: float | None = None
        self._last: ControlPacket | None = None
        self._transmits = 0
        self._id = random(1)[0]
        #: the user name known so far (ours as a client; the peer's claim as a server)
        self.user = ""

    # -- the session's interface ---------------------------------------------------------
    def start(self, now: float) -> None:
        self._give_up_at = now + self.timing.timeout

    def receive(self, packet: ControlPacket, now: float) -> None:
        raise NotImplementedError

    def deadline(self) -> float | None:
        times = [t for t in (self._retransmit_at, self._give_up_at) if t is not None]
        return min(times) if times else None

    def on_timer(self, now: float) -> None:
        if self.outcome is None and self._give_up_at is not None and now >= self._give_up_at:
            self._fail(f"timeout: not done within {self.timing.timeout:g} s")
            return
        if self._retransmit_at is not None and now >= self._retransmit_at and self._last is not None:
            if self._transmits >= self.timing.max_transmits:
                if self.outcome is None:
                    self._fail(f"no answer after {self._transmits} transmissions")
                self._quiet()
                return
            self._send(self._last)
            self._transmits += 1
            self._retransmit_at = now + self.timing.interval

    # -- for subclasses --------------------------------------------------------------------
    def _new_id(self) -> int:
        self._id = (self._id + 1) & 0xFF
        return self._id

    def _transmit(self, packet: ControlPacket, now: float, *, retransmit: bool = True) -> None:
        """Send ``packet``; with ``retransmit``, again every interval until `_quiet`."""
        self._send(packet)
        if retransmit:
            self._last = packet
            self._transmits = 1
            self._retransmit_at = now + self.timing.interval

    def _quiet(self) -> None:
        self._last = None
        self._retransmit_at = None

    def _succeed(self) -> None:
        self._done(AuthOutcome(True, self.user, self.method))

    def _fail(self, reason: str, detail: str = "") -> None:
        self._done(AuthOutcome(False, self.user, self.method, reason, detail))

    def _done(self, outcome: AuthOutcome) -> None:
        # set once; only a later refusal (of a CHAP rechallenge) replaces a success
        if self.outcome is None or (self.outcome.ok and not outcome.ok):
            self.outcome = outcome
        self._quiet()
        self._give_up_at = None
