"""Authentication: RFC 2759 9.2's MS-CHAPv2 known answers, a CHAP-MD5 known answer computed
independently with hashlib, the stored forms of secrets, and each method's two roles alone
(retransmission, duplicates, verdicts)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import pytest

from gateway.ppp.auth import AuthTiming, UserSecret, check_salted, nt_hash, salted_hash
from gateway.ppp.chap import (
    CHALLENGE,
    FAILURE,
    RESPONSE,
    SUCCESS,
    ChapMd5Authenticator,
    ChapMd5Peer,
    ChapValue,
    decode_value,
    md5_response,
)
from gateway.ppp.frame import ControlPacket, PppMalformed
from gateway.ppp.mschapv2 import (
    MsChapV2Authenticator,
    MsChapV2Peer,
    challenge_hash,
    challenge_response,
    check_authenticator_response,
    des_encrypt,
    failure_message,
    generate_authenticator_response,
    generate_nt_response,
    hash_nt_password_hash,
    nt_password_hash,
    parse_failure,
    strip_domain,
)
from gateway.ppp.pap import (
    AUTH_ACK,
    AUTH_NAK,
    AUTH_REQ,
    PapAuthenticator,
    PapPeer,
    PapRequest,
    decode_request,
)

# -- RFC 2759 9.2 ------------------------------------------------------------------------------
USER = b"User"
PASSWORD = "clientPass"
AUTH_CHALLENGE = bytes.fromhex("5B5D7C7D7B3F2F3E3C2C602132262628")
PEER_CHALLENGE = bytes.fromhex("21402324255E262A28295F2B3A337C7E")
CHALLENGE_8 = bytes.fromhex("D02E4386BCE91226")
PASSWORD_HASH = bytes.fromhex("44EBBA8D5312B8D611474411F56989AE")
NT_RESPONSE = bytes.fromhex("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")
PASSWORD_HASH_HASH = bytes.fromhex("41C00C584BD2D91C4017A2A12FA59F3F")
AUTHENTICATOR_RESPONSE = "S=407A5589115FD0D6209F510FE9C04566932CDA56"


def test_rfc2759_password_is_utf16le() -> None:
    assert PASSWORD.encode("utf-16-le") == bytes.fromhex("63006C00690065006E0074005000610073007300")


def test_rfc2759_nt_password_hash() -> None:
    assert nt_password_hash(PASSWORD) == PASSWORD_HASH
    assert nt_hash(PASSWORD) == PASSWORD_HASH


def test_rfc2759_password_hash_hash() -> None:
    assert hash_nt_password_hash(PASSWORD_HASH) == PASSWORD_HASH_HASH


def test_rfc2759_challenge_hash() -> None:
    assert challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, USER) == CHALLENGE_8


def test_rfc2759_nt_response() -> None:
    assert challenge_response(CHALLENGE_8, PASSWORD_HASH) == NT_RESPONSE
    assert generate_nt_response(AUTH_CHALLENGE, PEER_CHALLENGE, USER, PASSWORD_HASH) == NT_RESPONSE


def test_rfc2759_authenticator_response() -> None:
    got = generate_authenticator_response(PASSWORD_HASH, NT_RESPONSE, PEER_CHALLENGE, AUTH_CHALLENGE, USER)
    assert got == AUTHENTICATOR_RESPONSE
    for received in (AUTHENTICATOR_RESPONSE, AUTHENTICATOR_RESPONSE.lower().replace("s=", "S=")):
        assert check_authenticator_response(PASSWORD_HASH, NT_RESPONSE, PEER_CHALLENGE, AUTH_CHALLENGE, USER,
                                            received.encode())
    wrong = AUTHENTICATOR_RESPONSE[:-1] + "7"
    assert not check_authenticator_response(PASSWORD_HASH, NT_RESPONSE, PEER_CHALLENGE, AUTH_CHALLENGE, USER,
                                            wrong.encode())
    assert not check_authenticator_response(PASSWORD_HASH, NT_RESPONSE, PEER_CHALLENGE, AUTH_CHALLENGE, USER,
                                            AUTHENTICATOR_RESPONSE[:-1].encode())


def test_des_with_seven_octet_keys() -> None:
    # FIPS 81 / the classic DES test: key 0123456789ABCDEF (parity already set), "Now is t"
    # The 7-octet form of that key is its 56 key bits.
    key8 = bytes.fromhex("0123456789ABCDEF")
    bits = 0
    for octet in key8:
        bits = (bits << 7) | (octet >> 1)
    assert des_encrypt(b"Now is t", bits.to_bytes(7, "big")) == bytes.fromhex("3FA40E8A984D4815")


def test_domain_is_stripped_for_the_challenge_hash_only() -> None:
    assert strip_domain(b"HUB\\user") == b"user"
    assert strip_domain(b"A\\B\\user") == b"user"
    assert strip_domain(b"user@HUB") == b"user@HUB"


def test_failure_message_as_windows_expects() -> None:
    message = failure_message(bytes(range(16))).decode()
    assert re.fullmatch(r"E=691 R=0 C=[0-9A-F]{32} V=3 M=Authentication failure", message)
    fields = parse_failure(message.encode())
    assert fields == {"E": "691", "R": "0", "C": bytes(range(16)).hex().upper(), "V": "3",
                      "M": "Authentication failure"}


# -- CHAP-MD5 (RFC 1994 4.1) ---------------------------------------------------------------------
def test_chap_md5_known_answer() -> None:
    identifier, secret, challenge = 0x2A, b"sesame", bytes.fromhex("0123456789abcdeffedcba9876543210")
    expected = hashlib.md5(b"\x2a" + b"sesame" + challenge).hexdigest()
    assert md5_response(identifier, secret, challenge).hex() == expected
    assert expected == hashlib.new("md5", bytes([42]) + secret + challenge).hexdigest()


def test_chap_value_codec() -> None:
    value = ChapValue(b"\x01" * 16, b"gateway")
    assert decode_value(value.encode()) == value
    assert "\\x01" not in repr(value)
    with pytest.raises(PppMalformed):
        decode_value(b"\x10short")
    with pytest.raises(PppMalformed):
        decode_value(b"")


# -- secrets ---------------------------------------------------------------------------------------------
def test_user_secret_never_shows_itself() -> None:
    salted = salted_hash("hunter2", n=2, r=1, p=1)
    s = UserSecret(password="hunter2", nt_hash=nt_hash("hunter2"), salted=salted)
    text = repr(s) + str(s)
    assert "hunter2" not in text and nt_hash("hunter2").hex() not in text and "scrypt$" not in text
    assert "password+nt_hash+salted" in text


def test_stored_forms_check_pap_passwords() -> None:
    salted = salted_hash("pw", b"salt-salt-salt!!", n=4, r=1, p=1)
    assert salted.startswith("scrypt$4$1$1$")
    assert salted == salted_hash("pw", b"salt-salt-salt!!", n=4, r=1, p=1)
    assert salted != salted_hash("pw", n=4, r=1, p=1)  # a fresh salt by default
    for secret in (UserSecret(password="pw"), UserSecret(nt_hash=nt_hash("pw")), UserSecret(salted=salted)):
        assert secret.check_password(b"pw") is True
        assert secret.check_password(b"pw ") is False
    assert UserSecret().check_password(b"pw") is None
    assert UserSecret(password="pw").nt_password_hash() == nt_hash("pw")
    assert UserSecret(salted=salted).nt_password_hash() is None


def test_pbkdf2_form_is_accepted() -> None:
    import base64

    digest = hashlib.pbkdf2_hmac("sha256", b"pw", b"NaCl", 1000)
    b64 = lambda b: base64.b64encode(b).decode().rstrip("=")  # noqa: E731
    stored = f"pbkdf2-sha256$1000${b64(b'NaCl')}${b64(digest)}"
    assert check_salted(b"pw", stored)
    assert not check_salted(b"px", stored)


@pytest.mark.parametrize("kw", [{"nt_hash": b"short"}, {"salted": "md5$abc"}, {"salted": "scrypt$x$1$1$a$b"}])
def test_bad_stored_forms(kw: dict) -> None:
    with pytest.raises(ValueError):
        UserSecret(**kw)


# -- the roles alone ----------------------------------------------------------------------------------
def scripted(*chunks: bytes) -> Callable[[int], bytes]:
    """``random`` that hands out these octets, then zeros."""
    queue = list(chunks)

    def random(n: int) -> bytes:
        if queue:
            chunk = queue.pop(0)
            assert len(chunk) == n, f"asked for {n} octets, script has {len(chunk)}"
            return chunk
        return bytes(n)

    return random


class Sink:
    def __init__(self) -> None:
        self.sent: list[ControlPacket] = []
        self.drops: list[str] = []

    def send(self, packet: ControlPacket) -> None:
        self.sent.append(packet)

    def drop(self, reason: str) -> None:
        self.drops.append(reason)


TIMING = AuthTiming(interval=3.0, max_transmits=4, timeout=30.0)
RFC_USERS = {"User": UserSecret(password=PASSWORD), "HUB\\User": UserSecret(nt_hash=PASSWORD_HASH),
             "hashonly": UserSecret(nt_hash=PASSWORD_HASH)}


def rfc_response(name: bytes, identifier: int) -> ControlPacket:
    value = PEER_CHALLENGE + bytes(8) + NT_RESPONSE + b"\x00"
    return ControlPacket(RESPONSE, identifier, ChapValue(value, name).encode())


def mschapv2_server(sink: Sink) -> MsChapV2Authenticator:
    server = MsChapV2Authenticator(sink.send, scripted(b"\x10", AUTH_CHALLENGE), TIMING, RFC_USERS.get, "gw",
                                   sink.drop)
    server.start(0.0)
    return server


@pytest.mark.parametrize("name", [b"User", b"HUB\\User"])
def test_mschapv2_authenticator_with_the_rfc_exchange(name: bytes) -> None:
    sink = Sink()
    server = mschapv2_server(sink)
    challenge = sink.sent[0]
    assert challenge.code == CHALLENGE and challenge.identifier == 0x11
    assert decode_value(challenge.data) == ChapValue(AUTH_CHALLENGE, b"gw")
    server.receive(rfc_response(name, 0x11), 1.0)
    success = f"{AUTHENTICATOR_RESPONSE} M=Access granted".encode()
    assert sink.sent[-1] == ControlPacket(SUCCESS, 0x11, success)
    assert server.outcome is not None and server.outcome.ok and server.outcome.user == name.decode()
    server.receive(rfc_response(name, 0x11), 2.0)  # our Success was lost: the same again
    assert sink.sent[-1] == sink.sent[-2]


def test_mschapv2_authenticator_refuses_with_e691() -> None:
    sink = Sink()
    server = mschapv2_server(sink)
    server.receive(rfc_response(b"User@HUB", 0x11), 1.0)  # unknown user
    assert server.outcome is not None and server.outcome.reason == "unknown user"
    assert sink.sent[-1].code == FAILURE and sink.sent[-1].data.startswith(b"E=691 R=0 C=")
    sink = Sink()
    server = mschapv2_server(sink)
    bad = PEER_CHALLENGE + bytes(8) + bytes(24) + b"\x00"
    server.receive(ControlPacket(RESPONSE, 0x11, ChapValue(bad, b"User").encode()), 1.0)
    assert server.outcome is not None and server.outcome.reason == "bad password"
    assert sink.sent[-1].code == FAILURE


def test_chap_authenticator_retransmits_and_ignores_stale_responses() -> None:
    sink = Sink()
    server = mschapv2_server(sink)
    for t in (3.0, 6.0, 9.0):
        server.on_timer(t)
    assert len(sink.sent) == 4 and len({p.encode() for p in sink.sent}) == 1  # same id, same challenge
    server.receive(rfc_response(b"User", 0x12), 10.0)
    assert sink.drops == ["chap_stale_response"] and server.outcome is None
    server.on_timer(12.0)  # the fifth would exceed max_transmits 4
    assert server.outcome is not None and not server.outcome.ok
    assert server.outcome.reason == "no answer after 4 transmissions"


def test_mschapv2_peer_answers_as_the_rfc_says() -> None:
    sink = Sink()
    peer = MsChapV2Peer(sink.send, scripted(b"\x00", PEER_CHALLENGE), TIMING, "User", PASSWORD, sink.drop)
    peer.start(0.0)
    peer.receive(ControlPacket(CHALLENGE, 9, ChapValue(AUTH_CHALLENGE, b"server").encode()), 0.0)
    assert sink.sent[-1] == rfc_response(b"User", 9)
    peer.receive(ControlPacket(SUCCESS, 9, f"{AUTHENTICATOR_RESPONSE} M=welcome".encode()), 0.1)
    assert peer.outcome is not None and peer.outcome.ok


def test_mschapv2_peer_strips_the_domain_for_the_hash_but_sends_the_name() -> None:
    sink = Sink()
    random = scripted(b"\x00", PEER_CHALLENGE)
    peer = MsChapV2Peer(sink.send, random, TIMING, "HUB\\User", PASSWORD, sink.drop)
    peer.start(0.0)
    peer.receive(ControlPacket(CHALLENGE, 9, ChapValue(AUTH_CHALLENGE, b"server").encode()), 0.0)
    assert sink.sent[-1] == rfc_response(b"HUB\\User", 9)


def test_mschapv2_peer_checks_the_authenticator() -> None:
    sink = Sink()
    peer = MsChapV2Peer(sink.send, scripted(b"\x00", PEER_CHALLENGE), TIMING, "User", PASSWORD, sink.drop)
    peer.start(0.0)
    peer.receive(ControlPacket(CHALLENGE, 9, ChapValue(AUTH_CHALLENGE, b"server").encode()), 0.0)
    peer.receive(ControlPacket(SUCCESS, 9, b"S=" + b"0" * 40 + b" M=welcome"), 0.1)
    assert peer.outcome is not None and not peer.outcome.ok
    assert "authenticator response" in peer.outcome.reason


def test_mschapv2_peer_reads_a_failure() -> None:
    sink = Sink()
    peer = MsChapV2Peer(sink.send, scripted(), TIMING, "User", PASSWORD, sink.drop)
    peer.start(0.0)
    peer.receive(ControlPacket(CHALLENGE, 9, ChapValue(AUTH_CHALLENGE, b"server").encode()), 0.0)
    peer.receive(ControlPacket(FAILURE, 9, failure_message(bytes(16), "go away")), 0.1)
    assert peer.outcome is not None
    assert (peer.outcome.ok, peer.outcome.reason, peer.outcome.detail) == (
        False, "peer refused our credentials: E=691", "go away")


def test_chap_peer_repeats_its_response_until_the_verdict() -> None:
    sink = Sink()
    peer = ChapMd5Peer(sink.send, scripted(), TIMING, "alice", "pw", sink.drop)
    peer.start(0.0)
    challenge = ControlPacket(CHALLENGE, 4, ChapValue(b"c" * 16, b"server").encode())
    peer.receive(challenge, 0.0)
    expected = ChapValue(md5_response(4, b"pw", b"c" * 16), b"alice").encode()
    assert sink.sent == [ControlPacket(RESPONSE, 4, expected)]
    peer.receive(challenge, 1.0)  # the authenticator retransmits: the same answer
    peer.on_timer(3.0)  # no verdict yet: we repeat
    assert len(sink.sent) == 3 and len(set(sink.sent)) == 1
    peer.receive(ControlPacket(SUCCESS, 3, b""), 3.5)  # a verdict for another identifier
    assert peer.outcome is None and sink.drops == ["chap_stale_verdict"]
    peer.receive(ControlPacket(SUCCESS, 4, b"hi"), 4.0)
    assert peer.outcome is not None and peer.outcome.ok
    assert peer.deadline() is None


NO_CLEAR_PASSWORD = "no usable secret for chap-md5 (it needs the clear password)"


def test_chap_md5_authenticator() -> None:
    users = {"alice": UserSecret(password="pw"), "hashonly": UserSecret(nt_hash=nt_hash("pw"))}
    for name, password, reason in (("alice", b"pw", ""), ("alice", b"px", "bad password"),
                                   ("nobody", b"pw", "unknown user"),
                                   ("hashonly", b"pw", NO_CLEAR_PASSWORD)):
        sink = Sink()
        server = ChapMd5Authenticator(sink.send, scripted(b"\x00", b"k" * 16), TIMING, users.get, "gw")
        server.start(0.0)
        response = ChapValue(md5_response(1, password, b"k" * 16), name.encode()).encode()
        server.receive(ControlPacket(RESPONSE, 1, response), 1.0)
        assert server.outcome is not None and server.outcome.reason == reason
        assert sink.sent[-1].code == (FAILURE if reason else SUCCESS)


def test_pap_codec() -> None:
    request = PapRequest(b"alice", b"pw")
    assert request.encode() == b"\x05alice\x02pw"
    assert decode_request(request.encode()) == request
    assert "pw" not in repr(request).replace("password", "")
    for bad in (b"", b"\x05ali", b"\x05alice", b"\x05alice\x03pw"):
        with pytest.raises(PppMalformed):
            decode_request(bad)


CAROL = {"carol": UserSecret(password="pw")}


def test_pap_authenticator_answers_every_request() -> None:
    sink = Sink()
    server = PapAuthenticator(sink.send, scripted(), TIMING, CAROL.get, sink.drop)
    server.start(0.0)
    server.receive(ControlPacket(AUTH_REQ, 1, PapRequest(b"carol", b"pw").encode()), 0.5)
    server.receive(ControlPacket(AUTH_REQ, 2, PapRequest(b"carol", b"pw").encode()), 1.5)
    assert [(p.code, p.identifier) for p in sink.sent] == [(AUTH_ACK, 1), (AUTH_ACK, 2)]
    sink = Sink()
    server = PapAuthenticator(sink.send, scripted(), TIMING, CAROL.get, sink.drop)
    server.start(0.0)
    server.receive(ControlPacket(AUTH_REQ, 1, PapRequest(b"carol", b"no").encode()), 0.5)
    server.receive(ControlPacket(AUTH_REQ, 2, PapRequest(b"carol", b"pw").encode()), 1.5)  # too late
    assert [p.code for p in sink.sent] == [AUTH_NAK, AUTH_NAK]
    assert server.outcome is not None and server.outcome.reason == "bad password"


def test_pap_peer_retransmits_then_gives_up() -> None:
    sink = Sink()
    peer = PapPeer(sink.send, scripted(b"\x07"), TIMING, "carol", "pw", sink.drop)
    peer.start(0.0)
    t = 0.0
    while peer.outcome is None:
        deadline = peer.deadline()
        assert deadline is not None
        t = deadline
        peer.on_timer(t)
    assert [p.identifier for p in sink.sent] == [8, 8, 8, 8]
    assert peer.outcome.reason == "no answer after 4 transmissions" and t == 12.0


def test_authentication_timeout() -> None:
    sink = Sink()
    server = PapAuthenticator(sink.send, scripted(), AuthTiming(timeout=5.0), {}.get, sink.drop)
    server.start(0.0)
    assert server.deadline() == 5.0
    server.on_timer(5.0)
    assert server.outcome is not None and server.outcome.reason == "timeout: not done within 5 s"
