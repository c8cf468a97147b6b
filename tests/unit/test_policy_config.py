"""The ``policy:`` config section: shapes checked by pydantic, names resolved by
`build_policy` with the config path of every error, and the documented examples."""

from __future__ import annotations

import ipaddress
import re
import textwrap
from typing import Any

import pytest
from pydantic import ValidationError

import gateway.policy.config as policy_config
from gateway.config.model import Connection
from gateway.config.yamlsource import loads
from gateway.dataplane.spd import Action
from gateway.policy import DEFAULT_METHODS, PolicyError, SecurityMethod, compile_policy, explain
from gateway.policy.config import PolicySection, build_policy

ME = ["192.0.2.1"]

CONNECTIONS = """\
branch:
  remote: 198.51.100.1
  local_subnets: [10.1.0.0/24]
  remote_subnets: [10.2.0.0/24]
  auth: {method: psk, psk: branch-secret}
clients:
  remote: "%any"
  mode: transport
  auth: {method: psk, psk: client-secret}
named:
  remote: gw.example.net
  auth: {method: psk, psk: x}
"""


def connections() -> dict[str, Connection]:
    data, _ = loads(CONNECTIONS)
    return {name: Connection.model_validate(value) for name, value in data.items()}


def section(text: str) -> PolicySection:
    data, _ = loads(textwrap.dedent(text))
    return PolicySection.model_validate(data["policy"])


def build(text: str) -> Any:
    return build_policy(section(text), connections())


def build_error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        build(text)
    return info.value


def test_the_documented_examples_load() -> None:
    blocks = re.findall(r"::\n\n((?:    .*\n|\n)+)", policy_config.__doc__ or "")
    assert len(blocks) == 2
    predefined = build(blocks[0])
    assert predefined.name == "secure-server-require-security"
    assert [r.name for r in predefined.rules] == ["all-ip-traffic", "all-icmp-traffic"]
    assert [a.source for a in predefined.default_response_auth] == ["connection 'clients'"]
    custom = build(blocks[1])
    assert [r.name for r in custom.rules] == ["hq-branch", "no-telnet"]
    assert custom.default_response is False
    hq = custom.rules[0]
    assert hq.tunnel_endpoint == ipaddress.IPv4Address("198.51.100.1")
    assert [str(a) for a in hq.auth] == ["psk (connection 'branch')"]
    assert hq.auth[0].settings == connections()["branch"].auth
    assert [m.esp_proposal for m in hq.action.methods] == ["aes256gcm16", "aes256-sha256-ecp256"]
    assert custom.rules[1].action.kind == "block"
    compiled = compile_policy(custom, ME)
    assert str(explain(compiled, "203.0.113.4", "192.0.2.1", "tcp", 23)) == (
        "203.0.113.4 -> 192.0.2.1:23 tcp (inbound): blocked by rule 'no-telnet' "
        "(filter list 'telnet', filter any -> me:23 tcp, mirrored)")


def test_filter_actions_methods_and_defaults() -> None:
    policy = build("""
        policy:
          connection: clients
          filter_lists:
            mgmt: [{destination: 203.0.113.0/24, protocol: tcp, destination_port: 22}]
          filter_actions:
            defaults: {action: negotiate}
            both:
              action: negotiate
              fallback_to_clear: true
              accept_unsecured_inbound: true
              methods:
                - aes128gcm16-x25519
                - {protocol: esp+ah, esp: aes256-sha256, ah: sha256, pfs: ecp256, lifetime: 1h,
                   lifetime_bytes: 4G}
                - {protocol: ah, ah: sha512}
          rules:
            - {name: a, filter_list: mgmt, filter_action: defaults}
            - {name: b, filter_list: mgmt, filter_action: both, connection_type: remote-access,
               enabled: false}
        """)
    a, b = policy.rules
    assert a.action.methods == DEFAULT_METHODS
    assert not a.action.fallback_to_clear and not a.action.accept_unsecured_inbound
    assert a.filter_list.filters[0].source == "me"  # the default source
    assert [r.auth[0].source for r in policy.rules] == ["connection 'clients'"] * 2
    assert b.action.methods == (
        SecurityMethod(esp="aes128gcm16", pfs="curve25519"),
        SecurityMethod("esp+ah", esp="aes256-sha256", ah="sha256", pfs="ecp256", lifetime=3600,
                       lifetime_bytes=4 * 1024 ** 3),
        SecurityMethod("ah", ah="sha512"),
    )
    assert b.action.fallback_to_clear and b.action.accept_unsecured_inbound
    assert (b.connection_type, b.enabled) == ("remote-access", False)
    assert policy.default_response is True  # the policy has authentication
    assert a.tunnel_endpoint is None


