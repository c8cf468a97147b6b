"""PAP, the Password Authentication Protocol (RFC 1334 2), both roles.

The peer sends Authenticate-Request (Peer-ID, Password) until it hears Authenticate-Ack or
Authenticate-Nak (2.2.1-2.2.2); the authenticator answers every request, a repeated one with
the same verdict.  After a Nak the session ends the link (2.2.2: "SHOULD take action to
terminate the link").  The password crosses in clear: only under IPsec, and only where
configured.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.ppp.auth import AuthRole, AuthTiming, Credentials, check_salted, salted_hash
from gateway.ppp.frame import PROTO_PAP, ControlPacket, PppMalformed, printable

AUTH_REQ = 1
AUTH_ACK = 2
AUTH_NAK = 3

ACK_MESSAGE = b"Login ok"
NAK_MESSAGE = b"Authentication failure"


@dataclass(frozen=True)
class PapRequest:
    """The data of an Authenticate-Request (RFC 1334 2.2.1); the password is never printed."""

    peer_id: bytes
    password: bytes = field(repr=False)

    def encode(self) -> bytes:
        if len(self.peer_id) > 255 or len(self.password) > 255:
            raise ValueError("PAP peer id and password are at most 255 octets")
        return bytes([len(self.peer_id)]) + self.peer_id + bytes([len(self.password)]) + self.password


def decode_request(data: bytes) -> PapRequest:
    if not data:
        raise PppMalformed("PAP request without a Peer-ID length")
    n = data[0]
    if 1 + n >= len(data):
        raise PppMalformed("PAP request: Peer-ID runs past the packet")
    m = data[1 + n]
    if 2 + n + m > len(data):
        raise PppMalformed("PAP request: password runs past the packet")
    return PapRequest(bytes(data[1:1 + n]), bytes(data[2 + n:2 + n + m]))


def encode_message(message: bytes) -> bytes:
    """Msg-Length and Message of an Authenticate-Ack/Nak (RFC 1334 2.2.2)."""
    return bytes([len(message[:255])]) + message[:255]


def decode_message(data: bytes) -> bytes:
    """Lenient: a missing or short message is as good as an empty one."""
    if not data:
        return b""
    return bytes(data[1:1 + data[0]])


@functools.cache
def _dummy() -> str:
    return salted_hash("", bytes(16))


class PapAuthenticator(AuthRole):
    """We check the peer's password: its request carries it, our Ack or Nak answers."""

    protocol = PROTO_PAP
    method = "pap"

    def __init__(self, send: Callable[[ControlPacket], None], random: Callable[[int], bytes],
                 timing: AuthTiming, credentials: Credentials,
                 drop: Callable[[str], None] = lambda reason: None) -> None:
        super().__init__(send, random, timing, drop)
        self._credentials = credentials

    def receive(self, packet: ControlPacket, now: float) -> None:
        if packet.code != AUTH_REQ:
            self._drop("pap_unexpected_code")
            return
        request = decode_request(packet.data)
        if self.outcome is None:
            self.user = request.peer_id.decode("utf-8", "replace")
            verdict = self._check(request)
            if verdict:
                self._fail(verdict)
            else:
                self._succeed()
        assert self.outcome is not None
        # every request gets the verdict, a repeated one too (our Ack may have been lost)
        code, message = (AUTH_ACK, ACK_MESSAGE) if self.outcome.ok else (AUTH_NAK, NAK_MESSAGE)
        self._send(ControlPacket(code, packet.identifier, encode_message(message)))

    def _check(self, request: PapRequest) -> str:
        """'' when the password is right, else why not."""
        secret = self._credentials(self.user)
        if secret is None:
            check_salted(request.password, _dummy())  # as long as for a user with a salted hash
            return "unknown user"
        ok = secret.check_password(request.password)
        if ok is None:
            return "no usable secret for pap"
        return "" if ok else "bad password"


class PapPeer(AuthRole):
    """We send our name and password until the authenticator answers."""

    protocol = PROTO_PAP
    method = "pap"

    def __init__(self, send: Callable[[ControlPacket], None], random: Callable[[int], bytes],
                 timing: AuthTiming, user: str, password: str,
                 drop: Callable[[str], None] = lambda reason: None) -> None:
        super().__init__(send, random, timing, drop)
        self.user = user
        self._password = password

    def start(self, now: float) -> None:
        super().start(now)
        data = PapRequest(self.user.encode("utf-8"), self._password.encode("utf-8")).encode()
        self._transmit(ControlPacket(AUTH_REQ, self._new_id(), data), now)

    def receive(self, packet: ControlPacket, now: float) -> None:
        if packet.code not in (AUTH_ACK, AUTH_NAK):
            self._drop("pap_unexpected_code")
            return
        if self.outcome is not None:
            self._drop("pap_duplicate_answer")
            return
        message = printable(decode_message(packet.data))
        if packet.code == AUTH_ACK:
            self._succeed()
        else:
            self._fail("peer refused our credentials" + (f": {message}" if message else ""), message)
