"""Our client against our server, back to back on a virtual wire: each method, each stored
form of a secret, wrong passwords, lost frames, closing from either side, the lower layer
going away, and IPv4 packets crossing once IPCP is open."""

from __future__ import annotations

import pytest
from test_ppp_harness import (
    DNS,
    GATEWAY,
    PASSWORDS,
    POOL_FIRST,
    USERS,
    Pool,
    Wire,
    client_config,
    client_session,
    connect,
    events,
    of,
    rng,
    server_config,
    server_session,
)

from gateway.ppp import AuthFailed, AuthSucceeded, IpPacket, LinkDown, LinkUp, Phase, PppSession, UserSecret
from gateway.ppp.frame import PROTO_CHAP, PROTO_IPCP, PROTO_LCP, PROTO_PAP, decode_control, decode_frame

PING = bytes.fromhex("4500001c0001000040010000") + bytes(8) + bytes.fromhex("0800f7ff00000000")

CASES = [("pap", "alice"), ("pap", "bob"), ("pap", "carol"), ("chap-md5", "alice"), ("chap-md5", "user"),
         ("mschapv2", "alice"), ("mschapv2", "bob")]


@pytest.mark.parametrize(("method", "user"), CASES, ids=[f"{m}-{u}" for m, u in CASES])
def test_client_and_server_come_up(method: str, user: str) -> None:
    wire = connect(method, user)
    assert wire.up(), wire.a_events + wire.b_events
    for side, evs in (("server", wire.a_events), ("client", wire.b_events)):
        kinds = [type(e) for e in evs if isinstance(e, AuthSucceeded | LinkUp)]
        assert kinds == [AuthSucceeded, LinkUp], side
        assert of(AuthSucceeded, evs) == [AuthSucceeded(user, method)]
    [server_up] = of(LinkUp, wire.a_events)
    [client_up] = of(LinkUp, wire.b_events)
    assert (server_up.local_address, server_up.peer_address, server_up.dns) == (GATEWAY, POOL_FIRST, DNS)
    assert (client_up.local_address, client_up.peer_address, client_up.dns) == (POOL_FIRST, GATEWAY, DNS)
    assert server_up.mtu == client_up.mru == 1400 and server_up.user == user and server_up.method == method
    assert wire.a.phase is Phase.NETWORK and wire.b.phase is Phase.NETWORK
    assert wire.a.drops == {} and wire.b.drops == {}
    # IPv4 both ways
    assert wire.b.send_ip(PING, wire.now) and wire.a.send_ip(PING[::-1], wire.now)
    wire.pump()
    assert of(IpPacket, wire.a_events) == [IpPacket(PING)]
    assert of(IpPacket, wire.b_events) == [IpPacket(PING[::-1])]
    assert wire.a.last_ip_rx == wire.now and wire.b.last_ip_tx == wire.now
    # no secret anywhere
    shown = repr(wire.a_events + wire.b_events) + repr(wire.a.drops)
    assert PASSWORDS[user] not in shown


def test_server_prefers_mschapv2_when_the_client_allows_everything() -> None:
    everything = client_config("alice", methods=("pap", "chap-md5", "mschapv2"))
    wire = Wire(server_session(), client_session(everything))
    wire.start()
    wire.run(30.0, stop=wire.up)
    assert of(AuthSucceeded, wire.a_events) == [AuthSucceeded("alice", "mschapv2")]


@pytest.mark.parametrize("method", ["pap", "chap-md5", "mschapv2"])
def test_wrong_password(method: str) -> None:
    wire = connect(method, "alice", password="not-alices")
    wire.run(60.0, stop=lambda: wire.a.finished and wire.b.finished)
    [server_failed] = of(AuthFailed, wire.a_events)
    [client_failed] = of(AuthFailed, wire.b_events)
    assert server_failed == AuthFailed("alice", method, "bad password")
    refusal = {"pap": "peer refused our credentials: Authentication failure",
               "chap-md5": "peer refused our credentials: Authentication failure",
               "mschapv2": "peer refused our credentials: E=691"}[method]
    assert client_failed == AuthFailed("alice", method, refusal)
    assert of(LinkDown, wire.a_events) == [LinkDown("authentication failed: bad password")]
    assert of(LinkDown, wire.b_events) == [LinkDown(f"authentication failed: {refusal}")]
    assert not of(LinkUp, wire.a_events + wire.b_events)
    assert wire.a.finished and wire.b.finished
    if method == "mschapv2":
        failures = [decode_control(decode_frame(f).payload) for f in wire.frames("a>b")
                    if decode_frame(f).protocol == PROTO_CHAP]
        [failure] = [p for p in failures if p.code == 4]
        assert failure.data.startswith(b"E=691 R=0 C=") and b" V=3 M=" in failure.data
    assert "not-alices" not in repr(wire.a_events + wire.b_events)


