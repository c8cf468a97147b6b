"""`gateway policy explain` and `gateway policy show`: exact output for a block written
from either side (a mirrored filter), a negotiating rule (with the running gateway's
counters), each predefined policy, and the commands as a parser runs them."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

import pytest
from ipsec_testkit import icmp_echo
from test_policy_runtime import HQ_CONFIG, SECURE_SERVER, child_up, installed, runtime

import gateway.control.protocol
from gateway.cli import main as gateway_main
from gateway.policy import cli

METHODS = "ESP aes128gcm16 or ESP aes256gcm16 or ESP aes256-sha256"


def test_explain_a_block_written_from_the_peers_side_both_ways() -> None:
    rt = runtime()
    assert cli.explain_text(rt, "10.1.0.10", "10.2.0.11", "icmp") == textwrap.dedent("""\
        packet:   10.1.0.10 -> 10.2.0.11 icmp (forwarded outbound)
        policy:   hq
        rule:     'no-ping-11' (filter list 'ping-11', filter 10.2.0.11 -> 10.1.0.0/24 icmp, matched by its mirror), entry 3 of 5
        action:   block: dropped, counted policy_discard
        peer:     a request for 10.2.0.11 -> 10.1.0.10 icmp is refused: rule 'no-ping-11' blocks it""")  # noqa: E501
    assert cli.explain_text(rt, "10.2.0.11", "10.1.0.10", "icmp").splitlines()[0] == (
        "packet:   10.2.0.11 -> 10.1.0.10 icmp (forwarded inbound)")


def test_explain_a_negotiating_rule_with_the_running_gateways_counters() -> None:
    rt, table = installed()
    table.engine.outbound(icmp_echo("10.1.0.10", "10.2.0.10"))  # held: no SA yet
    live = rt.describe(table.engine)
    assert cli.explain_text(rt, "10.1.0.10", "10.2.0.10", "tcp", 22, live=live) == textwrap.dedent(f"""\
        packet:   10.1.0.10 -> 10.2.0.10:22 tcp (forwarded outbound)
        policy:   hq
        rule:     'branch-lans' (filter list 'branch-lans', filter 10.1.0.0/24 -> 10.2.0.0/24 any, mirrored), entry 4 of 5
        action:   negotiate (require): {METHODS}, tunnel to 198.51.100.1 via connection 'branch1', held until the SA is up (at most 32 packets; the first starts IKE)
        peer:     a request for 10.2.0.10:22 -> 10.1.0.10 tcp is accepted from peers of connection 'branch1' (rule 'branch-lans'), refused from others
        hits:     1 outbound on connection 'branch1' (no SA, 1 held), 0 out of SAs""")  # noqa: E501
    table.up(child_up())
    table.engine.release_held("branch1")
    live = rt.describe(table.engine)
    assert cli.explain_text(rt, "10.1.0.10", "10.2.0.10", "icmp", live=live).endswith(
        "hits:     2 outbound on connection 'branch1' (SA up), 0 out of SAs")


def test_explain_request_security_and_the_gateways_own_ike() -> None:
    text = cli.explain_text(runtime(), "192.0.2.1", "203.0.113.2", "udp", 4500, source_port=4500)
    assert text.splitlines()[3:] == [
        "action:   negotiate (request): ESP aes256gcm16, transport mode via connection 'server', sent in "
        "clear until the SA is up (the first packet starts IKE)",
        "peer:     a request for 203.0.113.2:4500 -> 192.0.2.1:4500 udp is accepted from peers of "
        "connection 'server' (rule 'server'), refused from others",
        "note:     this gateway's own IKE, ESP and AH use its marked sockets: the policy never applies "
        "to them",
    ]


def test_explain_no_rule() -> None:
    assert cli.explain_text(runtime(), "10.1.0.10", "9.9.9.9", "udp", 53).splitlines()[2:] == [
        "rule:     none matches",
        "action:   no rule: clear (not IPsec traffic)",
        "peer:     a request for 9.9.9.9:53 -> 10.1.0.10 udp is refused: no rule covers it and the "
        "default response rule is off",
    ]


def predefined(name: str) -> Any:
    return runtime(SECURE_SERVER.replace("predefined: secure-server", f"predefined: {name}"))


def test_explain_client_respond_only() -> None:
    assert cli.explain_text(predefined("client"), "192.0.2.1", "203.0.113.9", "tcp", 443) == (
        textwrap.dedent(f"""\
        packet:   192.0.2.1 -> 203.0.113.9:443 tcp (outbound)
        policy:   client-respond-only
        rule:     none matches
        action:   no rule: clear (not IPsec traffic)
        peer:     a request for 203.0.113.9:443 -> 192.0.2.1 tcp is answered by the default response rule ({METHODS})"""))  # noqa: E501


def test_explain_server_request_security() -> None:
    rt = predefined("server")
    assert cli.explain_text(rt, "203.0.113.9", "192.0.2.1", "tcp", 22) == textwrap.dedent(f"""\
        packet:   203.0.113.9 -> 192.0.2.1:22 tcp (inbound)
        policy:   server-request-security
        rule:     'all-ip-traffic' (filter list 'all-ip', filter me -> any any, matched by its mirror), entry 2 of 2
        action:   negotiate (request): {METHODS}, transport mode via connection 'clients', sent in clear until the peer negotiates; arriving unsecured: accepted as a reply to what went out in clear
        peer:     a request for 203.0.113.9 -> 192.0.2.1:22 tcp is accepted from peers of connection 'clients' (rule 'all-ip-traffic'), refused from others""")  # noqa: E501


def test_explain_secure_server_require_security() -> None:
    rt = predefined("secure-server")
    assert cli.explain_text(rt, "192.0.2.1", "203.0.113.9", "tcp", 443).splitlines()[2:4] == [
        "rule:     'all-ip-traffic' (filter list 'all-ip', filter me -> any any, mirrored), entry 2 of 2",
        f"action:   negotiate (require): {METHODS}, transport mode via connection 'clients', dropped until "
        "the peer negotiates (its remote is %any: it cannot be called)",
    ]
    assert cli.explain_text(rt, "203.0.113.9", "192.0.2.1", "icmp") == textwrap.dedent("""\
        packet:   203.0.113.9 -> 192.0.2.1 icmp (inbound)
        policy:   secure-server-require-security
        rule:     'all-icmp-traffic' (filter list 'all-icmp', filter me -> any icmp, matched by its mirror), entry 1 of 2
        action:   permit: in clear
        peer:     a request for 203.0.113.9 -> 192.0.2.1 icmp is refused: rule 'all-icmp-traffic' permits it in clear""")  # noqa: E501


def test_show_lists_entries_traps_and_routes() -> None:
    rt, table = installed()
    table.engine.outbound(icmp_echo("10.1.0.10", "10.2.0.11"))
    assert cli.show_text(rt.describe(table.engine), "running gateway") == textwrap.dedent("""\
        policy hq (running gateway; me: 192.0.2.1; default response off)
            1. permit               rule 'dns-clear': dns me -> 203.0.113.53:53 udp, mirrored  hits 0 out, 0 in
            2. negotiate (request)  rule 'server': server me -> 203.0.113.2 any, mirrored via server  hits 0 out (the connection's), 0 in
            3. block                rule 'no-ping-11': ping-11 10.2.0.11 -> 10.1.0.0/24 icmp, mirrored  hits 1 out, 0 in
            4. negotiate (require)  rule 'branch-lans': branch-lans 10.1.0.0/24 -> 10.2.0.0/24 any, mirrored via branch1  hits 0 out (the connection's), 0 in
            5. block                rule 'no-telnet': telnet me -> 198.18.0.0/15:23 tcp, mirrored  hits 0 out, 0 in
          trap server: request, transport, hold 0, no SA, calls on demand, 0 held: 192.0.2.1/32 === 203.0.113.2/32
          trap branch1: require, tunnel, hold 32, no SA, calls on demand, 0 held: 10.1.0.0/24 === 10.2.0.0/24
          routed into the dataplane: 203.0.113.2/32 (connection server)
          routed into the dataplane: 10.2.0.0/24 (connection branch1)
          routed into the dataplane: 198.18.0.0/15 (rule no-telnet)""")  # noqa: E501
    assert cli.show_text({"policy": None}, "x.yaml, offline") == "no policy (x.yaml, offline)"


# --------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "hq.yaml"
    path.write_text(HQ_CONFIG + f"control: {{socket: {tmp_path / 'none.sock'}}}\n")
    return path


def test_register_adds_policy_explain_and_show_to_a_parser(config_file: Path) -> None:
    parser = argparse.ArgumentParser(prog="gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub)
    args = parser.parse_args(["policy", "explain", "10.1.0.10", "10.2.0.10", "tcp", "22",
                              "-c", str(config_file), "--source-port", "40000"])
    assert (args.func, args.src, args.dst, args.proto, args.port, args.source_port) == (
        cli.cmd_explain, "10.1.0.10", "10.2.0.10", "tcp", 22, 40000)
    args = parser.parse_args(["policy", "show", "--json", "-s", "/run/x.sock"])
    assert (args.func, args.json, args.socket, args.config) == (cli.cmd_show, True, "/run/x.sock",
                                                                cli.DEFAULT_CONFIG)


def test_explain_offline_when_no_gateway_answers(config_file: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert gateway_main(["policy", "explain", "10.1.0.10", "10.2.0.11", "icmp", "-c", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "action:   block: dropped, counted policy_discard" in out and "hits:" not in out


def test_explain_and_show_with_the_running_gateways_counters(
        config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    rt, table = installed()
    table.engine.outbound(icmp_echo("10.1.0.10", "10.2.0.11"))
    asked = []

    def request(path: str, command: str, timeout: float = 5.0, **args: Any) -> Any:
        asked.append((path, command))
        return rt.describe(table.engine)

    monkeypatch.setattr(gateway.control.protocol, "request", request)
    assert gateway_main(["policy", "explain", "10.1.0.10", "10.2.0.11", "icmp", "-c", str(config_file),
                     "-s", "/run/gw.sock"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "hits:     1 outbound, 0 out of SAs"
    assert asked == [("/run/gw.sock", "policy")]
    assert gateway_main(["policy", "show", "-c", str(config_file)]) == 0
    assert capsys.readouterr().out.startswith("policy hq (running gateway;")
    assert asked[-1] == (str(config_file.parent / "none.sock"), "policy")  # the config's socket
    assert gateway_main(["policy", "show", "-c", str(config_file), "--offline"]) == 0
    assert f"policy hq ({config_file}, offline;" in capsys.readouterr().out


def test_explain_errors(config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["policy", "explain", "10.1.0.10", "10.2.0.11", "icmp", "8", "-c", str(config_file)]
    assert gateway_main(args) == 2
    assert "ports only go with tcp or udp" in capsys.readouterr().err
    plain = tmp_path / "plain.yaml"
    plain.write_text(HQ_CONFIG.split("policy:")[0])
    assert gateway_main(["policy", "explain", "10.1.0.10", "10.2.0.11", "icmp", "-c", str(plain)]) == 1
    assert "has no policy section" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="cannot read"):
        gateway_main(["policy", "show", "-c", str(tmp_path / "missing.yaml")])
