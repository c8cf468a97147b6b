"""SoftEther VPN Server 5.01 in the lab: an L2TP/IPsec server (LNS) for our gateway to dial.

One ``vpnserver start --foreground`` per test, in a namespace of the lab, inside a private
mount namespace.  Its compiled-in directories (``/var/lib/softether`` for the config,
``/var/log/softether``, ``/run/softether``) do not exist on the host, so private
``workdir/root/var/lib``, ``var/log``, ``run`` and ``tmp`` are bind-mounted over
``/var/lib``, ``/var/log``, ``/run`` and ``/tmp`` (nothing else there matters to it), and
``/etc/resolv.conf`` names no nameserver: nothing it does reaches the host's state or a
resolver.  ``vpn_server.config`` is written before the first
start so that it never starts DDNS, keep-alive, NAT traversal, VPN Azure, the JSON-RPC /
web UI, VPN over DNS/ICMP, OpenVPN/SSTP or a TCP listener besides 5555 (vpncmd), and binds
only its lab address (no IPv6).  Then ``vpncmd`` configures it: admin password, hub
``DEFAULT``, users, SecureNAT (virtual host 10.250.0.1 that answers pings; DHCP pool
10.250.0.10-100 for the PPP clients; NAT off), L2TP over IPsec with a PSK, optionally a
tap bridge.  It is ready when UDP 500 and 4500 are bound::

    settings = SoftetherSettings(psk="lab-psk", users=[("branch1", "secret")], bridge=True)
    with SoftetherServer.on_site(topology, topology.branch, workdir / "lns", settings) as lns:
        ...                                  # our gateway (LAC) dials lns.address
        lns.wait_log(r"This IPsec SA is established")
        print("\\n".join(lns.ipsec_lines()))     # its IKE/ESP/L2TP/PPP log lines
        lns.table("SessionList", hub="DEFAULT")   # vpncmd, parsed: [{"Session Name": ...}]
        lns.vpncmd("UserList", hub="DEFAULT")     # any vpncmd script; .output, .commands
        lns.disconnect(lns.l2tp_sessions()[0])    # the server ends a client's session
        lns.stop()                                # SIGKILL: gone without a word to anyone
        lns.start()                               # the same server again (fresh state)

With ``bridge=True`` a tap device ``tap_<tap_name>`` joins the hub; it is moved to
``lan_namespace`` (``on_site``: the site's LAN namespace) and given ``lan_host``
(10.250.0.2/24): a host behind the LNS that answers pings and can run a TCP server
(``lan_command``).  SecureNAT's 10.250.0.1 answers ICMP only: with NAT off it drops TCP
to itself (connects time out).

Quirks of this build (see also /work/shared/PEERS.md):

- With ``--foreground`` *every* log (server log, hub security logs, packet logs) goes to
  stdout (``Cedar/Logging.c``: ``LogThread`` writes to stdout instead of files when
  ``g_foreground``); the directories ``server_log``, ``security_log``, ``packet_log`` are
  created but stay empty.  ``output()`` is the log; ``log_files()`` returns them anyway.
- Without ``DisableGetHostNameWhenAcceptTcp`` it looks up the name of every TCP client
  (vpncmd): a DNS PTR query and three NetBIOS (UDP 137) queries per connection.
- Without ``NoLinuxArpFilter`` it sets ``net.ipv4.conf.all.arp_filter=1`` in its network
  namespace (and leaves it so).
- With DDNS disabled it creates no VPN Azure client at all; the UDP socket on a random
  port of its address is its (idle) syslog client.
- vpncmd's exit status is that of the *last* command of a script, so ``vpncmd()`` checks
  each command's "The command completed successfully."; a missing parameter makes it
  prompt, which at the end of the script fails the command.
- It prints cookies and SPIs in hex without leading zeros (``Responder Cookie:
  0xDF95E78FEF8242F``).
- It can wedge (100% CPU, SIGTERM ignored) after a client vanished without StopCCN; so
  one fresh server per test, and ``stop()`` is a SIGKILL.  ``start()`` again after
  ``stop()`` (or ``restart()``) brings up the same server in place with the same settings
  and fresh state (a new config, no memory of earlier clients): a server that crashed and
  came back.  Its output goes on in ``vpnserver.out`` (``output_marks``: where each run's
  output begins); ``pids`` lists every process it ran.
- ``SessionDisconnect`` of an L2TP client's session (``disconnect``) ends it with a CDN
  (result 3, administrative) inside the tunnel; the IPsec SAs stay.
- **192.0.2.254 is unusable as a peer address**: this build marks an IPv6 address in its
  ``IP`` struct by setting the IPv4 part to 192.0.2.254 (``Mayaqua/Network.c``:
  ``SetIP6``/``IsIP6``), so a client at 192.0.2.254 becomes ``::`` ("IPsec Client 1
  (:::500 -> 192.0.2.1:500)") and is never answered.  In the lab topology that is the
  internet router's hq-side address, i.e. the address the lab's NAT gives the branch:
  a NATed client must reach SoftEther through another address (put SoftEther on the
  branch, masquerade toward it: 198.51.100.254 works).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from appliance.lab.topology import LabError, Site, Topology, signal_group, wait_text

VPNSERVER = "/usr/libexec/softether/vpnserver/vpnserver"
VPNCMD = "/usr/libexec/softether/vpncmd/vpncmd"
#: The directories compiled into the Debian build (``strings vpnserver``); none of them
#: exists on the host while the packaged service stays disabled.
DB_DIR = "/var/lib/softether"
LOG_DIR = "/var/log/softether"
PID_DIR = "/run/softether"
ADMIN_PORT = 5555
PSK = "softether-lab-psk-0123456789"
SECURENAT = "10.250.0.1"
LAN_HOST = "10.250.0.2/24"

#: The IPv4 address this build uses to mark IPv6 addresses: peers there are not served.
IPV6_MARKER = "192.0.2.254"

#: What ``ipsec_lines`` keeps of the log: IKE, ESP, L2TP and PPP events.
IPSEC_LINE = re.compile(r"IPsec|IKE|ISAKMP|ESP|L2TP|PPP|EtherIP")

#: A packet log record on stdout (CSV: date,time,session,peer session,MACs,...).
PACKET_LINE = re.compile(r"^\d{4}-\d\d-\d\d,\d\d:\d\d:\d\d\.\d{3},")

#: The vpncmd prompt that starts each command's output in a transcript.
_PROMPT = re.compile(r"^VPN Server(?:/\S+)?>(.*)$", re.MULTILINE)
_SAFE = re.compile(r"^[A-Za-z0-9_.@+=,:%-]+$")
_SESSION_NAME = re.compile(r"^SID-[A-Za-z0-9_.@+=,:%\[\]-]+$")

#: Mount the private directories over the compiled-in ones, then exec the command.
#: /etc/resolv.conf first (if it is a symlink into /run it would dangle afterwards, which
#: leaves glibc with no nameserver but the local one: fine too); /tmp last, since the
#: workdir itself may live under /tmp.
_MOUNTS = """set -e
R="$1"; shift
if [ -L /etc/resolv.conf ]; then
  mount --bind "$R/etc/resolv.conf" /etc/resolv.conf 2>/dev/null || true