@pytest.mark.parametrize("method", ["pap", "chap-md5", "mschapv2"])
def test_unknown_user(method: str) -> None:
    wire = connect(method, "mallory", password="whatever")
    wire.run(60.0, stop=lambda: wire.a.finished)
    assert of(AuthFailed, wire.a_events) == [AuthFailed("mallory", method, "unknown user")]


@pytest.mark.parametrize("method", ["pap", "chap-md5", "mschapv2"])
def test_the_peer_cannot_tell_unknown_users_from_bad_passwords(method: str) -> None:
    def what_the_client_sees(user: str, password: str) -> list[tuple[int, int, bytes]]:
        wire = connect(method, user, password=password)
        wire.run(60.0, stop=lambda: wire.a.finished and wire.b.finished)
        seen = []
        for frame in wire.frames("a>b"):
            decoded = decode_frame(frame)
            packet = decode_control(decoded.payload)
            data = packet.data
            if decoded.protocol == PROTO_CHAP and packet.code == 4 and method == "mschapv2":
                data = data[:12] + data[44:]  # the C= challenge differs by nature
            if decoded.protocol == PROTO_CHAP and packet.code == 1:
                data = b""  # so does our challenge
            seen.append((decoded.protocol, packet.code, data))
        return seen

    assert what_the_client_sees("mallory", "whatever") == what_the_client_sees("alice", "wrong")
    assert (PROTO_LCP, 5, b"Authentication failed") in what_the_client_sees("mallory", "whatever")


def test_chap_md5_needs_the_clear_password() -> None:
    wire = connect("chap-md5", "bob")
    wire.run(60.0, stop=lambda: wire.a.finished)
    [failed] = of(AuthFailed, wire.a_events)
    assert failed.reason == "no usable secret for chap-md5 (it needs the clear password)"


@pytest.mark.parametrize("name", ["HUB\\alice", "alice@HUB"])
def test_mschapv2_names_with_a_hub(name: str) -> None:
    asked: list[str] = []

    def lookup(user: str) -> UserSecret | None:
        asked.append(user)
        return UserSecret(password="pw") if user == name else None

    server = PppSession("server", server_config(methods=("mschapv2",)), rng(1), 0.0, credentials=lookup,
                        address_for=Pool())
    wire = Wire(server, client_session(client_config(name, password="pw", methods=("mschapv2",))))
    wire.start()
    wire.run(30.0, stop=wire.up)
    assert wire.up() and asked == [name]
    assert of(AuthSucceeded, wire.a_events)[0].user == name


def lose_first(kind: int, code: int | None = None, count: int = 1) -> object:
    """Lose the first ``count`` frames of this protocol (and control code)."""
    lost = [0]

    def lose(way: str, index: int, frame: bytes) -> bool:
        decoded = decode_frame(frame)
        if decoded.protocol != kind or lost[0] >= count:
            return False
        if code is not None and decoded.payload[0] != code:
            return False
        lost[0] += 1
        return True

    return lose


@pytest.mark.parametrize(("method", "kind", "code"), [
    ("mschapv2", PROTO_LCP, None),  # the first Configure-Requests
    ("mschapv2", PROTO_CHAP, 1),  # the Challenge
    ("mschapv2", PROTO_CHAP, 2),  # the Response
    ("mschapv2", PROTO_CHAP, 3),  # the Success: the client repeats its Response, the server its Success
    ("chap-md5", PROTO_CHAP, 3),
    ("pap", PROTO_PAP, 1),  # the Authenticate-Request
    ("pap", PROTO_PAP, 2),  # the Authenticate-Ack
    ("mschapv2", PROTO_IPCP, 2),  # an IPCP Configure-Ack
    ("mschapv2", PROTO_IPCP, 3),  # the IPCP Configure-Nak with the address
])
def test_lost_frames_are_recovered_by_timers(method: str, kind: int, code: int | None) -> None:
    wire = connect(method, "alice", lose=lose_first(kind, code, count=2))  # type: ignore[arg-type]
    assert wire.up(), (wire.a_events, wire.b_events)
    assert 3.0 <= wire.now <= 15.0


def test_heavy_loss_still_connects() -> None:
    wire = connect("mschapv2", "alice", lose=lambda way, index, frame: index % 3 == 1, until=120.0)
    assert wire.up()


def test_server_closes() -> None:
    wire = connect()
    wire.a.close(wire.now, "administratively closed")
    wire.run(wire.now + 10.0, stop=lambda: wire.a.finished and wire.b.finished)
    assert of(LinkDown, wire.a_events) == [LinkDown("administratively closed")]
    assert of(LinkDown, wire.b_events) == [LinkDown("peer terminated the link: User request")]
    assert wire.a.get_timer() is None and wire.b.get_timer() is None
    assert not wire.a.send_ip(PING) and wire.a.drops["ip_not_ready"] == 1


def test_client_closes_and_the_peer_never_answers() -> None:
    wire = connect()
    wire.lose = lambda way, index, frame: True
    start = wire.now
    wire.b.close(wire.now, "bye")
    wire.run(wire.now + 60.0, stop=lambda: wire.b.finished)
    assert of(LinkDown, wire.b_events) == [LinkDown("bye")]
    assert wire.now - start == pytest.approx(6.0)  # Max-Terminate 2, 3 s apart


