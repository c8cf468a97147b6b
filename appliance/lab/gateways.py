"""A pair of our gateways in the lab (HQ and branch), manually keyed for now.

    with GatewayPair(topology, workdir, algorithm="aes128gcm16") as pair:
        topology.ping(topology.hq.lan_ns, topology.branch.lan_host)
        print(pair.status("hq"))

Fresh random keys are drawn for each pair and written, with the configs, under
``workdir`` (mode 0600).  ``keys`` keeps them so tests can hand them to tshark.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from appliance.lab.topology import LabError, Site, Topology
from gateway.crypto.algorithms import INTEGRITY, parse_esp_suite

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SaKeys:
    """One direction's SA, as a test needs it to decrypt captures independently."""

    spi: int
    src: str
    dst: str
    algorithm: str
    encryption_key: bytes
    integrity_key: bytes


def _random_sa(spi: int, src: str, dst: str, algorithm: str, protocol: str) -> SaKeys:
    if protocol == "ah":
        return SaKeys(spi, src, dst, algorithm, b"", os.urandom(INTEGRITY[algorithm].key_size))
    suite = parse_esp_suite(algorithm)
    return SaKeys(spi, src, dst, algorithm, os.urandom(suite.encryption.keymat_size),
                  os.urandom(suite.integrity.key_size) if suite.integrity else b"")


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def write_config(path: Path, config: dict[str, Any], what: str) -> None:
    """Write a gateway config (mode 0600: it may hold keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"# {what}: written by appliance/lab/gateways.py\n")
        yaml.safe_dump(config, fh, sort_keys=False)


class LabGateway:
    """One `gateway run` process in a gateway namespace of the lab."""

    def __init__(self, site: Site, config_path: Path, socket: Path, log_path: Path,
                 proc: subprocess.Popen[bytes]) -> None:
        self.site = site
        self.config_path = config_path
        self.socket = socket
        self.log_path = log_path
        self.proc = proc

    @classmethod
    def launch(cls, site: Site, config_path: Path, socket: Path, log_path: Path) -> LabGateway:
        log = open(log_path, "wb")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            ["ip", "netns", "exec", site.gw_ns, sys.executable, "-m", "gateway", "run",
             "-c", str(config_path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        log.close()
        return cls(site, config_path, socket, log_path, proc)

    @classmethod
    def start(cls, site: Site, workdir: Path, name: str, config: dict[str, Any],
              timeout: float = 15.0) -> LabGateway:
        """Write ``config`` (its control socket is set here) and start the gateway."""
        workdir = Path(workdir)
        socket = workdir / f"{name}.sock"
        config = {**config, "control": {"socket": str(socket)}}
        path = workdir / f"{name}.yaml"
        write_config(path, config, f"lab gateway {name}")
        gw = cls.launch(site, path, socket, workdir / f"{name}.log")
        try:
            gw.wait_ready(time.monotonic() + timeout)
        except BaseException:
            gw.stop()
            raise
        return gw

    def wait_ready(self, deadline: float) -> None:
        from gateway.control.protocol import ControlError, request

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"gateway in {self.site.gw_ns} exited with {self.proc.returncode}:\n"
                               f"{self.log_tail()}")
            try:
                request(str(self.socket), "status", timeout=1.0)
                return
            except ControlError:
                time.sleep(0.1)
        raise LabError(f"gateway in {self.site.gw_ns} did not become ready:\n{self.log_tail()}")

    def request(self, command: str, **args: Any) -> Any:
        from gateway.control.protocol import request

        return request(str(self.socket), command, **args)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

    def stop(self) -> None:
        proc = self.proc
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GatewayPair:
    """Runs `gateway run` in the HQ and branch gateway namespaces."""

    def __init__(self, topology: Topology, workdir: Path, *, algorithm: str = "aes128gcm16",
                 encapsulation: str = "none", protocol: str = "esp", mode: str = "tunnel",
                 esn: bool = True, replay_window: int = 1024, edge: bool = True,
                 log_level: str = "info", keying: str = "manual",
                 hq_extra: dict[str, Any] | None = None,
                 branch_connection: dict[str, Any] | None = None,
                 branch_extra: dict[str, Any] | None = None) -> None:
        self.topology = topology
        self.workdir = Path(workdir)
        self.algorithm = algorithm
        self.encapsulation = encapsulation
        self.protocol = protocol
        self.mode = mode
        self.esn = esn
        self.replay_window = replay_window
        self.edge = edge
        self.log_level = log_level
        self.keying = keying
        #: more config sections for hq (pools, users, connections are merged in)
        self.hq_extra = hq_extra or {}
        #: settings merged into the branch's connection to HQ (e.g. demand_dial)
        self.branch_connection = branch_connection or {}
        #: more config sections for the branch (e.g. ike timing)
        self.branch_extra = branch_extra or {}
        self.psk = os.urandom(24).hex()
        hq, br = topology.hq, topology.branch
        self.keys = {
            "hq->branch": _random_sa(0x1000 + 1, hq.gw_public, br.gw_public, algorithm, protocol),
            "branch->hq": _random_sa(0x2000 + 1, br.gw_public, hq.gw_public, algorithm, protocol),
        }
        self.gateways: dict[str, LabGateway] = {}

    # -- files ---------------------------------------------------------------------------
    def socket(self, site: str) -> Path:
        return self.workdir / f"{site}.sock"

    def config_path(self, site: str) -> Path:
        return self.workdir / f"{site}.yaml"

    def log_path(self, site: str) -> Path:
        return self.workdir / f"{site}.log"

    def _sa_spec(self, keys: SaKeys) -> dict[str, Any]:
        spec: dict[str, Any] = {"spi": f"0x{keys.spi:08x}", "algorithm": keys.algorithm}
        if keys.encryption_key:
            spec["encryption_key"] = "0x" + keys.encryption_key.hex()
        if keys.integrity_key:
            spec["integrity_key"] = "0x" + keys.integrity_key.hex()
        return spec

    def _config(self, name: str, site: Site, peer: Site, out: SaKeys, inb: SaKeys) -> dict[str, Any]:
        conn: dict[str, Any] = {
            "remote": peer.gw_public, "mode": self.mode, "protocol": self.protocol,
            "encapsulation": self.encapsulation, "keying": self.keying,
        }
        if self.keying == "manual":
            conn["manual"] = {"esn": self.esn, "replay_window": self.replay_window,
                              "outbound": self._sa_spec(out), "inbound": self._sa_spec(inb)}
        else:  # IKEv2 with a fresh PSK; the branch dials HQ
            conn["encapsulation"] = "udp" if self.encapsulation == "udp" else "auto"
            conn["auth"] = {"method": "psk", "psk": self.psk}
            conn["proposals"] = {"esp": [self.algorithm]}
            conn["ike"] = {"start": "start" if name == "branch" else "none"}
        if self.mode == "tunnel":
            conn["local_subnets"] = [site.lan_subnet]
            conn["remote_subnets"] = [peer.lan_subnet]
        if name == "branch":
            conn.update(self.branch_connection)
        config: dict[str, Any] = {
            "gateway": {"name": name, "public_interface": "wan0", "public_address": site.gw_public,
                        "lan_interfaces": ["lan0"]},
            "dataplane": {"tun_name": "gw0"},
            "edge": {"nftables": self.edge},
            "control": {"socket": str(self.socket(name))},
            "metrics": {"listen": "127.0.0.1:9436"},
            "logging": {"level": self.log_level},
            "connections": {("branch1" if name == "hq" else "hq"): conn},
        }
        for key, value in (self.hq_extra if name == "hq" else self.branch_extra).items():
            config[key] = {**config[key], **value} if key == "connections" else value
        return config

    def write_configs(self) -> None:
        t = self.topology
        configs = {
            "hq": self._config("hq", t.hq, t.branch, self.keys["hq->branch"], self.keys["branch->hq"]),
            "branch": self._config("branch", t.branch, t.hq, self.keys["branch->hq"],
                                   self.keys["hq->branch"]),
        }
        for name, cfg in configs.items():
            write_config(self.config_path(name), cfg, f"lab gateway {name}")

    # -- processes -------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        self.write_configs()
        t = self.topology
        try:
            for name, site in (("hq", t.hq), ("branch", t.branch)):
                self.gateways[name] = LabGateway.launch(site, self.config_path(name), self.socket(name),
                                                        self.log_path(name))
            deadline = time.monotonic() + timeout
            for gw in self.gateways.values():
                gw.wait_ready(deadline)
        except BaseException:
            self.stop()
            raise

    def log_tail(self, name: str, lines: int = 30) -> str:
        return _tail(self.log_path(name), lines)

    def wait_tunnel(self, timeout: float = 15.0) -> None:
        """With IKE keying: wait until both gateways have an IKE SA with a CHILD_SA."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(any(sa["state"] == "established" and sa["children"]
                       for sa in self.status(name, "sas")["ike_sas"]) for name in ("hq", "branch")):
                return
            time.sleep(0.05)
        raise LabError(f"IKE tunnel not up within {timeout} s:\n{self.log_tail('hq')}\n"
                       f"{self.log_tail('branch')}")

    def stop(self) -> None:
        for gw in self.gateways.values():
            gw.stop()
        self.gateways.clear()

    def status(self, name: str, command: str = "status") -> Any:
        from gateway.control.protocol import request

        return request(str(self.socket(name)), command)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
