"""What the dataplane tells the shell, and what it does meanwhile.

Traps: a policy without SAs asks for them once, holds (or passes in clear) the packets
meanwhile, and sends the held ones first once the SAs are up (demand-dial, RFC 4301 5.1.1).
NAT rebinding: authenticated ESP from a new address or port is reported once; forged
packets from anywhere are not."""

from __future__ import annotations

import dataclasses
import ipaddress
from socket import inet_aton

from test_keylog import LOCAL, REMOTE, child_up, table

from gateway.dataplane import esp, ip
from gateway.dataplane.engine import SEND_ESP, SEND_IP, SEND_UDP, Acquire
from gateway.dataplane.sa import Direction, Mode, SecurityAssociation
from gateway.ike.events import ChildSaDown, ChildSaUp
from gateway.ike.trafficselectors import TsRange
from gateway.tunnels import selector_pairs

HERE, THERE = ipaddress.IPv4Address(LOCAL), ipaddress.IPv4Address(REMOTE)
SELECTORS = selector_pairs((TsRange(HERE, HERE),), (TsRange(THERE, THERE),))


def ping(n: int) -> bytes:
    payload = bytes([8, 0, 0, 0, 0, 1, 0, n]) + b"x" * 16
    return ip.build_header(inet_aton(LOCAL), inet_aton(REMOTE), 1, len(payload), ident=n) + payload


def test_a_trap_holds_the_first_packets_and_sends_them_first_once_up() -> None:
    t = table(None)
    t.install_trap("dialin", SELECTORS, Mode.TRANSPORT, hold=2)
    engine = t.engine
    assert engine.outbound(ping(1)) is None
    assert engine.outbound(ping(2)) is None
    assert engine.outbound(ping(3)) is None  # the queue is full: the newest is dropped
    assert list(engine.events) == [Acquire("dialin")]  # one acquire, not one per packet
    assert engine.drops["hold_full"] == 1 and engine.drops.get("no_sa", 0) == 0
    assert engine.release_held("dialin") == []  # still no SA: nothing leaves, nothing lost
    assert len(engine.held["dialin"]) == 2

    up = child_up("aes128gcm16")
    tunnel, new_routes = t.up(up)
    assert not new_routes  # the trap's routes are already in place
    assert tunnel.policy.hold == 2 and tunnel.policy.esp_out is tunnel.pairs[up.spi_in].outbound
    sent = engine.release_held("dialin")
    assert [kind for kind, _, _ in sent] == [SEND_ESP, SEND_ESP]
    assert [int.from_bytes(data[4:8], "big") for _, data, _ in sent] == [1, 2]  # in arrival order
    assert "dialin" not in engine.held
    # what the peer decrypts from the first is the first ping
    next_header, payload = esp.decapsulate(_peer_inbound(tunnel.pairs[up.spi_in].outbound, up), sent[0][1])
    assert next_header == 1 and payload == ping(1)[20:]


def test_after_the_last_pair_goes_the_trap_is_back_with_its_configured_selectors() -> None:
    t = table(None)
    t.install_trap("dialin", SELECTORS, Mode.TRANSPORT, hold=4)
    up = child_up("aes128gcm16")
    t.up(up)
    t.down(ChildSaDown("dialin", up.ike_sa, up.spi_in, up.spi_out, "idle"))
    policy = t.tunnels["dialin"].policy
    assert policy.esp_out is None and policy.hold == 4 and policy.selectors == SELECTORS
    engine = t.engine
    engine.events.clear()
    assert engine.outbound(ping(9)) is None
    assert list(engine.events) == [Acquire("dialin")]  # the next packet dials again
    assert engine.discard_held("dialin") == 1  # that dial failed: the held packet is counted
    assert engine.drops["hold_expired"] == 1