def test_lower_layer_down() -> None:
    wire = connect()
    wire.a.lower_down(wire.now)
    assert of(LinkDown, events(wire.a)) == [LinkDown("lower layer down")]
    assert wire.a.frames_to_send() == [] and wire.a.finished
    wire.a.receive(b"\xff\x03\xc0\x21\x09\x01\x00\x08abcd", wire.now)
    assert wire.a.drops == {"session_finished": 1}


def test_close_before_start() -> None:
    session = server_session()
    session.close(0.0, "never mind")
    assert of(LinkDown, events(session)) == [LinkDown("never mind")]


def test_no_address_for_the_user() -> None:
    wire = Wire(server_session(pool=Pool(exhausted=True)), client_session())
    wire.start()
    wire.run(30.0, stop=lambda: wire.a.finished)
    assert of(AuthSucceeded, wire.a_events)
    assert of(LinkDown, wire.a_events) == [LinkDown("no address available for the peer")]


@pytest.mark.parametrize(("dns", "expected"), [((), ()), (DNS[:1], DNS[:1]), (DNS, DNS)])
def test_dns_servers_offered(dns: tuple[str, ...], expected: tuple[str, ...]) -> None:
    wire = Wire(server_session(server_config(dns=dns)), client_session())
    wire.start()
    wire.run(30.0, stop=wire.up)
    assert of(LinkUp, wire.b_events)[0].dns == expected
    assert of(LinkUp, wire.a_events)[0].dns == expected


def test_client_without_dns_requests() -> None:
    wire = Wire(server_session(), client_session(client_config(request_dns=False)))
    wire.start()
    wire.run(30.0, stop=wire.up)
    assert of(LinkUp, wire.b_events)[0].dns == ()


def test_ip_before_ipcp_is_dropped() -> None:
    client = client_session()
    assert not client.send_ip(PING) and client.drops == {"ip_not_ready": 1}
    ipcp_lost = lambda way, index, frame: decode_frame(frame).protocol == PROTO_IPCP  # noqa: E731
    no_ipcp = Wire(server_session(), client, lose=ipcp_lost)
    no_ipcp.start()
    assert of(AuthSucceeded, no_ipcp.a_events) and not of(LinkUp, no_ipcp.a_events)
    no_ipcp.a.receive(b"\xff\x03\x00\x21" + PING, 0.0)
    no_ipcp.a.receive(b"\x21" + PING, 0.0)
    assert no_ipcp.a.drops == {"ip_before_ipcp": 2}
    assert not of(IpPacket, events(no_ipcp.a))


def test_peer_renegotiating_lcp_after_authentication_ends_the_link() -> None:
    wire = connect()
    request = b"\xff\x03\xc0\x21\x01\x63\x00\x0a\x05\x06\x01\x02\x03\x04"  # a fresh Configure-Request
    wire.a.receive(request, wire.now)
    wire.pump()
    assert wire.a.reason == "peer renegotiated LCP after authentication"


def test_peer_closing_ipcp_ends_the_link() -> None:
    wire = connect()
    wire.a.receive(b"\xff\x03\x80\x21\x05\x09\x00\x04", wire.now)  # IPCP Terminate-Request
    wire.run(wire.now + 30.0, stop=lambda: wire.a.finished)
    assert of(LinkDown, wire.a_events) == [LinkDown("IPCP: peer closed it")]


def test_authentication_timeout_when_the_client_is_silent() -> None:
    server = server_session()
    client = client_session()
    wire = Wire(server, client, lose=lambda way, index, frame: decode_frame(frame).protocol == PROTO_CHAP
                and way == "b>a")
    wire.start()
    wire.run(120.0, stop=lambda: server.finished)
    [failed] = of(AuthFailed, wire.a_events)
    assert failed.reason == "timeout: not done within 30 s"
    assert of(LinkDown, wire.a_events) == [LinkDown("authentication failed: timeout: not done within 30 s")]


def test_activity_times() -> None:
    wire = connect()
    assert wire.a.last_activity == wire.now and wire.a.created == 0.0
    assert server_session(now=5.0).last_activity == 5.0


def test_users_table_is_what_we_think() -> None:
    assert set(USERS) >= {"alice", "bob", "carol"}


def test_describe_for_status_output() -> None:
    import json

    wire = connect("mschapv2", "bob")
    info = wire.a.describe(wire.now + 5.0)
    assert json.loads(json.dumps(info)) == info
    assert info["phase"] == "network" and info["user"] == "bob" and info["method"] == "mschapv2"
    assert (info["lcp"], info["ipcp"]) == ("opened", "opened")
    assert (info["local_address"], info["peer_address"], info["dns"]) == (GATEWAY, POOL_FIRST, list(DNS))
    assert info["idle"] == 5.0 and "auth=mschapv2" in info["ours"]
    assert PASSWORDS["bob"] not in json.dumps(info)
