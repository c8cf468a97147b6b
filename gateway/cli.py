"""The `gateway` command: run the daemon, check a config, talk to a running daemon, run the PKI."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

DEFAULT_SOCKET = "/run/gateway/control.sock"


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    if args.config:
        from gateway.config import ConfigError, load_config

        try:
            return load_config(args.config).config.control.socket
        except ConfigError as exc:
            raise SystemExit(f"gateway: {exc}") from None
    return os.environ.get("GATEWAY_SOCKET", DEFAULT_SOCKET)


def cmd_run(args: argparse.Namespace) -> int:
    from gateway import logs
    from gateway.config import ConfigError, load_config
    from gateway.daemon import StartupError, run

    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    logging_cfg = loaded.config.logging
    logs.setup(args.log_level or logging_cfg.level, args.log_format or logging_cfg.format)
    try:
        run(loaded)
    except StartupError as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config

    status = 0
    for path in args.files:
        try:
            loaded = load_config(path)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            status = 1
            continue
        for warning in loaded.warnings:
            print(warning, file=sys.stderr)
        conns = loaded.config.connections
        print(f"{path}: OK ({len(conns)} connection{'s' if len(conns) != 1 else ''})")
    return status


def _request(args: argparse.Namespace, command: str, **extra: Any) -> Any:
    from gateway.control.protocol import ControlError, request

    try:
        return request(_socket_path(args), command, **extra)
    except ControlError as exc:
        raise SystemExit(f"gateway: {exc}") from None


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_status(args: argparse.Namespace) -> int:
    st = _request(args, "status")
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"gateway {st['name']} (pid {st['pid']}, version {st['version']}), up {st['uptime']:.0f} s")
    print(f"  dataplane: {st['backend']} on {st['tun']}, public address {st['public_address']}")
    edge = st["edge"]
    edge_drops = sum(c["packets"] for c in edge["counters"].values())
    print(f"  edge filter: {'nftables' if edge['nftables'] else 'userspace only'}"
          f"{f', {edge_drops} dropped' if edge['nftables'] else ''}")
    print(f"  connections: {len(st['connections'])}")
    demands = {d["connection"]: d for d in st.get("demand") or []}
    for c in st["connections"]:
        nets = f"  {','.join(c['local'])} <=> {','.join(c['remote'])}" if c["local"] or c["remote"] else ""
        print(f"    {c['name']}: {c['state']} ({c['keying']}, {c['mode']}, {c['algorithm']}) "
              f"peer {c['peer']}{nets}")
        print(f"      out: {c['packets_out']} packets, {_human(c['bytes_out'])}   "
              f"in: {c['packets_in']} packets, {_human(c['bytes_in'])}, {c['drops_in']} dropped")
        demand = demands.get(c["name"])
        if demand is not None:
            print(f"      demand-dial: {_demand_state(demand)}; {demand['connects']} of {demand['dials']} "
                  f"dial(s) up, {demand['failures']} failed, {demand['idle_disconnects']} idle hang-up(s)")
    drops = st["drops"]
    if drops:
        print("  dataplane drops: " + ", ".join(f"{k}={v}" for k, v in sorted(drops.items())))
    else:
        print("  dataplane drops: none")
    ike = st.get("ike")
    if ike:
        half = ", ".join(f"{k}={v}" for k, v in sorted(ike.get("half_open", {}).items()))
        print(f"  ike: {ike['ike_sas']} SA(s){f', half-open {half}' if half else ''}")
        if ike.get("dropped"):
            print("    dropped: " + ", ".join(f"{k}={v}" for k, v in sorted(ike["dropped"].items())))
    dialup = st.get("dialup")
    if dialup is not None:
        print(f"  dial-up: {dialup['l2tp_tunnels']} L2TP tunnel(s), {dialup['sessions_up']} of "
              f"{dialup['sessions']} PPP session(s) up")
        for title, counts in (("authentication failures", dialup["auth_failures"]),
                              ("refused", dialup["refused"]), ("dropped", dialup["drops"])):
            if counts:
                print(f"    {title}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def _demand_state(d: dict[str, Any]) -> str:
    state = d["state"]
    if state == "idle":
        held = f", {d['held']} packet(s) held" if d['held'] else ""
        return f"on hook{held}"
    if state == "dialing":
        return f"dialing for {d['for']} s, {d['held']} packet(s) held"
    if state == "backoff":
        return f"next dial in {d.get('retry_in', 0)} s"
    return f"up, idle {d['idle']} s" if "idle" in d else "up"


def cmd_reload(args: argparse.Namespace) -> int:
    """Re-read the daemon's config file (what SIGHUP does) and show what changed."""
    result = _request(args, "reload", timeout=30.0)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for key in ("added", "removed", "unchanged"):
        print(f"{key}: {', '.join(result[key]) or '-'}")
    changed = ", ".join(f"{name} ({', '.join(keys)})" for name, keys in result["changed"].items())
    print(f"changed: {changed or '-'}")
    for kind in ("pools", "users"):
        parts = [f"{what} {', '.join(names)}" for what, names in result[kind].items() if names]
        if parts:
            print(f"{kind}: " + "; ".join(parts))
    for key in result["needs_restart"]:
        print(f"needs a restart (the running value stays): {key}")
    return 0


