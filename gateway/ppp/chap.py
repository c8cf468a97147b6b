"""CHAP (RFC 1994) both roles, and CHAP-MD5 (algorithm 5).

The authenticator sends a Challenge (a random value and its name) and retransmits it, with
the same Identifier, until a Response to that Identifier comes (4.1); it answers with
Success or Failure (4.2) and answers a repeated Response with the same verdict.  The peer
answers every Challenge; it repeats its Response on a timer until the verdict arrives, so a
lost Success costs a retransmission and not the link.

CHAP-MD5: Response value = MD5(Identifier || secret || Challenge) (RFC 1994 4.1), which
needs the clear password on both sides.  MS-CHAPv2 (RFC 2759) shares the packets and the
timers: see `gateway.ppp.mschapv2`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.ppp.auth import AuthRole, AuthTiming, Credentials, UserSecret
from gateway.ppp.frame import PROTO_CHAP, ControlPacket, PppMalformed, printable

CHALLENGE = 1
RESPONSE = 2
SUCCESS = 3
FAILURE = 4

ALGORITHM_MD5 = 5
ALGORITHM_MSCHAPV2 = 0x81

SUCCESS_MESSAGE = b"Access granted"
FAILURE_MESSAGE = b"Authentication failure"


@dataclass(frozen=True)
class ChapValue:
    """Value-Size, Value and Name of a Challenge or Response (RFC 1994 4.1)."""

    value: bytes = field(repr=False)
    name: bytes = b""

    def encode(self) -> bytes:
        if len(self.value) > 255:
            raise ValueError("CHAP value longer than 255 octets")
        return bytes([len(self.value)]) + self.value + self.name


def decode_value(data: bytes) -> ChapValue:
    if not data:
        raise PppMalformed("CHAP packet without a Value-Size")
    size = data[0]
    if 1 + size > len(data):
        raise PppMalformed(f"CHAP Value-Size {size} runs past the packet")
    return ChapValue(bytes(data[1:1 + size]), bytes(data[1 + size:]))


def md5_response(identifier: int, secret: bytes, challenge: bytes) -> bytes:
    """RFC 1994 4.1 with MD5: the hash of Identifier, secret and Challenge value."""
    return hashlib.md5(bytes([identifier & 0xFF]) + secret + challenge).digest()


class ChapAuthenticator(AuthRole):
    """The authenticator's side of CHAP; subclasses verify a Response."""

    protocol = PROTO_CHAP
    challenge_size = 16

    def __init__(self, send: Callable[[ControlPacket], None], random: Callable[[int], bytes],
                 timing: AuthTiming, credentials: Credentials, name: str,
                 drop: Callable[[str], None] = lambda reason: None) -> None:
        super().__init__(send, random, timing, drop)
        self._credentials = credentials
        self._name = name.encode("utf-8")
        self._challenge = b""
        self._challenge_id = -1
        self._verdict: ControlPacket | None = None

    def start(self, now: float) -> None:
        super().start(now)
        self._challenge = self._random(self.challenge_size)
        self._challenge_id = self._new_id()
        packet = ControlPacket(CHALLENGE, self._challenge_id, ChapValue(self._challenge, self._name).encode())
        self._transmit(packet, now)

    def receive(self, packet: ControlPacket, now: float) -> None:
        if packet.code != RESPONSE:
            self._drop("chap_unexpected_code")
            return
        if packet.identifier != self._challenge_id:
            self._drop("chap_stale_response")
            return
        if self._verdict is not None:  # our Success/Failure was lost: the same again
            self._send(self._verdict)
            return
        response = decode_value(packet.data)
        self.user = response.name.decode("utf-8", "replace")
        secret = self._credentials(self.user)
        reason, message = self._verify(packet.identifier, response, secret)
        self._verdict = ControlPacket(FAILURE if reason else SUCCESS, packet.identifier, message)
        self._send(self._verdict)
        if reason:
            self._fail(reason)
        else:
            self._succeed()

    def _verify(self, identifier: int, response: ChapValue, secret: UserSecret | None) -> tuple[str, bytes]:
        """('', Success message) or (why not, Failure message)."""
        raise NotImplementedError


class ChapMd5Authenticator(ChapAuthenticator):
    method = "chap-md5"

    def _verify(self, identifier: int, response: ChapValue, secret: UserSecret | None) -> tuple[str, bytes]:
        if len(response.value) != 16:
            return "malformed response", FAILURE_MESSAGE
        if secret is None:
            md5_response(identifier, b"", self._challenge)  # as long as for a known user
            return "unknown user", FAILURE_MESSAGE
        if secret.password is None:
            return "no usable secret for chap-md5 (it needs the clear password)", FAILURE_MESSAGE
        expected = md5_response(identifier, secret.password.encode("utf-8"), self._challenge)
        if hmac.compare_digest(expected, response.value):
            return "", SUCCESS_MESSAGE
        return "bad password", FAILURE_MESSAGE


class ChapPeer(AuthRole):
    """The peer's side of CHAP; subclasses compute a Response and judge a Success."""

    protocol = PROTO_CHAP

    def __init__(self, send: Callable[[ControlPacket], None], random: Callable[[int], bytes],
                 timing: AuthTiming, user: str, password: str,
                 drop: Callable[[str], None] = lambda reason: None) -> None:
        super().__init__(send, random, timing, drop)
        self.user = user
        self._password = password
        self._response: ControlPacket | None = None
        self._answered: tuple[int, bytes] | None = None  # (identifier, challenge) answered last
        self._verdict_seen = False

    def receive(self, packet: ControlPacket, now: float) -> None:
        if packet.code == CHALLENGE:
            challenge = decode_value(packet.data)
            if self._answered == (packet.identifier, challenge.value) and self._response is not None:
                self._send(self._response)  # the authenticator did not hear us: the same again
                return
            if self.outcome is not None and not self.outcome.ok:
                self._drop("chap_challenge_after_failure")
                return
            self._response = ControlPacket(RESPONSE, packet.identifier, self._respond(packet.identifier,
                                                                                      challenge.value))
            self._answered = (packet.identifier, challenge.value)
            self._verdict_seen = False
            self._transmit(self._response, now)
        elif packet.code in (SUCCESS, FAILURE):
            if self._response is None or packet.identifier != self._response.identifier:
                self._drop("chap_stale_verdict")
                return
            if self._verdict_seen:
                self._drop("chap_duplicate_verdict")
                return
            self._verdict_seen = True
            self._quiet()
            if packet.code == SUCCESS:
                reason = self._judge_success(packet.data)
                if reason:
                    self._fail(reason)
                else:
                    self._succeed()
            else:
                reason, detail = self._judge_failure(packet.data)
                self._fail(reason, detail)
        else:
            self._drop("chap_unexpected_code")

    def _respond(self, identifier: int, challenge: bytes) -> bytes:
        """The data of our Response (Value-Size, Value, Name)."""
        raise NotImplementedError

    def _judge_success(self, message: bytes) -> str:
        """'' if the Success is good (MS-CHAPv2 checks the authenticator), else why not."""
        return ""

    def _judge_failure(self, message: bytes) -> tuple[str, str]:
        text = printable(message)
        return "peer refused our credentials" + (f": {text}" if text else ""), text


class ChapMd5Peer(ChapPeer):
    method = "chap-md5"

    def _respond(self, identifier: int, challenge: bytes) -> bytes:
        value = md5_response(identifier, self._password.encode("utf-8"), challenge)
        return ChapValue(value, self.user.encode("utf-8")).encode()
