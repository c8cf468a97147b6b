"""Least privilege: once started, the daemon keeps only the capabilities it still uses.

Starting needs more (the TUN device, raw ESP/AH sockets, binding UDP 500/4500 and maybe a
low metrics port, the nftables edge); running needs only ``CAP_NET_ADMIN`` (`RUNTIME`):
routes, addresses and rules change through netlink while it runs (PPP links come and go,
demand-dial and reload install traps and routes, stop removes its rules) and ``nft``
reads the edge's counters.  Raw sockets are never opened again and nothing is bound
again (those settings need a restart), so ``CAP_NET_RAW`` and ``CAP_NET_BIND_SERVICE``
go with everything else.  The daemon stays uid 0: its config and key files are root's
and private (`gateway.config.secretfiles`), so reload reads them without
``CAP_DAC_OVERRIDE``.

`drop` lowers the effective, permitted and inheritable sets with capset(2), the
bounding set with PR_CAPBSET_DROP (which needs ``CAP_SETPCAP``: it goes last) and clears
the ambient set, then sets no_new_privs, so nothing the daemon executes gets more.  As
root, a child (``nft``) gets its permitted set from the bounding set, which keeps exactly
`RUNTIME`; under another uid the kept capabilities stay inheritable and ambient for it.

Capabilities belong to threads, not processes: `drop` changes the calling thread only.
The daemon calls it on every thread it has (`exceeding_threads` finds any it missed);
threads started afterwards inherit the reduced sets.  ctypes calls the syscalls: no
dependency for six calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

CAP_NAMES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
    "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
    "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
    "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
    "lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
    "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
)
CAP_SETPCAP = 8
CAP_NET_BIND_SERVICE = 10
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13

#: what the running daemon needs (see the module text)
RUNTIME = frozenset({CAP_NET_ADMIN})

_CAPABILITY_VERSION_3 = 0x20080522
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class PrivilegeError(OSError):
    """A capability call failed (the message names it)."""


def names(mask: int) -> str:
    """``cap_net_admin,cap_net_raw`` for a bit mask; ``none`` for 0."""
    out = [f"cap_{CAP_NAMES[i]}" if i < len(CAP_NAMES) else f"cap_{i}"
           for i in range(mask.bit_length()) if mask >> i & 1]
    return ",".join(out) or "none"


def mask(caps: Iterable[int]) -> int:
    return sum(1 << c for c in set(caps))


@dataclass(frozen=True)
class CapabilitySets:
    """One thread's capability sets, as bit masks (bit n: capability n)."""

    effective: int
    permitted: int
    inheritable: int
    bounding: int
    ambient: int
    no_new_privs: bool

    def above(self, allowed: int) -> int:
        """Capabilities in any set beyond ``allowed``."""
        return (self.effective | self.permitted | self.inheritable | self.bounding | self.ambient) & ~allowed


@dataclass(frozen=True)
class DropResult:
    """What `drop` did; ``problem`` says why privileges stayed (or partly stayed)."""

    before: CapabilitySets | None
    after: CapabilitySets | None
    problem: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def kept(self) -> str:
        return names(self.after.permitted) if self.after is not None else "unknown"

    def also(self, other: DropResult) -> DropResult:
        """This result, or ``other`` (the same drop on another thread) if that one failed."""
        return other if other.problem is not None else self

    def checked(self) -> DropResult:
        """This result, with a problem if some thread of the process holds more than
        this one's sets (a thread `drop` did not run on)."""
        if self.problem is not None or self.after is None:
            return self
        stray = exceeding_threads(self.after)
        if not stray:
            return self
        return replace(self, problem=f"threads kept more capabilities: {', '.join(stray)}")


class _Libc:
    def __init__(self) -> None:
        self.lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self.lib.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        self.lib.prctl.restype = ctypes.c_int
        self.last_cap = _last_cap()

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, what: str = "prctl") -> int:
        result = int(self.lib.prctl(option, arg2, arg3, 0, 0))
        if result < 0:
            err = ctypes.get_errno()
            raise PrivilegeError(err, f"{what}: {os.strerror(err)}")
        return result

    def capget(self) -> tuple[int, int, int]:
        header, data = _Header(_CAPABILITY_VERSION_3, 0), (_Data * 2)()
        if self.lib.capget(ctypes.byref(header), data) != 0:
            err = ctypes.get_errno()
            raise PrivilegeError(err, f"capget: {os.strerror(err)}")
        return tuple(getattr(data[0], n) | getattr(data[1], n) << 32  # type: ignore[return-value]
                     for n in ("effective", "permitted", "inheritable"))

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        header, data = _Header(_CAPABILITY_VERSION_3, 0), (_Data * 2)()
        for i in (0, 1):
            data[i].effective = effective >> 32 * i & 0xFFFFFFFF
            data[i].permitted = permitted >> 32 * i & 0xFFFFFFFF
            data[i].inheritable = inheritable >> 32 * i & 0xFFFFFFFF
        if self.lib.capset(ctypes.byref(header), data) != 0:
            err = ctypes.get_errno()
            raise PrivilegeError(err, f"capset: {os.strerror(err)}")

    def sets(self) -> CapabilitySets:
        effective, permitted, inheritable = self.capget()
        bounding = ambient = 0
        for cap in range(self.last_cap + 1):
            if self.prctl(PR_CAPBSET_READ, cap, what="PR_CAPBSET_READ"):
                bounding |= 1 << cap
            try:
                if self.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, what="PR_CAP_AMBIENT"):
                    ambient |= 1 << cap
            except PrivilegeError:
                pass  # kernels before 4.3 have no ambient set
        nnp = bool(self.prctl(PR_GET_NO_NEW_PRIVS, what="PR_GET_NO_NEW_PRIVS"))
        return CapabilitySets(effective, permitted, inheritable, bounding, ambient, nnp)


