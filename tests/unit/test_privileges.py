"""gateway.net.privileges: capabilities dropped to CAP_NET_ADMIN, per thread, with
no_new_privs; a warning (never silence) where that cannot be done.

Drops run in child processes: this one keeps its capabilities for the other tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config_text
from gateway.daemon import Gateway
from gateway.net import privileges
from gateway.net.privileges import CAP_NET_ADMIN, CapabilitySets, DropResult, names, status_sets

REPO = Path(__file__).resolve().parents[2]
ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="dropping capabilities needs root")

STATUS = """\
Name:\tpython
NoNewPrivs:\t1
CapInh:\t0000000000000000
CapPrm:\t0000000000001000
CapEff:\t0000000000001000
CapBnd:\t0000000000003400
CapAmb:\t0000000000000000
"""


def test_status_and_names() -> None:
    sets = status_sets(STATUS)
    assert sets == CapabilitySets(0x1000, 0x1000, 0, 0x3400, 0, True)
    assert names(sets.permitted) == "cap_net_admin" and names(0) == "none"
    assert names(sets.bounding) == "cap_net_bind_service,cap_net_admin,cap_net_raw"
    assert sets.above(1 << CAP_NET_ADMIN) == 0x2400


CHILD = """
import json, socket, subprocess, threading
from gateway.net import privileges as p
go = threading.Event()
out = {}
def worker():
    go.wait()
    out["worker"] = p.drop().problem
early = threading.Thread(target=worker)
early.start()
first = p.drop()
out["first"] = [first.problem, first.kept, p.names(first.after.bounding), first.after.no_new_privs]
out["stray"] = first.checked().problem
go.set(); early.join()
out["after_worker"] = first.checked().problem
late = []
t = threading.Thread(target=lambda: late.append(p.current())); t.start(); t.join()
out["late"] = p.names(late[0].permitted | late[0].bounding)
out["child"] = subprocess.run(["sh", "-c", "grep -E '^Cap(Eff|Bnd|Inh)' /proc/self/status"],
                              capture_output=True, text=True).stdout.split()
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
    out["raw"] = "opened"
except PermissionError:
    out["raw"] = "refused"
