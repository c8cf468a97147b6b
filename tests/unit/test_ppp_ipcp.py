"""IPCP (RFC 1332, RFC 1877 DNS) against raw peers: a Windows client dialing our server all
the way (LCP, MS-CHAPv2, CCP and IPv6CP refused, IPCP with Van Jacobson compression and
NBNS rejected, then address and DNS Nak'd), and our client dialing a SoftEther-style
server that assigns 10.250.0.10 and offers one DNS server."""

from __future__ import annotations

import ipaddress

from test_ppp_harness import (
    DNS,
    GATEWAY,
    POOL_FIRST,
    client_config,
    client_session,
    events,
    of,
    server_config,
    server_session,
)
from test_ppp_lcp import AUTH_MSCHAPV2, CCP, CHAP, IPCP, IPV6CP, LCP, MAGIC, options, packet, sent

from gateway.ppp import AuthSucceeded, IpPacket, LinkUp, PppSession
from gateway.ppp.mschapv2 import generate_authenticator_response, generate_nt_response, nt_password_hash


def ip(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


ZERO = bytes(4)
VJ = bytes.fromhex("0206002d0f01")


def opt(kind: int, value: bytes) -> bytes:
    return bytes([kind, 2 + len(value)]) + value


def windows_dials_in(server: PppSession) -> None:
    """LCP and MS-CHAPv2 as Windows does them, up to the network phase."""
    server.start(0.0)
    [(_, _, our_id, data)] = sent(server)
    server.receive(packet(LCP, 1, 1, bytes.fromhex("01040578") + b"\x05\x06" + MAGIC), 0.1)
    server.receive(packet(LCP, 2, our_id, data), 0.1)
    replies = sent(server)
    proto, code, chal_id, chal = replies[-1]
    assert (proto, code) == (CHAP, 1)
    challenge = chal[1:17]
    peer_challenge = bytes(range(16))
    nt = generate_nt_response(challenge, peer_challenge, b"alice", nt_password_hash("alice-pw"))
    response = bytes([49]) + peer_challenge + bytes(8) + nt + b"\x00" + b"alice"
    server.receive(packet(CHAP, 2, chal_id, response), 0.2)
    replies = sent(server)
    _, code, _, message = replies[0]
    expected = generate_authenticator_response(nt_password_hash("alice-pw"), nt, peer_challenge, challenge,
                                               b"alice")
    assert code == 3 and message == f"{expected} M=Access granted".encode()
    [(proto, code, ipcp_id, ipcp)] = replies[1:]
    assert (proto, code) == (IPCP, 1) and options(ipcp) == {3: ip(GATEWAY)}
    server.receive(packet(IPCP, 2, ipcp_id, ipcp), 0.3)  # Windows acknowledges our address


def test_windows_client_gets_its_address_and_dns() -> None:
    server = server_session(server_config(methods=("mschapv2",)))
    windows_dials_in(server)
    assert of(AuthSucceeded, events(server)) == [AuthSucceeded("alice", "mschapv2")]

    server.receive(packet(CCP, 1, 4, bytes.fromhex("120600000040")), 0.3)  # MPPE please: no
    server.receive(packet(IPV6CP, 1, 5, bytes.fromhex("010a0011223344556677")), 0.3)
    assert [(p, c) for p, c, _, _ in sent(server)] == [(LCP, 8), (LCP, 8)]

    first = VJ + opt(3, ZERO) + opt(129, ZERO) + opt(130, ZERO) + opt(131, ZERO) + opt(132, ZERO)
    server.receive(packet(IPCP, 1, 6, first), 0.4)
    assert sent(server) == [(IPCP, 4, 6, VJ + opt(130, ZERO) + opt(132, ZERO))]
    second = opt(3, ZERO) + opt(129, ZERO) + opt(131, ZERO)
    server.receive(packet(IPCP, 1, 7, second), 0.4)
    naked = opt(3, ip(POOL_FIRST)) + opt(129, ip(DNS[0])) + opt(131, ip(DNS[1]))
    assert sent(server) == [(IPCP, 3, 7, naked)]
    server.receive(packet(IPCP, 1, 8, naked), 0.5)
    assert sent(server) == [(IPCP, 2, 8, naked)]
    [up] = of(LinkUp, events(server))
    assert up == LinkUp(GATEWAY, POOL_FIRST, DNS, 1400, 1400, "alice", "mschapv2")

    server.receive(b"\xff\x03\x00\x21" + b"\x45" + bytes(19), 0.6)
    assert of(IpPacket, events(server)) == [IpPacket(b"\x45" + bytes(19))]


def test_a_client_that_does_not_ask_for_an_address_is_told_once() -> None:
    server = server_session(server_config(methods=("mschapv2",)))
    windows_dials_in(server)
    server.receive(packet(IPCP, 1, 6, b""), 0.4)
    assert sent(server) == [(IPCP, 3, 6, opt(3, ip(POOL_FIRST)))]
    server.receive(packet(IPCP, 1, 7, b""), 0.4)  # still nothing: fine, it knows
    assert sent(server) == [(IPCP, 2, 7, b"")]
    assert of(LinkUp, events(server))[0].peer_address == POOL_FIRST


def test_a_client_insisting_on_another_address_is_naked_then_rejected() -> None:
    server = server_session(server_config(methods=("mschapv2",)))
    windows_dials_in(server)
    replies = []
    for ident in range(10, 17):
        server.receive(packet(IPCP, 1, ident, opt(3, ip("192.0.2.99"))), 0.4)
        replies += sent(server)
    assert [code for _, code, _, _ in replies] == [3] * 5 + [4] * 2  # Max-Failure, then Reject
    assert replies[0][3] == opt(3, ip(POOL_FIRST))


SOFTETHER_LCP = bytes.fromhex("010405dc") + AUTH_MSCHAPV2 + b"\x05\x06" + MAGIC
SOFTETHER_ADDRESS = "10.250.0.1"


def client_up_to_ipcp(client: PppSession) -> None:
    """A SoftEther-style server takes our client through LCP and MS-CHAPv2."""
    client.start(0.0)
    [(_, _, our_id, data)] = sent(client)
    client.receive(packet(LCP, 1, 1, SOFTETHER_LCP), 0.1)
    client.receive(packet(LCP, 2, our_id, data), 0.1)
    assert [(p, c) for p, c, _, _ in sent(client)] == [(LCP, 2)]
    challenge = bytes(range(100, 116))
    client.receive(packet(CHAP, 1, 42, bytes([16]) + challenge + b"SoftEther"), 0.2)
    [(proto, code, ident, value)] = sent(client)
    assert (proto, code, ident, value[0]) == (CHAP, 2, 42, 49)
    peer_challenge, nt, name = value[1:17], value[25:49], value[50:]
    assert name == b"HUB\\alice"
    password_hash = nt_password_hash("alice-pw")
    # the challenge hash takes the name without its HUB\ prefix (RFC 2759 8.2)
    assert generate_nt_response(challenge, peer_challenge, b"alice", password_hash) == nt
    success = generate_authenticator_response(password_hash, nt, peer_challenge, challenge, b"alice")
    client.receive(packet(CHAP, 3, 42, success.encode() + b" M=Welcome"), 0.3)


def test_client_takes_its_address_from_a_softether_style_server() -> None:
    client = client_session(client_config("HUB\\alice", password="alice-pw", methods=("mschapv2",)))
    client_up_to_ipcp(client)
    [(proto, code, our_id, data)] = sent(client)
    assert (proto, code) == (IPCP, 1)
    assert data == opt(3, ZERO) + opt(129, ZERO) + opt(131, ZERO)
    client.receive(packet(IPCP, 1, 1, opt(3, ip(SOFTETHER_ADDRESS))), 0.4)
    assert sent(client) == [(IPCP, 2, 1, opt(3, ip(SOFTETHER_ADDRESS)))]
    client.receive(packet(IPCP, 4, our_id, opt(131, ZERO)), 0.4)  # one DNS server only
    [(_, code, second_id, data)] = sent(client)
    assert code == 1 and data == opt(3, ZERO) + opt(129, ZERO)
    assigned = opt(3, ip("10.250.0.10")) + opt(129, ip(SOFTETHER_ADDRESS))
    client.receive(packet(IPCP, 3, second_id, assigned), 0.5)
    [(_, code, third_id, data)] = sent(client)
    assert data == assigned
    client.receive(packet(IPCP, 2, third_id, data), 0.5)
    evs = events(client)
    assert of(AuthSucceeded, evs) == [AuthSucceeded("HUB\\alice", "mschapv2")]
    assert of(LinkUp, evs) == [LinkUp("10.250.0.10", SOFTETHER_ADDRESS, (SOFTETHER_ADDRESS,), 1400, 1500,
                                      "HUB\\alice", "mschapv2")]


def test_client_refuses_to_give_the_server_an_address() -> None:
    client = client_session(client_config("HUB\\alice", password="alice-pw", methods=("mschapv2",)))
    client_up_to_ipcp(client)
    sent(client)
    client.receive(packet(IPCP, 1, 1, opt(3, ZERO) + VJ), 0.4)
    assert sent(client) == [(IPCP, 4, 1, opt(3, ZERO) + VJ)]


def test_client_gives_up_when_the_server_will_not_assign_an_address() -> None:
    client = client_session(client_config("HUB\\alice", password="alice-pw", methods=("mschapv2",)))
    client_up_to_ipcp(client)
    [(_, _, our_id, _)] = sent(client)
    client.receive(packet(IPCP, 4, our_id, opt(3, ZERO)), 0.4)
    assert client.reason == "IPCP: peer refuses to assign us an address (rejected IP-Address)"
