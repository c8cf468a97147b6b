"""`gateway check-config` on the ``policy`` section: what cannot work in the running gateway
is an error with file, line and key (a negotiate rule needs an IKE connection that can
negotiate its filters, one connection is one SPD policy, ...); what works with a catch is
a warning."""

from __future__ import annotations

import textwrap

import pytest

from gateway.config import ConfigError, load_config_text

BASE = """\
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
  old:
    remote: 203.0.113.3
    ike: {version: 1}
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.3.0.0/24]
    auth: {method: psk, psk: old-secret-0123456789}
  manual1:
    remote: 203.0.113.4
    keying: manual
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.4.0.0/24]
    manual:
      outbound: {spi: 0x1001, algorithm: aes128gcm16,
                 encryption_key: 0x000102030405060708090a0b0c0d0e0f10111213}
      inbound: {spi: 0x2001, algorithm: aes128gcm16,
                encryption_key: 0x000102030405060708090a0b0c0d0e0f10111213}
  dialin:
    remote: "%any"
    l2tp: {role: lns, pool: dialin}
    auth: {method: psk, psk: dialin-secret-0123456789}
pools:
  dialin: {subnet: 10.9.0.0/24}
users:
  alice: {password: alice-password}
"""


def load(policy: str):  # type: ignore[no-untyped-def]
    return load_config_text(BASE + textwrap.dedent(policy), "hq.yaml")


