"""Prepare the host at boot, before the gateway starts: kernel settings and the edge filter.

    python -m appliance.boot /etc/gateway/gateway.yaml            # what gateway-boot.service runs
    python -m appliance.boot /etc/gateway/gateway.yaml --dry-run  # print, change nothing

The edge ruleset goes in first so that the public address is filtered from the moment
the box is up, not only once the gateway process has started (and it stays when the
gateway stops: the edge fails closed).  The sysctls are those a routing VPN gateway
needs: forwarding on, redirects and source routes off (an attacker on the Internet side
must not steer our routing), loose reverse-path filtering (decapsulated traffic arrives
on the TUN with addresses routed elsewhere), SYN cookies, and socket buffers large
enough for the userspace dataplane's UDP bursts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from appliance import edge as nft
from gateway.config import ConfigError, LoadedConfig, load_config
from gateway.dataplane.edge import EdgePolicy, ManagementRule

#: net.* settings (as /proc/sys paths) and their values.  net.* sysctls are per network
#: namespace, so a test can apply them in a namespace of its own.
SYSCTLS: dict[str, str] = {
    "net/ipv4/ip_forward": "1",
    "net/ipv4/conf/all/accept_redirects": "0",
    "net/ipv4/conf/default/accept_redirects": "0",
    "net/ipv4/conf/all/send_redirects": "0",
    "net/ipv4/conf/default/send_redirects": "0",
    "net/ipv4/conf/all/accept_source_route": "0",
    "net/ipv4/conf/default/accept_source_route": "0",
    "net/ipv4/conf/all/rp_filter": "2",
    "net/ipv4/conf/default/rp_filter": "2",
    "net/ipv4/icmp_echo_ignore_broadcasts": "1",
    "net/ipv4/tcp_syncookies": "1",
}
#: Host-wide settings (not per namespace: only the initial namespace may set them), applied
#: where allowed; elsewhere they are reported and skipped.
HOST_SYSCTLS: dict[str, str] = {
    "net/core/rmem_max": "8388608",
    "net/core/wmem_max": "8388608",
}


def edge_policy(loaded: LoadedConfig) -> EdgePolicy:
    """The edge filter the config asks for (the same one the gateway applies itself)."""
    cfg = loaded.config
    mgmt = tuple(ManagementRule(m.source, m.protocol, m.port) for m in cfg.edge.management)
    return EdgePolicy(cfg.gateway.public_interface, cfg.gateway.public_address, mgmt)


def apply_sysctls(values: dict[str, str], root: Path = Path("/proc/sys")) -> list[str]:
    """Write the values that differ; returns "name=value" for each one changed."""
    changed = []
    for path, value in values.items():
        target = root / path
        if target.read_text().strip() != value:
            target.write_text(value)
            changed.append(f"{path.replace('/', '.')}={value}")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.boot", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the gateway's configuration file")
    parser.add_argument("--dry-run", action="store_true", help="print what would be applied")
    args = parser.parse_args(argv)
    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        print(f"appliance.boot: {exc}", file=sys.stderr)
        return 2
    cfg = loaded.config
    ruleset = nft.render(edge_policy(loaded), cfg.gateway.name) if cfg.edge.nftables else ""
    if args.dry_run:
        for path, value in {**SYSCTLS, **HOST_SYSCTLS}.items():
            print(f"sysctl {path.replace('/', '.')}={value}")
        print(ruleset or "# edge.nftables is off: no ruleset", end="")
        return 0
    try:
        changed = apply_sysctls(SYSCTLS)
    except OSError as exc:
        print(f"appliance.boot: cannot set sysctls: {exc}", file=sys.stderr)
        return 1
    print(f"appliance.boot: sysctls {'changed: ' + ' '.join(changed) if changed else 'already set'}")
    for path, value in HOST_SYSCTLS.items():
        try:
            changed = apply_sysctls({path: value})
        except OSError as exc:  # a container or a network namespace: the host decides
            print(f"appliance.boot: {path.replace('/', '.')} left as it is ({exc.strerror})")
    if ruleset:
        if not nft.available():
            print("appliance.boot: nft not found: the edge filter is not applied", file=sys.stderr)
            return 1
        try:
            nft.apply(ruleset)
        except nft.EdgeError as exc:
            print(f"appliance.boot: {exc}", file=sys.stderr)
            return 1
        print(f"appliance.boot: edge filter applied on {loaded.config.gateway.public_interface} "
              f"({loaded.config.gateway.public_address})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
