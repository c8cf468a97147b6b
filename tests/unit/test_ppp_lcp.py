"""LCP against the option sets real peers send, built here as raw octets and read back by
hand (not with our decoders): Windows (MRU 1400, Magic-Number, PFC, ACFC, Callback; it Naks
CHAP-MD5 asking for MS-CHAPv2), macOS (ACCM 0, Magic, PFC, ACFC) and a SoftEther-style
authenticator offering EAP first.  Also RFC 1661 5.7-5.9 (Protocol-Reject, Code-Reject,
Echo, Discard), RFC 1570 Identification, loop-back detection and keepalive failure."""

from __future__ import annotations

import struct

import pytest
from test_ppp_harness import (
    PASSWORDS,
    Wire,
    client_config,
    client_session,
    events,
    of,
    server_config,
    server_session,
)

from gateway.ppp import AuthFailed, LcpConfig, LinkDown, PppSession
from gateway.ppp.events import AuthSucceeded, Note

LCP, PAP, CHAP, IPCP, CCP, IPV6CP = 0xC021, 0xC023, 0xC223, 0x8021, 0x80FD, 0x8057
MAGIC = b"\x5a\x4b\x3c\x2d"

# Windows 10's first LCP Configure-Request over L2TP (the Callback option asks for CBCP)
WINDOWS_OPTIONS = bytes.fromhex("01040578") + b"\x05\x06" + MAGIC + bytes.fromhex("0702" "0802" "0d0306")
WINDOWS_CALLBACK = bytes.fromhex("0d0306")
# macOS (pppd-derived): ACCM 0, Magic, PFC, ACFC
MACOS_OPTIONS = bytes.fromhex("020600000000") + b"\x05\x06" + MAGIC + bytes.fromhex("0702" "0802")
AUTH_CHAP_MD5 = bytes.fromhex("0305c22305")
AUTH_MSCHAPV2 = bytes.fromhex("0305c22381")
AUTH_PAP = bytes.fromhex("0304c023")
AUTH_EAP = bytes.fromhex("0304c227")


def packet(protocol: int, code: int, ident: int, data: bytes = b"", *, hdlc: bool = True) -> bytes:
    head = b"\xff\x03" if hdlc else b""
    return head + struct.pack("!HBBH", protocol, code, ident, 4 + len(data)) + data


def parse(frame: bytes) -> tuple[int, int, int, bytes]:
    """(protocol, code, identifier, data) of a frame we sent."""
    if frame[:2] == b"\xff\x03":
        frame = frame[2:]
    if frame[0] & 1:
        protocol, frame = frame[0], frame[1:]
    else:
        protocol, frame = struct.unpack("!H", frame[:2])[0], frame[2:]
    code, ident, length = struct.unpack("!BBH", frame[:4])
    return protocol, code, ident, frame[4:length]


