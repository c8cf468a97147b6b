"""What a reload (SIGHUP, `gateway reload`) changes: the running config against the file.

`plan()` is pure: it compares the running config with the one just loaded and says which
connections are added, removed, changed (and in which keys) or unchanged, which pools
and users changed, and which settings only a restart can apply.  Those keep their running
values: the plan's `config` is the new file with them put back, so the daemon never runs
half of a change it cannot make.  The daemon applies the plan and leaves unchanged
connections alone, so their SAs (and SPIs) live on (issue 6: "re-reads the config
without dropping unchanged tunnels").

A connection is changed when any of its own keys differs, when a pool it uses changes,
or when the content of a file its authentication names (PSK file, certificate, key,
CAs) changes: `fingerprints()` digests those, the only I/O here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from gateway.config.model import CertAuth, Config, Connection, L2tpServer, PskAuth

#: Sections the running daemon is built on (sockets, the TUN device, the edge ruleset,
#: the metrics listener, log handlers): a change waits for a restart.
RESTART_SECTIONS = ("gateway", "dataplane", "edge", "control", "metrics", "logging")

#: Digests are keyed per process, so even a memory dump of them says nothing about a
#: pre-shared key file's content.
_DIGEST_KEY = os.urandom(32)


@dataclass(frozen=True)
class Changed:
    """A connection whose settings differ: ``keys`` names what (never a value)."""

    name: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class NeedsRestart:
    """A setting the reload cannot apply; the running value stays until a restart."""

    key: str
    reason: str


@dataclass(frozen=True)
class ReloadPlan:
    #: what runs after the reload: the new file, restart-only settings (and pools still
    #: in use) as they were
    config: Config = field(repr=False)
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[Changed, ...] = ()
    unchanged: tuple[str, ...] = ()
    pools_added: tuple[str, ...] = ()
    pools_removed: tuple[str, ...] = ()
    pools_changed: tuple[str, ...] = ()
    users_added: tuple[str, ...] = ()
    users_removed: tuple[str, ...] = ()
    users_changed: tuple[str, ...] = ()
    #: the global `ike` section (retransmission, cookie threshold) changed: applied live
    ike_settings: bool = False
    restart: tuple[NeedsRestart, ...] = ()

    @property
    def going(self) -> tuple[str, ...]:
        """Connections whose running state ends: removed, and changed (before re-adding)."""
        return self.removed + tuple(c.name for c in self.changed)

    @property
    def coming(self) -> tuple[str, ...]:
        """Connections to set up from the new config: added, and changed."""
        return self.added + tuple(c.name for c in self.changed)

    @property
    def empty(self) -> bool:
        """Nothing to apply (restart-only differences aside)."""
        return not (self.added or self.removed or self.changed or self.pools_added or self.pools_removed
                    or self.pools_changed or self.users_added or self.users_removed or self.users_changed
                    or self.ike_settings)


def auth_files(conn: Connection) -> tuple[str, ...]:
    """The files a connection's authentication reads (as written in the config)."""
    auth = conn.auth
    if isinstance(auth, PskAuth):
        return (auth.psk_file,) if auth.psk_file is not None else ()
    if isinstance(auth, CertAuth):
        return (auth.cert, auth.key, *auth.ca)
    return ()


def fingerprints(config: Config, base: Path | None) -> dict[str, bytes]:
    """Per connection, a keyed digest of the content of its authentication files
    (relative paths from ``base``, as `gateway.ike.v2.fromconfig` reads them). A file that
    cannot be read digests as such; loading it refuses the reload later, with the reason."""
    out = {}
    for name, conn in config.connections.items():
        files = auth_files(conn)
        if not files:
            continue
        mac = hmac.new(_DIGEST_KEY, digestmod=hashlib.sha256)
        for text in files:
            path = Path(text)
            if not path.is_absolute() and base is not None:
                path = base / path
            try:
                data = path.read_bytes()
            except OSError as exc:
                data = f"unreadable: {exc.errno}".encode()
            mac.update(len(text).to_bytes(4, "big") + text.encode())
            mac.update(len(data).to_bytes(8, "big") + data)
        out[name] = mac.digest()
    return out


def _pools_of(conn: Connection) -> set[str]:
    names = {conn.pool} if conn.pool is not None else set()
    if isinstance(conn.l2tp, L2tpServer):
        names.add(conn.l2tp.pool)
    return names


def _differing(old: BaseModel, new: BaseModel) -> list[str]:
    """Field names whose values differ between two models of one type."""
    return [name for name in type(new).model_fields if getattr(old, name) != getattr(new, name)]


def plan(running: Config, new: Config, *, running_files: Mapping[str, bytes] | None = None,
         new_files: Mapping[str, bytes] | None = None,
         pools_in_use: Mapping[str, int] | None = None) -> ReloadPlan:
    """Compare ``running`` with ``new``. ``running_files`` / ``new_files`` are the
    `fingerprints` of each; ``pools_in_use`` counts the addresses clients hold per pool
    (a pool in use keeps its running definition: leases outside a new subnet would
    otherwise stay with the clients that have them)."""
    running_files = running_files or {}
    new_files = new_files or {}
    pools_in_use = pools_in_use or {}
    restart: list[NeedsRestart] = []
    for section in RESTART_SECTIONS:
        for key in _differing(getattr(running, section), getattr(new, section)):
            restart.append(NeedsRestart(f"{section}.{key}", "needs a restart; the running value stays"))

    pools = dict(new.pools)
    pools_changed = []
    for name, pool in new.pools.items():
        old = running.pools.get(name)
        if old is None or old == pool:
            continue
        if pools_in_use.get(name):
            pools[name] = old
            restart.append(NeedsRestart(f"pools.{name}", f"{pools_in_use[name]} address(es) leased: "
                                        "the running pool stays until a restart"))
        else:
            pools_changed.append(name)
    if running.policy != new.policy:  # compiled and installed at start, as a whole
        restart.append(NeedsRestart("policy", "the IPsec policy is installed at start: a restart "
                                    "applies the new one; the running policy stays"))
    config = new.model_copy(update={**{s: getattr(running, s) for s in RESTART_SECTIONS}, "pools": pools,
                                    "policy": running.policy})

    added, changed, unchanged = [], [], []
    for name, conn in config.connections.items():
        old_conn = running.connections.get(name)
        if old_conn is None:
            added.append(name)
            continue
        keys = _differing(old_conn, conn)
        keys += [f"pools.{p}" for p in sorted(_pools_of(conn)) if running.pools.get(p) != config.pools.get(p)]
        if running_files.get(name) != new_files.get(name):
            keys.append("auth files")
        if keys:
            changed.append(Changed(name, tuple(keys)))
        else:
            unchanged.append(name)
    removed = [name for name in running.connections if name not in config.connections]

    users_changed = [u for u, user in config.users.items() if u in running.users and running.users[u] != user]
    return ReloadPlan(
        config=config, added=tuple(added), removed=tuple(removed), changed=tuple(changed),
        unchanged=tuple(unchanged),
        pools_added=tuple(p for p in config.pools if p not in running.pools),
        pools_removed=tuple(p for p in running.pools if p not in config.pools),
        pools_changed=tuple(pools_changed),
        users_added=tuple(u for u in config.users if u not in running.users),
        users_removed=tuple(u for u in running.users if u not in config.users),
        users_changed=tuple(users_changed),
        ike_settings=running.ike != config.ike, restart=tuple(restart))
