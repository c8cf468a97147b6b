"""The ``policy:`` config section and its conversion into an `IpsecPolicy`.

Pydantic checks each value (addresses, protocols, ports, algorithm names); `build_policy`
resolves the names across keys (filter lists, filter actions, connections) and raises
`PolicyError` with the config path at fault.  Either start from a predefined policy::

    policy:
      predefined: secure-server      # client | server | secure-server
      connection: clients            # peers authenticate as connections.clients says

or write rules (they may also be added to a predefined policy)::

    policy:
      filter_lists:
        hq-to-branch:                # mirrored by default: the replies are covered too
          - {source: 10.1.0.0/24, destination: 10.2.0.0/24}
        telnet:
          - {source: any, destination: me, protocol: tcp, destination_port: 23}
      filter_actions:
        require-esp:
          action: negotiate          # permit | block | negotiate
          methods: [aes256gcm16, aes256-sha256-ecp256]    # ESP suites, PFS group last
        request-esp:
          action: negotiate
          fallback_to_clear: true          # "request": clear to peers that do not negotiate
          accept_unsecured_inbound: true   # accept clear inbound, answer it secured
          methods:
            - {protocol: esp+ah, esp: aes128gcm16, ah: sha256, pfs: ecp256, lifetime: 1h}
      rules:
        - name: hq-branch
          filter_list: hq-to-branch
          filter_action: require-esp
          connection: branch         # auth, and the tunnel endpoint (its remote), from it
        - name: no-telnet
          filter_list: telnet
          filter_action: block
      default_response: false        # on: answer peers asking to secure other traffic

Built in, usable without defining them: the filter lists ``all-ip`` (``me -> any``) and
``all-icmp`` (``me -> any icmp``), the filter actions ``permit``, ``block``,
``request-security`` and ``require-security``.  Filter fields: ``source`` (default
``me``), ``destination`` (default ``any``): ``any``, ``me``, an address or a subnet;
``protocol`` (``any``, a name, a number); ``source_port`` / ``destination_port`` (0: any;
TCP and UDP only); ``mirrored`` (default true).  A rule's ``auth`` (a list of the
connection ``auth`` forms: psk, cert) overrides its connection's; rules with neither use
the section's ``auth`` / ``connection``.  ``tunnel_endpoint`` overrides the connection's
remote; without either the rule is transport mode.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from gateway.config.model import CertAuth, Connection, PskAuth
from gateway.config.policy import (
    FilterActionSpec,
    FilterSpec,
    MethodSpec,
    PolicySection,
    RuleSpec,
)
from gateway.policy.model import (
    DEFAULT_METHODS,
    AuthMethod,
    FilterAction,
    FilterList,
    IpsecPolicy,
    PolicyError,
    Rule,
    SecurityMethod,
)
from gateway.policy.predefined import FILTER_ACTIONS, FILTER_LISTS, PREDEFINED

__all__ = ["FilterActionSpec", "FilterSpec", "MethodSpec", "PolicySection", "RuleSpec", "build_policy"]


def _auth_from(specs: list[PskAuth | CertAuth], where: str) -> tuple[AuthMethod, ...]:
    return tuple(AuthMethod(a.method, f"{where}[{i}]", a) for i, a in enumerate(specs))


def _connection(name: str, connections: Mapping[str, Connection], path: tuple[str | int, ...]) -> Connection:
    conn = connections.get(name)
    if conn is None:
        known = ", ".join(sorted(connections)) or "none defined"
        raise PolicyError(f"no connection named {name!r} (connections: {known})", path)
    return conn


def _connection_auth(name: str, conn: Connection) -> tuple[AuthMethod, ...]:
    if conn.auth is None:
        return ()
    return (AuthMethod(conn.auth.method, f"connection {name!r}", conn.auth),)


def _tunnel_endpoint(spec: RuleSpec, conn: Connection | None,
                     path: tuple[str | int, ...]) -> ipaddress.IPv4Address | None:
    if conn is None or conn.mode == "transport":
        if conn is not None and spec.tunnel_endpoint is not None:
            raise PolicyError(f"rule {spec.name!r}: connection {spec.connection!r} is transport mode, "
                              "so the rule takes no tunnel endpoint", (*path, "tunnel_endpoint"))
        return spec.tunnel_endpoint
    if spec.tunnel_endpoint is not None:
        return spec.tunnel_endpoint
    try:
        return ipaddress.IPv4Address(conn.remote)
    except ValueError:
        raise PolicyError(f"rule {spec.name!r}: connection {spec.connection!r} has remote {conn.remote!r}, "
                          "not an IPv4 address: give the rule a tunnel_endpoint",
                          (*path, "connection")) from None


def _named(kind: str, builtin: Mapping[str, Any], defined: Mapping[str, Any],
           path: tuple[str | int, ...]) -> None:
    for name in defined:
        if name in builtin:
            raise PolicyError(f"{kind} {name!r} is built in: choose another name", (*path, name))


def build_policy(section: PolicySection, connections: Mapping[str, Connection] | None = None) -> IpsecPolicy:
    """Turn the parsed section into an `IpsecPolicy`; `connections` is the config's
    ``connections`` section, for rules (and the section) that name one."""
    conns: Mapping[str, Connection] = connections or {}
    base = ("policy",)
    _named("filter list", FILTER_LISTS, section.filter_lists, (*base, "filter_lists"))
    _named("filter action", FILTER_ACTIONS, section.filter_actions, (*base, "filter_actions"))
    lists = dict(FILTER_LISTS)
    for name, specs in section.filter_lists.items():
        lists[name] = FilterList(name, tuple(s.to_filter() for s in specs))
    actions = dict(FILTER_ACTIONS)
    for name, spec in section.filter_actions.items():
        methods: tuple[SecurityMethod, ...] = ()
        if spec.action == "negotiate":
            methods = DEFAULT_METHODS if spec.methods is None else tuple(m.to_method() for m in spec.methods)
        elif spec.methods is not None:
            methods = tuple(m.to_method() for m in spec.methods)
        try:
            actions[name] = FilterAction(name, spec.action, spec.fallback_to_clear,
                                         spec.accept_unsecured_inbound, methods)
        except PolicyError as exc:
            raise PolicyError(str(exc), (*base, "filter_actions", name)) from None

    policy_auth = _auth_from(section.auth, "policy.auth")
    if not policy_auth and section.connection is not None:
        conn = _connection(section.connection, conns, (*base, "connection"))
        policy_auth = _connection_auth(section.connection, conn)
    methods = DEFAULT_METHODS if section.methods is None else tuple(m.to_method() for m in section.methods)
    if not methods:
        raise PolicyError("the policy's methods list is empty", (*base, "methods"))

    default_response = bool(policy_auth) if section.default_response is None else section.default_response
    if not policy_auth and (section.predefined is not None or default_response):
        what = (f"predefined policy {section.predefined!r}" if section.predefined
                else "the default response rule")
        raise PolicyError(f"{what} needs authentication: give the policy an auth or a connection",
                          (*base, "predefined" if section.predefined else "default_response"))

    if section.predefined is not None:
        start = PREDEFINED[section.predefined](methods=methods, auth=policy_auth)
        rules = list(start.rules)
        name = section.name or start.name
    else:
        rules, name = [], section.name or "policy"

    for i, spec in enumerate(section.rules):
        path = (*base, "rules", i)
        flist = lists.get(spec.filter_list)
        if flist is None:
            raise PolicyError(f"rule {spec.name!r}: no filter list named {spec.filter_list!r} "
                              f"(filter lists: {', '.join(sorted(lists))})", (*path, "filter_list"))
        action = actions.get(spec.filter_action)
        if action is None:
            raise PolicyError(f"rule {spec.name!r}: no filter action named {spec.filter_action!r} "
                              f"(filter actions: {', '.join(sorted(actions))})", (*path, "filter_action"))
        conn = None if spec.connection is None else _connection(spec.connection, conns, (*path, "connection"))
        auth = _auth_from(spec.auth, f"policy.rules[{i}].auth")
        if not auth and conn is not None and spec.connection is not None:
            auth = _connection_auth(spec.connection, conn)
        if not auth and conn is None:
            auth = policy_auth
        if action.kind == "negotiate" and not auth and conn is None:
            raise PolicyError(f"rule {spec.name!r} negotiates security but names no authentication: "
                              "give it auth or a connection (or the policy an auth or a connection)",
                              path)
        try:
            rules.append(Rule(spec.name, flist, action, auth, _tunnel_endpoint(spec, conn, path),
                              spec.connection_type, spec.enabled, spec.connection))
        except PolicyError as exc:
            raise PolicyError(str(exc), exc.path or path) from None
    try:
        return IpsecPolicy(name, tuple(rules), default_response, methods, policy_auth)
    except PolicyError as exc:
        raise PolicyError(str(exc), (*base, "rules")) from None
