"""The policy in a running dataplane: compiled entries in the SPD (block drops and counts,
permit passes in clear, negotiate traps hold or fall back to clear and ask for the
connection by name), the inbound check of what comes out of an SA, the priorities a
connection's SAs keep, the routes and the selectors a connection negotiates."""

from __future__ import annotations

import ipaddress
import textwrap

from ipsec_testkit import esp_keys, icmp_echo, outer_ip, tcp_packet, udp_packet

from gateway.config import load_config_text
from gateway.config.model import Config
from gateway.crypto.algorithms import parse_esp_suite
from gateway.dataplane import esp, ip
from gateway.dataplane.edge import EdgePolicy
from gateway.dataplane.engine import SEND_ESP, SEND_IP, Acquire, Dataplane
from gateway.dataplane.sa import Direction, Mode, SecurityAssociation
from gateway.ike.events import ChildSaDown, ChildSaKeys, ChildSaUp
from gateway.ike.proposals import NegotiatedSuite
from gateway.ike.trafficselectors import TsRange
from gateway.ike.v2 import fromconfig
from gateway.policy.runtime import NO_RULE, NO_RULE_PRIORITY, TRAP_HOLD, PolicyRuntime, Route, plan_policy
from gateway.tunnels import TunnelTable

HQ, BRANCH, SERVER = "192.0.2.1", "198.51.100.1", "203.0.113.2"

HQ_CONFIG = """\
gateway: {name: hq, public_interface: wan0, public_address: 192.0.2.1}
connections:
  branch1:
    remote: 198.51.100.1
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.2.0.0/24]
    auth: {method: psk, psk: branch-secret-0123456789}
  server:
    remote: 203.0.113.2
    mode: transport
    auth: {method: psk, psk: server-secret-0123456789}
policy:
  name: hq
  filter_lists:
    branch-lans: [{source: 10.1.0.0/24, destination: 10.2.0.0/24}]
    # written from the branch's side: mirrored, it covers both ways all the same
    ping-11: [{source: 10.2.0.11, destination: 10.1.0.0/24, protocol: icmp}]
    dns: [{source: me, destination: 203.0.113.53, protocol: udp, destination_port: 53}]
    server: [{source: me, destination: 203.0.113.2}]
    telnet: [{source: me, destination: 198.18.0.0/15, protocol: tcp, destination_port: 23}]
  filter_actions:
    esp-request: {action: negotiate, fallback_to_clear: true, methods: [aes256gcm16]}
  rules:
    - {name: branch-lans, filter_list: branch-lans, filter_action: require-security, connection: branch1}
    - {name: no-ping-11, filter_list: ping-11, filter_action: block}
    - {name: dns-clear, filter_list: dns, filter_action: permit}
    - {name: server, filter_list: server, filter_action: esp-request, connection: server}
    - {name: no-telnet, filter_list: telnet, filter_action: block}
"""


def config(text: str = HQ_CONFIG) -> Config:
    return load_config_text(textwrap.dedent(text)).config


def runtime(text: str = HQ_CONFIG) -> PolicyRuntime:
    planned = plan_policy(config(text))
    assert planned is not None
    return planned


def installed(text: str = HQ_CONFIG) -> tuple[PolicyRuntime, TunnelTable]:
    rt = runtime(text)
    table = TunnelTable(Dataplane(EdgePolicy("wan0", ipaddress.IPv4Address(HQ), ())), 64)
    rt.install(table.engine, table)
    return rt, table


