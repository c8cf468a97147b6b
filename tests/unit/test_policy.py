"""The IPsec policy model: compilation order, direction and mirroring, the predefined
policies, errors, and `policy explain` answers (exact strings)."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.dataplane.sa import Mode
from gateway.dataplane.spd import Action, SecurityPolicyDatabase
from gateway.policy import (
    DEFAULT_METHODS,
    AuthMethod,
    DefaultResponse,
    Filter,
    FilterAction,
    FilterList,
    IpsecPolicy,
    PolicyError,
    Rule,
    SecurityMethod,
    client_respond_only,
    compile_policy,
    explain,
    secure_server_require_security,
    server_request_security,
)

ME = ["192.0.2.1"]
PEER = ipaddress.IPv4Address("198.51.100.1")
ESP = (SecurityMethod(esp="aes256-sha256"),)
PERMIT = FilterAction("permit", "permit")
BLOCK = FilterAction("block", "block")
REQUIRE = FilterAction("require-esp", "negotiate", methods=ESP)
REQUEST = FilterAction("request-esp", "negotiate", fallback_to_clear=True, accept_unsecured_inbound=True,
                       methods=ESP)
PSK = (AuthMethod("psk", "test"),)


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def single(name: str, flt: Filter, action: FilterAction, **kw: object) -> Rule:
    return Rule(name, FilterList(f"{name}-list", (flt,)), action, PSK, **kw)  # type: ignore[arg-type]


def hq_branch() -> IpsecPolicy:
    flist = FilterList("hq-to-branch", (Filter("10.1.0.0/24", "10.2.0.0/24"),))
    return IpsecPolicy("hq", (Rule("hq-branch", flist, REQUIRE, PSK, tunnel_endpoint=PEER),),
                       default_response=False)


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


def test_filter_normalises_addresses_protocols_and_prints_compactly() -> None:
    f = Filter("ME", "10.2.0.7", "TCP", destination_port=22)
    assert f.source == "me"
    assert f.destination == ipaddress.IPv4Network("10.2.0.7/32")
    assert f.protocol == 6
    assert str(f) == "me -> 10.2.0.7:22 tcp"
    assert str(Filter("any", "10.0.0.0/8", 47, mirrored=False)) == "any -> 10.0.0.0/8 gre"
    assert str(Filter("10.1.0.0/24", "any", "132")) == "10.1.0.0/24 -> any sctp"
    assert Filter("me", "any").mirrored is True


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"source": "10.1.0.1/24", "destination": "any"}, "is not 'any', 'me', an IPv4 address or subnet"),
    ({"source": "me", "destination": "nowhere"}, "is not 'any', 'me'"),
    ({"source": "me", "destination": "any", "protocol": "carrier-pigeon"}, "unknown protocol"),
    ({"source": "me", "destination": "any", "protocol": 256}, "not between 0 and 255"),
    ({"source": "me", "destination": "any", "protocol": "icmp", "destination_port": 7},
     "ports need protocol tcp or udp"),
    ({"source": "me", "destination": "any", "destination_port": 80}, "ports need protocol tcp or udp"),
    ({"source": "me", "destination": "any", "protocol": "tcp", "source_port": 70000}, "is not a port"),
    ({"source": "me", "destination": "me"}, "cannot both be 'me'"),
])
def test_bad_filters_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Filter(**kwargs)  # type: ignore[arg-type]


def test_security_methods_use_the_project_algorithm_names() -> None:
    m = SecurityMethod("esp+ah", esp="AES256-SHA256", ah="sha256", pfs="x25519", lifetime=3600)
    assert (m.esp, m.ah, m.pfs) == ("aes256-sha256", "sha256", "curve25519")
    assert m.esp_proposal == "aes256-sha256-curve25519"
    assert m.ah_proposal == "sha256-curve25519"
    assert str(m) == "AH sha256 + ESP aes256-sha256 with PFS curve25519"
    assert str(SecurityMethod("ah", ah="sha512")) == "AH sha512"
    assert SecurityMethod(esp="aes128gcm16").esp_proposal == "aes128gcm16"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"protocol": "esp"}, "name the ESP algorithm"),
    ({"protocol": "ah", "esp": "aes128gcm16"}, "ah: takes no ESP algorithm"),
    ({"protocol": "esp+ah", "esp": "aes128gcm16"}, "esp\\+ah: name the AH algorithm"),
    ({"protocol": "esp", "esp": "aes128gcm16", "ah": "sha256"}, "takes no AH algorithm"),
    ({"protocol": "gre", "esp": "aes128gcm16"}, "not esp, ah or esp\\+ah"),
    ({"esp": "aes128gcm16-sha256"}, "takes no integrity"),
    ({"esp": "rot13-sha256"}, "unknown ESP encryption"),
    ({"protocol": "ah", "ah": "crc32"}, "unknown integrity algorithm"),
    ({"esp": "aes128gcm16", "pfs": "modp999"}, "unknown DH group"),
    ({"esp": "aes128gcm16", "lifetime": 0}, "lifetime must be a positive integer"),
])
def test_bad_security_methods_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        SecurityMethod(**kwargs)  # type: ignore[arg-type]


def test_default_methods_are_the_project_defaults() -> None:
    from gateway.config.model import DEFAULT_PROPOSALS

    assert [m.esp_proposal for m in DEFAULT_METHODS] == DEFAULT_PROPOSALS[2][1]


@pytest.mark.parametrize(("make", "message"), [
    (lambda: FilterAction("a", "negotiate"), "filter action 'a': negotiate needs at least one"),
    (lambda: FilterAction("a", "permit", methods=ESP), "permit takes no security methods"),
    (lambda: FilterAction("a", "block", fallback_to_clear=True), "only apply to negotiate"),
    (lambda: FilterAction("a", "allow"), "is not permit, block or negotiate"),  # type: ignore[arg-type]
    (lambda: single("r", Filter("me", "any"), PERMIT, tunnel_endpoint=PEER),
     "rule 'r': a tunnel endpoint only applies to a negotiate action, not permit"),
    (lambda: single("r", Filter("me", "any"), REQUIRE, tunnel_endpoint="peer.example"),
     "rule 'r': tunnel endpoint 'peer.example' is not an IPv4 address"),
    (lambda: single("r", Filter("me", "any"), REQUIRE, connection_type="wifi"),
     "connection type 'wifi'"),
    (lambda: IpsecPolicy("p", (single("r", Filter("me", "any"), PERMIT),
                               single("r", Filter("me", "any"), BLOCK))),
     "policy 'p': two rules are named 'r'"),
    (lambda: IpsecPolicy("p", (), default_response_methods=()), "default response rule needs security"),
])
def test_inconsistent_model_input_is_refused(make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PolicyError, match=message):
        make()


# --------------------------------------------------------------------------------------
# Compilation
# --------------------------------------------------------------------------------------


def test_entries_are_ordered_by_specificity_not_by_rule_order() -> None:
    rules = (
        single("everything", Filter("any", "any"), BLOCK),
        single("lan", Filter("me", "10.0.0.0/8"), PERMIT),
        single("host", Filter("me", "10.1.2.3"), REQUIRE),
        single("ssh", Filter("me", "10.0.0.0/8", "tcp", destination_port=22), REQUIRE),
        single("tcp", Filter("me", "10.0.0.0/8", "tcp"), REQUIRE),
        single("ssh-pair", Filter("me", "10.0.0.0/8", "tcp", source_port=1022, destination_port=22), REQUIRE),
    )
    compiled = compile_policy(IpsecPolicy("p", rules, default_response=False), ME)
    assert [e.rule.name for e in compiled.entries] == ["host", "ssh-pair", "ssh", "tcp", "lan", "everything"]
    assert [e.position for e in compiled.entries] == list(range(6))


def test_identical_filters_block_beats_permit_beats_negotiate() -> None:
    flt = Filter("me", "10.9.0.0/16")
    rules = (single("negotiate", flt, REQUIRE), single("permit", flt, PERMIT), single("block", flt, BLOCK))
    compiled = compile_policy(IpsecPolicy("p", rules, default_response=False), ME)
    assert [e.rule.name for e in compiled.entries] == ["block", "permit", "negotiate"]
    assert compiled.match("192.0.2.1", "10.9.1.1", "udp").rule.name == "block"  # type: ignore[union-attr]
    # a more specific permit still beats a broader block
    rules2 = (single("block", flt, BLOCK), single("permit", Filter("me", "10.9.1.0/24"), PERMIT))
    compiled2 = compile_policy(IpsecPolicy("p", rules2, default_response=False), ME)
    assert compiled2.match("192.0.2.1", "10.9.1.1", "udp").rule.name == "permit"  # type: ignore[union-attr]
    assert compiled2.match("192.0.2.1", "10.9.2.1", "udp").rule.name == "block"  # type: ignore[union-attr]


def test_equal_filters_with_equal_actions_keep_rule_then_filter_order() -> None:
    flist = FilterList("two", (Filter("me", "10.0.0.0/8"), Filter("me", "11.0.0.0/8")))
    rules = (Rule("first", flist, PERMIT), Rule("second", FilterList("one", (Filter("me", "10.0.0.0/8"),)),
                                                 PERMIT))
    compiled = compile_policy(IpsecPolicy("p", rules, default_response=False), ME)
    assert [(e.rule.name, e.filter_index) for e in compiled.entries] == [("first", 0), ("first", 1),
                                                                        ("second", 0)]


def test_disabled_rules_are_left_out() -> None:
    rules = (single("off", Filter("me", "10.0.0.0/8"), BLOCK, enabled=False),)
    compiled = compile_policy(IpsecPolicy("p", rules, default_response=False), ME)
    assert compiled.entries == ()
    assert compiled.match("192.0.2.1", "10.0.0.1", "tcp") is None


def test_me_resolves_to_every_address_of_the_gateway() -> None:
    rules = (single("r", Filter("me", "any", "udp", destination_port=1701), REQUIRE),)
    compiled = compile_policy(IpsecPolicy("p", rules, default_response=False),
                              ["192.0.2.1", ipaddress.IPv4Address("10.1.0.1"), "192.0.2.1"])
    (entry,) = compiled.entries
    assert compiled.me == (ipaddress.IPv4Address("192.0.2.1"), ipaddress.IPv4Address("10.1.0.1"))
    assert [str(s) for s in entry.selectors] == ["192.0.2.1/32 === 0.0.0.0/0[1701] proto 17",
                                                 "10.1.0.1/32 === 0.0.0.0/0[1701] proto 17"]
    assert compiled.match("10.1.0.1", "10.1.0.9", "udp", 1701, 1701) is entry
    assert compiled.match("192.0.2.9", "10.1.0.9", "udp", 1701, 1701) is None


def test_direction_follows_the_side_that_is_ours() -> None:
    rules = (
        single("out", Filter("me", "10.5.0.0/16", mirrored=False), PERMIT),
        single("in", Filter("any", "me", "tcp", destination_port=443, mirrored=False), PERMIT),
        single("own-address", Filter("any", "192.0.2.1", "udp", mirrored=False), BLOCK),
        single("networks", Filter("10.1.0.0/24", "10.2.0.0/24", mirrored=False), REQUIRE,
               tunnel_endpoint=PEER),
    )
    compiled = compile_policy(IpsecPolicy("p", rules, default_response=False), ME)
    by_name = {e.rule.name: e for e in compiled.entries}
    assert {n: (e.written, e.direction) for n, e in by_name.items()} == {
        "out": ("out", "out"), "in": ("in", "in"), "own-address": ("in", "in"),
        "networks": ("out", "out")}
    assert str(by_name["in"].selectors[0]) == "192.0.2.1/32[443] === 0.0.0.0/0 proto 6"
    # written inbound: the local (our) side carries the destination port
    assert compiled.match("203.0.113.5", "192.0.2.1", "tcp", 50000, 443, "in") is by_name["in"]
    assert compiled.match("192.0.2.1", "203.0.113.5", "tcp", 443, 50000, "out") is None
    assert compiled.match("192.0.2.1", "10.5.1.1", "icmp", direction="out") is by_name["out"]
    assert compiled.match("10.5.1.1", "192.0.2.1", "icmp", direction="in") is None
    assert compiled.match("10.1.0.9", "10.2.0.9", "tcp", direction="out") is by_name["networks"]
    assert compiled.match("10.2.0.9", "10.1.0.9", "tcp", direction="in") is None


def test_mirrored_filter_covers_the_replies_with_ports_swapped() -> None:
    rules = (single("web", Filter("me", "any", "tcp", destination_port=80), REQUIRE),)
    compiled = compile_policy(IpsecPolicy("p", rules, default_response=False), ME)
    (entry,) = compiled.entries
    assert entry.direction == "both"
    assert compiled.match("192.0.2.1", "203.0.113.9", "tcp", 40000, 80, "out") is entry
    assert compiled.match("203.0.113.9", "192.0.2.1", "tcp", 80, 40000, "in") is entry
    assert entry.by_mirror("in") and not entry.by_mirror("out")
    # not the same packet coming in, nor the reply going out
    assert compiled.match("203.0.113.9", "192.0.2.1", "tcp", 40000, 80, "in") is None
    assert compiled.match("192.0.2.1", "203.0.113.9", "tcp", 80, 40000, "in") is None
    assert compiled.match("192.0.2.1", "203.0.113.9", "udp", 40000, 80, "out") is None


def test_protocol_any_matches_every_protocol_and_port() -> None:
    compiled = compile_policy(IpsecPolicy("p", (single("all", Filter("me", "any"), PERMIT),),
                                          default_response=False), ME)
    for proto, sport, dport in ((1, 0, 0), (6, 1234, 22), (17, 53, 53), (47, 0, 0), (132, 9, 9)):
        assert compiled.match("192.0.2.1", "8.8.8.8", proto, sport, dport) is not None


def test_link_restricts_rules_to_their_connection_type() -> None:
    rules = (single("dialup", Filter("me", "10.8.0.0/16"), BLOCK, connection_type="remote-access"),
             single("lan", Filter("me", "10.8.0.0/16"), PERMIT, connection_type="lan"))
    compiled = compile_policy(IpsecPolicy("p", rules, default_response=False), ME)
    assert compiled.match("192.0.2.1", "10.8.0.1", "tcp").rule.name == "dialup"  # type: ignore[union-attr]
    assert compiled.match("192.0.2.1", "10.8.0.1", "tcp", link="lan").rule.name == "lan"  # type: ignore[union-attr]
    assert compiled.match("192.0.2.1", "10.8.0.1", "tcp",
                          link="remote-access").rule.name == "dialup"  # type: ignore[union-attr]


def test_entry_carries_action_mode_flags_and_proposals() -> None:
    methods = (SecurityMethod(esp="aes128gcm16", pfs="ecp256"), SecurityMethod("ah", ah="sha256"),
               SecurityMethod(esp="aes256-sha256"))
    action = FilterAction("req", "negotiate", fallback_to_clear=True, accept_unsecured_inbound=True,
                          methods=methods)
    compiled = compile_policy(IpsecPolicy("p", (single("t", Filter("10.1.0.0/24", "10.2.0.0/24"), action,
                                                       tunnel_endpoint=PEER),), default_response=False), ME)
    (e,) = compiled.entries
    assert (e.action, e.mode, e.tunnel_endpoint) == (Action.PROTECT, Mode.TUNNEL, PEER)
    assert e.fallback_to_clear and e.accept_unsecured_inbound
    assert e.esp_proposals == ("aes128gcm16-ecp256", "aes256-sha256")
    assert e.ah_proposals == ("sha256",)
    assert e.name == "policy:t:0"
    transport = compile_policy(IpsecPolicy("p", (single("x", Filter("me", "any"), REQUIRE),),
                                           default_response=False), ME).entries[0]
    assert transport.mode is Mode.TRANSPORT
    permit = compile_policy(IpsecPolicy("p", (single("x", Filter("me", "any"), PERMIT),),
                                        default_response=False), ME).entries[0]
    assert (permit.action, permit.mode) == (Action.BYPASS, None)


def test_spd_policies_for_outbound_entries_work_in_the_dataplane_spd() -> None:
    rules = (
        single("ping", Filter("me", "any", "icmp"), PERMIT),
        single("telnet-in", Filter("any", "me", "tcp", destination_port=23, mirrored=False), BLOCK),
        single("no-smb", Filter("me", "any", "tcp", destination_port=445, mirrored=False), BLOCK),
        single("all", Filter("me", "any"), REQUIRE),
    )
    compiled = compile_policy(IpsecPolicy("p", rules, default_response=False), ME)
    policies = compiled.spd_policies(base_priority=500)
    assert [(p.name, p.action, p.priority) for p in policies] == [
        ("policy:no-smb:0", Action.DISCARD, 501),  # after telnet-in: as specific, earlier rule
        ("policy:ping:0", Action.BYPASS, 502),
        ("policy:all:0", Action.PROTECT, 503),
    ]
    assert policies[2].mode is Mode.TRANSPORT and policies[2].esp_out is None
    spd = SecurityPolicyDatabase()
    for p in policies:
        spd.add(p)
    assert spd.lookup(ip("192.0.2.1"), ip("8.8.8.8"), 6, 1000, 445).name == "policy:no-smb:0"  # type: ignore[union-attr]
    assert spd.lookup(ip("192.0.2.1"), ip("8.8.8.8"), 1).name == "policy:ping:0"  # type: ignore[union-attr]
    assert spd.lookup(ip("192.0.2.1"), ip("8.8.8.8"), 6, 1000, 80).name == "policy:all:0"  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------
# Compile-time errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "me", "message"), [
    (IpsecPolicy("p", (single("r", Filter("me", "any"), PERMIT),), default_response=False), [],
     "rule 'r', filter me -> any any: 'me' needs the gateway's own addresses"),
    (IpsecPolicy("p", (Rule("r", FilterList("empty", ()), PERMIT),), default_response=False), ME,
     "rule 'r': filter list 'empty' has no filters"),
    (IpsecPolicy("p", (single("r", Filter("10.1.0.0/24", "10.2.0.0/24"), REQUIRE,
                              tunnel_endpoint=ipaddress.IPv4Address("192.0.2.1")),), default_response=False),
     ME, "rule 'r': tunnel endpoint 192.0.2.1 is one of this gateway's addresses"),
    (IpsecPolicy("p", (single("r", Filter("10.1.0.0/24", "10.2.0.0/24"), REQUIRE),), default_response=False),
     ME, "rule 'r', filter 10.1.0.0/24 -> 10.2.0.0/24 any: transport mode protects only this gateway's "
         "own traffic"),
    (IpsecPolicy("p", (single("r", Filter("any", "any"), REQUEST),), default_response=False),
     ME, "give the rule a tunnel endpoint"),
])
def test_compile_refuses_contradictions(policy: IpsecPolicy, me: list[str], message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("(", r"\(")):
        compile_policy(policy, me)


def test_transport_negotiation_with_a_host_address_of_ours_is_fine() -> None:
    policy = IpsecPolicy("p", (single("r", Filter("192.0.2.1", "203.0.113.0/24"), REQUIRE),),
                         default_response=False)
    (entry,) = compile_policy(policy, ME).entries
    assert entry.written == "out" and entry.mode is Mode.TRANSPORT


# --------------------------------------------------------------------------------------
# The predefined policies and the default response rule
# --------------------------------------------------------------------------------------


def test_client_respond_only_has_only_the_default_response_rule() -> None:
    compiled = compile_policy(client_respond_only(auth=PSK), ME)
    assert compiled.name == "client-respond-only"
    assert compiled.entries == ()
    assert compiled.default_response == DefaultResponse(DEFAULT_METHODS, PSK)
    assert compiled.match("192.0.2.1", "8.8.8.8", "tcp", 1, 443) is None
    # a peer asking to secure anything is answered by the default response rule
    assert compiled.responder("203.0.113.7", "192.0.2.1", "tcp", 1, 22) is compiled.default_response


def test_server_request_security() -> None:
    compiled = compile_policy(server_request_security(), ME)
    icmp, ipall = compiled.entries
    assert (icmp.rule.name, icmp.action, str(icmp.filter)) == ("all-icmp-traffic", Action.BYPASS,
                                                               "me -> any icmp")
    assert (ipall.rule.name, ipall.action, str(ipall.filter)) == ("all-ip-traffic", Action.PROTECT,
                                                                  "me -> any any")
    assert ipall.fallback_to_clear and ipall.accept_unsecured_inbound
    assert ipall.methods == DEFAULT_METHODS and ipall.mode is Mode.TRANSPORT
    assert compiled.default_response is not None
    assert compiled.match("192.0.2.1", "8.8.8.8", "icmp") is icmp
    assert compiled.match("8.8.8.8", "192.0.2.1", "icmp", direction="in") is icmp
    assert compiled.match("8.8.8.8", "192.0.2.1", "udp", 53, 5353, direction="in") is ipall
    # forwarded traffic is not the server's own: no rule
    assert compiled.match("10.0.0.1", "8.8.8.8", "tcp") is None


def test_secure_server_require_security() -> None:
    methods = (SecurityMethod(esp="aes256gcm16", pfs="ecp384"),)
    compiled = compile_policy(secure_server_require_security(methods=methods, auth=PSK), ME)
    icmp, ipall = compiled.entries
    assert icmp.action is Action.BYPASS and icmp.filter.protocol == 1
    assert ipall.action is Action.PROTECT
    assert not ipall.fallback_to_clear and not ipall.accept_unsecured_inbound
    assert ipall.methods == methods and ipall.rule.auth == PSK
    assert compiled.default_response == DefaultResponse(methods, PSK)


def test_responder_answers_with_the_covering_rule_or_refuses() -> None:
    rules = (single("tunnel", Filter("10.1.0.0/24", "10.2.0.0/24"), REQUIRE, tunnel_endpoint=PEER),
             single("clear", Filter("me", "203.0.113.0/24"), PERMIT))
    with_default = compile_policy(IpsecPolicy("p", rules), ME)
    without = compile_policy(IpsecPolicy("p", rules, default_response=False), ME)
    tunnel = with_default.entries[1]
    assert tunnel.rule.name == "tunnel"
    assert with_default.responder("10.2.0.5", "10.1.0.5", "tcp") is tunnel
    assert with_default.responder("203.0.113.5", "192.0.2.1", "tcp") is None  # permitted in clear
    assert with_default.responder("198.18.0.1", "192.0.2.1", "tcp") is with_default.default_response
    assert without.responder("198.18.0.1", "192.0.2.1", "tcp") is None


# --------------------------------------------------------------------------------------
# explain
# --------------------------------------------------------------------------------------


def test_explain_tunnel_rule_both_ways() -> None:
    compiled = compile_policy(hq_branch(), ME)
    assert str(explain(compiled, "10.1.0.5", "10.2.0.7", "tcp", 80)) == (
        "10.1.0.5 -> 10.2.0.7:80 tcp (forwarded outbound): rule 'hq-branch' (filter list 'hq-to-branch', "
        "filter 10.1.0.0/24 -> 10.2.0.0/24 any, mirrored): negotiate security, require ESP aes256-sha256 "
        "via tunnel 198.51.100.1")
    assert str(explain(compiled, "10.2.0.7", "10.1.0.5", "icmp")) == (
        "10.2.0.7 -> 10.1.0.5 icmp (forwarded inbound): rule 'hq-branch' (filter list 'hq-to-branch', "
        "filter 10.1.0.0/24 -> 10.2.0.0/24 any, matched by its mirror): negotiate security, require ESP "
        "aes256-sha256 via tunnel 198.51.100.1, dropped if it arrives unsecured")
    answer = explain(compiled, "10.3.0.1", "10.2.0.7", "udp", 53)
    assert str(answer) == ("10.3.0.1 -> 10.2.0.7:53 udp (forwarded): "
                           "no rule matches: forwarded in clear (no policy)")
    assert answer.entry is None and answer.direction is None and answer.forwarded


def test_explain_block_permit_and_no_rule() -> None:
    rules = (single("no-telnet", Filter("any", "me", "tcp", destination_port=23, mirrored=False), BLOCK),
             single("dns", Filter("me", "any", "udp", destination_port=53), PERMIT,
                    connection_type="lan"))
    compiled = compile_policy(IpsecPolicy("p", rules), ME)
    assert str(explain(compiled, "203.0.113.9", "192.0.2.1", "tcp", 23)) == (
        "203.0.113.9 -> 192.0.2.1:23 tcp (inbound): blocked by rule 'no-telnet' "
        "(filter list 'no-telnet-list', filter any -> me:23 tcp)")
    assert str(explain(compiled, "192.0.2.1", "9.9.9.9", "udp", 53)) == (
        "192.0.2.1 -> 9.9.9.9:53 udp (outbound): permitted in clear by rule 'dns' "
        "(filter list 'dns-list', filter me -> any:53 udp, mirrored, lan connections only)")
    assert str(explain(compiled, "9.9.9.9", "192.0.2.1", "udp", source_port=53)) == (
        "9.9.9.9:53 -> 192.0.2.1 udp (inbound): permitted in clear by rule 'dns' "
        "(filter list 'dns-list', filter me -> any:53 udp, matched by its mirror, lan connections only)")
    assert str(explain(compiled, "192.0.2.1", "9.9.9.9", "tcp", 443)) == (
        "192.0.2.1 -> 9.9.9.9:443 tcp (outbound): no rule matches: sent in clear (no policy); "
        "the default response rule secures it if the peer asks")
    assert str(explain(compiled, "9.9.9.9", "192.0.2.1", "tcp", 443)) == (
        "9.9.9.9 -> 192.0.2.1:443 tcp (inbound): no rule matches: accepted in clear (no policy); "
        "the default response rule secures it if the peer asks")
    assert explain(compiled, "192.0.2.1", "9.9.9.9", "udp", 53, link="remote-access").entry is None


def test_explain_the_predefined_policies() -> None:
    server = compile_policy(server_request_security(), ME)
    secure = compile_policy(secure_server_require_security(), ME)
    methods = "ESP aes128gcm16 or ESP aes256gcm16 or ESP aes256-sha256"
    assert str(explain(server, "192.0.2.1", "203.0.113.4", "tcp", 443)) == (
        "192.0.2.1 -> 203.0.113.4:443 tcp (outbound): rule 'all-ip-traffic' (filter list 'all-ip', "
        f"filter me -> any any, mirrored): negotiate security, request {methods} in transport mode, "
        "in clear if the peer does not negotiate")
    assert str(explain(server, "203.0.113.4", "192.0.2.1", "tcp", 22)) == (
        "203.0.113.4 -> 192.0.2.1:22 tcp (inbound): rule 'all-ip-traffic' (filter list 'all-ip', "
        f"filter me -> any any, matched by its mirror): negotiate security, request {methods} in transport "
        "mode, in clear if the peer does not negotiate, accepted unsecured too")
    assert str(explain(secure, "203.0.113.4", "192.0.2.1", "tcp", 22)) == (
        "203.0.113.4 -> 192.0.2.1:22 tcp (inbound): rule 'all-ip-traffic' (filter list 'all-ip', "
        f"filter me -> any any, matched by its mirror): negotiate security, require {methods} in transport "
        "mode, dropped if it arrives unsecured")
    assert str(explain(secure, "192.0.2.1", "203.0.113.4", 1)) == (
        "192.0.2.1 -> 203.0.113.4 icmp (outbound): permitted in clear by rule 'all-icmp-traffic' "
        "(filter list 'all-icmp', filter me -> any icmp, mirrored)")
    client = compile_policy(client_respond_only(), ME)
    assert str(explain(client, "192.0.2.1", "203.0.113.4", "tcp", 443)) == (
        "192.0.2.1 -> 203.0.113.4:443 tcp (outbound): no rule matches: sent in clear (no policy); "
        "the default response rule secures it if the peer asks")


def test_explain_forwarded_prefers_the_earlier_entry_either_way() -> None:
    rules = (single("broad", Filter("10.0.0.0/8", "any"), REQUIRE, tunnel_endpoint=PEER),
             single("narrow-back", Filter("10.2.0.0/16", "10.1.0.0/16"), BLOCK))
    compiled = compile_policy(IpsecPolicy("p", rules, default_response=False), ME)
    # 10.1.0.9 -> 10.2.0.9 is "broad" going out, and "narrow-back" (mirror) coming in: narrow wins
    answer = explain(compiled, "10.1.0.9", "10.2.0.9", "tcp", 80)
    assert (answer.entry.rule.name, answer.direction) == ("narrow-back", "in")  # type: ignore[union-attr]
    assert answer.where == "forwarded inbound"


def test_explain_rejects_bad_input() -> None:
    compiled = compile_policy(hq_branch(), ME)
    with pytest.raises(ValueError, match="not between 0 and 65535"):
        explain(compiled, "10.1.0.1", "10.2.0.1", "tcp", 70000)
    with pytest.raises(ValueError, match="ports only go with tcp or udp, not icmp"):
        explain(compiled, "10.1.0.1", "10.2.0.1", "icmp", 8)
    with pytest.raises(PolicyError, match="unknown protocol"):
        explain(compiled, "10.1.0.1", "10.2.0.1", "tcpx", 80)
    with pytest.raises(ValueError):
        explain(compiled, "10.1.0.300", "10.2.0.1", "tcp", 80)
    with pytest.raises(ValueError, match="direction must be"):
        compiled.match("10.1.0.1", "10.2.0.1", "tcp", direction="both")  # type: ignore[arg-type]