def test_request_security_sends_in_clear_until_the_sa_is_up() -> None:
    t = table(None)
    t.install_trap("dialin", SELECTORS, Mode.TRANSPORT, fallback_clear=True)
    engine = t.engine
    packet = ping(1)
    assert engine.outbound(packet) == (SEND_IP, packet, (REMOTE, 0))
    assert engine.outbound(packet) == (SEND_IP, packet, (REMOTE, 0))
    assert list(engine.events) == [Acquire("dialin")]
    t.up(child_up("aes128gcm16"))
    kind, _, _ = engine.outbound(packet)  # type: ignore[misc]
    assert kind == SEND_ESP  # once negotiated, never in clear again


def test_without_a_hold_queue_a_trap_drops_and_asks() -> None:
    t = table(None)
    t.install_trap("dialin", SELECTORS, Mode.TRANSPORT)
    assert t.engine.outbound(ping(1)) is None
    assert t.engine.drops["no_sa"] == 1 and list(t.engine.events) == [Acquire("dialin")]


def test_removing_a_tunnel_drops_its_policy_and_held_packets() -> None:
    t = table(None)
    t.install_trap("dialin", SELECTORS, Mode.TRANSPORT, hold=4)
    t.engine.outbound(ping(1))
    assert t.remove("dialin") is not None
    assert len(t.engine.spd) == 0 and t.engine.drops["hold_expired"] == 1
    assert t.engine.outbound(ping(2)) is None and t.engine.drops["no_policy"] == 1


def _peer_inbound(sa: SecurityAssociation, up: ChildSaUp) -> SecurityAssociation:
    """The peer's inbound SA for our outbound one: same SPI, same keys."""
    assert sa.esp is not None
    return SecurityAssociation.build_esp(
        name="peer", spi=sa.spi, direction=Direction.IN, mode=sa.mode, local=sa.remote, remote=sa.local,
        suite=sa.esp, encryption_key=up.keys.encr_out, integrity_key=up.keys.integ_out, encap=None,
        esn=False, selectors=(), replay_window=64)


# -- NAT rebinding: authenticated ESP from a new address or port ---------------------------------


def test_authenticated_esp_from_a_new_port_reports_the_mapping_once() -> None:
    from gateway.dataplane.engine import MappingChanged

    t = table(None)
    up = dataclasses.replace(child_up("aes128gcm16"), encap_remote_port=4500)
    tunnel, _ = t.up(up)
    ours = tunnel.pairs[up.spi_in].inbound
    assert ours.esp is not None
    peer_out = SecurityAssociation.build_esp(
        name="peer", spi=ours.spi, direction=Direction.OUT, mode=ours.mode, local=ours.remote,
        remote=ours.local, suite=ours.esp, encryption_key=up.keys.encr_in, integrity_key=up.keys.integ_in,
        encap=None, esn=False, selectors=(), replay_window=0)
    engine = t.engine

    def from_peer(n: int) -> bytes:
        return esp.encapsulate(peer_out, ping(n)[20:], 1)

    assert engine.inbound_udp(from_peer(1), (REMOTE, 4500)) is not None
    assert list(engine.events) == []  # where the SA expects it
    forged = bytearray(from_peer(2))
    forged[-1] ^= 1
    assert engine.inbound_udp(bytes(forged), (REMOTE, 6666)) is None
    assert list(engine.events) == [] and engine.drops["bad_icv"] == 1  # not authenticated: ignored
    assert engine.inbound_udp(from_peer(3), (REMOTE, 5555)) is not None
    assert engine.inbound_udp(from_peer(4), (REMOTE, 5555)) is not None
    assert list(engine.events) == [MappingChanged("dialin", ours.spi, (REMOTE, 5555))]  # once
    for sa in (ours, tunnel.pairs[up.spi_in].outbound):
        sa.move_peer(REMOTE, 5555)
    kind, _, address = engine.outbound(ping(5))  # type: ignore[misc]
    assert kind == SEND_UDP
    assert address == (REMOTE, 5555)
