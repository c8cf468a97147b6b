"""The lab: `python -m appliance.lab demo | up | down`.

``demo`` builds the two-site topology, shows that the LANs cannot reach each other
without a tunnel, starts a real gateway in each gateway namespace, sends ping and an
iperf3 transfer across, shows what the internet link saw (ESP only); then a remote user
behind a home NAT dials HQ with L2TP/IPsec (our gateway as the client) and reaches the
HQ LAN; it shows `gateway status` and `gateway sessions`, then tears everything down.
``up`` does the same but keeps the lab running until Ctrl-C; ``down`` removes a lab left
behind.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from appliance.lab.dialup import HomeNetwork, lac_config, lns_sections
from appliance.lab.gateways import GatewayPair, LabGateway
from appliance.lab.iperf import iperf3_tcp, median
from appliance.lab.topology import LabError, Topology
from gateway.ppp.auth import nt_hash

WORKDIR = Path("/tmp/gateway-lab")
DIALIN_PSK = "lab-demo-dialin-psk"
ALICE_PASSWORD = "alice-lab-demo"


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show_cli(pair: GatewayPair, site: str, command: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "gateway", command, "-s", str(pair.socket(site))],
                          capture_output=True, text=True, timeout=10)
    print(proc.stdout + proc.stderr, end="", flush=True)


def capture_summary(topo: Topology, seconds: float = 2.0) -> str:
    """What crossed the internet router's link to the branch, as tcpdump saw it."""
    proc = subprocess.Popen(["ip", "netns", "exec", topo.inet_ns, "tcpdump", "-n", "-l", "-c", "6",
                             "-i", "to-branch", "not arp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(0.3)
    topo.ping(topo.hq.lan_ns, topo.branch.lan_host, count=3, interval=0.2)
    try:
        out, _ = proc.communicate(timeout=seconds + 3)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def dialin(topo: Topology, pair: GatewayPair) -> bool:
    """A remote user behind a home NAT dials HQ (L2TP/IPsec, MS-CHAPv2) and pings its LAN."""
    home = HomeNetwork(topo, clients_wanted=1)
    home.up()
    client = home.clients[0]
    say(f"a remote user (alice at {client.gw_public}, behind a home NAT {home.public}) dials hq: "
        "IKEv1 + L2TP + PPP MS-CHAPv2")
    config = lac_config(client, remote=topo.hq.gw_public, psk=DIALIN_PSK, user="alice",
                        password=ALICE_PASSWORD, remote_subnets=[topo.hq.lan_subnet])
    started = time.monotonic()
    with LabGateway.start(client, WORKDIR, "alice", config) as alice:
        line = ""
        while time.monotonic() - started < 20 and not line:
            line = next((text for text in alice.log_text().splitlines() if " ppp.up " in text), "")
            time.sleep(0.05)
        if not line:
            print(alice.log_tail(20))
            return False
        address = next(f.split("=", 1)[1] for f in line.split() if f.startswith("address="))
        say(f"PPP up in {(time.monotonic() - started) * 1000:.0f} ms: alice has {address} from the hq pool")
        sent, got = topo.ping(client.gw_ns, topo.hq.lan_host, count=5)
        say(f"ping alice {address} -> hq-lan {topo.hq.lan_host}: {got}/{sent} replies")
        say("gateway sessions (hq)")
        show_cli(pair, "hq", "sessions")
        say("gateway status (hq): the branch tunnel and the dial-in user side by side")
        show_cli(pair, "hq", "status")
    return got == sent


def demo(args: argparse.Namespace, keep: bool) -> int:
    topo = Topology(prefix=args.prefix)
    say(f"building the lab topology (namespaces {', '.join(topo.namespaces)})")
    topo.up()
    try:
        sent, got = topo.ping(topo.hq.lan_ns, topo.branch.lan_host, count=2, wait=0.5)
        say(f"without a tunnel: ping hq-lan {topo.hq.lan_host} -> branch-lan "
            f"{topo.branch.lan_host}: {got}/{sent} replies (the internet cannot route 10.x)")
        keys = "IKEv2, pre-shared key" if args.keying == "ike" else "manual keys"
        say(f"starting gateways: hq {topo.hq.gw_public} and branch {topo.branch.gw_public} "
            f"(ESP {args.algorithm}, {keys})")
        users = {"alice": {"nt_hash": nt_hash(ALICE_PASSWORD).hex()}}
        with GatewayPair(topo, WORKDIR, algorithm=args.algorithm, encapsulation=args.encapsulation,
                         keying=args.keying, hq_extra=lns_sections(psk=DIALIN_PSK, users=users)) as pair:
            if args.keying == "ike":
                started = time.monotonic()
                pair.wait_tunnel()
                say(f"IKEv2 tunnel up in {(time.monotonic() - started) * 1000:.0f} ms "
                    "(branch initiated, hq answered)")
            sent, got = topo.ping(topo.hq.lan_ns, topo.branch.lan_host, count=5)
            say(f"through the tunnel: ping {topo.hq.lan_host} -> {topo.branch.lan_host}: "
                f"{got}/{sent} replies")
            say("what the internet router sees on its link to the branch (tcpdump):")
            print(capture_summary(topo), end="", flush=True)
            say(f"iperf3 TCP {topo.hq.lan_host} -> {topo.branch.lan_host}, {args.seconds} s")
            runs = iperf3_tcp(topo, topo.branch.lan_ns, topo.branch.lan_host, topo.hq.lan_ns,
                              seconds=args.seconds, runs=1)
            print(f"   {median(runs):.3f} Gbit/s", flush=True)
            ok = got == sent
            ok = dialin(topo, pair) and ok
            say("gateway sas (branch)")
            show_cli(pair, "branch", "sas")
            if keep:
                say(f"lab is up; configs and logs in {WORKDIR}; try:\n"
                    f"   ip netns exec {topo.hq.lan_ns} ping {topo.branch.lan_host}\n"
                    f"   .venv/bin/gateway status -s {pair.socket('hq')}\n"
                    "   Ctrl-C to tear down")
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        say("tearing down")
        topo.down()
    say("demo passed" if ok else "demo FAILED: pings were lost")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.lab")
    parser.add_argument("action", choices=["demo", "up", "down"])
    parser.add_argument("--prefix", default="gwlab-")
    parser.add_argument("--algorithm", default="aes128gcm16")
    parser.add_argument("--encapsulation", choices=["none", "udp"], default="none")
    parser.add_argument("--keying", choices=["ike", "manual"], default="ike")
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        if args.action == "down":
            Topology(prefix=args.prefix).down()
            return 0
        if args.action == "up":
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        return demo(args, keep=args.action == "up")
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
