"""A pair of strongSwan (charon) gateways in the lab, as the reference to compare with.

One charon runs in each gateway namespace with the userspace ESP datapath
(kernel-libipsec: a TUN device ``ipsec0``, UDP-encapsulated ESP only).  charon
hard-codes ``/var/run/charon.pid``, so each instance gets a private ``/run`` (a tmpfs
in its own mount namespace); its config, vici socket and log live under ``workdir``.

    with StrongswanPair(topology, workdir, esp_proposal="aes128gcm16") as pair:
        print(pair.esp_algorithm())     # e.g. "AES_GCM_16-128"
        ...                              # hq-lan <-> branch-lan now crosses the tunnel
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from appliance.lab.topology import LabError, Site, Topology

CHARON = "/usr/lib/ipsec/charon"
SWANCTL = "swanctl"
PSK = "gwbench-strongswan-psk-0123456789"
IKE_PROPOSAL = "aes128-sha256-modp2048"
CONN = "bench"
CHILD = "net"

_PLUGINS = ("random nonce openssl aes sha1 sha2 hmac gcm pem pkcs1 pkcs8 x509 revocation "
            "constraints pubkey curve25519 gmp kdf kernel-libipsec kernel-netlink "
            "socket-default vici updown")


class _Charon:
    """One charon daemon in one gateway namespace, with its files in ``directory``."""

    def __init__(self, topology: Topology, site: Site, peer: Site, directory: Path,
                 esp_proposal: str) -> None:
        self.topology = topology
        self.site = site
        self.peer = peer
        self.dir = directory
        self.esp_proposal = esp_proposal
        self.conf = directory / "strongswan.conf"
        self.swanctl_dir = directory / "swanctl"
        self.vici = directory / "charon.vici"
        self.log = directory / "charon.log"
        self.out = directory / "charon.out"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"unix://{self.vici}"

    def write_config(self) -> None:
        """Write strongswan.conf and swanctl/swanctl.conf for this gateway."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.swanctl_dir.mkdir(exist_ok=True)
        self.conf.write_text(f"""\
charon {{
  load_modular = no
  load = {_PLUGINS}
  install_routes = yes
  routing_table = 220
  routing_table_prio = 220
  plugins {{
    vici {{
      socket = {self.uri}
    }}
    kernel-libipsec {{
      allow_peer_ts = no
    }}
  }}
  filelog {{
    lab {{
      path = {self.log}
      append = no
      flush_line = yes
      time_format = %H:%M:%S
      default = 1
      ike = 2
      cfg = 2
      knl = 2
    }}
  }}
}}
""")
        local_id, remote_id = f"{self.site.name}.gwbench", f"{self.peer.name}.gwbench"
        (self.swanctl_dir / "swanctl.conf").write_text(f"""\
connections {{
  {CONN} {{
    version = 2
    local_addrs = {self.site.gw_public}
    remote_addrs = {self.peer.gw_public}
    proposals = {IKE_PROPOSAL}
    encap = yes
    local {{
      auth = psk
      id = {local_id}
    }}
    remote {{
      auth = psk
      id = {remote_id}
    }}
    children {{
      {CHILD} {{
        mode = tunnel
        local_ts = {self.site.lan_subnet}
        remote_ts = {self.peer.lan_subnet}
        esp_proposals = {self.esp_proposal}
      }}
    }}
  }}
}}
secrets {{
  ike-{CONN} {{
    id-local = {local_id}
    id-remote = {remote_id}
    secret = "{PSK}"
  }}
}}
""")

    def start(self) -> None:
        """Start charon in the gateway namespace with a private /run."""
        self.vici.unlink(missing_ok=True)
        env = dict(os.environ, STRONGSWAN_CONF=str(self.conf))
        cmd = ["ip", "netns", "exec", self.site.gw_ns,
               "unshare", "--mount", "--propagation", "private",
               "sh", "-c", f"mount -t tmpfs tmpfs /run && exec {CHARON}"]
        with self.out.open("wb") as out:
            # Every step execs the next, so proc.pid ends up being charon itself; its own
            # session lets stop() signal the whole group.
            self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"charon in {self.site.gw_ns} exited with {self.proc.returncode}"
                               f"\n{self.log_tail()}")
            if self.vici.exists() and self.swanctl("--stats", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise LabError(f"charon in {self.site.gw_ns}: vici socket not ready\n{self.log_tail()}")

    def swanctl(self, *args: str, check: bool = True,
                timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run swanctl against this charon's vici socket."""
        env = dict(os.environ, STRONGSWAN_CONF=str(self.conf),
                   SWANCTL_DIR=str(self.swanctl_dir))
        cmd = [SWANCTL, *args, "--uri", self.uri]
        try:
            proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"{' '.join(cmd)}: timed out\n{self.log_tail()}") from exc
        if check and proc.returncode != 0:
            raise LabError(f"{' '.join(cmd)}: exit {proc.returncode}: "
                           f"{(proc.stdout + proc.stderr).strip()}\n{self.log_tail()}")
        return proc

    def child_installed(self) -> bool:
        """Whether the tunnel CHILD_SA is INSTALLED on this side."""
        raw = self.swanctl("--list-sas", "--noblock", "--raw", check=False,
                           timeout=10).stdout
        return _child_block(raw) is not None

    def stop(self) -> None:
        """SIGTERM charon, SIGKILL it (and its group) if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        # Anything left in the session (charon if it ignored SIGTERM, an updown script).
        _signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"charon {proc.pid} in {self.site.gw_ns} survived SIGKILL") from exc

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of charon's log (and of its stdout/stderr)."""
        parts = []
        for path in (self.log, self.out):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(parts) or f"(no log in {self.dir})"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _child_block(raw: str) -> str | None:
    """The raw vici text of the INSTALLED ``net`` CHILD_SA, if any."""
    for match in re.finditer(r"\{name=" + CHILD + r" [^{}]*\}", raw):
        if re.search(r"\bstate=INSTALLED\b", match.group(0)):
            return match.group(0)
    return None


class StrongswanPair:
    """Two charons (hq and branch gateways) with an IKEv2/PSK tunnel between the LANs."""

    def __init__(self, topology: Topology, workdir: Path,
                 esp_proposal: str = "aes128gcm16") -> None:
        self.topology = topology
        self.workdir = Path(workdir)
        self.esp_proposal = esp_proposal
        self.hq = _Charon(topology, topology.hq, topology.branch, self.workdir / "hq",
                          esp_proposal)
        self.branch = _Charon(topology, topology.branch, topology.hq,
                              self.workdir / "branch", esp_proposal)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> None:
        """Start both charons, bring the tunnel up and check a ping crosses it."""
        try:
            for charon in (self.hq, self.branch):
                charon.write_config()
                charon.start()
                charon.swanctl("--load-all")
            init = self.hq.swanctl("--initiate", "--child", CHILD, "--timeout",
                                   str(int(timeout)), check=False, timeout=timeout + 10)
            if init.returncode != 0:
                raise LabError(f"swanctl --initiate failed: {init.stdout.strip()[-2000:]}"
                               f"\n{self.logs()}")
            deadline = time.monotonic() + timeout
            while not (self.hq.child_installed() and self.branch.child_installed()):
                if time.monotonic() > deadline:
                    raise LabError(f"CHILD_SA not INSTALLED on both sides within {timeout}s"
                                   f"\n{self.logs()}")
                time.sleep(0.2)
            self._check_ping()
        except BaseException:
            try:
                self.stop()
            except LabError:
                pass  # the original failure is the one worth reporting
            raise

    def _check_ping(self) -> None:
        topo = self.topology
        received = 0
        for _ in range(3):
            sent, received = topo.ping(topo.hq.lan_ns, topo.branch.lan_host, count=3)
            if received == sent:
                return
        raise LabError(f"ping {topo.hq.lan_host} -> {topo.branch.lan_host} through strongSwan:"
                       f" {received}/3 received\n{self.logs()}")

    def stop(self) -> None:
        """Stop both charons; no process is left behind."""
        errors = []
        for charon in (self.hq, self.branch):
            try:
                charon.stop()
            except LabError as exc:
                errors.append(str(exc))
        if errors:
            raise LabError("; ".join(errors))

    def esp_algorithm(self) -> str:
        """The negotiated ESP transform as reported by hq, e.g. ``AES_GCM_16-128``."""
        raw = self.hq.swanctl("--list-sas", "--noblock", "--raw", timeout=10).stdout
        block = _child_block(raw)
        if block is None:
            raise LabError(f"no INSTALLED CHILD_SA in: {raw.strip()}")
        fields = dict(re.findall(r"([\w-]+)=(\S+)", block))
        algorithm = fields.get("encr-alg", "?")
        if "encr-keysize" in fields:
            algorithm += f"-{fields['encr-keysize']}"
        if "integ-alg" in fields:
            algorithm += f"/{fields['integ-alg']}"
        return algorithm

    def logs(self) -> str:
        """The tails of both charons' logs."""
        return f"[hq]\n{self.hq.log_tail()}\n[branch]\n{self.branch.log_tail()}"
