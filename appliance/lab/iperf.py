"""iperf3 TCP throughput between two lab namespaces."""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from appliance.lab.topology import LabError, Topology

DEFAULT_PORT = 5201


def _wait_listening(topology: Topology, namespace: str, port: int,
                    server: subprocess.Popen[str], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            _, err = server.communicate()
            raise LabError(f"iperf3 server in {namespace} exited early: {err.strip()}")
        ss = topology.ns(namespace, "ss", "-Htln", f"sport = :{port}", check=False)
        if ss.stdout.strip():
            return
        time.sleep(0.05)
    raise LabError(f"iperf3 server in {namespace} not listening on {port} after {timeout}s")


def _stop(server: subprocess.Popen[str]) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=3)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=3)


def _start_server(topology: Topology, server_ns: str, server_addr: str,
                  port: int) -> subprocess.Popen[str]:
    """An iperf3 server for one client (``-1``), listening when this returns."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", server_addr,
         "-p", str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(topology, server_ns, port, server)
    except BaseException:
        _stop(server)
        raise
    return server


def iperf3_once(topology: Topology, server_ns: str, server_addr: str, client_ns: str,
                seconds: int = 10, *, port: int = DEFAULT_PORT) -> float:
    """One iperf3 TCP run client -> server; returns the received rate in Gbit/s."""
    server = _start_server(topology, server_ns, server_addr, port)
    try:
        proc = topology.ns(client_ns, "iperf3", "-J", "-c", server_addr, "-p", str(port),
                           "-t", str(seconds), "--connect-timeout", "5000",
                           check=False, timeout=seconds + 30)
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise LabError(f"iperf3 client gave no JSON (exit {proc.returncode}): "
                           f"{proc.stdout[-500:]} {proc.stderr[-500:]}") from exc
        if "error" in report:
            raise LabError(f"iperf3 {client_ns} -> {server_addr}: {report['error']}")
        try:
            bps = float(report["end"]["sum_received"]["bits_per_second"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LabError(f"iperf3 report lacks end.sum_received: {proc.stdout[-500:]}") from exc
        try:
            server.wait(timeout=5)  # -s -1 exits after its one client
        except subprocess.TimeoutExpired:
            pass
        return bps / 1e9
    finally:
        _stop(server)


def iperf3_tcp(topology: Topology, server_ns: str, server_addr: str, client_ns: str,
               seconds: int = 10, runs: int = 3, *, port: int = DEFAULT_PORT) -> list[float]:
    """``runs`` iperf3 TCP runs of ``seconds`` each; the received rates in Gbit/s."""
    return [iperf3_once(topology, server_ns, server_addr, client_ns, seconds, port=port)
            for _ in range(runs)]


@dataclass
class BackgroundLoad:
    """What ``iperf3_background`` measured, filled in when its block ends."""

    #: the sender's rate over the whole stream in Gbit/s (an interrupted client has no
    #: receiver report); None if the client gave no usable JSON
    sent_gbps: float | None = None
    seconds: float | None = None


@contextmanager
def iperf3_background(topology: Topology, server_ns: str, server_addr: str, client_ns: str,
                      *, port: int = DEFAULT_PORT, max_seconds: int = 600,
                      settle: float = 1.0) -> Iterator[BackgroundLoad]:
    """One iperf3 TCP stream client -> server for as long as the ``with`` block runs.

    The block starts ``settle`` seconds after the client (past TCP slow start); the client
    is interrupted (SIGINT) when it ends.  A LabError if the client has exited by then
    (it could not connect, or ran ``max_seconds``)::

        with iperf3_background(topo, topo.branch.lan_ns, topo.branch.lan_host,
                               topo.hq.lan_ns) as load:
            ...                                  # measure something under load
        print(load.sent_gbps)
    """
    load = BackgroundLoad()
    server = _start_server(topology, server_ns, server_addr, port)
    try:
        client = subprocess.Popen(
            ["ip", "netns", "exec", client_ns, "iperf3", "-J", "-c", server_addr,
             "-p", str(port), "-t", str(max_seconds), "--connect-timeout", "5000"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(settle)
            if client.poll() is not None:
                out, err = client.communicate()
                raise LabError(f"iperf3 client {client_ns} -> {server_addr} exited "
                               f"{client.returncode} before the load was used: "
                               f"{out[-500:]} {err[-300:]}")
            yield load
            if client.poll() is not None:
                raise LabError(f"iperf3 client {client_ns} -> {server_addr} ended "
                               f"(exit {client.returncode}) while the load was in use")
            client.send_signal(signal.SIGINT)  # ip netns exec execs iperf3: this is iperf3
            try:
                out, _ = client.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                out = ""
            try:
                sent = json.loads(out)["end"]["sum_sent"]
                load.sent_gbps = float(sent["bits_per_second"]) / 1e9
                load.seconds = float(sent["seconds"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                pass
        finally:
            _stop(client)
    finally:
        _stop(server)


def median(values: Sequence[float]) -> float | None:
    """The median of ``values``, or None when there are none."""
    return statistics.median(values) if values else None
