"""Properties of policy matching: `CompiledPolicy.match` agrees with a brute-force reading
of the rules in the documented order; mirrored filters are symmetric; the dataplane SPD
built from a policy decides outbound packets as `match` does."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dataplane.spd import SecurityPolicyDatabase
from gateway.policy import (
    AuthMethod,
    CompiledPolicy,
    Filter,
    FilterAction,
    FilterList,
    IpsecPolicy,
    PolicyEntry,
    Rule,
    SecurityMethod,
    compile_policy,
    explain,
)

ME = (ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Address("10.0.0.9"))
PEER = ipaddress.IPv4Address("198.51.100.1")
HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.9", "10.0.0.12", "10.0.1.5", "8.8.8.8"]
SIDES = ["any", "me", "10.0.0.1", "10.0.0.2", "10.0.0.12", "8.8.8.8",
         "10.0.0.0/29", "10.0.0.8/29", "10.0.0.0/28", "10.0.0.0/24", "0.0.0.0/0"]
ACTIONS = {
    "permit": FilterAction("permit", "permit"),
    "block": FilterAction("block", "block"),
    "negotiate": FilterAction("esp", "negotiate", methods=(SecurityMethod(esp="aes128gcm16"),)),
}
RANK = {"block": 0, "permit": 1, "negotiate": 2}
PORTS = [0, 22, 80]


@st.composite
def filters(draw: st.DrawFn, mirrored: bool | None = None) -> Filter:
    src = draw(st.sampled_from(SIDES))
    dst = draw(st.sampled_from([s for s in SIDES if not (src == "me" and s == "me")]))
    proto = draw(st.sampled_from([0, 1, 6, 17]))
    sport = draw(st.sampled_from(PORTS)) if proto in (6, 17) else 0
    dport = draw(st.sampled_from(PORTS)) if proto in (6, 17) else 0
    return Filter(src, dst, proto, sport, dport, draw(st.booleans()) if mirrored is None else mirrored)


@st.composite
def policies(draw: st.DrawFn, mirrored: bool | None = None) -> IpsecPolicy:
    rules = []
    for i in range(draw(st.integers(1, 5))):
        flist = FilterList(f"list{i}", tuple(draw(st.lists(filters(mirrored), min_size=1, max_size=3))))
        kind = draw(st.sampled_from(sorted(ACTIONS)))
        rules.append(Rule(f"rule{i}", flist, ACTIONS[kind], (AuthMethod("psk"),),
                          tunnel_endpoint=PEER if kind == "negotiate" else None,
                          connection_type=draw(st.sampled_from(["all", "lan", "remote-access"])),
                          enabled=draw(st.booleans()) or draw(st.booleans())))
    return IpsecPolicy("random", tuple(rules), default_response=draw(st.booleans()))


@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    proto: int
    sport: int
    dport: int

    def reversed(self) -> Packet:
        return Packet(self.dst, self.src, self.proto, self.dport, self.sport)


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    proto = draw(st.sampled_from([1, 6, 17, 47]))
    ports = [0, 22, 80, 1234]
    sport = draw(st.sampled_from(ports)) if proto in (6, 17) else 0
    dport = draw(st.sampled_from(ports)) if proto in (6, 17) else 0
    return Packet(draw(st.sampled_from(HOSTS)), draw(st.sampled_from(HOSTS)), proto, sport, dport)


directions = st.sampled_from(["out", "in"])
links = st.sampled_from([None, "lan", "remote-access"])


# -- the brute-force reading of the documented rules --------------------------------------


def _inside(address: str, side: object) -> bool:
    a = ipaddress.IPv4Address(address)
    if side == "any":
        return True
    if side == "me":
        return a in ME
    assert isinstance(side, ipaddress.IPv4Network)
    return a in side


def _ours(side: object) -> bool:
    return side == "me" or (isinstance(side, ipaddress.IPv4Network) and side.prefixlen == 32
                            and side.network_address in ME)


def _port(filter_port: int, packet_port: int) -> bool:
    return filter_port == 0 or filter_port == packet_port


def filter_matches(f: Filter, p: Packet, direction: str) -> bool:
    if f.protocol not in (0, p.proto):
        return False
    written = "out" if _ours(f.source) or not _ours(f.destination) else "in"
    if direction == written:
        return (_inside(p.src, f.source) and _inside(p.dst, f.destination)
                and _port(f.source_port, p.sport) and _port(f.destination_port, p.dport))
    return (f.mirrored and _inside(p.dst, f.source) and _inside(p.src, f.destination)
            and _port(f.source_port, p.dport) and _port(f.destination_port, p.sport))


def _bits(side: object) -> int:
    if side == "me":
        return 32
    if side == "any":
        return 0
    assert isinstance(side, ipaddress.IPv4Network)
    return side.prefixlen


def brute_force(policy: IpsecPolicy, p: Packet, direction: str, link: str | None) -> tuple[str, int] | None:
    candidates = []
    for ri, rule in enumerate(policy.rules):
        if not rule.enabled or (link is not None and rule.connection_type not in ("all", link)):
            continue
        for fi, f in enumerate(rule.filter_list.filters):
            if filter_matches(f, p, direction):
                key = (-(_bits(f.source) + _bits(f.destination)), -int(f.protocol != 0),
                       -(int(f.source_port != 0) + int(f.destination_port != 0)),
                       RANK[rule.action.kind], ri, fi)
                candidates.append((key, (rule.name, fi)))
    return min(candidates)[1] if candidates else None


def found(entry: PolicyEntry | None) -> tuple[str, int] | None:
    return None if entry is None else (entry.rule.name, entry.filter_index)


def match(compiled: CompiledPolicy, p: Packet, direction: str, link: str | None = None) -> PolicyEntry | None:
    return compiled.match(p.src, p.dst, p.proto, p.sport, p.dport, direction, link=link)  # type: ignore[arg-type]


# -- properties ---------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(policies(), st.lists(st.tuples(packets(), directions, links), min_size=1, max_size=8))
def test_match_agrees_with_brute_force_in_the_documented_order(policy, cases) -> None:  # type: ignore[no-untyped-def]
    compiled = compile_policy(policy, ME)
    for p, direction, link in cases:
        assert found(match(compiled, p, direction, link)) == brute_force(policy, p, direction, link)


@settings(max_examples=300, deadline=None)
@given(policies(mirrored=True), packets(), directions)
def test_mirrored_policy_decides_a_packet_and_its_reply_alike(policy, p, direction) -> None:  # type: ignore[no-untyped-def]
    compiled = compile_policy(policy, ME)
    other = "in" if direction == "out" else "out"
    assert match(compiled, p, direction) is match(compiled, p.reversed(), other)


@settings(max_examples=300, deadline=None)
@given(policies(), packets(), directions)
def test_each_filter_covers_the_reverse_packet_iff_mirrored(policy, p, direction) -> None:  # type: ignore[no-untyped-def]
    compiled = compile_policy(policy, ME)
    other = "in" if direction == "out" else "out"
    r = p.reversed()
    s, d, rs, rd = (int(ipaddress.IPv4Address(a)) for a in (p.src, p.dst, r.src, r.dst))
    for entry in compiled.entries:
        here = entry.covers(s, d, p.proto, p.sport, p.dport, direction)  # type: ignore[arg-type]
        there = entry.covers(rs, rd, r.proto, r.sport, r.dport, other)  # type: ignore[arg-type]
        if entry.filter.mirrored:
            assert here == there
        else:
            assert not (here and there)


@settings(max_examples=200, deadline=None)
@given(policies(), st.lists(packets(), min_size=1, max_size=8))
def test_dataplane_spd_decides_outbound_packets_as_match_does(policy, pkts) -> None:  # type: ignore[no-untyped-def]
    compiled = compile_policy(policy, ME)
    spd = SecurityPolicyDatabase()
    for p in compiled.spd_policies():
        spd.add(p)
    for p in pkts:
        got = spd.lookup(int(ipaddress.IPv4Address(p.src)), int(ipaddress.IPv4Address(p.dst)), p.proto,
                         p.sport, p.dport)
        entry = match(compiled, p, "out")
        assert (None if got is None else got.name) == (None if entry is None else entry.name)
        if got is not None and entry is not None:
            assert got.action is entry.action


@settings(max_examples=200, deadline=None)
@given(policies(), packets())
def test_explain_reports_what_match_decides(policy, p) -> None:  # type: ignore[no-untyped-def]
    compiled = compile_policy(policy, ME)
    answer = explain(compiled, p.src, p.dst, p.proto, p.dport, source_port=p.sport)
    text = str(answer)
    assert text.startswith(answer.packet + " (")
    if answer.direction is not None:
        assert answer.entry is match(compiled, p, answer.direction)
    else:
        assert answer.forwarded and match(compiled, p, "out") is None and match(compiled, p, "in") is None
    if answer.entry is not None:
        assert f"rule {answer.entry.rule.name!r}" in text