def error(policy: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(policy)
    errors = [str(i) for i in info.value.issues if not i.warning]
    assert len(errors) == 1, errors
    return errors[0]


LINE = BASE.count("\n") + 1  # the line after BASE


@pytest.mark.parametrize(("policy", "expected"), [
    ("""
     policy:
       auth: [{method: psk, psk: a-psk-for-the-policy}]
       rules: [{name: r, filter_list: all-ip, filter_action: require-security}]
     """, "hq.yaml:{3} policy.rules.0: rule 'r' negotiates security, and an IKE connection must do "
          "the negotiating: give the rule a connection (or the policy one)"),
    ("""
     policy:
       predefined: server
       auth: [{method: psk, psk: a-psk-for-the-policy}]
     """, "hq.yaml:{1} policy.connection: rule 'all-ip-traffic' negotiates security, and an IKE "
          "connection must do the negotiating: give the rule a connection (or the policy one)"),
    ("""
     policy:
       filter_lists: {x: [{source: 10.1.0.0/24, destination: 10.4.0.0/24}]}
       rules: [{name: r, filter_list: x, filter_action: require-security, connection: manual1,
                tunnel_endpoint: 203.0.113.4}]
     """, "hq.yaml:{3} policy.rules.0.connection: rule 'r' negotiates security through connection "
          "'manual1', which is manually keyed: only an IKE connection (keying: ike) can negotiate"),
    ("""
     policy:
       filter_lists: {x: [{source: 10.1.0.0/24, destination: 10.5.0.0/24}]}
       rules: [{name: r, filter_list: x, filter_action: require-security, connection: branch1}]
     """, "hq.yaml:{3} policy.rules.0: rule 'r', filter 10.1.0.0/24 -> 10.5.0.0/24 any: 10.5.0.0/24 is "
          "outside the remote_subnets of connection 'branch1' (10.2.0.0/24), so it cannot "
          "negotiate it (a filter between networks is written from this gateway's side: the source "
          "ours, the destination the peer's)"),
    ("""
     policy:
       filter_lists: {x: [{source: me, destination: 203.0.113.9}]}
       rules: [{name: r, filter_list: x, filter_action: require-security, connection: server}]
     """, "hq.yaml:{3} policy.rules.0: rule 'r', filter me -> 203.0.113.9 any: 203.0.113.9/32 is outside "
          "the peer of connection 'server' (203.0.113.2/32), so it cannot negotiate "
          "it (a filter between networks is written from this gateway's side: the source ours, the "
          "destination the peer's)"),
    ("""
     policy:
       predefined: secure-server
       connection: branch1
     """, "hq.yaml:{3} policy.connection: rule 'all-ip-traffic' is transport mode but connection "
          "'branch1' is tunnel mode"),
    ("""
     policy:
       filter_lists: {x: [{source: 10.1.0.0/24, destination: 10.2.0.0/24}]}
       rules: [{name: r, filter_list: x, filter_action: require-security, connection: branch1,
                tunnel_endpoint: 198.51.100.9}]
     """, "hq.yaml:{4} policy.rules.0.tunnel_endpoint: rule 'r': tunnel endpoint 198.51.100.9 is not "
          "the peer of connection 'branch1' (198.51.100.1), which the SAs are negotiated with"),
    ("""
     policy:
       filter_lists:
         web: [{source: 10.1.0.0/24, destination: 10.2.0.0/24, protocol: tcp, destination_port: 80}]
         rest: [{source: 10.1.0.0/24, destination: 10.2.0.0/24}]
       rules:
         - {name: web, filter_list: web, filter_action: require-security, connection: branch1}
         - {name: rest, filter_list: rest, filter_action: request-security, connection: branch1}
     """, "hq.yaml:{6} policy.rules.0: connection 'branch1' negotiates for rules 'web', 'rest', some "
          "requiring and some requesting security: its one trap cannot both hold packets and send them "
          "in clear; use one kind of filter action per connection"),
    ("""
     policy:
       filter_lists:
         x: [{source: 10.1.0.0/25, destination: 10.3.0.0/24},
             {source: 10.1.0.128/25, destination: 10.3.0.0/24}]
       rules: [{name: r, filter_list: x, filter_action: require-security, connection: old}]
     """, "hq.yaml:{5} policy.rules.0: connection 'old' is IKEv1, which negotiates one local and one "
          "remote selector, but its rules need 2 and 1: use one filter (or one connection per filter)"),
    ("""
     policy:
       filter_lists:
         branch: [{source: 10.1.0.0/24, destination: 10.2.0.0/24}]
         branch-web: [{source: 10.1.0.0/24, destination: 10.2.0.0/24, protocol: tcp, destination_port: 80}]
         udp: [{source: 10.1.0.0/24, destination: 10.2.0.0/24, protocol: udp}]
       rules:
         - {name: web, filter_list: branch-web, filter_action: require-security, connection: branch1}
         - {name: udp-clear, filter_list: udp, filter_action: permit}
         - {name: rest, filter_list: branch, filter_action: require-security, connection: branch1}
     """, "hq.yaml:{8} policy.rules.1: rule 'udp-clear', filter 10.1.0.0/24 -> 10.2.0.0/24 udp comes "
          "between the filters of connection 'branch1' in the policy's order and overlaps them; the "
          "connection is one SPD policy, at the place of its first filter: make the filters disjoint or "
          "negotiate them through separate connections"),
    ("""
     policy:
       filter_lists: {x: [{source: 10.1.0.0/24, destination: 10.2.0.0/24}]}
       rules: [{name: r, filter_list: x, filter_action: require-security, connection: server}]
     """, "hq.yaml:{3} policy.rules.0: rule 'r', filter 10.1.0.0/24 -> 10.2.0.0/24 any: transport mode "
          "protects only this gateway's own traffic, so one side must be 'me' (or one of its addresses); "
          "for traffic between networks, give the rule a tunnel endpoint"),
])
def test_policy_errors_name_file_line_and_key(policy: str, expected: str) -> None:
    body = textwrap.dedent(policy).lstrip("\n")
    # {n}: the line of the policy text's n-th line
    assert error(body) == expected.format(*range(LINE - 1, LINE + 20))


def test_a_good_policy_loads_without_warnings() -> None:
    loaded = load("""
        policy:
          filter_lists:
            lans: [{source: 10.1.0.0/24, destination: 10.2.0.0/24}]
            ping-11: [{source: 10.1.0.0/24, destination: 10.2.0.11, protocol: icmp}]
          rules:
            - {name: lans, filter_list: lans, filter_action: require-security, connection: branch1}
            - {name: no-ping-11, filter_list: ping-11, filter_action: block}
        """)
    assert loaded.warnings == [] and loaded.config.policy is not None


def test_warnings_for_what_works_with_a_catch() -> None:
    loaded = load("""
        policy:
          filter_lists:
            two: [{source: 10.1.0.0/25, destination: 10.2.0.0/25},
                  {source: 10.1.0.128/25, destination: 10.2.0.128/25}]
            telnet: [{source: me, destination: any, protocol: tcp, destination_port: 23}]
          rules:
            - {name: two, filter_list: two, filter_action: require-security, connection: branch1}
            - {name: no-telnet, filter_list: telnet, filter_action: block}
        """)
    assert [str(w) for w in loaded.warnings] == [
        f"hq.yaml:{LINE + 7} policy.rules.0: warning: connection 'branch1' negotiates every pairing of its "
        "rules' sources and destinations (IKE traffic selectors are two lists), so its SAs also carry "
        "10.1.0.0/25 -> 10.2.0.128/25, 10.1.0.128/25 -> 10.2.0.0/25",
        f"hq.yaml:{LINE + 8} policy.rules.1: warning: rule 'no-telnet': traffic to 'any' destination is "
        "not routed into the dataplane (every packet of the host would pass through userspace), so the "
        "rule decides only what connections and other rules route to it; the rest is sent as the host "
        "routes it",
    ]