else
  mount --bind "$R/etc/resolv.conf" /etc/resolv.conf
fi
mount --bind "$R/var/lib" /var/lib
mount --bind "$R/var/log" /var/log
mount --bind "$R/run" /run
mount --bind "$R/tmp" /tmp
cd /
exec "$@"
"""


@dataclass
class SoftetherSettings:
    """What one SoftEther server is configured with.

    Names and passwords go into a vpncmd script unquoted: letters, digits and ``_.@+=,:%-``.
    ``extra_hub_commands`` run inside ``Hub <hub>``, ``extra_commands`` at server level,
    both before ``Flush`` (e.g. ``"LogPacketSaveType /TYPE:icmp /SAVE:header"``).
    """

    psk: str = PSK
    users: Sequence[tuple[str, str]] = (("branch1", "secret"),)
    hub: str = "DEFAULT"
    admin_password: str = "lab-admin-password"
    hub_password: str = "lab-hub-password"
    securenat: str = SECURENAT
    netmask: str = "255.255.255.0"
    dhcp_start: str = "10.250.0.10"
    dhcp_end: str = "10.250.0.100"
    dhcp_expire: int = 7200
    l2tp_raw: bool = False
    bridge: bool = False
    tap_name: str = "lns"           # the device is tap_<tap_name> (at most 11 characters)
    lan_host: str = LAN_HOST        # address/prefix given to the tap (bridge=True)
    packet_log: bool = False        # header-only packet log of every type (to stdout)
    extra_hub_commands: Sequence[str] = ()
    extra_commands: Sequence[str] = ()
    #: raw lines added to ServerConfiguration of vpn_server.config (``bool Foo true``)
    extra_server_config: Sequence[str] = ()


def _se_string(value: str) -> str:
    """A string value of SoftEther's config format ($XX escapes; ``$`` is empty)."""
    if not value:
        return "$"
    return "".join(c if c.isalnum() or c in "._-:/,@" else "".join(f"${b:02X}" for b in c.encode())
                   for c in value)