def _last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return len(CAP_NAMES) - 1


def current() -> CapabilitySets:
    """The calling thread's capability sets."""
    return _Libc().sets()


def drop(keep: Iterable[int] = RUNTIME) -> DropResult:
    """Keep only ``keep`` on the calling thread (module text); never raises.  A problem (no
    capabilities to drop: not root; or a call refused) is in the result, for a warning."""
    try:
        libc = _Libc()
        before = libc.sets()
    except (OSError, AttributeError) as exc:
        return DropResult(None, None, f"cannot read capabilities: {exc}")
    allowed = mask(keep)
    notes = []
    root = os.geteuid() == 0
    if not before.permitted:
        why = "" if root else " (not running as root)"
        return DropResult(before, before, f"no capabilities to drop{why}")
    try:
        if not root:  # another uid: the kept ones stay ambient, for what it runs (nft)
            for cap in range(libc.last_cap + 1):
                if before.ambient >> cap & 1 and not allowed >> cap & 1:
                    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, cap, what="PR_CAP_AMBIENT_LOWER")
        else:  # root's children take the bounding set: nothing needs to be inherited
            try:
                libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, what="PR_CAP_AMBIENT_CLEAR_ALL")
            except PrivilegeError:
                pass  # no ambient set on this kernel
        # the bounding set first: dropping from it needs CAP_SETPCAP, which capset removes
        if before.effective >> CAP_SETPCAP & 1:
            for cap in range(libc.last_cap + 1):
                if before.bounding >> cap & 1 and not allowed >> cap & 1:
                    libc.prctl(PR_CAPBSET_DROP, cap, what=f"PR_CAPBSET_DROP {names(1 << cap)}")
        elif before.bounding & ~allowed:
            notes.append("the bounding set stays (no cap_setpcap): no_new_privs keeps children from it")
        kept = before.permitted & allowed
        libc.capset(kept, kept, before.inheritable & kept if not root else 0)
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, what="PR_SET_NO_NEW_PRIVS")
        after = libc.sets()
    except PrivilegeError as exc:
        try:
            after = libc.sets()
        except PrivilegeError:
            after = None
        return DropResult(before, after, f"capabilities not dropped: {exc.strerror}", tuple(notes))
    if (after.effective | after.permitted | after.inheritable | after.ambient) & ~allowed:
        return DropResult(before, after, f"still holding {names(after.permitted & ~allowed)}", tuple(notes))
    return DropResult(before, after, None, tuple(notes))


def thread_sets(pid: int | str = "self") -> dict[str, CapabilitySets]:
    """Every thread's capability sets from /proc (``name/tid`` -> sets)."""
    out = {}
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        try:
            name = f"{(task / 'comm').read_text().strip()}/{task.name}"
            out[name] = status_sets((task / "status").read_text())
        except (OSError, KeyError, ValueError):
            continue  # the thread ended meanwhile
    return out


def status_sets(status: str) -> CapabilitySets:
    """The capability sets of a /proc/PID/status text."""
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)

    def hexa(name: str) -> int:
        return int(fields[name].strip(), 16)

    return CapabilitySets(hexa("CapEff"), hexa("CapPrm"), hexa("CapInh"), hexa("CapBnd"),
                          hexa("CapAmb") if "CapAmb" in fields else 0, fields["NoNewPrivs"].strip() == "1")


def exceeding_threads(reference: CapabilitySets) -> list[str]:
    """Threads of this process that hold more than ``reference`` (what `drop` left on the
    thread that called it) in any set: ones the daemon did not reach."""
    allowed = reference.effective | reference.permitted | reference.inheritable | reference.bounding
    return [name for name, sets in thread_sets().items()
            if sets.above(allowed) or (reference.no_new_privs and not sets.no_new_privs)]
