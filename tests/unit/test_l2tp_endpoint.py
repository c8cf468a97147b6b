"""The L2TP endpoint in both roles: dial-in clients as Windows builds its messages, a LAC and
an LNS back to back (with loss), teardown, keepalives, limits, refusals, tie breaks, unknown
AVPs, data sequencing, and garbage that must only ever be counted."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_l2tp_wire import LAC_ADDR, LNS_ADDR, Node, Wire, pair, seeded, up

from gateway.l2tp import (
    FrameReceived,
    L2tpEndpoint,
    L2tpRefused,
    LinkInfo,
    SessionDown,
    SessionKey,
    SessionUp,
    TunnelDown,
    TunnelUp,
)
from gateway.l2tp.avp import Accm, CallErrors, ResultCode
from gateway.l2tp.constants import AvpType, MessageType
from gateway.l2tp.message import ControlMessage, DataMessage, decode
from gateway.l2tp.reliable import RetransmitPolicy

CLIENT = ("10.8.0.20", 1701)


def raw_avp(attribute: int, value: bytes, mandatory: bool = True, vendor: int = 0) -> bytes:
    return struct.pack("!HHH", (0x8000 if mandatory else 0) | (6 + len(value)), vendor, attribute) + value


def u16(v: int) -> bytes:
    return struct.pack("!H", v)


def u32(v: int) -> bytes:
    return struct.pack("!I", v)


class RawPeer:
    """A peer driven by hand, whose messages are packed here with struct (not by the codec)."""

    def __init__(self, endpoint: L2tpEndpoint, address: tuple[str, int] = CLIENT) -> None:
        self.endpoint = endpoint
        self.address = address
        self.ns = 0
        self.nr = 0
        self.tunnel = 0  # the endpoint's tunnel id, once its SCCRP named it
        self.session = 0  # the endpoint's session id, once its ICRP named it
        self.now = 0.0
        self.retransmissions = 0

    def send(self, kind: int, *avps: bytes, session: int | None = None, mandatory_type: bool = True,
             ns: int | None = None) -> None:
        body = raw_avp(0, u16(kind), mandatory_type) + b"".join(avps)
        self.raw(struct.pack("!HHHHHH", 0xC802, 12 + len(body), self.tunnel,
                             self.session if session is None else session,
                             self.ns if ns is None else ns, self.nr) + body)
        if ns is None:
            self.ns = (self.ns + 1) & 0xFFFF

    def zlb(self) -> None:
        self.raw(struct.pack("!HHHHHH", 0xC802, 12, self.tunnel, 0, self.ns, self.nr))

    def raw(self, data: bytes) -> None:
        self.endpoint.receive(data, self.address, self.now)

    def replies(self) -> list[ControlMessage | DataMessage]:
        out = []
        for data, dest in self.endpoint.datagrams_to_send():
            assert dest == self.address
            msg = decode(data)
            if isinstance(msg, ControlMessage) and not msg.is_zlb:
                if msg.ns == (self.nr - 1) & 0xFFFF:
                    self.retransmissions += 1
                else:
                    assert msg.ns == self.nr, "the endpoint skipped a sequence number"
                    self.nr = (self.nr + 1) & 0xFFFF
            out.append(msg)
        return out

    def events(self) -> list[object]:
        out = []
        while (event := self.endpoint.next_event()) is not None:
            out.append(event)
        return out

    def later(self, seconds: float) -> None:
        self.now += seconds
        timer = self.endpoint.get_timer()
        while timer is not None and timer <= self.now:
            self.endpoint.handle_timer(timer)
            timer = self.endpoint.get_timer()


def windows_sccrq(peer: RawPeer, tunnel_id: int = 1, *extra: bytes) -> None:
    peer.send(MessageType.SCCRQ,
              raw_avp(AvpType.PROTOCOL_VERSION, b"\x01\x00"),
              raw_avp(AvpType.FRAMING_CAPABILITIES, u32(1)),
              raw_avp(AvpType.BEARER_CAPABILITIES, u32(0)),
              raw_avp(AvpType.FIRMWARE_REVISION, u16(0x0601), mandatory=False),
              raw_avp(AvpType.HOST_NAME, b"DESKTOP-7Q2LK3M"),
              raw_avp(AvpType.VENDOR_NAME, b"Microsoft", mandatory=False),
              raw_avp(AvpType.ASSIGNED_TUNNEL_ID, u16(tunnel_id)),
              raw_avp(AvpType.RECEIVE_WINDOW_SIZE, u16(8)),
              *extra)


def windows_tunnel(endpoint: L2tpEndpoint, address: tuple[str, int] = CLIENT) -> RawPeer:
    peer = RawPeer(endpoint, address)
    windows_sccrq(peer)
    (sccrp,) = peer.replies()
    assert isinstance(sccrp, ControlMessage) and sccrp.type == MessageType.SCCRP
    peer.tunnel = int(sccrp.value(AvpType.ASSIGNED_TUNNEL_ID))  # type: ignore[call-overload]
    peer.send(MessageType.SCCCN)
    return peer


def windows_call(peer: RawPeer, session_id: int = 1, *iccn_extra: bytes) -> SessionUp:
    peer.send(MessageType.ICRQ,
              raw_avp(AvpType.ASSIGNED_SESSION_ID, u16(session_id)),
              raw_avp(AvpType.CALL_SERIAL_NUMBER, u32(0)),
              raw_avp(AvpType.BEARER_TYPE, u32(0)),
              raw_avp(AvpType.CALLING_NUMBER, b"10.8.0.20"))
    icrp = [m for m in peer.replies() if isinstance(m, ControlMessage) and m.type == MessageType.ICRP]
    assert len(icrp) == 1 and icrp[0].session_id == session_id and icrp[0].tunnel_id == 1
    peer.session = int(icrp[0].value(AvpType.ASSIGNED_SESSION_ID))  # type: ignore[call-overload]
    peer.send(MessageType.ICCN,
              raw_avp(AvpType.TX_CONNECT_SPEED, u32(100_000_000)),
              raw_avp(AvpType.FRAMING_TYPE, u32(1)),
              *iccn_extra)
    (call,) = [e for e in peer.events() if isinstance(e, SessionUp)]
    return call


def lns(**overrides: object) -> L2tpEndpoint:
    return L2tpEndpoint(random=seeded(7), host_name="gw", **overrides)


# -- an LNS for dial-in clients ---------------------------------------------------------------------


def test_windows_client_dials_in() -> None:
    ep = lns()
    peer = RawPeer(ep)
    windows_sccrq(peer)
    (sccrp,) = peer.replies()
    assert isinstance(sccrp, ControlMessage)
    assert (sccrp.type, sccrp.tunnel_id, sccrp.session_id) == (MessageType.SCCRP, 1, 0)
    assert (sccrp.ns, sccrp.nr) == (0, 1)
    assert sccrp.value(AvpType.HOST_NAME) == b"gw" and sccrp.value(AvpType.PROTOCOL_VERSION) == (1, 0)
    assert sccrp.find(AvpType.CHALLENGE) is None  # no secret configured: no tunnel authentication
    peer.tunnel = int(sccrp.value(AvpType.ASSIGNED_TUNNEL_ID))  # type: ignore[call-overload]
    peer.send(MessageType.SCCCN)
    (tunnel_up,) = [e for e in peer.events() if isinstance(e, TunnelUp)]
    assert tunnel_up.host_name == "DESKTOP-7Q2LK3M" and tunnel_up.vendor == "Microsoft"
    assert tunnel_up.window == 8 and tunnel_up.firmware == 0x0601 and tunnel_up.peer == CLIENT

    lcp = bytes.fromhex("0104 0578 0506 1a2b 3c4d 0702 0802")
    call = windows_call(peer, 1,
                        raw_avp(AvpType.INITIAL_RECEIVED_LCP_CONFREQ, lcp, mandatory=False),
                        raw_avp(AvpType.LAST_SENT_LCP_CONFREQ, lcp, mandatory=False),
                        raw_avp(AvpType.LAST_RECEIVED_LCP_CONFREQ, lcp, mandatory=False))
    assert call.calling_number == "10.8.0.20" and call.serial == 0 and call.peer_session == 1
    assert call.tx_connect_speed == 100_000_000 and call.framing_type == 1 and not call.lac
    assert call.proxy_lcp is not None and call.proxy_lcp.initial_received == lcp
    key = call.session

    # Windows sends data with the L bit; we answer without it, to its tunnel and session ids
    frame = bytes.fromhex("ff03 c021 0101 0014 0104 0578 0506 1a2b 3c4d 0702 0802")
    peer.raw(struct.pack("!HHHH", 0x4002, 8 + len(frame), peer.tunnel, peer.session) + frame)
    (received,) = [e for e in peer.events() if isinstance(e, FrameReceived)]
    assert received.session == key and received.frame == frame
    assert ep.send_frame(key, b"\xff\x03\xc0\x21\x02\x01\x00\x04")
    replies = peer.replies()
    data = [m for m in replies if isinstance(m, DataMessage)]
    assert data == [DataMessage(1, 1, b"\xff\x03\xc0\x21\x02\x01\x00\x04")]

    # its SLI is reported, its HELLO acknowledged by a ZLB
    peer.send(MessageType.SLI, raw_avp(AvpType.ACCM, u16(0) + u32(0xFFFFFFFF) + u32(0xFFFFFFFF)))
    (info,) = [e for e in peer.events() if isinstance(e, LinkInfo)]
    assert (info.session, info.message) == (key, "SLI")
    assert info.send_accm == info.receive_accm == 0xFFFFFFFF
    peer.later(60)
    peer.send(MessageType.HELLO)
    peer.later(0.3)
    zlbs = [m for m in peer.replies() if isinstance(m, ControlMessage) and m.is_zlb]
    assert zlbs and zlbs[-1].nr == peer.ns

    # Windows hangs up: CDN, then StopCCN
    peer.send(MessageType.CDN, raw_avp(AvpType.RESULT_CODE, u16(3)),
              raw_avp(AvpType.ASSIGNED_SESSION_ID, u16(1)))
    peer.send(MessageType.STOPCCN, raw_avp(AvpType.ASSIGNED_TUNNEL_ID, u16(1)),
              raw_avp(AvpType.RESULT_CODE, u16(6)), session=0)
    events = peer.events()
    assert [type(e).__name__ for e in events if type(e).__name__ != "Note"] == ["SessionDown", "TunnelDown"]
    assert events[-1].reason == "stopccn" and events[-1].result == 6  # type: ignore[attr-defined]
    (ack,) = peer.replies()
    assert isinstance(ack, ControlMessage) and ack.is_zlb and ack.nr == peer.ns  # acknowledged at once
    assert ep.drops == {}


def test_replies_go_to_the_port_the_client_used() -> None:
    ep = lns()
    natted = ("203.0.113.9", 50123)
    peer = windows_tunnel(ep, natted)  # RawPeer.replies asserts every destination
    windows_call(peer)
    assert ep.tunnel_state(peer.tunnel) == "established"
    # the same tunnel id from another port is someone else's
    RawPeer(ep, ("203.0.113.9", 1701)).raw(struct.pack("!HHHHHH", 0xC802, 12, peer.tunnel, 0, 2, 1))
    assert ep.drops == {"wrong_peer": 1}


def test_retransmitted_sccrq_is_acknowledged_not_answered_twice() -> None:
    ep = lns()
    peer = RawPeer(ep)
    windows_sccrq(peer)
    peer.replies()
    peer.ns = peer.nr = 0
    windows_sccrq(peer)  # our SCCRP was lost, as far as the client knows
    (ack,) = peer.replies()
    assert isinstance(ack, ControlMessage) and ack.is_zlb and ack.nr == 1
    assert len(ep.tunnel_ids) == 1
    peer.later(1.0)  # our SCCRP is retransmitted until acknowledged
    (again,) = peer.replies()
    assert isinstance(again, ControlMessage) and again.type == MessageType.SCCRP and again.ns == 0


def test_a_client_that_starts_over_replaces_its_tunnel() -> None:
    ep = lns()
    peer = windows_tunnel(ep)
    windows_call(peer)
    old = peer.tunnel
    late_copy = RawPeer(ep)  # a copy of its SCCRQ that wandered: acknowledged, nothing else
    windows_sccrq(late_copy)
    (ack,) = late_copy.replies()
    assert isinstance(ack, ControlMessage) and ack.is_zlb and ep.tunnel_ids == [old]
    fresh = RawPeer(ep)  # the client rebooted: same address, same tunnel id, Ns from 0
    fresh.now = 40.0
    windows_sccrq(fresh)
    (sccrp,) = fresh.replies()
    assert isinstance(sccrp, ControlMessage) and sccrp.type == MessageType.SCCRP
    events = [e for e in fresh.events() if isinstance(e, SessionDown | TunnelDown)]
    assert [type(e).__name__ for e in events] == ["SessionDown", "TunnelDown"]
    assert events[1].reason == "replaced" and events[1].tunnel == old  # type: ignore[union-attr]
    assert ep.tunnel_ids == [int(sccrp.value(AvpType.ASSIGNED_TUNNEL_ID))]  # type: ignore[call-overload]


def test_a_client_that_reconnects_at_once_gets_a_new_tunnel() -> None:
    ep = lns()
    peer = windows_tunnel(ep)
    windows_call(peer)
    peer.send(MessageType.STOPCCN, raw_avp(AvpType.ASSIGNED_TUNNEL_ID, u16(1)),
              raw_avp(AvpType.RESULT_CODE, u16(1)), session=0)
    peer.replies()
    old = peer.tunnel
    assert ep.tunnel_state(old) == "linger"
    again = windows_tunnel(ep)  # the same address and tunnel id, a second later
    assert again.tunnel != old and ep.tunnel_state(again.tunnel) == "established"
    assert ep.tunnel_state(old) == "linger"  # still there to acknowledge a retransmitted StopCCN
    peer.ns -= 1
    peer.send(MessageType.STOPCCN, raw_avp(AvpType.ASSIGNED_TUNNEL_ID, u16(1)),
              raw_avp(AvpType.RESULT_CODE, u16(1)), session=0)
    (ack,) = peer.replies()
    assert isinstance(ack, ControlMessage) and ack.is_zlb
    windows_call(again)


def test_tunnel_limit_refuses_with_a_stateless_stopccn() -> None:
    ep = lns(max_tunnels=2)
    for i in range(2):
        windows_tunnel(ep, (f"10.8.0.{i + 1}", 1701))
    late = RawPeer(ep, ("10.8.0.99", 1701))
    windows_sccrq(late, 55)
    (stop,) = late.replies()
    assert isinstance(stop, ControlMessage) and stop.type == MessageType.STOPCCN and stop.tunnel_id == 55
    assert stop.value(AvpType.RESULT_CODE) == ResultCode(2, 4, b"too many tunnels")
    assert ep.refusals == {"max_tunnels": 1} and len(ep.tunnel_ids) == 2
    with pytest.raises(L2tpRefused):
        ep.open_tunnel(("10.9.9.9", 1701), 0.0)


def test_session_limit_refuses_with_cdn() -> None:
    ep = lns(max_sessions_per_tunnel=1)
    peer = windows_tunnel(ep)
    windows_call(peer, 1)
    peer.send(MessageType.ICRQ, raw_avp(AvpType.ASSIGNED_SESSION_ID, u16(2)),
              raw_avp(AvpType.CALL_SERIAL_NUMBER, u32(1)), session=0)
    (cdn,) = [m for m in peer.replies() if isinstance(m, ControlMessage) and not m.is_zlb]
    assert cdn.type == MessageType.CDN and cdn.session_id == 2
    result = cdn.value(AvpType.RESULT_CODE)
    assert isinstance(result, ResultCode) and (result.result, result.error) == (4, 4)
    assert ep.refusals == {"max_sessions": 1}
    with pytest.raises(L2tpRefused):
        ep.place_call(peer.tunnel, 0.0, outgoing=True)


def test_an_lac_only_endpoint_refuses_tunnels_and_calls() -> None:
    ep = lns(accept_tunnels=False)
    peer = RawPeer(ep)
    windows_sccrq(peer)
    (stop,) = peer.replies()
    assert isinstance(stop, ControlMessage) and stop.type == MessageType.STOPCCN
    assert isinstance(stop.value(AvpType.RESULT_CODE), ResultCode)
    assert stop.value(AvpType.RESULT_CODE).result == 4  # type: ignore[attr-defined]
    ep2 = lns(accept_incoming_calls=False)
    peer2 = windows_tunnel(ep2)
    peer2.send(MessageType.ICRQ, raw_avp(AvpType.ASSIGNED_SESSION_ID, u16(9)),
               raw_avp(AvpType.CALL_SERIAL_NUMBER, u32(1)), session=0)
    (cdn,) = [m for m in peer2.replies() if isinstance(m, ControlMessage) and not m.is_zlb]
    assert cdn.type == MessageType.CDN and cdn.value(AvpType.RESULT_CODE).result == 5  # type: ignore[union-attr]


def test_a_refused_lac_hears_why() -> None:
    wire = pair(lns={"accept_tunnels": False})
    tid, (key,) = up(wire)
    (down,) = wire["lac"].of(TunnelDown)
    assert down.tunnel == tid and down.reason == "stopccn" and down.result == 4
    assert "tunnels are not accepted here" in down.text
    assert [e.session for e in wire["lac"].of(SessionDown)] == [key]
    assert wire["lns"].endpoint.refusals == {"tunnels_not_accepted": 1}
    wire.run_for(40)
    assert wire["lac"].endpoint.tunnel_ids == [] and wire["lns"].endpoint.tunnel_ids == []


def test_another_protocol_version_is_refused() -> None:
    ep = lns()
    peer = RawPeer(ep)
    peer.send(MessageType.SCCRQ, raw_avp(AvpType.PROTOCOL_VERSION, b"\x01\x01"),
              raw_avp(AvpType.HOST_NAME, b"future"), raw_avp(AvpType.FRAMING_CAPABILITIES, u32(3)),
              raw_avp(AvpType.ASSIGNED_TUNNEL_ID, u16(4)))
    (stop,) = peer.replies()
    assert isinstance(stop, ControlMessage) and stop.type == MessageType.STOPCCN and stop.tunnel_id == 4
    result = stop.value(AvpType.RESULT_CODE)
    assert isinstance(result, ResultCode) and (result.result, result.error) == (5, 0x0100)
    assert [e.reason for e in peer.events() if isinstance(e, TunnelDown)] == ["bad_version"]


# -- unknown AVPs and message types (RFC 2661 4.2, 4.4.1) -----------------------------------------


def test_unknown_mandatory_avp_in_sccrq_ends_the_tunnel() -> None:
    ep = lns()
    peer = RawPeer(ep)
    windows_sccrq(peer, 1, raw_avp(99, b"?"))
    (stop,) = peer.replies()
    assert isinstance(stop, ControlMessage) and stop.type == MessageType.STOPCCN
    assert stop.value(AvpType.RESULT_CODE) == ResultCode(2, 8, b"unknown mandatory AVP type-99 in SCCRQ")
    (down,) = [e for e in peer.events() if isinstance(e, TunnelDown)]
    assert down.reason == "unknown_mandatory"


def test_unknown_mandatory_avp_in_a_session_message_ends_only_the_session() -> None:
    ep = lns()
    peer = windows_tunnel(ep)
    call = windows_call(peer)
    peer.send(MessageType.SLI, raw_avp(AvpType.ACCM, bytes(10)), raw_avp(7, b"x", vendor=311))
    (cdn,) = [m for m in peer.replies() if isinstance(m, ControlMessage) and not m.is_zlb]
    assert cdn.type == MessageType.CDN and cdn.session_id == 1
    assert cdn.value(AvpType.RESULT_CODE).error == 8  # type: ignore[union-attr]
    (down,) = [e for e in peer.events() if isinstance(e, SessionDown)]
    assert down.session == call.session and down.reason == "unknown_mandatory"
    assert ep.tunnel_state(peer.tunnel) == "established"
    # an ICRQ with one is refused with a CDN, the tunnel stays
    peer.send(MessageType.ICRQ, raw_avp(AvpType.ASSIGNED_SESSION_ID, u16(5)),
              raw_avp(AvpType.CALL_SERIAL_NUMBER, u32(1)), raw_avp(77, b""), session=0)
    (cdn,) = [m for m in peer.replies() if isinstance(m, ControlMessage) and not m.is_zlb]
    assert cdn.type == MessageType.CDN and cdn.session_id == 5
    assert ep.tunnel_state(peer.tunnel) == "established"


def test_unknown_optional_avps_and_message_types_are_ignored_but_acknowledged() -> None:
    ep = lns()
    peer = windows_tunnel(ep)
    windows_call(peer)
    peer.send(MessageType.HELLO, raw_avp(200, b"whatever", mandatory=False), raw_avp(1, b"ms", False, 311))
    peer.send(42, mandatory_type=False)
    peer.later(0.3)
    replies = peer.replies()
    assert all(isinstance(m, ControlMessage) and m.is_zlb for m in replies) and replies[-1].nr == peer.ns  # type: ignore[union-attr]
    assert ep.tunnel_state(peer.tunnel) == "established"
    peer.send(42)  # an unknown message type with the M bit clears the tunnel
    (stop,) = [m for m in peer.replies() if isinstance(m, ControlMessage) and not m.is_zlb]
    assert stop.type == MessageType.STOPCCN


def test_hidden_avp_without_a_secret_counts_as_unknown() -> None:
    ep = lns()
    peer = windows_tunnel(ep)
    windows_call(peer)
    peer.send(MessageType.SLI, raw_avp(AvpType.RANDOM_VECTOR, bytes(16)),
              struct.pack("!HHH", 0xC000 | 18, 0, AvpType.ACCM) + bytes(12))
    (cdn,) = [m for m in peer.replies() if isinstance(m, ControlMessage) and not m.is_zlb]
    assert cdn.type == MessageType.CDN and b"no shared secret" in cdn.value(AvpType.RESULT_CODE).message  # type: ignore[union-attr]


# -- back to back --------------------------------------------------------------------------------------


def test_many_sessions_and_tunnels_at_once() -> None:
    lns_ep = lns()
    nodes = [Node("lns", lns_ep, LNS_ADDR)]
    for i in range(5):
        branch = L2tpEndpoint(random=seeded(i), host_name=f"branch{i}")
        nodes.append(Node(f"lac{i}", branch, (f"192.0.2.{i}", 1701)))
    wire = Wire(*nodes)
    keys = {}
    for i in range(5):
        lac = wire[f"lac{i}"].endpoint
        tid = lac.open_tunnel(LNS_ADDR, 0.0)
        keys[i] = [lac.place_call(tid, 0.0, calling_number=f"{i}-{j}") for j in range(4)]
    wire.run_for(5)
    lns_calls = wire["lns"].of(SessionUp)
    assert len(wire["lns"].of(TunnelUp)) == 5 and len(lns_calls) == 20
    numbers = sorted(c.calling_number for c in lns_calls)
    assert numbers == sorted(f"{i}-{j}" for i in range(5) for j in range(4))
    for i in range(5):
        for key in keys[i]:
            assert wire[f"lac{i}"].endpoint.send_frame(key, f"frame {key}".encode())
    wire.run_for(1)
    frames = {e.frame for e in wire["lns"].of(FrameReceived)}
    assert frames == {f"frame {key}".encode() for i in range(5) for key in keys[i]}
    assert len(lns_ep.describe(wire.now)) == 5 and lns_ep.drops == {}


def test_loss_of_every_third_datagram() -> None:
    wire = pair(fault=lambda name, i, data: [] if i % 3 == 2 else [0.01])
    tid, keys = up(wire, calls=6)
    wire.run_for(30)
    lac, lns_node = wire["lac"], wire["lns"]
    assert len(lac.of(SessionUp)) == len(lns_node.of(SessionUp)) == 6
    assert lac.endpoint.control["retransmissions"] > 0 and lns_node.endpoint.control["reordered"] > 0
    for key in keys[:3]:
        lac.endpoint.close_session(key, wire.now)
    wire.run_for(30)
    assert len(lns_node.of(SessionDown)) == 3
    lac.endpoint.close_tunnel(tid, wire.now)
    wire.run_for(60)
    assert lac.endpoint.tunnel_ids == [] and lns_node.endpoint.tunnel_ids == []
    assert len(lns_node.of(SessionDown)) == 6 and lns_node.of(TunnelDown)[0].reason == "stopccn"


_FAULTS = {"ok": [0.01], "drop": [], "dup": [0.01, 0.03], "late": [0.9], "later": [2.5]}


@settings(max_examples=60, deadline=None)
@given(actions=st.lists(st.sampled_from(list(_FAULTS)), max_size=40), calls=st.integers(0, 5),
       hang_up=st.integers(0, 5))
def test_both_ends_agree_whatever_the_faults(actions: list[str], calls: int, hang_up: int) -> None:
    def fault(name: str, index: int, data: bytes) -> list[float]:
        position = 2 * index + (name == "lns")  # interleave the two senders' fault lists
        return _FAULTS[actions[position]] if position < len(actions) else [0.01]

    wire = pair(fault=fault, lac={"retransmit": RetransmitPolicy(retries=50)},
                lns={"retransmit": RetransmitPolicy(retries=50)})
    tid, keys = up(wire, calls=calls)
    wire.run_for(60)
    for key in keys[:hang_up]:
        wire["lac"].endpoint.close_session(key, wire.now)
    wire.run_for(60)
    lac, lns_node = wire["lac"].endpoint, wire["lns"].endpoint
    assert lac.tunnel_state(tid) == "established"
    (lns_tunnel,) = lns_node.tunnel_ids
    assert lns_node.tunnel_state(lns_tunnel) == "established"
    assert len(lac.sessions()) == len(lns_node.sessions()) == calls - min(calls, hang_up)
    assert len(wire["lac"].of(SessionUp)) == len(wire["lns"].of(SessionUp)) == calls
    # every control message was processed once: no FSM complaints on either side
    assert "unexpected_message" not in lac.drops and "unexpected_message" not in lns_node.drops


def test_an_lns_answering_from_another_port_is_followed() -> None:
    lac = L2tpEndpoint(random=seeded(3), host_name="branch")
    tid = lac.open_tunnel(LNS_ADDR, 0.0)
    ((sccrq, dest),) = lac.datagrams_to_send()
    assert dest == LNS_ADDR
    lns_ep = lns()
    lns_ep.receive(sccrq, LAC_ADDR, 0.0)
    ((sccrp, _),) = lns_ep.datagrams_to_send()
    lac.receive(sccrp, (LNS_ADDR[0], 40000), 0.1)  # answered from another port (RFC 2661 8.1)
    out = lac.datagrams_to_send()
    assert [d for _, d in out] == [(LNS_ADDR[0], 40000)]
    assert lac.tunnel_state(tid) == "established"


def test_setup_timeout_when_the_peer_never_confirms() -> None:
    ep = lns(setup_timeout=20)
    peer = RawPeer(ep)
    windows_sccrq(peer)
    (sccrp,) = peer.replies()
    peer.tunnel = int(sccrp.value(AvpType.ASSIGNED_TUNNEL_ID))  # type: ignore[union-attr, call-overload]
    peer.zlb()  # acknowledges our SCCRP but never sends SCCCN
    peer.later(20.5)
    (stop,) = [m for m in peer.replies() if isinstance(m, ControlMessage) and not m.is_zlb]
    assert stop.type == MessageType.STOPCCN
    (down,) = [e for e in peer.events() if isinstance(e, TunnelDown)]
    assert down.reason == "setup_timeout"


def test_a_call_that_never_connects_times_out() -> None:
    ep = lns(setup_timeout=20)
    peer = windows_tunnel(ep)
    peer.send(MessageType.ICRQ, raw_avp(AvpType.ASSIGNED_SESSION_ID, u16(3)),
              raw_avp(AvpType.CALL_SERIAL_NUMBER, u32(1)))
    peer.replies()
    peer.zlb()
    peer.later(20.5)
    (cdn,) = [m for m in peer.replies() if isinstance(m, ControlMessage) and not m.is_zlb]
    assert cdn.type == MessageType.CDN and cdn.session_id == 3
    assert [e.reason for e in peer.events() if isinstance(e, SessionDown)] == ["setup_timeout"]


# -- keepalives and dead peers -------------------------------------------------------------------------


def _control_log(wire: Wire) -> list[tuple[float, str, str]]:
    return [(t, name, decode(data).name) for t, name, data in wire.log  # type: ignore[union-attr]
            if data[0] & 0x80]


def test_hello_after_a_minute_of_silence() -> None:
    wire = pair()
    up(wire)
    start = len(wire.log)
    wire.run(300)
    quiet = [(round(t, 2), to, name) for t, to, name in _control_log(wire)[start:]]
    # the LNS heard last (the ICCN), so its minute ends first: its HELLO reaches the LAC, whose
    # minute then starts afresh while the LNS's starts with the acknowledgement 0.25 s later;
    # so the two take turns, one HELLO a minute between them
    hellos = [(t, to) for t, to, name in quiet if name == "HELLO"]
    assert [to for _, to in hellos] == ["lac", "lns", "lac", "lns"]
    assert [b - a for (a, _), (b, _) in itertools.pairwise(hellos)] == pytest.approx([60.0] * 3, abs=0.05)
    assert all(name in ("HELLO", "ZLB") for _, _, name in quiet)
    assert not wire["lac"].of(TunnelDown) and not wire["lns"].of(TunnelDown)


def test_data_counts_as_hearing_from_the_peer() -> None:
    wire = pair()
    up(wire)
    lns_key = wire["lns"].of(SessionUp)[0].session
    sent_before = len(wire["lac"].sent)
    for _ in range(12):
        wire["lns"].endpoint.send_frame(lns_key, b"\x00\x21data")
        wire.run_for(10)
    control = [m for m in map(decode, wire["lac"].sent[sent_before:]) if isinstance(m, ControlMessage)]
    assert {m.name for m in control} == {"ZLB"}  # the LAC heard data all along: no HELLO of its own
    assert len(wire["lac"].of(FrameReceived)) == 12


def test_a_silent_peer_is_declared_dead_after_hello_retransmissions() -> None:
    cut = {"at": None}

    def fault(name: str, index: int, data: bytes) -> list[float]:
        return [] if cut["at"] is not None else [0.01]

    wire = pair(fault=fault)
    _, (key,) = up(wire)
    cut["at"] = wire.now
    wire.run(200)
    (down,) = wire["lac"].of(TunnelDown)
    assert down.reason == "timeout" and "HELLO" in down.text
    (call_down,) = wire["lac"].of(SessionDown)
    assert call_down.session == key and call_down.reason == "tunnel_down"
    # the LAC last heard the LNS's ZLB for the ICCN (0.31 s): a HELLO a minute later, then 31 s
    # of retransmissions (RFC 2661 5.8, 6.5)
    (when,) = [t for t, e in wire["lac"].timeline if isinstance(e, TunnelDown)]
    assert when == pytest.approx(0.31 + 60 + 31, abs=0.02)
    assert wire["lac"].endpoint.tunnel_ids == []


def test_sccrq_into_the_void_gives_up_after_31_seconds() -> None:
    lac = L2tpEndpoint(random=seeded(5), host_name="branch")
    tid = lac.open_tunnel(LNS_ADDR, 100.0)
    key = lac.place_call(tid, 100.0)
    times = [100.0]
    lac.datagrams_to_send()
    while lac.tunnel_ids:
        timer = lac.get_timer()
        assert timer is not None
        lac.handle_timer(timer)
        if lac.datagrams_to_send():
            times.append(timer)
    assert times == [100, 101, 103, 107, 115, 123]
    events = []
    while (event := lac.next_event()) is not None:
        events.append(event)
    downs = [e for e in events if isinstance(e, SessionDown | TunnelDown)]
    assert [type(e).__name__ for e in downs] == ["SessionDown", "TunnelDown"]
    assert downs[0].session == key and downs[1].reason == "timeout"  # type: ignore[union-attr]
    assert lac.get_timer() is None


# -- tie breaker (RFC 2661 4.4.3) -------------------------------------------------------------------------


@pytest.mark.parametrize("lac_tb, lns_tb, survivors", [
    (True, True, 1),
    (True, False, 1),
    (False, True, 1),
    (False, False, 2),
])
def test_simultaneous_sccrqs(lac_tb: bool, lns_tb: bool, survivors: int) -> None:
    wire = pair(lac={"tie_breaker": lac_tb, "accept_tunnels": True}, lns={"tie_breaker": lns_tb})
    wire["lac"].endpoint.open_tunnel(LNS_ADDR, 0.0)
    wire["lns"].endpoint.open_tunnel(LAC_ADDR, 0.0)
    wire.run_for(5)
    assert len(wire["lac"].endpoint.tunnel_ids) == len(wire["lns"].endpoint.tunnel_ids) == survivors
    assert len(wire["lac"].of(TunnelUp)) == len(wire["lns"].of(TunnelUp)) == survivors
    if survivors == 1:
        (loser,) = wire["lac"].of(TunnelDown) + wire["lns"].of(TunnelDown)
        assert loser.reason == "tie_breaker"


def test_equal_tie_breakers_discard_both() -> None:
    # both endpoints draw the same random bytes, so their tie breakers are equal
    wire = pair(lac={"tie_breaker": True, "accept_tunnels": True}, lns={"tie_breaker": True}, seed=4)
    wire["lns"].endpoint._random = seeded(4)
    wire["lac"].endpoint.open_tunnel(LNS_ADDR, 0.0)
    wire["lns"].endpoint.open_tunnel(LAC_ADDR, 0.0)
    wire.run_for(5)
    assert wire["lac"].endpoint.tunnel_ids == [] and wire["lns"].endpoint.tunnel_ids == []
    assert wire["lac"].endpoint.refusals == {"tie_breaker": 1}


# -- data ---------------------------------------------------------------------------------------------


def test_sequenced_data_and_late_frames() -> None:
    wire = pair(lac={"data_sequencing": True})
    up(wire)
    lns_call = wire["lns"].of(SessionUp)[0]
    assert lns_call.sequencing and wire["lac"].of(SessionUp)[0].sequencing
    for i in range(3):
        assert wire["lns"].endpoint.send_frame(lns_call.session, bytes([0xC0, 0x21, i]))
    out = wire["lns"].endpoint.datagrams_to_send()
    assert [decode(d).ns for d, _ in out] == [0, 1, 2]  # type: ignore[union-attr]
    lac = wire["lac"].endpoint
    for data, _ in (out[0], out[2], out[1]):  # the second frame arrives late
        lac.receive(data, LNS_ADDR, wire.now)
    wire.collect()
    assert [e.frame[-1] for e in wire["lac"].of(FrameReceived)] == [0, 2]
    assert lac.drops == {"data_out_of_order": 1}


def test_the_lac_follows_the_lns_on_sequencing() -> None:
    wire = pair(lns={"data_sequencing": True})
    _, (key,) = up(wire)
    lns_key = wire["lns"].of(SessionUp)[0].session
    lac = wire["lac"].endpoint
    lac.send_frame(key, b"\xc0\x21before")
    wire.run_for(1)
    wire["lns"].endpoint.send_frame(lns_key, b"\xc0\x21seq")
    wire.run_for(1)
    lac.send_frame(key, b"\xc0\x21after")
    sent = [decode(d) for d in wire["lac"].sent] + [decode(d) for d, _ in lac.datagrams_to_send()]
    data = [m for m in sent if isinstance(m, DataMessage)]
    assert [m.ns for m in data] == [None, 0]


def test_data_for_unknown_places_is_counted() -> None:
    wire = pair()
    tid, _ = up(wire)
    lns_ep = wire["lns"].endpoint
    lns_tid = wire["lns"].of(TunnelUp)[0].tunnel
    lns_ep.receive(DataMessage(lns_tid ^ 0xFFFF, 1, b"x").encode(), LAC_ADDR, wire.now)
    lns_ep.receive(DataMessage(lns_tid, 12345, b"x").encode(), LAC_ADDR, wire.now)
    lns_ep.receive(DataMessage(lns_tid, 1, b"x").encode(), ("192.0.2.99", 1701), wire.now)
    lns_ep.receive(DataMessage(lns_tid, wire["lns"].of(SessionUp)[0].session.session, b"").encode(),
                   LAC_ADDR, wire.now)
    assert lns_ep.drops == {"unknown_tunnel": 1, "unknown_session": 1, "wrong_peer": 1, "empty_frame": 1}
    assert not wire["lac"].endpoint.send_frame(SessionKey(tid, 1), b"x")


# -- SLI, WEN, hidden AVPs end to end -------------------------------------------------------------------


def test_sli_and_wen_are_reported() -> None:
    wire = pair()
    _, (key,) = up(wire)
    lns_key = wire["lns"].of(SessionUp)[0].session
    wire["lns"].endpoint.set_link_info(lns_key, wire.now, send_accm=0, receive_accm=0xFFFFFFFF)
    wire["lac"].endpoint.report_call_errors(key, wire.now, CallErrors(crc=3, timeouts=1))
    wire.run_for(1)
    (sli,) = wire["lac"].of(LinkInfo)
    (wen,) = wire["lns"].of(LinkInfo)
    assert (sli.session, sli.message, sli.send_accm, sli.receive_accm) == (key, "SLI", 0, 0xFFFFFFFF)
    assert (wen.session, wen.message, wen.call_errors) == (lns_key, "WEN", CallErrors(crc=3, timeouts=1))
    assert Accm(0, 1) != Accm(1, 0)


def test_hidden_avps_end_to_end() -> None:
    secret = b"branch-to-hq"
    wire = pair(lac={"default_secret": secret, "hide_avps": frozenset({AvpType.CALLING_NUMBER})},
                lns={"default_secret": secret})
    up(wire)
    (call,) = wire["lns"].of(SessionUp)
    assert call.calling_number == "caller-0"
    assert not any(b"caller-0" in d for d in wire["lac"].sent)
    assert all(e.authenticated for e in wire["lac"].of(TunnelUp) + wire["lns"].of(TunnelUp))


# -- the shell's commands ---------------------------------------------------------------------------


def test_close_all_and_unknown_handles() -> None:
    wire = pair()
    tid, (key,) = up(wire)
    lac = wire["lac"].endpoint
    assert key.session != 1 and not lac.close_session(SessionKey(tid, 1), wire.now)
    assert not lac.close_tunnel(9, wire.now)
    with pytest.raises(L2tpRefused):
        lac.place_call(9, wire.now)
    with pytest.raises(L2tpRefused):
        lac.set_link_info(SessionKey(tid, 1), wire.now, send_accm=0, receive_accm=0)
    lac.close_all(wire.now)
    wire.run_for(2)
    (down,) = wire["lns"].of(TunnelDown)
    assert down.result == 6 and "shutting down" in down.text
    assert lac.tunnel_ids == [] and lac.session_state(key) is None


def test_describe_reports_tunnels_and_sessions() -> None:
    wire = pair()
    tid, (key,) = up(wire)
    (tunnel,) = wire["lac"].endpoint.describe(wire.now)
    assert tunnel["tunnel"] == tid and tunnel["state"] == "established" and tunnel["host_name"] == "gw"
    (session,) = tunnel["sessions"]  # type: ignore[misc]
    assert session["session"] == key.session and session["state"] == "established"


# -- garbage ------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120), position=st.integers(0, 200), flip=st.integers(1, 255))
def test_garbage_and_corrupted_messages_are_only_counted(data: bytes, position: int, flip: int) -> None:
    ep = lns()
    peer = windows_tunnel(ep)
    windows_call(peer)
    ep.receive(data, CLIENT, 1.0)
    ep.receive(b"\xc8\x02" + data, CLIENT, 1.0)
    # a valid message with one octet changed
    body = raw_avp(0, u16(MessageType.SLI)) + raw_avp(AvpType.ACCM, bytes(10))
    valid = bytearray(struct.pack("!HHHHHH", 0xC802, 12 + len(body), peer.tunnel, peer.session,
                                  peer.ns, peer.nr) + body)
    valid[position % len(valid)] ^= flip
    ep.receive(bytes(valid), CLIENT, 1.0)
    ep.receive(bytes(valid), ("10.0.0.1", 1701), 1.0)
    ep.handle_timer(100.0)
    ep.datagrams_to_send()
    while ep.next_event() is not None:
        pass


@settings(max_examples=300, deadline=None)
@given(side=st.sampled_from(["lac", "lns"]), index=st.integers(0, 12), position=st.integers(0, 400),
       how=st.sampled_from(["flip", "truncate", "append"]), value=st.integers(1, 255),
       secret=st.sampled_from([None, b"s"]))
def test_a_tampered_datagram_anywhere_in_a_conversation(side: str, index: int, position: int, how: str,
                                                       value: int, secret: bytes | None) -> None:
    def tamper(name: str, i: int, data: bytes) -> bytes:
        if name != side or i != index:
            return data
        at = position % len(data)
        if how == "flip":
            return data[:at] + bytes([data[at] ^ value]) + data[at + 1:]
        if how == "truncate":
            return data[:at]
        return data + bytes([value]) * (position % 7 + 1)

    hidden = frozenset({AvpType.CALLING_NUMBER, AvpType.ASSIGNED_SESSION_ID}) if secret else frozenset()
    wire = pair(lac={"default_secret": secret, "hide_avps": hidden, "data_sequencing": True},
                lns={"default_secret": secret, "hide_avps": hidden}, tamper=tamper)
    tid, keys = up(wire, calls=2)
    for key in keys:
        wire["lac"].endpoint.send_frame(key, b"\xc0\x21frame")
    wire.run_for(100)
    if keys and wire["lac"].endpoint.session_state(keys[0]) is not None:
        wire["lac"].endpoint.close_session(keys[0], wire.now)
    wire["lac"].endpoint.close_tunnel(tid, wire.now)
    wire.run_for(100)
