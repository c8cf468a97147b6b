"""Whatever a peer sends, a session never raises: random octets and random-but-plausible
packets (a real protocol number, a code, an identifier, a length that may lie) go into
sessions of both roles in every phase; each is processed or counted, timers keep working."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ppp_harness import Wire, client_config, client_session, connect, events, server_session

from gateway.ppp import PppSession
from gateway.ppp.events import AuthFailed, AuthSucceeded, IpPacket, LinkDown, LinkUp, Note

PROTOCOLS = [0xC021, 0xC023, 0xC223, 0x8021, 0x0021, 0x21, 0x80FD, 0x8057, 0xC227, 0x0057, 0x0020]
EVENT_TYPES = (AuthFailed, AuthSucceeded, IpPacket, LinkDown, LinkUp, Note)


@st.composite
def plausible_frames(draw: st.DrawFn) -> bytes:
    protocol = draw(st.sampled_from(PROTOCOLS))
    head = draw(st.sampled_from([b"\xff\x03", b""]))
    field = bytes([protocol]) if protocol < 0x100 and protocol & 1 else protocol.to_bytes(2, "big")
    code = draw(st.integers(0, 16))
    ident = draw(st.integers(0, 255))
    data = draw(st.binary(max_size=80))
    if draw(st.booleans()):  # options that parse
        kinds = st.sampled_from([1, 2, 3, 5, 7, 8, 13, 129, 130, 131, 132, 200])
        chosen = draw(st.lists(st.tuples(kinds, st.binary(max_size=6)), max_size=5))
        data = b"".join(bytes([t, len(v) + 2]) + v for t, v in chosen)
    length = draw(st.one_of(st.just(4 + len(data)), st.integers(0, 0xFFFF)))
    return head + field + struct.pack("!BBH", code, ident, length) + data


def sessions() -> list[PppSession]:
    """Both roles: just started, LCP open (authenticating), and up (network phase)."""
    fresh_server, fresh_client = server_session(), client_session()
    fresh_server.start(0.0)
    fresh_client.start(0.0)
    authenticating = Wire(server_session(), client_session(client_config(methods=("pap",))),
                          lose=lambda way, index, frame: frame[2:4] == b"\xc0\x23")
    authenticating.start()
    up = connect()
    return [fresh_server, fresh_client, authenticating.a, authenticating.b, up.a, up.b]


def feed(frames: list[bytes]) -> None:
    for session in sessions():
        for i, frame in enumerate(frames):
            before = sum(session.drops.values())
            session.receive(frame, 1.0 + i)
            session.frames_to_send()
            assert all(isinstance(e, EVENT_TYPES) for e in events(session))
            assert sum(session.drops.values()) >= before
        for t in (50.0, 100.0, 200.0):
            timer = session.get_timer()
            session.handle_timer(t if timer is None else max(t, timer))
        session.close(300.0, "done")
        session.handle_timer(400.0)
        session.frames_to_send()
        events(session)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=120), min_size=1, max_size=6))
def test_random_octets_never_raise(frames: list[bytes]) -> None:
    feed(frames)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(plausible_frames(), min_size=1, max_size=8))
def test_plausible_packets_never_raise(frames: list[bytes]) -> None:
    feed(frames)


def test_malformed_input_is_counted_by_protocol() -> None:
    up = connect()
    server = up.a
    for frame in (b"\xff", b"\xff\x03\xc0\x21\x01", b"\xff\x03\x80\x21\x01\x01\x00\x09\x03",
                  b"\xff\x03\xc2\x23\x02\x01\x00\x05", b"\xff\x03\xc0\x21\x08\x01\x00\x05\x80"):
        server.receive(frame, up.now)
    assert server.drops == {"malformed_frame": 1, "malformed_lcp": 2, "malformed_ipcp": 1,
                            "malformed_chap": 1}
    notes = [e for e in events(server) if isinstance(e, Note) and e.what == "malformed input dropped"]
    assert len(notes) == 4  # one per kind, never one per packet
    assert not server.finished