def options(data: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i < len(data):
        out[data[i]] = data[i + 2:i + data[i + 1]]
        i += data[i + 1]
    return out


def sent(session: PppSession) -> list[tuple[int, int, int, bytes]]:
    return [parse(f) for f in session.frames_to_send()]


def test_windows_dial_in_negotiates_down_to_mschapv2() -> None:
    server = server_session(server_config(methods=("chap-md5", "mschapv2")))
    server.start(0.0)
    [(proto, code, our_id, data)] = sent(server)
    assert (proto, code) == (LCP, 1)
    ours = options(data)
    assert ours[3] == AUTH_CHAP_MD5[2:] and ours[1] == b"\x05\x78" and len(ours[5]) == 4

    server.receive(packet(LCP, 1, 1, WINDOWS_OPTIONS), 0.1)  # Windows' request: Callback rejected
    assert sent(server) == [(LCP, 4, 1, WINDOWS_CALLBACK)]
    server.receive(packet(LCP, 3, our_id, AUTH_MSCHAPV2), 0.1)  # Windows Naks CHAP-MD5 -> MS-CHAPv2
    [(proto, code, second_id, data)] = sent(server)
    assert (proto, code) == (LCP, 1) and second_id != our_id
    assert options(data)[3] == AUTH_MSCHAPV2[2:]
    windows_again = WINDOWS_OPTIONS[:-len(WINDOWS_CALLBACK)]
    server.receive(packet(LCP, 2, second_id, data), 0.2)  # Windows acks MS-CHAPv2
    server.receive(packet(LCP, 1, 2, windows_again), 0.2)
    replies = sent(server)
    assert replies[0] == (LCP, 2, 2, windows_again)  # acknowledged verbatim
    proto, code, _chal_id, chal = replies[1]
    assert (proto, code) == (CHAP, 1) and chal[0] == 16 and chal[17:] == b"gateway"
    evs = events(server)
    assert any(isinstance(e, Note) and e.what == "lcp auth protocol refused" for e in evs)
    assert server.lcp.theirs.mru == 1400 and server.lcp.theirs.pfc and server.lcp.theirs.acfc


def test_windows_asked_for_compression_so_we_compress_after_lcp() -> None:
    server = server_session(server_config(methods=("mschapv2",)))
    server.start(0.0)
    [(_, _, our_id, data)] = sent(server)
    server.receive(packet(LCP, 1, 1, WINDOWS_OPTIONS[:-3]), 0.1)
    server.receive(packet(LCP, 2, our_id, data, hdlc=False), 0.1)  # without FF 03: accepted
    frames = server.frames_to_send()
    assert frames[0][:4] == b"\xff\x03\xc0\x21"  # LCP keeps FF 03 (RFC 1661 6.6)
    assert frames[1][:2] == b"\xc2\x23"  # CHAP without FF 03 (ACFC); two octets (no PFC for c223)
    server.receive(packet(IPV6CP, 1, 1, b""), 0.2)
    [reject] = server.frames_to_send()
    assert reject[:4] == b"\xff\x03\xc0\x21"


def test_macos_options_are_acknowledged_verbatim() -> None:
    server = server_session(server_config(methods=("mschapv2",)))
    server.start(0.0)
    sent(server)
    server.receive(packet(LCP, 1, 7, MACOS_OPTIONS), 0.1)
    assert sent(server) == [(LCP, 2, 7, MACOS_OPTIONS)]
    assert server.lcp.theirs.accm == 0 and server.lcp.theirs.magic == int.from_bytes(MAGIC, "big")


def test_a_client_asking_to_be_authenticated_by_us_is_refused() -> None:
    server = server_session()
    server.start(0.0)
    sent(server)
    server.receive(packet(LCP, 1, 7, AUTH_PAP + b"\x05\x06" + MAGIC), 0.1)
    assert sent(server) == [(LCP, 4, 7, AUTH_PAP)]


def test_tiny_mru_is_naked_and_unknown_options_rejected() -> None:
    server = server_session()
    server.start(0.0)
    sent(server)
    server.receive(packet(LCP, 1, 7, bytes.fromhex("01040040")), 0.1)  # MRU 64
    assert sent(server) == [(LCP, 3, 7, bytes.fromhex("01040080"))]  # Nak: 128
    endpoint = bytes.fromhex("1309") + b"\x01" + bytes(6)  # Endpoint Discriminator
    mrru = bytes.fromhex("1104064e")
    server.receive(packet(LCP, 1, 8, bytes.fromhex("01040040") + mrru + endpoint), 0.1)
    assert sent(server) == [(LCP, 4, 8, mrru + endpoint)]  # Reject wins over Nak


def softether_server_to(client: PppSession) -> tuple[int, bytes]:
    client.start(0.0)
    [(proto, code, our_id, data)] = sent(client)
    assert (proto, code) == (LCP, 1) and 3 not in options(data)  # a client asks for no authentication
    return our_id, data


def test_client_naks_softether_eap_with_mschapv2() -> None:
    client = client_session(client_config(methods=("mschapv2", "pap")))
    our_id, data = softether_server_to(client)
    client.receive(packet(LCP, 1, 1, bytes.fromhex("010405dc") + AUTH_EAP + b"\x05\x06" + MAGIC), 0.1)
    assert sent(client) == [(LCP, 3, 1, AUTH_MSCHAPV2)]
    offer = bytes.fromhex("010405dc") + AUTH_MSCHAPV2 + b"\x05\x06" + MAGIC
    client.receive(packet(LCP, 1, 2, offer), 0.2)
    assert sent(client) == [(LCP, 2, 2, offer)]
    client.receive(packet(LCP, 2, our_id, data), 0.2)
    assert client.lcp.opened and client.lcp.auth == "mschapv2"


def test_client_takes_pap_only_when_configured() -> None:
    client = client_session(client_config(methods=("mschapv2",)))
    softether_server_to(client)
    client.receive(packet(LCP, 1, 1, AUTH_PAP + b"\x05\x06" + MAGIC), 0.1)
    assert sent(client) == [(LCP, 3, 1, AUTH_MSCHAPV2)]
    client = client_session(client_config(methods=("mschapv2", "pap")))
    softether_server_to(client)
    client.receive(packet(LCP, 1, 1, AUTH_PAP + b"\x05\x06" + MAGIC), 0.1)
    assert sent(client) == [(LCP, 2, 1, AUTH_PAP + b"\x05\x06" + MAGIC)]


def opened_server(**lcp: object) -> tuple[PppSession, int]:
    """A server session with LCP open (a Windows-like peer), the CHAP challenge swallowed."""
    server = server_session(server_config(methods=("mschapv2",), lcp=LcpConfig(**lcp)))  # type: ignore[arg-type]
    server.start(0.0)
    [(_, _, our_id, data)] = sent(server)
    server.receive(packet(LCP, 1, 1, bytes.fromhex("01040578") + b"\x05\x06" + MAGIC), 0.1)
    server.receive(packet(LCP, 2, our_id, data), 0.1)
    assert server.lcp.opened
    sent(server)
    return server, int.from_bytes(options(data)[5], "big")


def test_echo_request_is_answered_with_our_magic() -> None:
    server, magic = opened_server()
    server.receive(packet(LCP, 9, 33, MAGIC + b"data"), 1.0)
    assert sent(server) == [(LCP, 10, 33, magic.to_bytes(4, "big") + b"data")]
    server.receive(packet(LCP, 11, 34, MAGIC + b"ignored"), 1.0)  # Discard-Request
    server.receive(packet(LCP, 12, 35, MAGIC + b"MSRASV5.20"), 1.0)  # Identification (RFC 1570)
    server.receive(packet(LCP, 13, 36, MAGIC + bytes(4) + b"x"), 1.0)  # Time-Remaining
    assert sent(server) == []
    assert any(isinstance(e, Note) and ("text", "MSRASV5.20") in e.fields for e in events(server))


def test_unknown_lcp_code_is_code_rejected() -> None:
    server, _ = opened_server()
    server.receive(packet(LCP, 42, 5, b"whatever"), 1.0)
    [(proto, code, _, data)] = sent(server)
    assert (proto, code) == (LCP, 7) and data == struct.pack("!BBH", 42, 5, 12) + b"whatever"


def test_unknown_protocols_are_protocol_rejected() -> None:
    server, _ = opened_server()
    for protocol in (IPV6CP, CCP, 0x0057, 0x4021, 0xC227):
        server.receive(packet(protocol, 1, 9, b"\x01\x02\x03"), 1.0)
        [(proto, code, _, data)] = sent(server)
        assert (proto, code) == (LCP, 8)
        assert data[:2] == protocol.to_bytes(2, "big") and data[2:6] == struct.pack("!BBH", 1, 9, 7)
    assert server.drops["protocol_rejected"] == 5
    assert not server.finished


def test_nothing_but_lcp_before_lcp_is_open() -> None:
    server = server_session()
    server.start(0.0)
    sent(server)
    server.receive(packet(IPCP, 1, 1, b""), 0.1)
    server.receive(packet(IPV6CP, 1, 1, b""), 0.1)
    assert sent(server) == [] and server.drops == {"before_lcp_open": 2}


def test_peer_rejecting_ipcp_ends_the_link() -> None:
    server, _ = opened_server()
    server.receive(packet(LCP, 8, 3, IPCP.to_bytes(2, "big") + b"\x01\x01\x00\x04"), 1.0)
    [(proto, code, _, _data)] = sent(server)
    assert (proto, code) == (LCP, 5)  # Terminate-Request
    assert server.reason == "peer rejected IPCP (0x8021)"


def lcp_codes(session: PppSession) -> list[tuple[int, int, bytes]]:
    """(code, identifier, data) of the LCP packets the session sent (its CHAP retransmissions aside)."""
    return [(code, ident, data) for proto, code, ident, data in sent(session) if proto == LCP]


def test_peer_code_rejecting_echo_turns_keepalive_off() -> None:
    server, _ = opened_server(echo_interval=5.0, echo_adaptive=False)
    server.handle_timer(5.1)
    [(code, ident, data)] = lcp_codes(server)
    assert code == 9
    server.receive(packet(LCP, 7, 1, struct.pack("!BBH", 9, ident, 8) + data), 5.2)
    evs = events(server)
    assert any(isinstance(e, Note) and "keepalive off" in e.what for e in evs)
    server.handle_timer(11.0)
    assert lcp_codes(server) == []


def up_pair(**lcp: object) -> Wire:
    """Our server and our client, both up, with these LCP settings."""
    config = LcpConfig(**lcp)  # type: ignore[arg-type]
    wire = Wire(server_session(server_config(lcp=config)), client_session(client_config(lcp=config)))
    wire.start()
    wire.run(30.0, stop=wire.up)
    assert wire.up()
    return wire


def echo_requests(wire: Wire, way: str, since: float = 0.0) -> list[float]:
    return [t for t, w, f in wire.log if w == way and t >= since and parse(f)[:2] == (LCP, 9)]


def test_keepalive_failure_brings_the_link_down() -> None:
    wire = up_pair(echo_interval=10.0, echo_failures=3)
    silent_from = wire.now
    wire.lose = lambda way, index, frame: True  # the peer is gone
    wire.run(120.0, stop=lambda: wire.a.finished)
    [down] = of(LinkDown, wire.a_events)
    assert down.reason == "peer does not answer: 3 LCP echo requests unanswered"
    assert len(echo_requests(wire, "a>b", silent_from)) == 3
    assert wire.now - silent_from <= 40.0 + 2 * 3.0 + 1  # 4 intervals, then Max-Terminate tries


def test_adaptive_keepalive_stays_quiet_while_frames_arrive() -> None:
    wire = up_pair(echo_interval=10.0)
    start = wire.now
    for t in range(1, 60):
        wire.run(start + t)
        assert wire.b.send_ip(b"\x45" + bytes(19))
        wire.pump()
    assert echo_requests(wire, "a>b", start) == []  # the server heard traffic all along
    wire.run(start + 100.0)
    assert echo_requests(wire, "a>b", start)  # silence: it asks
    assert not wire.a.finished and not wire.b.finished


def test_echo_replies_keep_the_link() -> None:
    wire = up_pair(echo_interval=10.0, echo_failures=2, echo_adaptive=False)
    start = wire.now
    wire.run(start + 100.0)
    assert len(echo_requests(wire, "a>b", start)) == 10 and len(echo_requests(wire, "b>a", start)) == 10
    assert not wire.a.finished and not wire.b.finished


def test_peer_terminate_request() -> None:
    server, _ = opened_server()
    server.receive(packet(LCP, 5, 77, b"User request"), 2.0)
    assert sent(server) == [(LCP, 6, 77, b"")]
    assert not server.finished  # Stopping: waits a Restart interval (zrc, RFC 1661 4.1)
    server.handle_timer(5.0)
    [down] = of(LinkDown, events(server))
    assert down.reason == "peer terminated the link: User request"


@pytest.mark.parametrize("role", ["server", "client"])
def test_looped_back_link_is_detected(role: str) -> None:
    session = server_session() if role == "server" else client_session()
    session.start(0.0)
    for _ in range(50):
        for f in session.frames_to_send():
            session.receive(f, 0.0)  # everything we send comes back
    assert session.reason == "link is looped back (our own Magic-Number comes back)"
    while not session.finished:
        timer = session.get_timer()
        assert timer is not None
        session.handle_timer(timer)
        for f in session.frames_to_send():
            session.receive(f, timer)


def test_peer_refusing_to_authenticate() -> None:
    server = server_session()
    server.start(0.0)
    [(_, _, our_id, _data)] = sent(server)
    server.receive(packet(LCP, 4, our_id, AUTH_MSCHAPV2), 0.1)
    assert server.reason == "peer refuses to authenticate (rejected Auth-Protocol)"
    assert [code for _, code, _, _ in sent(server)][-1] == 5


def test_no_common_authentication_method() -> None:
    server = server_session(server_config(methods=("mschapv2", "chap-md5")))
    server.start(0.0)
    [(_, _, our_id, _)] = sent(server)
    server.receive(packet(LCP, 3, our_id, AUTH_PAP), 0.1)  # wants PAP: we try CHAP-MD5
    [(_, code, second_id, data)] = sent(server)
    assert code == 1 and options(data)[3] == AUTH_CHAP_MD5[2:]
    server.receive(packet(LCP, 3, second_id, AUTH_PAP), 0.2)
    assert server.reason == "no common authentication method: peer wants pap, we allow mschapv2,chap-md5"


def test_lcp_negotiation_timeout() -> None:
    server = server_session()
    server.start(0.0)
    while not server.finished:
        timer = server.get_timer()
        assert timer is not None
        server.handle_timer(timer)
    assert sum(1 for _, code, _, _ in sent(server) if code == 1) == 10
    assert of(LinkDown, events(server))[0].reason == "LCP: no answer to Configure-Request"


def test_both_ends_of_ours_agree_on_compression_when_asked() -> None:
    compress = LcpConfig(request_pfc=True, request_acfc=True)
    wire = Wire(server_session(server_config(lcp=compress)),
                client_session(client_config("bob", methods=("mschapv2",), lcp=compress)))
    wire.start()
    wire.run(30.0, stop=wire.up)
    assert wire.up()
    assert wire.a.send_ip(b"\x45" + bytes(19))
    frames = wire.a.frames_to_send()
    assert frames == [b"\x21\x45" + bytes(19)]
    wire.b.receive(frames[0], wire.now)
    assert of(AuthSucceeded, wire.b_events)[0].user == "bob"
    assert PASSWORDS["bob"] not in repr(wire.b_events)


def test_terminate_request_during_negotiation_is_not_the_reason_later() -> None:
    server = server_session()
    server.start(0.0)
    sent(server)
    server.receive(packet(LCP, 5, 1, b"early"), 0.1)  # Req-Sent: sta/6, negotiation goes on
    assert sent(server) == [(LCP, 6, 1, b"")]
    while not server.finished:
        timer = server.get_timer()
        assert timer is not None
        server.handle_timer(timer)
    assert of(LinkDown, events(server))[0].reason == "LCP: no answer to Configure-Request"


def test_an_echo_reply_copying_our_magic_still_counts() -> None:
    server, magic = opened_server(echo_interval=10.0, echo_failures=1, echo_adaptive=False)
    ours = magic.to_bytes(4, "big")
    for t in (10.2, 20.4):  # one failure allowed: an uncounted reply would end it at the second
        server.handle_timer(t)
        [(code, ident, data)] = lcp_codes(server)
        assert code == 9 and data[:4] == ours
        server.receive(packet(LCP, 10, ident, data), t + 0.5)  # SoftEther answers with a clone
    assert not server.finished and server.reason is None
    server.receive(packet(LCP, 9, 99, ours + b"x"), 21.0)  # our own request back: a loop, no answer
    assert lcp_codes(server) == [] and server.lcp.loopbacks == 1


def test_softether_refusing_a_pap_password_with_terminate_is_an_auth_failure() -> None:
    client = client_session(client_config("alice", password="wrong", methods=("pap",)))
    our_id, data = softether_server_to(client)
    client.receive(packet(LCP, 1, 1, AUTH_PAP), 0.1)
    client.receive(packet(LCP, 2, our_id, data), 0.1)
    [(_, _, _, _), (proto, code, _, _)] = sent(client)
    assert (proto, code) == (PAP, 1)
    client.receive(packet(LCP, 5, 2, b""), 0.2)  # SoftEther's answer to a wrong PAP password
    assert sent(client) == [(LCP, 6, 2, b"")]
    client.handle_timer(3.2)
    evs = events(client)
    refused = AuthFailed("alice", "pap", "peer terminated the link during authentication")
    assert of(AuthFailed, evs) == [refused]
    assert of(LinkDown, evs) == [LinkDown("peer terminated the link")]


def test_a_client_hanging_up_during_authentication() -> None:
    server, _ = opened_server()
    server.lower_down(1.0, "L2TP session closed by the peer")
    evs = events(server)
    assert of(AuthFailed, evs) == [AuthFailed("", "mschapv2", "authentication not finished: "
                                              "L2TP session closed by the peer")]
    assert of(LinkDown, evs) == [LinkDown("L2TP session closed by the peer")]