def cmd_sas(args: argparse.Namespace) -> int:
    result = _request(args, "sas")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for ike in result.get("ike_sas", []):
        role = "initiator" if ike["initiator"] else "responder"
        kind = "ISAKMP SA (IKEv1)" if ike.get("version") == 1 else "IKE SA"
        print(f"{ike['name']}: {kind} {ike['ike_sa']} {ike['state']} ({role}), "
              f"{ike['local']} [{ike['local_id']}] <=> {ike['remote']} [{ike['remote_id']}]")
        nat = [side for side, flag in (("local", ike["nat_local"]), ("remote", ike["nat_remote"])) if flag]
        print(f"  {ike['algorithm']}, auth {ike['auth'] or '-'}, NAT {'/'.join(nat) or 'none'}, "
              f"up {ike['established_for']} s, rekey in {ike['rekey_in']} s")
        if ike.get("vendor_ids"):
            print(f"  vendor IDs: {', '.join(ike['vendor_ids'])}")
        for child in ike["children"]:
            print(f"  {child['name']}: CHILD SA {child['state']} {child['mode']} {child['algorithm']} "
                  f"in {child['spi_in']} out {child['spi_out']}, rekey in {child['rekey_in']} s, "
                  f"expires in {child['expire_in']} s")
            print(f"    {','.join(child['local_ts'])} === {','.join(child['remote_ts'])}")
    sas = result["sas"]
    if not sas:
        print("no SAs in the dataplane")
        return 0
    header = f"{'connection':<12} {'dir':<3} {'proto':<5} {'spi':<10} {'mode':<9} {'algorithm':<16} " \
             f"{'encap':<16} {'packets':>10} {'bytes':>12} {'drops':>7}"
    print(header)
    for sa in sas:
        print(f"{sa['name']:<12} {sa['direction']:<3} {sa['protocol']:<5} {sa['spi']:<10} "
              f"{sa['mode']:<9} {sa['algorithm']:<16} {sa['encap'] or '-':<16} "
              f"{sa['packets']:>10} {sa['bytes']:>12} {sa['drops']:>7}")
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    result = _request(args, "sessions")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    sessions = result["sessions"]
    if not sessions:
        print("no L2TP/PPP sessions")
    for s in sessions:
        print(f"{s['user'] or '?':<20} {s['address'] or '-':<15} {s['connection']} ({s['role']}) "
              f"peer {s['peer']} {s['state']} {s['uptime']} s, "
              f"in {s['packets_in']} pkts/{s['bytes_in']} B, out {s['packets_out']} pkts/{s['bytes_out']} B")
    return 0


def cmd_kick(args: argparse.Namespace) -> int:
    result = _request(args, "kick", user=args.user)
    print(f"closing {result['sessions']} session(s) of {result['user']}")
    return 0 if result["sessions"] else 1


