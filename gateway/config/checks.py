"""Rules that span several keys (pydantic checks each value on its own)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config.model import Config, Connection, ManualSa
from gateway.crypto.algorithms import INTEGRITY, UnknownAlgorithm, parse_esp_suite, parse_integrity
from gateway.ike.proposals import parse_child_proposal, parse_ike_proposal


@dataclass(frozen=True)
class Problem:
    path: tuple[str | int, ...]
    message: str
    warning: bool = False


def cross_checks(config: Config, directory: Path | None = None) -> list[Problem]:
    """``directory``: the config file's, against which relative key and certificate
    paths are read (as the daemon reads them)."""
    problems: list[Problem] = []
    names = list(config.connections)
    for i, name in enumerate(names):
        conn = config.connections[name]
        base = ("connections", name)
        problems += _connection(base, conn, config, directory)
        if conn.l2tp is not None:
            problems += _l2tp(base, conn, config)
        if conn.demand_dial is not None:
            problems += _demand_dial(base, conn)
        for other_name in names[:i]:
            other = config.connections[other_name]
            for subnet in conn.remote_subnets:
                if any(subnet.overlaps(o) for o in other.remote_subnets):
                    problems.append(Problem((*base, "remote_subnets"),
                                            f"{subnet} overlaps remote_subnets of {other_name}"))
    problems += _users(config)
    if config.policy is not None:
        problems += _policy(config)
    if config.logging.save_keys is not None:
        from gateway.keylog import directory_problem

        problem = directory_problem(config.logging.save_keys)
        if problem is not None:
            problems.append(Problem(("logging", "save_keys"), problem))
    return problems


def _l2tp(base: tuple[str, ...], conn: Connection, config: Config) -> list[Problem]:
    """L2TP rides IKEv1 transport-mode ESP (RFC 3193); an LNS needs a pool, a LAC a peer."""
    out: list[Problem] = []
    l2tp = conn.l2tp
    assert l2tp is not None
    if conn.keying != "ike" or conn.ike.version != 1 or conn.mode != "transport" or conn.protocol != "esp":
        out.append(Problem((*base, "l2tp"), "L2TP runs over IKEv1 ESP transport mode: "
                           "keying ike, ike.version 1, mode transport, protocol esp"))
    if conn.local_subnets or conn.remote_subnets:
        out.append(Problem((*base, "local_subnets" if conn.local_subnets else "remote_subnets"),
                           "an L2TP connection's SAs carry UDP 1701 between the two gateways: "
                           "put the subnets to route under l2tp (a LAC's remote_subnets)"))
    if l2tp.role == "lns":
        if l2tp.pool not in config.pools:
            known = ", ".join(sorted(config.pools)) or "none defined"
            out.append(Problem((*base, "l2tp", "pool"), f"no pool named {l2tp.pool!r} (pools: {known})"))
        if not config.users:
            out.append(Problem((*base, "l2tp"), "an LNS without users: nobody can log in", warning=True))
        for name, user in config.users.items():
            if "chap-md5" in l2tp.auth and user.password is None:
                out.append(Problem(("users", name), "CHAP-MD5 (in l2tp.auth of "
                                   f"{base[-1]}) needs the clear password; this user cannot use it",
                                   warning=True))
    else:
        if conn.remote == "%any":
            out.append(Problem((*base, "remote"), "a LAC dials one LNS: give its address"))
        if l2tp.redial_min > l2tp.redial_max:
            out.append(Problem((*base, "l2tp", "redial_min"), "redial_min is longer than redial_max"))
    return out


def _demand_dial(base: tuple[str, ...], conn: Connection) -> list[Problem]:
    """A demand-dial interface dials one peer, over IKE, for traffic to known subnets."""
    out = []
    dd = conn.demand_dial
    assert dd is not None
    where = (*base, "demand_dial")
    if conn.keying != "ike":
        out.append(Problem(where, "demand-dial needs IKE keying (manual SAs are always up)"))
    if conn.remote == "%any":
        out.append(Problem((*base, "remote"), "demand-dial needs the peer's address to dial"))
    if conn.ike.start == "start":
        out.append(Problem((*base, "ike", "start"),
                           "a demand-dial connection starts on traffic: leave ike.start out "
                           "(or set demand_dial.persistent to keep it up)"))
    if conn.l2tp is not None and conn.l2tp.role == "lns":
        out.append(Problem(where, "an LNS answers calls: demand-dial is for the LAC"))
    elif conn.l2tp is not None and not conn.l2tp.remote_subnets:
        out.append(Problem((*base, "l2tp", "remote_subnets"),
                           "demand-dial over L2TP needs the remote subnets whose traffic dials"))
    elif conn.l2tp is None and conn.mode != "tunnel":
        out.append(Problem((*base, "mode"), "demand-dial is for tunnel mode (or an L2TP LAC)"))
    if dd.redial_min > dd.redial_max:
        out.append(Problem((*where, "redial_min"), "redial_min is longer than redial_max"))
    if dd.queue == 0 and not dd.persistent:
        out.append(Problem((*where, "queue"), "with no queue the packet that dials is dropped",
                           warning=True))
    return out


def _policy(config: Config) -> list[Problem]:
    """The policy section resolved against the connections and compiled for this gateway
    (`gateway.policy.runtime`): the first error, or the warnings."""
    from gateway.policy.model import PolicyError
    from gateway.policy.runtime import plan_policy

    try:
        runtime = plan_policy(config)
    except PolicyError as exc:
        return [Problem(exc.path or ("policy",), str(exc))]
    assert runtime is not None
    return [Problem(path, message, warning=True) for path, message in runtime.warnings]


def _users(config: Config) -> list[Problem]:
    out: list[Problem] = []
    for name, user in config.users.items():
        if user.nt_hash is None and user.password_hash is None and user.password is None:
            out.append(Problem(("users", name), "give nt_hash, password_hash or password"))
        if user.nt_hash is not None and len(user.nt_hash) != 16:
            out.append(Problem(("users", name, "nt_hash"), "an NT hash is 16 octets (32 hex digits)"))
        if user.password_hash is not None:
            from gateway.ppp.auth import UserSecret

            try:
                UserSecret(salted=user.password_hash)
            except ValueError as exc:
                out.append(Problem(("users", name, "password_hash"), str(exc)))
    return out


def _connection(base: tuple[str, ...], conn: Connection, config: Config,
                directory: Path | None = None) -> list[Problem]:
    out: list[Problem] = []
    if conn.protocol == "ah" and conn.encapsulation == "udp":
        out.append(Problem((*base, "encapsulation"),
                           "AH cannot be UDP-encapsulated: it does not traverse NAT (RFC 3948)"))
    if conn.mode == "tunnel" and conn.keying == "manual":
        if not conn.local_subnets:
            out.append(Problem((*base, "local_subnets"), "a tunnel needs at least one local subnet"))
        if not conn.remote_subnets:
            out.append(Problem((*base, "remote_subnets"), "a tunnel needs at least one remote subnet"))
    for i, proposal in enumerate(conn.proposals.esp):
        try:
            parse_child_proposal(proposal)
        except UnknownAlgorithm as exc:
            out.append(Problem((*base, "proposals", "esp", i), str(exc)))
    if conn.keying == "ike":
        for i, proposal in enumerate(conn.proposals.ike):
            try:
                if parse_ike_proposal(proposal).weak:
                    out.append(Problem((*base, "proposals", "ike", i),
                                       f"{proposal} is weak: only for legacy peers", warning=True))
            except UnknownAlgorithm as exc:
                out.append(Problem((*base, "proposals", "ike", i), str(exc)))
        if conn.pool is not None and conn.pool not in config.pools:
            known = ", ".join(sorted(config.pools)) or "none defined"
            out.append(Problem((*base, "pool"), f"no pool named {conn.pool!r} (pools: {known})"))
        if conn.mode == "tunnel":
            if not conn.local_subnets:
                out.append(Problem((*base, "local_subnets"), "a tunnel needs at least one local subnet"))
            if not conn.remote_subnets and conn.pool is None:
                out.append(Problem((*base, "remote_subnets"), "a tunnel needs at least one remote subnet"))
        out += _auth_files(base, conn, directory)
        if conn.ike.version == 1:
            out += _ikev1(base, conn)
        if conn.remote == "%any":
            if conn.ike.start == "start":
                out.append(Problem((*base, "ike", "start"),
                                   "cannot initiate to %any: give the peer's address"))
            if conn.auth is not None and conn.auth.method == "psk" and conn.auth.remote_id is None \
                    and conn.l2tp is None:  # L2TP/IPsec: a group key; PPP authenticates each user
                out.append(Problem((*base, "auth", "remote_id"),
                                   "a pre-shared key for %any peers needs the peer's remote_id"))
    if conn.keying == "manual":
        out += _manual(base, conn)
    else:
        if conn.auth is None:
            out.append(Problem((*base, "auth"), "IKE keying needs an auth section (psk or cert)"))
        elif conn.auth.method == "psk" and (conn.auth.psk is None) == (conn.auth.psk_file is None):
            out.append(Problem((*base, "auth"), "give exactly one of psk or psk_file"))
        if conn.manual is not None:
            out.append(Problem((*base, "manual"), "manual SAs need keying: manual"))
    return out


def _ikev1(base: tuple[str, ...], conn: Connection) -> list[Problem]:
    """What IKEv1 cannot carry: AEAD in Phase 1, several selectors per SA, Mode Config."""
    from gateway.ike.v1.negotiation import ESP_CIPHERS, HASH_OF_INTEGRITY, P1_CIPHERS

    out: list[Problem] = []
    for i, text in enumerate(conn.proposals.ike):
        try:
            p = parse_ike_proposal(text)
        except UnknownAlgorithm:
            continue  # reported already
        bad = [e.name for e in p.encryption if e.name not in P1_CIPHERS]
        bad += [i.name for i in p.integrity if i.name not in HASH_OF_INTEGRITY]
        if bad or not p.integrity:
            out.append(Problem((*base, "proposals", "ike", i),
                               f"IKEv1 Phase 1 cannot use {', '.join(bad) or 'an AEAD cipher'}: it takes "
                               f"{', '.join(P1_CIPHERS)} with {', '.join(HASH_OF_INTEGRITY)}"))
    for i, text in enumerate(conn.proposals.esp):
        try:
            p = parse_child_proposal(text)
        except UnknownAlgorithm:
            continue
        bad = [e.name for e in p.encryption if e.name not in ESP_CIPHERS]
        if bad:
            out.append(Problem((*base, "proposals", "esp", i),
                               f"IKEv1 Quick Mode cannot negotiate {', '.join(bad)}"))
    if conn.pool is not None:
        out.append(Problem((*base, "pool"), "IKEv1 connections cannot hand out addresses (no Mode Config): "
                           "use L2TP/PPP or IKEv2"))
    if conn.mode == "tunnel" and (len(conn.local_subnets) > 1 or len(conn.remote_subnets) > 1):
        out.append(Problem((*base, "local_subnets" if len(conn.local_subnets) > 1 else "remote_subnets"),
                           "an IKEv1 connection carries one local and one remote subnet: make one "
                           "connection per pair"))
    return out


def _auth_files(base: tuple[str, ...], conn: Connection, directory: Path | None) -> list[Problem]:
    """Files named by the auth section must exist, load, and (keys) be private to the
    gateway (`gateway.config.secretfiles`); keys never reach a message."""
    from gateway.ike.v2 import fromconfig

    auth = conn.auth
    if auth is None:
        return []
    problems = []
    try:
        fromconfig.load_auth(auth, directory)
    except fromconfig.AuthConfigError as exc:
        problems.append(Problem((*base, "auth", exc.key), str(exc)))
    for key, text in (("id", auth.id), ("remote_id", auth.remote_id)):
        if text is not None:
            try:
                fromconfig.parse_identity(text)
            except ValueError as exc:
                problems.append(Problem((*base, "auth", key), str(exc)))
    return problems


def _manual(base: tuple[str, ...], conn: Connection) -> list[Problem]:
    out: list[Problem] = []
    if conn.manual is None:
        return [Problem((*base, "manual"), "keying: manual needs a manual section")]
    if not conn.remote[0].isdigit():
        out.append(Problem((*base, "remote"), "manually keyed SAs need an IP address, not a name"))
    for direction in ("outbound", "inbound"):
        sa: ManualSa = getattr(conn.manual, direction)
        path = (*base, "manual", direction)
        out += _manual_sa(path, sa, conn.protocol)
        suite_name = sa.algorithm.lower()
        try:
            if conn.protocol == "esp" and parse_esp_suite(suite_name).weak:
                out.append(Problem((*path, "algorithm"),
                                   f"{suite_name} is weak: only for legacy peers", warning=True))
        except UnknownAlgorithm:
            pass
    if conn.manual.outbound.spi == conn.manual.inbound.spi:
        out.append(Problem((*base, "manual", "inbound", "spi"),
                           "inbound and outbound SPIs should differ", warning=True))
    return out


def _manual_sa(path: tuple[str | int, ...], sa: ManualSa, protocol: str) -> list[Problem]:
    out: list[Problem] = []
    if protocol == "ah":
        try:
            integ = parse_integrity(sa.algorithm)
        except UnknownAlgorithm:
            return [Problem((*path, "algorithm"),
                            f"unknown AH algorithm {sa.algorithm!r} (known: {', '.join(INTEGRITY)})")]
        if sa.encryption_key is not None:
            out.append(Problem((*path, "encryption_key"), "AH has no encryption key"))
        if sa.integrity_key is None:
            out.append(Problem((*path, "integrity_key"), "required key is missing"))
        elif len(sa.integrity_key) != integ.key_size:
            out.append(Problem((*path, "integrity_key"),
                               f"{integ.name} needs {integ.key_size} octets, got {len(sa.integrity_key)}"))
        return out
    try:
        suite = parse_esp_suite(sa.algorithm)
    except UnknownAlgorithm as exc:
        return [Problem((*path, "algorithm"), str(exc))]
    enc = suite.encryption
    if enc.keymat_size:
        if sa.encryption_key is None:
            out.append(Problem((*path, "encryption_key"), "required key is missing"))
        elif len(sa.encryption_key) != enc.keymat_size:
            salt = " including the 4-octet salt (RFC 4106 8.1)" if enc.salt_size else ""
            out.append(Problem((*path, "encryption_key"),
                               f"{enc.name} needs {enc.keymat_size} octets{salt}, "
                               f"got {len(sa.encryption_key)}"))
    elif sa.encryption_key is not None:
        out.append(Problem((*path, "encryption_key"), "null encryption takes no key"))
    if suite.integrity is None:
        if sa.integrity_key is not None:
            out.append(Problem((*path, "integrity_key"), f"{enc.name} is AEAD: no integrity key"))
    elif sa.integrity_key is None:
        out.append(Problem((*path, "integrity_key"), "required key is missing"))
    elif len(sa.integrity_key) != suite.integrity.key_size:
        out.append(Problem((*path, "integrity_key"),
                           f"{suite.integrity.name} needs {suite.integrity.key_size} octets, "
                           f"got {len(sa.integrity_key)}"))
    return out
