"""MS-CHAPv2 (RFC 2759), both roles, over CHAP's packets (algorithm 0x81).

The functions are RFC 2759 8's pseudo-code, name for name: NtPasswordHash (8.3),
HashNtPasswordHash (8.4), ChallengeHash (8.2), ChallengeResponse and DesEncrypt (8.5, 8.6),
GenerateNTResponse (8.1), GenerateAuthenticatorResponse (8.7) and
CheckAuthenticatorResponse (8.8).  They take the NT hash rather than the password, so a
server can keep the hash only.  ChallengeHash takes the user name *without* a domain
prefix (8.2: "DOMAIN\\user" hashes as "user"; `strip_domain`); "user@HUB" stays whole.

Packets (RFC 2759 3-6): the Challenge value has 16 octets; the Response value 49
(Peer-Challenge 16, Reserved 8, NT-Response 24, Flags 1) and the Name; Success carries
"S=<40 hex> M=<text>"; Failure "E=691 R=0 C=<32 hex> V=3 M=<text>", the form Windows
understands (E=691: authentication failure; R=0: no retry).  No MPPE keys: L2TP here runs
inside IPsec.

MD4 and DES come from pycryptodome (not in OpenSSL 3's default provider nor in
`cryptography`); SHA-1 from hashlib.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from Crypto.Cipher import DES
from Crypto.Hash import MD4

from gateway.ppp.auth import AuthTiming, Credentials, UserSecret, dummy_nt_hash, nt_hash
from gateway.ppp.chap import ChapAuthenticator, ChapPeer, ChapValue
from gateway.ppp.frame import ControlPacket, PppMalformed, printable

MAGIC1 = b"Magic server to client signing constant"
MAGIC2 = b"Pad to make it do more than one iteration"

RESPONSE_SIZE = 49
ERROR_AUTHENTICATION_FAILURE = 691


def nt_password_hash(password: str) -> bytes:
    """NtPasswordHash (RFC 2759 8.3): MD4 of the UTF-16LE password."""
    return nt_hash(password)


def hash_nt_password_hash(password_hash: bytes) -> bytes:
    """HashNtPasswordHash (RFC 2759 8.4)."""
    return MD4.new(password_hash).digest()


def strip_domain(user_name: bytes) -> bytes:
    """The user name without a "DOMAIN\\" prefix (RFC 2759 8.2)."""
    return user_name.rsplit(b"\\", 1)[-1]


def challenge_hash(peer_challenge: bytes, authenticator_challenge: bytes, user_name: bytes) -> bytes:
    """ChallengeHash (RFC 2759 8.2): the first 8 octets of SHA-1 over both challenges and the
    user name (already without its domain)."""
    return hashlib.sha1(peer_challenge + authenticator_challenge + user_name).digest()[:8]


def _des_key(key7: bytes) -> bytes:
    """7 key octets spread over 8, each with odd parity in its low bit (RFC 2759 8.6)."""
    bits = int.from_bytes(key7, "big")
    out = bytearray()
    for i in range(8):
        septet = (bits >> (49 - 7 * i)) & 0x7F
        octet = septet << 1
        out.append(octet | (1 - bin(octet).count("1") % 2))
    return bytes(out)


def des_encrypt(clear: bytes, key7: bytes) -> bytes:
    """DesEncrypt (RFC 2759 8.6): one DES block under a 7-octet key."""
    return DES.new(_des_key(key7), DES.MODE_ECB).encrypt(clear)


def challenge_response(challenge: bytes, password_hash: bytes) -> bytes:
    """ChallengeResponse (RFC 2759 8.5): the 8-octet challenge under three DES keys cut
    from the NT hash padded to 21 octets."""
    z = password_hash + bytes(5)
    return des_encrypt(challenge, z[0:7]) + des_encrypt(challenge, z[7:14]) + des_encrypt(challenge, z[14:21])


def generate_nt_response(authenticator_challenge: bytes, peer_challenge: bytes, user_name: bytes,
                         password_hash: bytes) -> bytes:
    """GenerateNTResponse (RFC 2759 8.1), from the NT hash."""
    challenge = challenge_hash(peer_challenge, authenticator_challenge, user_name)
    return challenge_response(challenge, password_hash)


def generate_authenticator_response(password_hash: bytes, nt_response: bytes, peer_challenge: bytes,
                                    authenticator_challenge: bytes, user_name: bytes) -> str:
    """GenerateAuthenticatorResponse (RFC 2759 8.7): "S=" and 40 upper-case hex digits."""
    digest = hashlib.sha1(hash_nt_password_hash(password_hash) + nt_response + MAGIC1).digest()
    challenge = challenge_hash(peer_challenge, authenticator_challenge, user_name)
    digest = hashlib.sha1(digest + challenge + MAGIC2).digest()
    return "S=" + digest.hex().upper()


def check_authenticator_response(password_hash: bytes, nt_response: bytes, peer_challenge: bytes,
                                 authenticator_challenge: bytes, user_name: bytes, received: bytes) -> bool:
    """CheckAuthenticatorResponse (RFC 2759 8.8), constant-time; ``received`` is the
    "S=..." part of the Success message (hex in either case)."""
    expected = generate_authenticator_response(password_hash, nt_response, peer_challenge,
                                               authenticator_challenge, user_name).encode("ascii")
    return len(received) == len(expected) and hmac.compare_digest(received.upper(), expected)


def failure_message(new_challenge: bytes, text: str = "Authentication failure") -> bytes:
    """The Failure packet's message (RFC 2759 6) as Windows expects it: E=691, no retry."""
    code = ERROR_AUTHENTICATION_FAILURE
    return f"E={code} R=0 C={new_challenge.hex().upper()} V=3 M={text}".encode("ascii")