def test_builtin_lists_and_actions_and_rules_added_to_a_predefined_policy() -> None:
    policy = build("""
        policy:
          predefined: server
          auth: [{method: psk, psk: s3cret}]
          methods: [aes256gcm16]
          filter_lists:
            smb: [{source: me, protocol: tcp, destination_port: 445}]
          rules:
            - {name: smb, filter_list: smb, filter_action: block}
            - {name: ping-lan, filter_list: all-icmp, filter_action: require-security,
               auth: [{method: psk, psk: other}]}
        """)
    assert [r.name for r in policy.rules] == ["all-ip-traffic", "all-icmp-traffic", "smb", "ping-lan"]
    assert policy.rules[0].action.methods == (SecurityMethod(esp="aes256gcm16"),)
    assert policy.rules[0].action.fallback_to_clear
    assert [a.source for a in policy.rules[0].auth] == ["policy.auth[0]"]
    assert [a.source for a in policy.rules[3].auth] == ["policy.rules[1].auth[0]"]
    assert "s3cret" not in repr(policy)
    compiled = compile_policy(policy, ME)
    assert compiled.match("192.0.2.1", "8.8.8.8", "tcp", 1000, 445).action is Action.DISCARD  # type: ignore[union-attr]
    assert compiled.default_response is not None


def test_tunnel_endpoint_from_connection_or_rule() -> None:
    text = """
        policy:
          default_response: false
          filter_lists:
            nets: [{source: 10.1.0.0/24, destination: 10.2.0.0/24}]
          rules:
            - {name: r, filter_list: nets, filter_action: require-security, %s}
        """
    from_connection = build(text % "connection: branch").rules[0]
    assert from_connection.tunnel_endpoint == ipaddress.IPv4Address("198.51.100.1")
    override = build(text % "connection: branch, tunnel_endpoint: 198.51.100.77").rules[0]
    assert override.tunnel_endpoint == ipaddress.IPv4Address("198.51.100.77")
    named = build(text % "connection: named, tunnel_endpoint: 198.51.100.9").rules[0]
    assert named.tunnel_endpoint == ipaddress.IPv4Address("198.51.100.9")
    error = build_error(text % "connection: named")
    assert str(error) == ("rule 'r': connection 'named' has remote 'gw.example.net', not an IPv4 address: "
                          "give the rule a tunnel_endpoint")
    assert error.path == ("policy", "rules", 0, "connection")
    error = build_error(text % "connection: clients, tunnel_endpoint: 198.51.100.9")
    assert "connection 'clients' is transport mode, so the rule takes no tunnel endpoint" in str(error)
    assert error.path == ("policy", "rules", 0, "tunnel_endpoint")
    transport = build(text % "connection: clients").rules[0]
    assert transport.tunnel_endpoint is None and transport.connection == "clients"