def net(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


def ts(text: str, protocol: int = 0) -> TsRange:
    return TsRange.of_network(net(text), protocol)


KEYS = ChildSaKeys(*esp_keys("aes128gcm16", 1), *esp_keys("aes128gcm16", 2))  # type: ignore[misc]


def child_up(connection: str = "branch1", *, mode: str = "tunnel", local: str = "10.1.0.0/24",
             remote: str = "10.2.0.0/24", peer: str = BRANCH, spi_in: int = 0xC0000001,
             tunnel: str = "") -> ChildSaUp:
    suite = parse_esp_suite("aes128gcm16")
    return ChildSaUp(connection, "ike-1", spi_in, spi_in + 1, 50, mode,
                     NegotiatedSuite(suite.encryption, suite.integrity, None, None, False), KEYS,
                     (ts(local),), (ts(remote),), HQ, peer, None, tunnel=tunnel)


def peer_outbound(up: ChildSaUp) -> SecurityAssociation:
    """The peer's outbound SA of the pair `up` announced (our inbound one)."""
    return SecurityAssociation.build_esp(
        name="peer", spi=up.spi_in, direction=Direction.OUT, mode=Mode(up.mode),
        local=ipaddress.IPv4Address(up.remote), remote=ipaddress.IPv4Address(HQ),
        suite=parse_esp_suite("aes128gcm16"), encryption_key=KEYS.encr_in, integrity_key=KEYS.integ_in,
        encap=None, esn=False, selectors=(), replay_window=0)


def from_peer(sa: SecurityAssociation, inner: bytes) -> bytes:
    """What the peer sends us: the inner packet in ESP (tunnel mode)."""
    return outer_ip(sa.local, HQ, 50, esp.encapsulate(sa, inner, ip.PROTO_IPIP))


# --------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------


def test_entries_traps_and_routes_in_the_compilers_order() -> None:
    rt = runtime()
    assert [e.rule.name for e in rt.compiled.entries] == [
        "dns-clear", "server", "no-ping-11", "branch-lans", "no-telnet"]
    assert [rt.priority(e) for e in rt.compiled.entries] == [-50, -40, -30, -20, -10]
    assert dict(rt.connection_of) == {"server": "server", "branch-lans": "branch1"}
    server, branch = rt.traps
    assert (branch.connection, branch.mode, branch.priority, branch.hold, branch.fallback_clear) == (
        "branch1", Mode.TUNNEL, -20, TRAP_HOLD, False)
    assert (server.connection, server.mode, server.priority, server.hold, server.fallback_clear) == (
        "server", Mode.TRANSPORT, -40, 0, True)
    assert rt.initiates("branch1") and rt.initiates("server") and not rt.initiates("nope")
    assert rt.routes == (
        Route(Mode.TRANSPORT, (net("192.0.2.1/32"),), (net("203.0.113.2/32"),), "connection server"),
        Route(Mode.TUNNEL, (net("10.1.0.0/24"),), (net("10.2.0.0/24"),), "connection branch1"),
        # the block's own destination; 10.2.0.11 is inside branch1's route, 10.1/24 is ours
        Route(Mode.TRANSPORT, (), (net("198.18.0.0/15"),), "rule no-telnet"),
    )
    assert rt.warnings == ()


def test_a_connection_negotiates_its_rules_selectors() -> None:
    cfg = config(HQ_CONFIG.replace("branch-lans: [{source: 10.1.0.0/24, destination: 10.2.0.0/24}]",
                                   "branch-lans: [{source: 10.1.0.0/25, destination: 10.2.0.0/24, "
                                   "protocol: tcp}]"))
    peer = fromconfig.peer_config("branch1", cfg.connections["branch1"], cfg)
    assert peer.child.local_ts == (ts("10.1.0.0/25", 6),) and peer.child.remote_ts == (ts("10.2.0.0/24", 6),)
    server = fromconfig.peer_config("server", cfg.connections["server"], cfg)
    assert (server.child.local_ts, server.child.remote_ts) == ((ts("192.0.2.1/32"),), (ts("203.0.113.2/32"),))
    without = config(HQ_CONFIG.split("policy:")[0])
    plain = fromconfig.peer_config("branch1", without.connections["branch1"], without)
    assert plain.child.local_ts == (ts("10.1.0.0/24"),)  # no policy: the configured subnets


# --------------------------------------------------------------------------------------
# The dataplane
# --------------------------------------------------------------------------------------


def test_block_drops_both_ways_and_counts_policy_discard() -> None:
    rt, table = installed()
    engine = table.engine
    table.up(child_up())
    assert engine.outbound(icmp_echo("10.1.0.10", "10.2.0.11")) is None
    assert engine.drops["policy_discard"] == 1
    assert engine.outbound(icmp_echo("10.1.0.10", "10.2.0.10"))[0] == SEND_ESP  # type: ignore[index]
    assert engine.outbound(tcp_packet("10.1.0.10", "10.2.0.11"))[0] == SEND_ESP  # type: ignore[index]
    # what comes out of the SA is checked too: the echo request from .11 never reaches the LAN
    peer = peer_outbound(child_up())
    assert engine.inbound_ip(from_peer(peer, icmp_echo("10.2.0.11", "10.1.0.10"))) is None
    assert engine.drops["policy_discard"] == 2
    inner = icmp_echo("10.2.0.10", "10.1.0.10", seq=2)
    assert engine.inbound_ip(from_peer(peer, inner)) == inner
    tcp = tcp_packet("10.2.0.11", "10.1.0.10")
    assert engine.inbound_ip(from_peer(peer, tcp)) == tcp
    shown = {e["rule"]: (e["hits"], e["hits_in"]) for e in rt.describe(engine)["entries"]}
    assert shown["no-ping-11"] == (1, 1)
    assert shown["branch-lans"] == (2, 2)  # the connection's policy: both ESP packets


def test_permit_passes_in_clear() -> None:
    rt, table = installed()
    packet = udp_packet(HQ, "203.0.113.53", dport=53)
    assert table.engine.outbound(packet) == (SEND_IP, packet, ("203.0.113.53", 0))
    assert rt.describe(table.engine)["entries"][0]["hits"] == 1


def test_require_holds_the_first_packets_asks_for_the_connection_and_sends_them_once_up() -> None:
    _, table = installed()
    engine = table.engine
    first, second = icmp_echo("10.1.0.10", "10.2.0.10", seq=1), icmp_echo("10.1.0.10", "10.2.0.10", seq=2)
    assert engine.outbound(first) is None and engine.outbound(second) is None
    assert list(engine.events) == [Acquire("branch1")]
    assert len(engine.held["branch1"]) == 2 and not engine.drops
    tunnel, new_routes = table.up(child_up())
    assert not new_routes  # the policy's route is in place already
    assert tunnel.policy.priority == -20 and tunnel.policy.esp_out is not None
    assert [kind for kind, _, _ in engine.release_held("branch1")] == [SEND_ESP, SEND_ESP]
    # still before the block's less specific neighbours, and after the block
    assert [p.name for p in engine.spd] == [
        "policy:dns-clear:0", "server", "policy:no-ping-11:0", "branch1", "policy:no-telnet:0", NO_RULE]
    table.down(ChildSaDown("branch1", "ike-1", 0xC0000001, 0xC0000002, "idle"))
    assert table.tunnels["branch1"].policy.priority == -20  # the trap keeps its place


def test_request_sends_in_clear_while_the_connection_is_negotiated() -> None:
    _, table = installed()
    engine = table.engine
    packet = tcp_packet(HQ, SERVER, dport=443)
    assert engine.outbound(packet) == (SEND_IP, packet, (SERVER, 0))
    assert list(engine.events) == [Acquire("server")] and "server" not in engine.held
    table.up(child_up("server", mode="transport", local=f"{HQ}/32", remote=f"{SERVER}/32", peer=SERVER))
    assert engine.outbound(packet)[0] == SEND_ESP  # type: ignore[index]


def test_what_the_policy_routes_and_no_rule_decides_goes_in_clear() -> None:
    _, table = installed()
    engine = table.engine
    telnet, dns = tcp_packet(HQ, "198.18.0.7", dport=23), udp_packet(HQ, "198.18.0.7", dport=53)
    assert engine.outbound(telnet) is None and engine.drops["policy_discard"] == 1
    assert engine.outbound(dns) == (SEND_IP, dns, ("198.18.0.7", 0))
    no_rule = next(p for p in engine.spd if p.name == NO_RULE)
    assert no_rule.priority == NO_RULE_PRIORITY and no_rule.hits == 1
    # nothing routes 8.8.8.8 into the TUN; were it to come, no policy would take it
    assert engine.outbound(udp_packet(HQ, "8.8.8.8")) is None and engine.drops["no_policy"] == 1


SECURE_SERVER = """\
gateway: {name: srv, public_interface: wan0, public_address: 192.0.2.1}
connections:
  clients:
    remote: "%any"
    mode: transport
    auth: {method: psk, psk: clients-secret-0123456789, remote_id: client.example}
policy:
  predefined: secure-server
  connection: clients
"""


def test_a_peer_of_an_any_connection_goes_just_before_the_trap_and_icmp_stays_clear() -> None:
    rt, table = installed(SECURE_SERVER)
    [trap] = rt.traps
    assert (trap.connection, trap.hold, trap.initiates, trap.priority) == ("clients", 0, False, -10)
    assert rt.routes == ()  # 'any' is not routed; each peer's SAs bring their own route
    assert any("not routed into the dataplane" in message for _, message in rt.warnings)
    engine = table.engine
    assert engine.outbound(tcp_packet(HQ, "203.0.113.9")) is None
    assert engine.drops["no_sa"] == 1 and list(engine.events) == [Acquire("clients")]
    tunnel, _ = table.up(child_up("clients", mode="transport", local=f"{HQ}/32", remote="203.0.113.9/32",
                                  peer="203.0.113.9", tunnel="clients@203.0.113.9:500"))
    assert tunnel.policy.priority == -11
    assert engine.outbound(tcp_packet(HQ, "203.0.113.9"))[0] == SEND_ESP  # type: ignore[index]
    ping = icmp_echo(HQ, "203.0.113.9")
    assert engine.outbound(ping) == (SEND_IP, ping, ("203.0.113.9", 0))  # the ICMP permit comes first
    assert engine.outbound(tcp_packet(HQ, "203.0.113.10")) is None  # no SA with that one: dropped
    shown = rt.describe(engine)
    assert shown["entries"][1]["hits"] == 3  # the trap's and the peer's policy
    assert shown["traps"] == [{"connection": "clients", "mode": "transport", "security": "require", "hold": 0,
                               "initiates": False, "selectors": ["192.0.2.1/32 === 0.0.0.0/0"], "sa": False,
                               "held": 0}]


def test_no_policy_no_inbound_check_and_a_policy_without_blocks_needs_none() -> None:
    assert plan_policy(config(HQ_CONFIG.split("policy:")[0])) is None
    _, table = installed(SECURE_SERVER)
    assert len(table.engine.spd_in) == 0


# --------------------------------------------------------------------------------------
# The responder's say
# --------------------------------------------------------------------------------------


def test_responder_accepts_what_its_connections_rule_covers() -> None:
    rt = runtime()
    assert rt.responder_check("branch1", (ts("10.2.0.0/24"),), (ts("10.1.0.0/24"),)) is None
    assert rt.responder_check("branch1", (ts("10.2.0.0/25"),), (ts("10.1.0.7/32"),)) is None
    # the block inside only overlaps the request: it goes on deciding its packets
    assert rt.responder_check("server", (ts(f"{SERVER}/32"),), (ts(f"{HQ}/32"),)) is None


def test_responder_refuses_blocks_permits_other_connections_and_uncovered_requests() -> None:
    rt = runtime()
    assert rt.responder_check("branch1", (ts("10.2.0.11/32", 1),), (ts("10.1.0.0/24"),)) == (
        "rule 'no-ping-11' blocks 10.2.0.11/32[1/0-65535] -> 10.1.0.0/24")
    dns = TsRange.of_network(net("203.0.113.53/32"), 17, 53, 53)
    assert rt.responder_check("server", (dns,), (ts(f"{HQ}/32", 17),)) == (
        "rule 'dns-clear' permits 203.0.113.53/32[17/53] -> 192.0.2.1/32[17/0-65535] in clear")
    assert rt.responder_check("server", (ts("10.2.0.0/24"),), (ts("10.1.0.0/24"),)) == (
        "rule 'branch-lans' negotiates 10.2.0.0/24 -> 10.1.0.0/24 with connection 'branch1'")
    assert rt.responder_check("branch1", (ts("10.3.0.0/24"),), (ts("10.1.0.0/24"),)) == (
        "no rule covers 10.3.0.0/24 -> 10.1.0.0/24 and the default response rule is off")
    # a request larger than the rule: no entry contains it
    assert rt.responder_check("branch1", (ts("10.2.0.0/16"),), (ts("10.1.0.0/24"),)) is not None


def test_default_response_answers_what_no_rule_covers() -> None:
    rt = runtime(SECURE_SERVER.replace("predefined: secure-server", "predefined: client"))
    assert rt.compiled.entries == () and rt.traps == ()
    assert rt.responder_check("clients", (ts("203.0.113.9/32"),), (ts(f"{HQ}/32"),)) is None
    secure = runtime(SECURE_SERVER)
    assert secure.responder_check("clients", (ts("203.0.113.9/32"),), (ts(f"{HQ}/32"),)) is None
    assert secure.responder_check("clients", (ts("203.0.113.9/32", 1),), (ts(f"{HQ}/32", 1),)) == (
        "rule 'all-icmp-traffic' permits 203.0.113.9/32[1/0-65535] -> 192.0.2.1/32[1/0-65535] in clear")


def test_a_traps_policy_keeps_its_priority_and_counter_as_sas_come_and_go() -> None:
    table = TunnelTable(Dataplane(EdgePolicy("wan0", ipaddress.IPv4Address(HQ), ())), 64)
    rt = runtime()
    trap = rt.trap_of("branch1")
    assert trap is not None
    table.install_trap("branch1", trap.selectors, Mode.TUNNEL, hold=4, priority=-7)
    engine = table.engine
    engine.outbound(icmp_echo("10.1.0.10", "10.2.0.10"))
    table.up(child_up())
    policy = table.tunnels["branch1"].policy
    assert (policy.priority, policy.hits, policy.hold) == (-7, 1, 4) and policy.esp_out is not None
    table.up(child_up(spi_in=0xC0000011))  # a rekey: the policy switches to the new pair
    assert table.tunnels["branch1"].policy.priority == -7 and table.tunnels["branch1"].policy.hits == 1
    # without a trap nothing changes: a connection's policy sits at 1000
    other, _ = table.up(child_up("plain", local="10.1.0.0/24", remote="10.8.0.0/24", spi_in=0xD0000001))
    assert other.policy.priority == 1000


def test_an_l2tp_connection_named_by_a_rule_answers_its_clients_without_a_trap() -> None:
    rt, table = installed(SECURE_SERVER.replace("connections:\n", """connections:
  dialin:
    remote: "%any"
    auth: {method: psk, psk: dialin-secret-0123456789}
    l2tp: {role: lns, pool: dialin}
""") + """\
  filter_lists:
    l2tp: [{source: me, destination: any, protocol: udp, source_port: 1701}]
  rules:
    - {name: l2tp, filter_list: l2tp, filter_action: require-security, connection: dialin}
pools:
  dialin: {subnet: 10.9.0.0/24}
users:
  alice: {password: alice-password}
""")
    assert [t.connection for t in rt.traps] == ["clients"] and rt.negotiated("dialin") is None
    client = TsRange(ipaddress.IPv4Address("203.0.113.9"), ipaddress.IPv4Address("203.0.113.9"), 17)
    l2tp = TsRange(ipaddress.IPv4Address(HQ), ipaddress.IPv4Address(HQ), 17, 1701, 1701)
    assert rt.responder_check("dialin", (client,), (l2tp,)) is None
    assert rt.responder_check("clients", (client,), (l2tp,)) == (
        "rule 'l2tp' negotiates 203.0.113.9/32[17/0-65535] -> 192.0.2.1/32[17/1701] with connection 'dialin'")
    names = [p.name for p in table.engine.spd]
    assert "clients" in names and "dialin" not in names  # the dial-up service's SAs bring their own