print(json.dumps(out))
"""


def child(*prefix: str, code: str = CHILD, python: str = sys.executable) -> Any:
    """Run ``code`` in a child (under ``prefix``, e.g. setpriv); its last line, as JSON."""
    proc = subprocess.run([*prefix, python, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd="/", check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@ROOT
def test_root_keeps_net_admin_on_every_thread_it_drops_on() -> None:
    out = child()
    assert out["first"] == [None, "cap_net_admin", "cap_net_admin", True]
    assert "threads kept more capabilities" in str(out["stray"])  # the early thread, not reached
    assert out["worker"] is None and out["after_worker"] is None  # reached now
    assert out["late"] == "cap_net_admin"  # a thread started later inherits the drop
    # a child (nft) gets CAP_NET_ADMIN from the bounding set, nothing more
    assert out["child"] == ["CapInh:", "0" * 16, "CapEff:", "0000000000001000", "CapBnd:", "0000000000001000"]
    assert out["raw"] == "refused"  # raw sockets are for the start only


DROP = ("import json\nfrom gateway.net import privileges as p\nr = p.drop()\n"
        "bounding = p.names(r.after.bounding) if r.after else None\n"
        "print(json.dumps([r.problem, r.kept, list(r.notes), bounding]))")


@ROOT
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is needed")
def test_without_cap_setpcap_the_bounding_set_stays_and_the_result_says_so() -> None:
    """As under a unit whose CapabilityBoundingSet lacks CAP_SETPCAP."""
    problem, kept, notes, bounding = child(
        "setpriv", "--bounding-set=-all,+net_admin,+net_raw,+net_bind_service", "--inh-caps=-all", code=DROP)
    assert problem is None and kept == "cap_net_admin"
    assert bounding == "cap_net_bind_service,cap_net_admin,cap_net_raw"
    assert notes == ["the bounding set stays (no cap_setpcap): no_new_privs keeps children from it"]


@ROOT
@pytest.mark.skipif(shutil.which("setpriv") is None or not os.access("/usr/bin/python3", os.X_OK),
                    reason="setpriv and /usr/bin/python3 are needed")
def test_another_user_without_capabilities_gets_a_problem_not_silence() -> None:
    problem, kept, _, _ = child("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                     python="/usr/bin/python3", code=DROP)
    assert problem == "no capabilities to drop (not running as root)" and kept == "none"


# -- the daemon logs what happened ---------------------------------------------------------

CONFIG = """\
gateway: {name: gw, public_interface: wan0, public_address: 192.0.2.1}
edge: {nftables: false}
control: {socket: SOCKET}
"""


class Backend:
    name = "stand-in"
    tun_name = "tun-test"
    sockets = None

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        pass

    def stop(self) -> None:
        pass

    async def on_netlink_thread(self, func: object, *args: object) -> object:
        self.calls.append("netlink")
        return func(*args)  # type: ignore[operator]


def started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, result: DropResult, *,
            stray: list[str] | None = None) -> Backend:
    monkeypatch.setattr(privileges, "drop", lambda keep=privileges.RUNTIME: result)
    monkeypatch.setattr(privileges, "exceeding_threads", lambda reference: stray or [])
    loaded = load_config_text(CONFIG.replace("SOCKET", str(tmp_path / "c.sock")))
    gw = Gateway(loaded, least_privilege=True)
    backend = Backend()
    gw._make_backend = lambda: backend  # type: ignore[method-assign]

    async def scenario() -> None:
        await gw.start()
        await gw.shutdown()

    asyncio.run(scenario())
    return backend


SETS = CapabilitySets(1 << CAP_NET_ADMIN, 1 << CAP_NET_ADMIN, 0, 1 << CAP_NET_ADMIN, 0, True)


def test_the_daemon_logs_the_drop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    backend = started(tmp_path, monkeypatch, DropResult(SETS, SETS))
    assert backend.calls == ["netlink"]  # the netlink thread's capabilities too
    [record] = [r for r in caplog.records if r.getMessage().startswith("privileges.")]
    assert record.getMessage() == "privileges.dropped" and record.levelno == logging.INFO
    assert record.event_fields == {"kept": "cap_net_admin", "bounding": "cap_net_admin",  # type: ignore[attr-defined]
                                   "no_new_privs": True}


@pytest.mark.parametrize("result, stray, detail", [
    (DropResult(SETS, SETS, "no capabilities to drop (not running as root)"), None,
     "no capabilities to drop (not running as root)"),
    (DropResult(None, None, "cannot read capabilities: boom"), None, "cannot read capabilities: boom"),
    (DropResult(SETS, SETS), ["python/4242"], "threads kept more capabilities: python/4242"),
])
def test_a_failed_drop_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    caplog: pytest.LogCaptureFixture, result: DropResult,
                                    stray: list[str] | None, detail: str) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    started(tmp_path, monkeypatch, result, stray=stray)
    [record] = [r for r in caplog.records if r.getMessage().startswith("privileges.")]
    assert record.getMessage() == "privileges.not_dropped" and record.levelno == logging.WARNING
    assert record.event_fields["detail"] == detail  # type: ignore[attr-defined]


def test_tests_and_embedders_keep_their_privileges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only `gateway run` drops (Gateway(least_privilege=True)); a Gateway made in a test
    process must not take that process's capabilities away."""
    monkeypatch.setattr(privileges, "drop", lambda keep=privileges.RUNTIME: pytest.fail("dropped"))
    loaded = load_config_text(CONFIG.replace("SOCKET", str(tmp_path / "c.sock")))
    gw = Gateway(loaded)
    gw._make_backend = lambda: Backend()  # type: ignore[method-assign]

    async def scenario() -> None:
        await gw.start()
        await gw.shutdown()

    asyncio.run(scenario())