def parse_failure(message: bytes) -> dict[str, str]:
    """The fields of a Failure message: {'E': '691', 'R': '0', 'C': ..., 'V': '3', 'M': ...}."""
    text = message.decode("latin-1")
    fields: dict[str, str] = {}
    head, sep, tail = text.partition("M=")
    if sep:
        fields["M"] = tail
    for token in head.split():
        key, eq, value = token.partition("=")
        if eq:
            fields[key] = value
    return fields


class MsChapV2Authenticator(ChapAuthenticator):
    """We check the peer's NT-Response and prove we know the password too (S=...)."""

    method = "mschapv2"

    def __init__(self, send: Callable[[ControlPacket], None], random: Callable[[int], bytes],
                 timing: AuthTiming, credentials: Credentials, name: str,
                 drop: Callable[[str], None] = lambda reason: None) -> None:
        super().__init__(send, random, timing, credentials, name, drop)

    def _failure(self) -> bytes:
        return failure_message(self._random(16))

    def _verify(self, identifier: int, response: ChapValue, secret: UserSecret | None) -> tuple[str, bytes]:
        value = response.value
        if len(value) != RESPONSE_SIZE:
            return "malformed response", self._failure()
        peer_challenge, nt_response = value[:16], value[24:48]
        user_name = strip_domain(response.name)
        password_hash = secret.nt_password_hash() if secret is not None else None
        if secret is None:
            generate_nt_response(self._challenge, peer_challenge, user_name, dummy_nt_hash())
            return "unknown user", self._failure()
        if password_hash is None:
            return "no usable secret for mschapv2 (it needs the NT hash or the password)", self._failure()
        expected = generate_nt_response(self._challenge, peer_challenge, user_name, password_hash)
        if not hmac.compare_digest(expected, nt_response):
            return "bad password", self._failure()
        success = generate_authenticator_response(password_hash, nt_response, peer_challenge, self._challenge,
                                                  user_name)
        return "", f"{success} M=Access granted".encode("ascii")


class MsChapV2Peer(ChapPeer):
    """We answer with an NT-Response and check the authenticator's S= value."""

    method = "mschapv2"

    def __init__(self, send: Callable[[ControlPacket], None], random: Callable[[int], bytes],
                 timing: AuthTiming, user: str, password: str,
                 drop: Callable[[str], None] = lambda reason: None) -> None:
        super().__init__(send, random, timing, user, password, drop)
        self._proof: tuple[bytes, bytes, bytes, bytes] | None = None  # what checks the S= value

    def _respond(self, identifier: int, challenge: bytes) -> bytes:
        if len(challenge) != 16:
            raise PppMalformed(f"MS-CHAPv2 challenge of {len(challenge)} octets, not 16")
        peer_challenge = self._random(16)
        name = self.user.encode("utf-8")
        password_hash = nt_password_hash(self._password)
        nt_response = generate_nt_response(challenge, peer_challenge, strip_domain(name), password_hash)
        self._proof = (nt_response, peer_challenge, challenge, strip_domain(name))
        value = peer_challenge + bytes(8) + nt_response + b"\x00"
        return ChapValue(value, name).encode()

    def _judge_success(self, message: bytes) -> str:
        if self._proof is None or not message.startswith(b"S="):
            return "peer's Success lacks its authenticator response (S=)"
        nt_response, peer_challenge, challenge, user_name = self._proof
        if not check_authenticator_response(nt_password_hash(self._password), nt_response, peer_challenge,
                                            challenge, user_name, message[:42]):
            return "peer's authenticator response (S=) is wrong: it does not know our password"
        return ""

    def _judge_failure(self, message: bytes) -> tuple[str, str]:
        fields = parse_failure(message)
        code = fields.get("E", "")
        reason = "peer refused our credentials" + (f": E={printable(code.encode(), 10)}" if code else "")
        return reason, printable(fields.get("M", "").encode("latin-1"))
