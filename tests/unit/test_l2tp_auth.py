"""Tunnel authentication (RFC 2661 4.4.3, 5.1.1): the Challenge Response known answer, and
every combination of secrets on the two ends."""

from __future__ import annotations

import hashlib

import pytest
from test_l2tp_endpoint import RawPeer, windows_sccrq
from test_l2tp_wire import pair, seeded, up

from gateway.l2tp import L2tpEndpoint, SessionUp, TunnelDown, TunnelUp
from gateway.l2tp.auth import challenge_response, response_matches
from gateway.l2tp.constants import AvpType, MessageType
from gateway.l2tp.message import ControlMessage, decode

SECRET = b"tunnel-secret"


def test_challenge_response_known_answer() -> None:
    challenge = bytes.fromhex("00112233445566778899aabbccddeeff")
    # CHAP (RFC 1994 4.1): MD5(identifier + secret + challenge), the identifier being the
    # Message Type of the message carrying the response (RFC 2661 5.1.1)
    assert challenge_response(MessageType.SCCRP, SECRET, challenge) == hashlib.md5(
        b"\x02" + SECRET + challenge).digest()
    assert challenge_response(MessageType.SCCCN, SECRET, challenge) == hashlib.md5(
        b"\x03" + SECRET + challenge).digest()
    assert challenge_response(2, b"secret", b"\x01" * 16).hex() == "547d633232e87592923df7c4474e99ae"
    assert response_matches(2, b"secret", b"\x01" * 16, bytes.fromhex("547d633232e87592923df7c4474e99ae"))
    assert not response_matches(3, b"secret", b"\x01" * 16, bytes.fromhex("547d633232e87592923df7c4474e99ae"))
    assert not response_matches(2, b"secret", b"\x01" * 16, None)


def _messages(wire, sender: str) -> list[ControlMessage]:
    return [m for m in map(decode, wire[sender].sent) if isinstance(m, ControlMessage) and not m.is_zlb]


def test_both_ends_prove_the_secret() -> None:
    wire = pair(lac={"default_secret": SECRET}, lns={"secrets": {"192.0.2.10": SECRET}})
    up(wire)
    assert [e.authenticated for e in wire["lac"].of(TunnelUp) + wire["lns"].of(TunnelUp)] == [True, True]
    assert len(wire["lns"].of(SessionUp)) == 1
    sccrq, scccn = _messages(wire, "lac")[:2]
    (sccrp,) = [m for m in _messages(wire, "lns") if m.type == MessageType.SCCRP]
    lac_challenge = sccrq.value(AvpType.CHALLENGE)
    lns_challenge = sccrp.value(AvpType.CHALLENGE)
    assert isinstance(lac_challenge, bytes) and isinstance(lns_challenge, bytes)
    assert lac_challenge != lns_challenge
    assert sccrp.value(AvpType.CHALLENGE_RESPONSE) == hashlib.md5(b"\x02" + SECRET + lac_challenge).digest()
    assert scccn.type == MessageType.SCCCN
    assert scccn.value(AvpType.CHALLENGE_RESPONSE) == hashlib.md5(b"\x03" + SECRET + lns_challenge).digest()


@pytest.mark.parametrize("lac_secret, lns_secret, refuser", [
    (b"one secret", b"another secret", "lac"),  # the LNS's response to our challenge is wrong
    (None, SECRET, "lac"),  # the LNS challenges a LAC that has no secret
    (SECRET, None, "lns"),  # the LAC challenges an LNS that has no secret
])
def test_mismatched_secrets_end_the_tunnel(lac_secret: bytes | None, lns_secret: bytes | None,
                                           refuser: str) -> None:
    wire = pair(lac={"default_secret": lac_secret}, lns={"default_secret": lns_secret})
    up(wire)
    other = "lns" if refuser == "lac" else "lac"
    (refused,) = wire[refuser].of(TunnelDown)
    (told,) = wire[other].of(TunnelDown)
    assert refused.reason == "auth_failed"
    assert told.reason == "stopccn" and told.result == 4
    assert not wire["lac"].of(TunnelUp) and not wire["lns"].of(TunnelUp)
    assert wire[refuser].endpoint.refusals == {"auth_failed": 1}
    assert not wire["lns"].of(SessionUp)
    for node in ("lac", "lns"):
        for event in wire[node].events:
            for secret in (lac_secret, lns_secret):
                assert secret is None or secret.decode() not in repr(event)


def test_a_client_that_ignores_our_challenge_is_refused() -> None:
    ep = L2tpEndpoint(random=seeded(3), host_name="gw", default_secret=SECRET)
    peer = RawPeer(ep)
    windows_sccrq(peer)
    (sccrp,) = peer.replies()
    assert isinstance(sccrp, ControlMessage) and isinstance(sccrp.value(AvpType.CHALLENGE), bytes)
    peer.tunnel = int(sccrp.value(AvpType.ASSIGNED_TUNNEL_ID))  # type: ignore[call-overload]
    peer.send(MessageType.SCCCN)  # no Challenge Response
    (stop,) = [m for m in peer.replies() if isinstance(m, ControlMessage) and not m.is_zlb]
    assert stop.type == MessageType.STOPCCN and stop.value(AvpType.RESULT_CODE).result == 4  # type: ignore[union-attr]
    (down,) = [e for e in peer.events() if isinstance(e, TunnelDown)]
    assert down.reason == "auth_failed" and "without a Challenge Response" in down.text
