"""`gateway policy explain` and `gateway policy show`: the IPsec policy of a config file,
worked out offline (no daemon needed), with the running gateway's hit counters when it
answers on its control socket (the ``policy`` command).

    gateway policy explain SRC DST PROTO [PORT] [-c FILE] [-s SOCKET] [--source-port N]
    gateway policy show [-c FILE] [-s SOCKET] [--json]

`register(subparsers)` adds both to the `gateway` command; ``python -m gateway.policy.cli``
runs them alone.  `explain_text` and `show_text` are the outputs, as plain functions.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from typing import Any

from gateway.dataplane.spd import Action
from gateway.ike.trafficselectors import TsRange
from gateway.policy.compiler import PolicyEntry
from gateway.policy.explain import Explanation, explain
from gateway.policy.model import protocol_name
from gateway.policy.runtime import TRAP_HOLD, PolicyRuntime, plan_policy

DEFAULT_CONFIG = "/etc/gateway/gateway.yaml"


# --------------------------------------------------------------------------------------
# The outputs
# --------------------------------------------------------------------------------------


def _methods(entry: PolicyEntry) -> str:
    return " or ".join(str(m) for m in entry.methods)


def _action(runtime: PolicyRuntime, answer: Explanation) -> str:
    entry = answer.entry
    if entry is None:
        return "no rule: clear (not IPsec traffic)"
    if entry.action is Action.DISCARD:
        return "block: dropped, counted policy_discard"
    if entry.action is Action.BYPASS:
        return "permit: in clear"
    how = "request" if entry.fallback_to_clear else "require"
    connection = runtime.connection_of[entry.rule.name]
    where = f"tunnel to {entry.tunnel_endpoint}" if entry.tunnel_endpoint is not None else "transport mode"
    text = f"negotiate ({how}): {_methods(entry)}, {where} via connection {connection!r}"
    trap = runtime.trap_of(connection)
    if trap is None:
        text += ", when its peers negotiate (the dial-up service's SAs)"
    elif not trap.initiates:
        text += (", sent in clear until the peer negotiates" if entry.fallback_to_clear
                 else ", dropped until the peer negotiates (its remote is %any: it cannot be called)")
    elif entry.fallback_to_clear:
        text += ", sent in clear until the SA is up (the first packet starts IKE)"
    else:
        text += f", held until the SA is up (at most {TRAP_HOLD} packets; the first starts IKE)"
    if _inbound(runtime, answer):
        # the edge filter admits clear traffic from the Internet only as replies
        text += ("; arriving unsecured: accepted as a reply to what went out in clear"
                 if entry.accept_unsecured_inbound else "; arriving unsecured: dropped")
    return text


def _rule(runtime: PolicyRuntime, answer: Explanation) -> str:
    entry = answer.entry
    if entry is None:
        return "none matches"
    details = [f"filter list {entry.rule.filter_list.name!r}", f"filter {entry.filter}"]
    if answer.direction is not None and entry.by_mirror(answer.direction):
        details.append("matched by its mirror")
    elif entry.filter.mirrored:
        details.append("mirrored")
    if entry.rule.connection_type != "all":
        details.append(f"{entry.rule.connection_type} connections only")
    count = len(runtime.compiled.entries)
    return f"{entry.rule.name!r} ({', '.join(details)}), entry {entry.position + 1} of {count}"


def _inbound(runtime: PolicyRuntime, answer: Explanation) -> bool:
    """Whether the packet travels towards this gateway's side: to one of its addresses, or
    forwarded to the networks behind it (its connections' local subnets) from elsewhere."""
    if runtime.compiled.is_me(answer.src) or runtime.compiled.is_me(answer.dst):
        return runtime.compiled.is_me(answer.dst)
    if runtime.is_ours(answer.src) != runtime.is_ours(answer.dst):
        return runtime.is_ours(answer.dst)
    return answer.direction == "in"


def _where(runtime: PolicyRuntime, answer: Explanation) -> str:
    if not answer.forwarded:
        return answer.where
    if runtime.is_ours(answer.src) != runtime.is_ours(answer.dst):
        return "forwarded inbound" if _inbound(runtime, answer) else "forwarded outbound"
    return "forwarded"


def _peer(runtime: PolicyRuntime, answer: Explanation) -> str:
    """What a peer gets when it asks (IKE) to secure this traffic from its side to ours."""
    if _inbound(runtime, answer):
        peer, peer_port, ours, our_port = answer.src, answer.source_port, answer.dst, answer.destination_port
    else:
        peer, peer_port, ours, our_port = answer.dst, answer.destination_port, answer.src, answer.source_port

    def ts(address: ipaddress.IPv4Address, port: int) -> TsRange:
        return TsRange(address, address, answer.protocol, port or 0, port or 65535)

    request = f"{_end(peer, peer_port)} -> {_end(ours, our_port)} {protocol_name(answer.protocol)}"
    entry = runtime.deciding(ts(peer, peer_port), ts(ours, our_port))
    if entry is None:
        default = runtime.compiled.default_response
        if default is None:
            return (f"a request for {request} is refused: no rule covers it and the default response "
                    "rule is off")
        methods = " or ".join(str(m) for m in default.methods)
        return f"a request for {request} is answered by the default response rule ({methods})"
    if entry.action is Action.DISCARD:
        return f"a request for {request} is refused: rule {entry.rule.name!r} blocks it"
    if entry.action is Action.BYPASS:
        return f"a request for {request} is refused: rule {entry.rule.name!r} permits it in clear"
    connection = runtime.connection_of[entry.rule.name]
    return (f"a request for {request} is accepted from peers of connection {connection!r} "
            f"(rule {entry.rule.name!r}), refused from others")


def _end(address: ipaddress.IPv4Address, port: int) -> str:
    return f"{address}:{port}" if port else str(address)


def _hits(answer: Explanation, live: dict[str, Any]) -> str:
    entry = answer.entry
    if entry is None:
        return f"{live.get('no_rule_hits', 0)} packets in clear through the policy's routes (no rule)"
    found = next((e for e in live.get("entries", []) if e["name"] == entry.name), None)
    if found is None:
        return "not in the running gateway (its config differs from this file?)"
    if found["connection"] is not None:
        trap = next((t for t in live.get("traps", []) if t["connection"] == found["connection"]), {})
        state = "SA up" if trap.get("sa") else "no SA"
        held = f", {trap['held']} held" if trap.get("held") else ""
        text = f"{found['hits']} outbound on connection {found['connection']!r} ({state}{held})"
    else:
        text = f"{found['hits']} outbound"
    return text + f", {found['hits_in']} out of SAs"


def explain_text(runtime: PolicyRuntime, src: str, dst: str, proto: str | int, port: int = 0, *,
                 source_port: int = 0, live: dict[str, Any] | None = None) -> str:
    """What `gateway policy explain` prints: the packet and its direction, the rule, what
    happens to it, what a peer asking to secure it would get, and (`live`: the daemon's
    ``policy`` reply) the hit counters."""
    answer = explain(runtime.compiled, src, dst, proto, port, source_port=source_port)
    lines = [
        f"packet:   {answer.packet} ({_where(runtime, answer)})",
        f"policy:   {runtime.compiled.name}",
        f"rule:     {_rule(runtime, answer)}",
        f"action:   {_action(runtime, answer)}",
        f"peer:     {_peer(runtime, answer)}",
    ]
    if live is not None:
        lines.append(f"hits:     {_hits(answer, live)}")
    own = runtime.compiled.is_me(answer.src) or runtime.compiled.is_me(answer.dst)
    ike = answer.protocol == 17 and {answer.source_port, answer.destination_port} & {500, 4500}
    if own and (ike or answer.protocol in (50, 51)):
        lines.append("note:     this gateway's own IKE, ESP and AH use its marked sockets: the policy "
                     "never applies to them")
    return "\n".join(lines)


def show_text(described: dict[str, Any], source: str) -> str:
    """What `gateway policy show` prints from a `PolicyRuntime.describe` dict."""
    if described.get("policy") is None:
        return f"no policy ({source})"
    response = "on" if described["default_response"] else "off"
    lines = [f"policy {described['policy']} ({source}; me: {', '.join(described['me'])}; "
             f"default response {response})"]
    for e in described["entries"]:
        action = e["action"] + (f" ({e['security']})" if e["security"] else "")
        via = f" via {e['connection']}" if e["connection"] else ""
        mirrored = ", mirrored" if e["mirrored"] else ""
        whose = " (the connection's)" if e["connection"] else ""
        lines.append(f"  {e['position']:>3}. {action:<20} rule {e['rule']!r}: {e['filter_list']} "
                     f"{e['filter']}{mirrored}{via}  hits {e['hits']} out{whose}, {e['hits_in']} in")
    for t in described["traps"]:
        calls = ", calls on demand" if t["initiates"] else ", answers only"
        state = "SA up" if t["sa"] else "no SA" + calls
        lines.append(f"  trap {t['connection']}: {t['security']}, {t['mode']}, hold {t['hold']}, {state}, "
                     f"{t['held']} held: {', '.join(t['selectors'])}")
    for r in described["routes"]:
        lines.append(f"  routed into the dataplane: {', '.join(r['remote'])} ({r['reason']})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------


def _runtime(args: argparse.Namespace) -> tuple[PolicyRuntime | None, Any]:
    from gateway.config import ConfigError, load_config

    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        raise SystemExit(f"gateway: {exc}") from None
    return plan_policy(loaded.config), loaded.config


def _live(args: argparse.Namespace, config: Any) -> dict[str, Any] | None:
    """The running gateway's ``policy`` reply, or None when none answers."""
    if args.offline:
        return None
    from gateway.control.protocol import ControlError, request

    path = args.socket or config.control.socket
    try:
        reply = request(str(path), "policy", timeout=2.0)
    except (ControlError, OSError):
        return None
    return reply if isinstance(reply, dict) else None


def cmd_explain(args: argparse.Namespace) -> int:
    runtime, config = _runtime(args)
    if runtime is None:
        print(f"{args.config} has no policy section: connections alone decide what is protected",
              file=sys.stderr)
        return 1
    try:
        text = explain_text(runtime, args.src, args.dst, args.proto, args.port,
                            source_port=args.source_port, live=_live(args, config))
    except ValueError as exc:
        print(f"gateway policy explain: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    runtime, config = _runtime(args)
    live = _live(args, config)
    if live is not None:
        described, source = live, "running gateway"
    else:
        described = runtime.describe() if runtime is not None else {"policy": None}
        source = f"{args.config}, offline"
    if args.json:
        print(json.dumps(described, indent=2))
    else:
        print(show_text(described, source))
    return 0


def register(subparsers: Any) -> None:
    """Add ``policy explain`` and ``policy show`` to the `gateway` command's subparsers."""
    policy = subparsers.add_parser("policy", help="explain or show the IPsec policy")
    sub = policy.add_subparsers(dest="policy_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                       help=f"the gateway's config file (default {DEFAULT_CONFIG})")
        p.add_argument("-s", "--socket", help="control socket of the running gateway (default: the config's)")
        p.add_argument("--offline", action="store_true", help="do not ask the running gateway")

    p = sub.add_parser("explain", help="which rule decides a packet, and what happens to it")
    p.add_argument("src", help="source address")
    p.add_argument("dst", help="destination address")
    p.add_argument("proto", help="protocol: a name (tcp, udp, icmp, ...) or a number")
    p.add_argument("port", nargs="?", type=int, default=0, help="destination port (tcp, udp)")
    p.add_argument("--source-port", type=int, default=0, help="source port (tcp, udp)")
    common(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("show", help="the policy's entries in order, with hit counters")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    common(p)
    p.set_defaults(func=cmd_show)