@pytest.mark.parametrize(("body", "message", "path"), [
    ("rules: [{name: r, filter_list: nope, filter_action: permit}]",
     "rule 'r': no filter list named 'nope' (filter lists: all-icmp, all-ip)",
     ("policy", "rules", 0, "filter_list")),
    ("rules: [{name: r, filter_list: all-ip, filter_action: nope}]",
     "rule 'r': no filter action named 'nope' (filter actions: block, permit, request-security, "
     "require-security)", ("policy", "rules", 0, "filter_action")),
    ("rules: [{name: r, filter_list: all-ip, filter_action: permit, connection: nope}]",
     "no connection named 'nope' (connections: branch, clients, named)",
     ("policy", "rules", 0, "connection")),
    ("filter_lists: {all-ip: [{}]}", "filter list 'all-ip' is built in: choose another name",
     ("policy", "filter_lists", "all-ip")),
    ("filter_actions: {permit: {action: permit}}", "filter action 'permit' is built in",
     ("policy", "filter_actions", "permit")),
    ("filter_actions: {x: {action: negotiate, methods: []}}",
     "filter action 'x': negotiate needs at least one security method", ("policy", "filter_actions", "x")),
    ("filter_actions: {x: {action: permit, methods: [aes128gcm16]}}",
     "filter action 'x': permit takes no security methods", ("policy", "filter_actions", "x")),
    ("rules: [{name: r, filter_list: all-ip, filter_action: require-security}]",
     "rule 'r' negotiates security but names no authentication", ("policy", "rules", 0)),
    ("rules: [{name: r, filter_list: all-ip, filter_action: permit, tunnel_endpoint: 198.51.100.1}]",
     "rule 'r': a tunnel endpoint only applies to a negotiate action", ("policy", "rules", 0)),
    ("rules: [{name: r, filter_list: all-ip, filter_action: permit}, "
     "{name: r, filter_list: all-icmp, filter_action: block}]",
     "two rules are named 'r'", ("policy", "rules")),
    ("predefined: client", "predefined policy 'client' needs authentication", ("policy", "predefined")),
    ("default_response: true", "the default response rule needs authentication",
     ("policy", "default_response")),
    ("connection: nope", "no connection named 'nope'", ("policy", "connection")),
    ("connection: clients\nmethods: []", "the policy's methods list is empty", ("policy", "methods")),
])
def test_cross_key_errors_name_the_path(body: str, message: str, path: tuple[str | int, ...]) -> None:
    error = build_error("policy:\n" + textwrap.indent(body, "  ") + "\n")
    assert message in str(error)
    assert error.path == path


@pytest.mark.parametrize(("body", "message"), [
    ("filter_lists: {x: [{source: me, protocol: icmp, destination_port: 7}]}", "ports need protocol tcp"),
    ("filter_lists: {x: [{source: 10.0.0.1/8}]}", "is not 'any', 'me'"),
    ("filter_lists: {x: [{protocol: tcpp}]}", "unknown protocol"),
    ("filter_lists: {x: [{destination_port: 65536}]}", "less than or equal to 65535"),
    ("filter_lists: {x: [{direction: out}]}", "Extra inputs are not permitted"),
    ("filter_actions: {x: {action: negotiate, methods: [aes128gcm16-sha256]}}", "takes no integrity"),
    ("filter_actions: {x: {action: negotiate, methods: [{protocol: ah, esp: aes128gcm16}]}}",
     "takes no ESP algorithm"),
    ("filter_actions: {x: {action: allow}}", "'permit', 'block' or 'negotiate'"),
    ("predefined: domain-isolation", "'client', 'server' or 'secure-server'"),
    ("rules: [{name: 'a b', filter_list: x, filter_action: y}]", "should match pattern"),
    ("rules: [{name: r, filter_list: x, filter_action: y, auth: [{method: kerberos}]}]",
     "does not match any of the expected tags"),
])
def test_value_errors_come_from_pydantic(body: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        section("policy:\n" + textwrap.indent(body, "  ") + "\n")
    assert message in str(info.value)


def test_a_policy_without_authentication_has_no_default_response() -> None:
    policy = build("""
        policy:
          rules: [{name: ping, filter_list: all-icmp, filter_action: permit}]
        """)
    assert policy.name == "policy" and policy.default_response is False
    assert compile_policy(policy, ME).default_response is None