def cmd_up(args: argparse.Namespace) -> int:
    result = _request(args, "up", name=args.name)
    print(f"initiating {result['initiated']}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    result = _request(args, "down", name=args.name)
    print(f"closing {result['terminated']}: {result['ike_sas']} IKE SA(s)")
    return 0


def cmd_rekey(args: argparse.Namespace) -> int:
    result = _request(args, "rekey", name=args.name, ike=args.ike)
    kind = "IKE" if args.ike else "CHILD"
    print(f"rekeying {kind} SAs of {result['rekeyed']}: {result['ike_sas']} IKE SA(s)")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    """Random keys of the right length for a manually keyed SA."""
    from gateway.crypto.algorithms import UnknownAlgorithm, parse_esp_suite

    try:
        suite = parse_esp_suite(args.algorithm)
    except UnknownAlgorithm as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    if suite.encryption.keymat_size:
        print(f"encryption_key: 0x{os.urandom(suite.encryption.keymat_size).hex()}")
    if suite.integrity is not None:
        print(f"integrity_key: 0x{os.urandom(suite.integrity.key_size).hex()}")
    return 0


def cmd_pki(args: argparse.Namespace) -> int:
    """`gateway pki ...`: the logic is in appliance.pki and appliance.bundle."""
    from appliance import bundle, pki

    try:
        if args.pki_command == "ca":
            issuer = pki.Issued.load(args.directory, args.issuer) if args.issuer else None
            made = pki.make_ca(args.directory, args.name, kind=args.kind, days=args.days, issuer=issuer,
                               path_length=args.path_length, organization=args.org, overwrite=args.force)
            _print_issued(made)
        elif args.pki_command == "issue":
            ca = pki.Issued.load(args.directory, args.ca)
            if args.profile == "gateway":
                if args.email:
                    raise pki.PkiError("--email is for client certificates")
                made = pki.issue_gateway(args.directory, ca, args.name, dns=args.dns, ip=args.ip,
                                         kind=args.kind, days=args.days, organization=args.org,
                                         overwrite=args.force)
            else:
                made = pki.issue_client(args.directory, ca, args.name, email=args.email, dns=args.dns,
                                        ip=args.ip, kind=args.kind, days=args.days,
                                        organization=args.org, overwrite=args.force)
            _print_issued(made)
        elif args.pki_command == "bundle":
            material = bundle.load_material(args.directory, args.ca, args.name)
            if args.password_file is not None:
                password = bundle.password_from_file(args.password_file)
            elif sys.stdin.isatty():
                password = bundle.password_from_prompt()
            else:
                raise pki.PkiError("no terminal to ask for the bundle password on: give "
                                   "--password-file FILE (- reads standard input)")
            out = bundle.export_pkcs12(material, args.out, password, encryption=args.encryption,
                                       overwrite=args.force)
            print(f"wrote {out} (PKCS#12, {args.encryption}): {args.name} with its key and "
                  f"{len(material.cas)} CA certificate(s)")
            if args.pem is not None:
                for path in bundle.export_pem(material, args.pem, password, overwrite=args.force):
                    print(f"wrote {path}")
        elif args.pki_command == "list":
            infos = pki.inventory(args.directory)
            if not infos:
                print(f"no certificates in {args.directory}")
            for info in infos:
                print(info.summary())
        else:  # show
            path = args.directory / f"{args.name}.crt"
            print("\n".join(pki.certificate_info(path).lines()))
    except ValueError as exc:  # PkiError, and cryptography's own refusals
        print(f"gateway pki: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_issued(made: Any) -> None:
    from appliance import pki

    print(f"wrote {made.cert_path}")
    print(f"wrote {made.key_path} (private key, mode 0600)")
    print("\n".join(pki.certificate_info(made.cert_path).lines()[1:]))


def _add_pki_parser(sub: Any) -> None:
    from pathlib import Path

    kinds = ["rsa", "rsa3072", "rsa4096", "ecdsa256", "ecdsa384"]
    pki = sub.add_parser("pki", help="a CA, gateway and client certificates, client bundles",
                         description="A small PKI for the gateway and its IKE clients. Files live in "
                         "DIR as NAME.crt and NAME.key (mode 0600); nothing is overwritten without --force.")
    cmds = pki.add_subparsers(dest="pki_command", required=True, metavar="COMMAND")

    p = cmds.add_parser("ca", help="make a root CA, or an intermediate CA with --issuer")
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("name", metavar="NAME", help="the CA's name: its CN and file name")
    p.add_argument("--kind", choices=kinds, default="rsa", help="key type (default rsa: RSA 2048)")
    p.add_argument("--days", type=int, default=3650, help="validity (default 3650)")
    p.add_argument("--issuer", metavar="CA", help="make an intermediate signed by this CA (in DIR)")
    p.add_argument("--path-length", type=int, help="pathLenConstraint")
    p.add_argument("--org", help="O= of the subject (default: the issuer's, else 'Gateway Lab')")
    p.add_argument("--force", action="store_true", help="replace existing files")

    p = cmds.add_parser("issue", help="issue a gateway or client certificate")
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("--ca", required=True, metavar="CA", help="the issuing CA (in DIR)")
    p.add_argument("name", metavar="NAME", help="the certificate's CN and file name")
    role = p.add_mutually_exclusive_group(required=True)
    role.add_argument("--gateway", dest="profile", action="store_const", const="gateway",
                      help="server profile: serverAuth + IKE intermediate EKUs, the names clients dial")
    role.add_argument("--client", dest="profile", action="store_const", const="client",
                      help="client profile: clientAuth + IKE intermediate EKUs, the client's identity")
    p.add_argument("--dns", action="append", default=[], metavar="NAME", help="DNS name (repeatable)")
    p.add_argument("--ip", action="append", default=[], metavar="ADDRESS", help="IP address (repeatable)")
    p.add_argument("--email", action="append", default=[], metavar="ADDRESS",
                   help="e-mail address, for a user's client certificate (repeatable)")
    p.add_argument("--kind", choices=kinds, default="rsa", help="key type (default rsa: RSA 2048)")
    p.add_argument("--days", type=int, default=825, help="validity (default 825, capped at the CA's)")
    p.add_argument("--org", help="O= of the subject (default: the CA's)")
    p.add_argument("--force", action="store_true", help="replace existing files")

    p = cmds.add_parser("bundle", help="export a certificate, its key and CA chain as PKCS#12",
                        description="The password is read from --password-file (the first line; - is "
                        "standard input) or asked for on the terminal; it is never an argument.")
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("--ca", required=True, metavar="CA", help="the CA that issued NAME (in DIR)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("out", type=Path, metavar="OUT.p12")
    p.add_argument("--password-file", metavar="FILE", help="read the password from FILE (- for stdin)")
    p.add_argument("--encryption", choices=["compat", "aes256"], default="compat",
                   help="compat (3DES/SHA-1, imports everywhere; default) or aes256")
    p.add_argument("--pem", type=Path, metavar="PEMDIR",
                   help="also write NAME.crt, NAME.key (encrypted with the password) and NAME-ca.crt")
    p.add_argument("--force", action="store_true", help="replace existing files")

    p = cmds.add_parser("list", help="list the certificates in DIR")
    p.add_argument("directory", type=Path, metavar="DIR")

    p = cmds.add_parser("show", help="show one certificate: subject, names, usages, validity, fingerprints")
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("name", metavar="NAME")
    pki.set_defaults(func=cmd_pki)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="VPN gateway appliance")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the gateway in the foreground")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--log-format", choices=["text", "json"])
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate configuration files")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_check_config)

    for name, func, text in (("status", cmd_status, "show the running gateway"),
                             ("sas", cmd_sas, "list security associations"),
                             ("sessions", cmd_sessions, "list L2TP/PPP sessions"),
                             ("reload", cmd_reload, "re-read the config file (as SIGHUP does); "
                                                    "unchanged tunnels stay up")):
        p = sub.add_parser(name, help=text)
        p.add_argument("-s", "--socket", help="control socket of the daemon")
        p.add_argument("-c", "--config", help="take the control socket from this config")
        p.add_argument("--json", action="store_true", help="print the raw JSON reply")
        p.set_defaults(func=func)

    for name, func, text in (("up", cmd_up, "bring an IKE connection up (and keep it up)"),
                             ("down", cmd_down, "close an IKE connection's SAs"),
                             ("rekey", cmd_rekey, "rekey a connection's CHILD (or, with --ike, IKE) SAs")):
        p = sub.add_parser(name, help=text)
        p.add_argument("name", help="connection name from the config")
        p.add_argument("-s", "--socket", help="control socket of the daemon")
        p.add_argument("-c", "--config", help="take the control socket from this config")
        if name == "rekey":
            p.add_argument("--ike", action="store_true", help="rekey the IKE SA instead")
        p.set_defaults(func=func)

    p = sub.add_parser("kick", help="end a dial-in user's L2TP/PPP sessions")
    p.add_argument("user")
    p.add_argument("-s", "--socket", help="control socket of the daemon")
    p.add_argument("-c", "--config", help="take the control socket from this config")
    p.set_defaults(func=cmd_kick)

    p = sub.add_parser("keygen", help="print random keys for a manually keyed SA")
    p.add_argument("algorithm", help="e.g. aes128gcm16, aes256-sha256")
    p.set_defaults(func=cmd_keygen)

    _add_pki_parser(sub)

    from gateway.policy.cli import register as register_policy

    register_policy(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