def _check_token(what: str, value: str) -> str:
    if not _SAFE.match(value):
        raise LabError(f"{what} {value!r}: use letters, digits and _.@+=,:%- only (vpncmd script)")
    return value


def _sockets(pid: int, proto: str) -> set[tuple[str, int, int]]:
    """(address, port, state) of the sockets in the network namespace of ``pid``."""
    found = set()
    try:
        lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        addr, port = fields[1].split(":")
        dotted = ".".join(str(b) for b in reversed(bytes.fromhex(addr)))
        found.add((dotted, int(port, 16), int(fields[3], 16)))
    return found


@dataclass
class VpncmdResult:
    """One vpncmd run: the transcript and each command's (command, output, ok)."""

    output: str
    returncode: int
    commands: list[tuple[str, str, bool]]

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.commands) and all(ok for _, _, ok in self.commands)

    def failures(self) -> list[str]:
        return [f"{cmd}: {text.strip()}" for cmd, text, ok in self.commands if not ok]

    def text_of(self, command: str) -> str:
        """The output of the first command that starts with ``command``."""
        for cmd, text, _ in self.commands:
            if cmd.startswith(command):
                return text
        raise KeyError(command)

    def table(self, command: str) -> list[dict[str, str]]:
        """The table in the output of ``command`` (see ``parse_table``)."""
        return parse_table(self.text_of(command))


def parse_table(text: str) -> list[dict[str, str]]:
    """The first table of a vpncmd command's output, as a list of rows.

    Column tables (``BridgeList``, ``SessionList``: a header row, a ``---+---`` rule, rows)
    give one dict per row, keyed by the header.  ``Item|Value`` tables (``IPsecGet``,
    ``UserList``, ``SessionList``...) give one dict per record: records are separated by a
    rule, or start where a key repeats (``LogGet``); a line with an empty item continues
    the previous value.
    """
    rule = re.compile(r"-+(\+-+)*")
    lines = text.splitlines()
    for i in range(len(lines) - 1):
        if "|" in lines[i] and rule.fullmatch(lines[i + 1].strip()):
            header = [h.strip() for h in lines[i].split("|")]
            body: list[list[str] | None] = []
            for line in lines[i + 2:]:
                if rule.fullmatch(line.strip()):
                    body.append(None)  # between the records of an Item|Value table
                elif "|" in line:
                    body.append([c.strip() for c in line.split("|")])
                else:
                    break
            break
    else:
        return []
    if header == ["Item", "Value"]:
        records: list[dict[str, str]] = [{}]
        last = None
        for cells in body:
            if cells is None:
                records.append({})
                last = None
                continue
            key, value = cells[0], "|".join(cells[1:])
            if not key:
                if last is not None and value:
                    records[-1][last] += "\n" + value
                continue
            if key in records[-1]:
                records.append({})
            records[-1][key] = value
            last = key
        return [r for r in records if r]
    return [dict(zip(header, cells, strict=False)) for cells in body if cells is not None]


def parse_vpncmd(output: str) -> list[tuple[str, str, bool]]:
    """Split a vpncmd transcript into (command, its output, completed successfully)."""
    matches = list(_PROMPT.finditer(output))
    result = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(output)
        text = output[m.end():end]
        command = m.group(1).strip()
        if not command:
            continue
        result.append((command, text, "The command completed successfully." in text))
    return result


class SoftetherServer:
    """One SoftEther VPN Server (L2TP/IPsec LNS) in ``namespace``, listening on ``address``.

    Files under ``workdir``: ``vpnserver.out`` (its stdout: the whole log), ``vpncmd.log``
    (every vpncmd transcript), ``root/`` (the private ``/var/lib``, ``/var/log``, ``/run``,
    ``/tmp`` and ``/etc/resolv.conf``; ``config_path`` is its ``vpn_server.config``).
    ``timings`` records the seconds from launch to each step of ``start``.
    """

    def __init__(self, namespace: str, address: str, workdir: Path,
                 settings: SoftetherSettings | None = None, *, lan_namespace: str | None = None) -> None:
        if address == IPV6_MARKER:
            raise LabError(f"SoftEther 5.01 takes {IPV6_MARKER} for an IPv6 marker: it cannot listen there")
        self.namespace = namespace
        self.address = address
        self.settings = settings if settings is not None else SoftetherSettings()
        self.lan_namespace_requested = lan_namespace
        self.dir = Path(workdir)
        self.root = self.dir / "root"
        self.db_dir = self.root / "var/lib/softether"
        self.log_dir = self.root / "var/log/softether"
        self.run_dir = self.root / "run/softether"
        self.tmp_dir = self.root / "tmp"
        self.config_path = self.db_dir / "vpn_server.config"
        self.out = self.dir / "vpnserver.out"
        self.vpncmd_log = self.dir / "vpncmd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        #: every vpnserver process started, and where each one's output begins in ``output()``
        self.pids: list[int] = []
        self.output_marks: list[int] = []
        self.timings: dict[str, float] = {}
        self._password_set = False
        self._scripts = 0

    @classmethod
    def on_site(cls, topology: Topology, site: Site, workdir: Path,
                settings: SoftetherSettings | None = None, *, lan: bool = True) -> SoftetherServer:
        """A server on a lab site's gateway (its public address); with ``lan`` the tap
        bridge (if ``settings.bridge``) goes into the site's LAN namespace."""
        del topology  # the site names everything; kept for symmetry with the other peers
        return cls(site.gw_ns, site.gw_public, workdir, settings,
                   lan_namespace=site.lan_ns if lan else None)

    # -- configuration -------------------------------------------------------------------
    @property
    def tap_device(self) -> str:
        return f"tap_{self.settings.tap_name}"

    @property
    def lan_namespace(self) -> str:
        """Where the tap (and so the LAN host) lives."""
        return self.lan_namespace_requested or self.namespace

    @property
    def lan_host(self) -> str:
        """The LAN host's address behind the LNS (bridge=True), without the prefix."""
        return self.settings.lan_host.split("/")[0]

    def server_config(self) -> str:
        """``vpn_server.config`` for the first start: every Internet-facing feature off."""
        s = self.settings
        extra = "".join(f"\t\t{line.strip()}\n" for line in s.extra_server_config if line.strip())
        return f"""\
# Software Configuration File (written by appliance/lab/softether.py)
declare root
{{
\tuint ConfigRevision 1
\tbool IPsecMessageDisplayed true
\tstring Region $

\tdeclare DDnsClient
\t{{
\t\tbool Disabled true
\t}}
\tdeclare IPsec
\t{{
\t\tbool EtherIP_IPsec false
\t\tstring IPsec_Secret {_se_string(s.psk)}
\t\tstring L2TP_DefaultHub {_se_string(s.hub)}
\t\tbool L2TP_IPsec false
\t\tbool L2TP_Raw false
\t}}
\tdeclare ListenerList
\t{{
\t\tdeclare Listener0
\t\t{{
\t\t\tbool DisableDos false
\t\t\tbool Enabled true
\t\t\tuint Port {ADMIN_PORT}
\t\t}}
\t}}
\tdeclare ServerConfiguration
\t{{
\t\tuint AutoSaveConfigSpan 300
\t\tbool BackupConfigOnlyWhenModified true
\t\tbool DisableCoreDumpOnUnix true
\t\tbool DisableGetHostNameWhenAcceptTcp true
\t\tbool DisableIPv6Listener true
\t\tbool DisableJsonRpcWebApi true
\t\tbool DisableNatTraversal true
\t\tbool DontBackupConfig true
\t\tbool EnableVpnAzure false
\t\tbool EnableVpnOverDns false
\t\tbool EnableVpnOverIcmp false
\t\tstring KeepConnectHost $
\t\tstring ListenIP {self.address}
\t\tbool NoHighPriorityProcess true
\t\tbool NoLinuxArpFilter true
\t\tstring PortsUDP $
\t\tbool UseKeepConnect false
\t\tstring UsernameHubSeparator @
\t\tbool UseWebTimePage false
\t\tbool UseWebUI false
{extra}
\t\tdeclare Proto
\t\t{{
\t\t\tdeclare OpenVPN
\t\t\t{{
\t\t\t\tbool Enabled false
\t\t\t}}
\t\t\tdeclare SSTP
\t\t\t{{
\t\t\t\tbool Enabled false
\t\t\t}}
\t\t}}
\t}}
}}
"""

    def setup_commands(self) -> tuple[list[str], list[str]]:
        """The configuration commands of ``start``: (server-level, the hub's).

        ``start`` runs ``ServerPasswordSet``, ``HubCreate``, ``Hub <hub>``, the hub's
        commands (users, SecureNAT/DHCP, packet log, extras), ``Hub``, the server-level ones
        (``IPsecEnable``, ``KeepDisable``, ``BridgeCreate``, extras) and ``Flush``, in one
        vpncmd script.
        """
        s = self.settings
        tok = _check_token
        hub_cmds = []
        for name, password in s.users:
            tok("user name", name)
            tok("password", password)
            hub_cmds += [f"UserCreate {name} /GROUP:none /REALNAME:none /NOTE:none",
                         f"UserPasswordSet {name} /PASSWORD:{password}"]
        hub_cmds += [
            f"SecureNatHostSet /MAC:none /IP:{s.securenat} /MASK:{s.netmask}",
            f"DhcpSet /START:{s.dhcp_start} /END:{s.dhcp_end} /MASK:{s.netmask} /EXPIRE:{s.dhcp_expire}"
            f" /GW:{s.securenat} /DNS:{s.securenat} /DNS2:none /DOMAIN:none /LOG:yes",
            "SecureNatEnable",
            "NatDisable",
        ]
        if s.packet_log:
            hub_cmds += [f"LogPacketSaveType /TYPE:{t} /SAVE:header"
                         for t in ("tcpconn", "tcpdata", "dhcp", "udp", "icmp", "ip", "arp")]
        hub_cmds += list(s.extra_hub_commands)
        server_cmds = [
            f"IPsecEnable /L2TP:yes /L2TPRAW:{'yes' if s.l2tp_raw else 'no'} /ETHERIP:no"
            f" /PSK:{tok('PSK', s.psk)} /DEFAULTHUB:{tok('hub', s.hub)}",
            "KeepDisable",
        ]
        if s.bridge:
            if not 0 < len(s.tap_name) <= 11:
                raise LabError(f"tap name {s.tap_name!r}: 1 to 11 characters (tap_ + name <= 15)")
            server_cmds.append(f"BridgeCreate {s.hub} /DEVICE:{tok('tap name', s.tap_name)} /TAP:yes")
        server_cmds += list(s.extra_commands)
        return server_cmds, hub_cmds

    def write_config(self) -> None:
        """Fresh private directories and ``vpn_server.config``."""
        if self.root.exists():
            shutil.rmtree(self.root)
        for d in (self.db_dir, self.log_dir, self.run_dir, self.tmp_dir, self.root / "etc"):
            d.mkdir(parents=True)
        self.tmp_dir.chmod(0o1777)
        (self.root / "etc/resolv.conf").write_text("# lab: no nameserver (SoftEther must not resolve)\n"
                                                   "options attempts:1 timeout:1\n")
        self.config_path.write_text(self.server_config())

    # -- life cycle ------------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> None:
        """Start vpnserver, configure it with vpncmd and wait until IKE is served.

        Raises LabError (with the tail of its output) if any step fails or takes longer
        than ``timeout`` in all; the server is stopped then.  After ``stop()`` it starts
        the same server again, from a fresh config (its output is appended).
        """
        if self.proc is not None:
            raise LabError(f"SoftEther in {self.namespace} is already running")
        start = time.monotonic()
        deadline = start + timeout
        again = bool(self.pids)
        if again and self.settings.bridge:
            # the tap of the last run goes with its fd; make sure, or the new one cannot move in
            self._wait(lambda: not self._link_exists(self.lan_namespace, self.tap_device), deadline,
                       f"{self.tap_device} of the previous run still in {self.lan_namespace}")
        self.write_config()
        self.timings = {}
        self._password_set = False
        cmd = ["ip", "netns", "exec", self.namespace, "unshare", "--mount", "--propagation", "private",
               "sh", "-c", _MOUNTS, "sh", str(self.root), VPNSERVER, "start", "--foreground"]
        self.output_marks.append(len(self.output()) if again else 0)
        with self.out.open("ab" if again else "wb") as out:
            # ip netns exec, unshare and sh all exec the next: proc.pid ends up being
            # vpnserver; its own session lets stop() kill everything it started.
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd="/")
        self.pids.append(self.proc.pid)
        try:
            self._wait(lambda: (self.address, ADMIN_PORT, 0x0A) in _sockets(self.pid_or_fail(), "tcp"),
                       deadline, f"TCP {self.address}:{ADMIN_PORT} (vpncmd) not listening")
            self.timings["listening"] = time.monotonic() - start
            self._configure(deadline)
            self.timings["configured"] = time.monotonic() - start
            self._wait(self.ike_bound, deadline, f"UDP 500/4500 not bound on {self.address}")
            self.timings["ike"] = time.monotonic() - start
            if self.settings.bridge:
                self._setup_lan(deadline)
                self.timings["lan"] = time.monotonic() - start
            self.timings["ready"] = time.monotonic() - start
        except BaseException:
            self.stop()
            raise

    def _wait(self, probe: Callable[[], bool], deadline: float, what: str) -> None:
        while not probe():
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(f"SoftEther in {self.namespace} exited with {self.proc.returncode} "
                               f"({what})\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise LabError(f"SoftEther in {self.namespace}: {what}\n{self.log_tail()}")
            time.sleep(0.02)

    def _configure(self, deadline: float) -> None:
        s = self.settings
        server_cmds, hub_cmds = self.setup_commands()
        hub_password = _check_token("hub password", s.hub_password)
        script = [f"ServerPasswordSet {_check_token('admin password', s.admin_password)}",
                  f"HubCreate {_check_token('hub', s.hub)} /PASSWORD:{hub_password}",
                  f"Hub {s.hub}", *hub_cmds, "Hub", *server_cmds, "Flush"]
        result = self.vpncmd(*script, timeout=max(1.0, deadline - time.monotonic()), check=False)
        self._password_set = True
        if not result.ok or len(result.commands) != len(script):
            raise LabError(f"vpncmd configuring SoftEther in {self.namespace} failed (exit "
                           f"{result.returncode}; {len(result.commands)}/{len(script)} commands ran): "
                           f"{result.failures() or result.output[-2000:]}\n{self.log_tail()}")

    def ike_bound(self) -> bool:
        """Whether UDP 500 and 4500 are bound on its address (in its namespace)."""
        udp = {(a, p) for a, p, _ in _sockets(self.pid_or_fail(), "udp")}
        return {(self.address, 500), (self.address, 4500)} <= udp

    @staticmethod
    def _link_exists(namespace: str, device: str) -> bool:
        return subprocess.run(["ip", "-n", namespace, "link", "show", device],
                              capture_output=True, check=False).returncode == 0

    def _setup_lan(self, deadline: float) -> None:
        """Move the tap into the LAN namespace (if one was given) and address it."""
        self._wait(lambda: self._link_exists(self.namespace, self.tap_device), deadline,
                   f"no {self.tap_device} in {self.namespace} after BridgeCreate")
        lan = self.lan_namespace
        steps = []
        if lan != self.namespace:
            steps.append(["ip", "-n", self.namespace, "link", "set", self.tap_device, "netns", lan])
        steps += [["ip", "-n", lan, "addr", "add", self.settings.lan_host, "dev", self.tap_device],
                  ["ip", "-n", lan, "link", "set", self.tap_device, "up"]]
        for step in steps:
            proc = subprocess.run(step, capture_output=True, text=True, check=False, timeout=10)
            if proc.returncode != 0:
                raise LabError(f"{' '.join(step)}: {proc.stderr.strip()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def pid_or_fail(self) -> int:
        if self.proc is None:
            raise LabError(f"SoftEther in {self.namespace} is not running")
        return self.proc.pid

    def stop(self) -> None:
        """SIGKILL the server and everything it started; its mount namespace (and so
        every private mount) goes with the last process in it, the tap with its fd."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"vpnserver {proc.pid} in {self.namespace} survived SIGKILL") from exc

    def restart(self, timeout: float = 20.0) -> None:
        """SIGKILL it and start it again in place (same settings, fresh state)."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- control ---------------------------------------------------------------------------
    def vpncmd(self, *commands: str, hub: str | None = None, timeout: float = 20.0,
               check: bool = True) -> VpncmdResult:
        """Run vpncmd commands (a script) against the server; with ``hub``, ``Hub <hub>``
        is selected first.  vpncmd runs in the server's network and mount namespaces
        (``nsenter``), killed after ``timeout`` (it spins on a prompt)."""
        pid = self.pid_or_fail()
        script = ([f"Hub {hub}"] if hub else []) + list(commands)
        self._scripts += 1
        name = f"vpncmd-{self._scripts}.in"
        (self.tmp_dir / name).write_text("\n".join(script) + "\n")
        cmd = ["timeout", "-s", "KILL", f"{timeout:.1f}", "nsenter", "-t", str(pid), "-m", "-n",
               VPNCMD, f"{self.address}:{ADMIN_PORT}", "/SERVER", f"/IN:/tmp/{name}"]
        if self._password_set:
            cmd.insert(-1, f"/PASSWORD:{self.settings.admin_password}")
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
                                  timeout=timeout + 5)
        finally:
            (self.tmp_dir / name).unlink(missing_ok=True)
        output = proc.stdout + proc.stderr
        with self.vpncmd_log.open("a") as log:
            log.write(f"--- vpncmd (exit {proc.returncode}) ---\n{output}\n")
        result = VpncmdResult(output, proc.returncode, parse_vpncmd(output))
        if proc.returncode == -signal.SIGKILL or proc.returncode == 128 + signal.SIGKILL:
            raise LabError(f"vpncmd in {self.namespace} timed out after {timeout:.0f}s (server wedged?): "
                           f"{output[-1500:]}\n{self.log_tail(15)}")
        if check and not result.ok:
            raise LabError(f"vpncmd in {self.namespace} failed (exit {proc.returncode}): "
                           f"{result.failures() or output[-1500:]}")
        return result

    def table(self, command: str, hub: str | None = None) -> list[dict[str, str]]:
        """Run one vpncmd command and parse its table, e.g. ``table("SessionList",
        hub="DEFAULT")``, ``table("DhcpTable", hub="DEFAULT")``, ``table("IPsecGet")``."""
        return self.vpncmd(command, hub=hub).table(command)

    def sessions(self, hub: str | None = None) -> list[dict[str, str]]:
        """The hub's sessions (``SessionList``): SecureNAT, the bridge and the clients', each
        ``{"Session Name": "SID-BRANCH1-[L2TP]-3", "User Name": "branch1", "Source Host
        Name": "192.0.2.1", ...}``."""
        return self.table("SessionList", hub=hub or self.settings.hub)

    def l2tp_sessions(self, user: str | None = None, hub: str | None = None) -> list[str]:
        """The names of the L2TP clients' sessions (of ``user``, if given)."""
        return [row["Session Name"] for row in self.sessions(hub)
                if "[L2TP]" in row.get("Session Name", "") and (user is None or row.get("User Name") == user)]

    def disconnect(self, session: str, hub: str | None = None) -> None:
        """End a session as the administrator does (``SessionDisconnect``)."""
        if not _SESSION_NAME.match(session):
            raise LabError(f"session name {session!r}: not one SoftEther gives (SID-USER-[L2TP]-3)")
        self.vpncmd(f"SessionDisconnect {session}", hub=hub or self.settings.hub)

    def lan_command(self, *cmd: str) -> list[str]:
        """``cmd`` as run on the LAN host (in the tap's namespace), for subprocess."""
        return ["ip", "netns", "exec", self.lan_namespace, *cmd]

    def lan_python(self, code: str, *args: str) -> list[str]:
        return self.lan_command(sys.executable, "-c", code, *args)

    # -- logs ------------------------------------------------------------------------------
    def output(self) -> str:
        """Its stdout (``--foreground``): the server log and the hub's security (and
        packet) logs, one ``YYYY-MM-DD HH:MM:SS.mmm message`` per line."""
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def log_files(self) -> dict[str, str]:
        """The files under its private log directory, by relative path (in foreground
        mode SoftEther writes none of them: see the module docstring)."""
        if not self.log_dir.exists():
            return {}
        return {str(p.relative_to(self.log_dir)): p.read_text(errors="replace")
                for p in sorted(self.log_dir.rglob("*")) if p.is_file()}

    def log_text(self) -> str:
        """Everything it logged: stdout, then any log file."""
        parts = [self.output()]
        parts += [f"--- {name} ---\n{text}" for name, text in self.log_files().items()]
        return "\n".join(parts)

    def ipsec_lines(self, start: int = 0) -> list[str]:
        """Its IKE/ESP/L2TP/PPP log lines (from character ``start`` of ``output()``)."""
        return [line for line in self.output()[start:].splitlines()
                if IPSEC_LINE.search(line) and not PACKET_LINE.match(line)]

    def packet_lines(self, start: int = 0) -> list[str]:
        """The hub's packet log records (``packet_log=True``), CSV as SoftEther writes them:
        ``date,time,session,dest session,src MAC,dst MAC,ethertype,size,protocol,info,
        src IP,src port,dst IP,dst port,...`` (e.g. ``...,ICMPv4,Echo Request,10.250.0.2,-,
        10.250.0.1,...``)."""
        return [line for line in self.output()[start:].splitlines() if PACKET_LINE.match(line)]

    def wait_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) appears in its output after character ``start``."""
        return wait_text(self.output, pattern, timeout, start, f"the SoftEther log ({self.namespace})",
                         self.log_tail)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of its output (and of any log file), for error messages."""
        parts = []
        text = self.output().splitlines()[-lines:]
        if text:
            parts.append(f"--- {self.out} ---\n" + "\n".join(text))
        for name, body in self.log_files().items():
            tail = body.splitlines()[-lines:]
            if tail:
                parts.append(f"--- {name} ---\n" + "\n".join(tail))
        return "\n".join(parts) or f"(no output in {self.dir})"
