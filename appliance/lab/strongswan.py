"""strongSwan (charon) in the lab: one configurable peer, or a ready-made pair.

Each charon runs in a gateway namespace with the userspace ESP datapath
(kernel-libipsec: a TUN device ``ipsec0``, UDP-encapsulated ESP only).  charon
hard-codes ``/var/run/charon.pid``, so each instance gets a private ``/run`` (a tmpfs
in its own mount namespace); its config, vici socket and log live under its workdir.

One peer, to test another IKE implementation against (``StrongswanPeer``)::

    settings = PeerSettings(auth="psk", esp_proposals="aes256gcm16")
    with StrongswanPeer(topo, topo.hq, topo.branch.gw_public, topo.branch.lan_subnet,
                        workdir / "hq", settings) as peer:
        peer.initiate()                        # or let the other side initiate
        child = peer.wait_child_installed()    # {"state": "INSTALLED", "encr-alg": ...}

Two of them with a tunnel already up (``StrongswanPair``), the reference to compare with::

    with StrongswanPair(topology, workdir, esp_proposal="aes128gcm16") as pair:
        print(pair.esp_algorithm())     # e.g. "AES_GCM_16-128"
        ...                              # hq-lan <-> branch-lan now crosses the tunnel

kernel-libipsec makes charon always ask for UDP encapsulation: with no NAT on the path it
fakes its NAT_DETECTION_SOURCE_IP notify, so its peer reports ``nat-remote`` even without
a NAT (see ``list_sas``); a real NAT shows as ``nat-local`` on the side behind it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from appliance.lab.topology import LabError, Site, Topology, signal_group, wait_text

CHARON = "/usr/lib/ipsec/charon"
SWANCTL = "swanctl"
PSK = "gwbench-strongswan-psk-0123456789"
IKE_PROPOSAL = "aes128-sha256-modp2048"
CONN = "bench"
CHILD = "net"

#: kernel-libipsec must come before kernel-netlink.
PLUGINS = ("random nonce openssl aes sha1 sha2 hmac gcm ctr ccm cmac xcbc chapoly md5 mgf1 "
           "pem pkcs1 pkcs8 x509 revocation constraints pubkey curve25519 gmp kdf "
           "eap-identity eap-md5 eap-mschapv2 xauth-generic "
           "kernel-libipsec kernel-netlink socket-default vici updown")

#: Default charon log levels (filelog): IKE, config and kernel at 2; encoding at 1 shows
#: the payload list of every message ("parsed IKE_AUTH response 1 [ IDr AUTH SA TSi TSr ]").
LOG_LEVELS = {"default": 1, "ike": 2, "cfg": 2, "knl": 2, "enc": 1, "net": 1, "esp": 1}


@dataclass
class PeerSettings:
    """What one strongSwan peer is configured with (swanctl.conf / strongswan.conf).

    ``None`` means "leave strongSwan's default".  Times and sizes are swanctl strings
    ("30s", "1h", "10M").  ``local_id``/``remote_id`` default, for PSK, to the site's
    public address and the peer address; for pubkey, the local id is the site's public
    address when the certificate carries it as an IP SAN (else the certificate's subject
    DN, strongSwan's default) and the remote id is ``%any`` (any identity its certificate
    confirms, from a trusted CA).
    """

    auth: Literal["psk", "pubkey"] = "psk"
    psk: str = PSK
    local_id: str | None = None
    remote_id: str | None = None
    cert: Path | None = None            # -> swanctl/x509/, named in local.certs
    key: Path | None = None             # -> swanctl/rsa/, ecdsa/ or private/ (by PEM type)
    cacerts: Sequence[Path] = ()        # -> swanctl/x509ca/ (trust anchors)
    pkcs12: Path | None = None          # -> swanctl/pkcs12/: certificate and key instead of cert/key
    pkcs12_secret: str | None = None    # its password (a secrets.pkcs12 entry)
    send_cert: str | None = None        # always | ifasked | never
    send_certreq: bool | None = None
    name: str = "lab"                   # the connection (IKE_SA) name
    child: str = CHILD                  # the CHILD_SA name
    version: int = 2
    ike_proposals: str = "default"
    esp_proposals: str = "default"
    local_ts: str | None = None         # default: the site's LAN subnet
    remote_ts: str | None = None        # default: the peer's LAN subnet
    remote_addrs: str | None = None     # default: peer_address ("%any" to accept a NATed peer)
    # IKE_SA lifetimes
    rekey_time: str | None = None
    reauth_time: str | None = None
    over_time: str | None = None
    rand_time: str | None = None
    # CHILD_SA lifetimes
    child_rekey_time: str | None = None
    child_life_time: str | None = None
    child_rand_time: str | None = None
    child_rekey_bytes: str | None = None
    child_life_bytes: str | None = None
    child_rekey_packets: str | None = None
    child_life_packets: str | None = None
    # liveness and actions
    dpd_delay: str | None = None
    dpd_timeout: str | None = None      # IKEv1 only; IKEv2 gives up after retransmissions
    dpd_action: str | None = None       # child: clear | trap | restart
    start_action: str | None = None     # child: none | trap | start
    close_action: str | None = None     # child: none | trap | start
    keyingtries: int | None = None
    fragmentation: str = "yes"
    encap: bool = False
    mobike: bool = False
    # raw passthrough (swanctl.conf lines inside the connection / local / remote / child
    # sections, strongswan.conf lines inside charon {})
    extra_conn: str = ""
    extra_local: str = ""
    extra_remote: str = ""
    extra_child: str = ""
    extra_charon: str = ""
    plugins: str = PLUGINS
    log_levels: dict[str, int] = field(default_factory=lambda: dict(LOG_LEVELS))


def _kv(key: str, value: object | None) -> str:
    """One swanctl.conf line, or nothing for an unset value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        value = "yes" if value else "no"
    return f"{key} = {value}\n"


def _indent(text: str, depth: int) -> str:
    pad = "  " * depth
    return "".join(pad + line.strip() + "\n" for line in text.splitlines() if line.strip())


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cert_ip_sans(path: Path) -> list[str]:
    """The IP addresses in a certificate's subjectAltName (PEM or DER)."""
    from cryptography import x509

    data = path.read_bytes()
    cert = (x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data
            else x509.load_der_x509_certificate(data))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def _key_dir(path: Path) -> str:
    """The swanctl directory a private key file belongs in."""
    head = path.read_bytes()[:200]
    if b"BEGIN RSA PRIVATE KEY" in head:
        return "rsa"
    if b"BEGIN EC PRIVATE KEY" in head:
        return "ecdsa"
    return "private"  # PKCS#8 (any key type), or DER


def parse_pretty(text: str) -> list[tuple[str, Any]]:
    """Parse ``swanctl --pretty`` output into (section name, nested dict) pairs.

    Sections become dicts, ``key = value`` strings, ``key = [ ... ]`` lists of strings.
    (The ``--raw`` form is ambiguous when a value contains a space, e.g. a DN.)
    """
    top: list[tuple[str, Any]] = []
    stack: list[dict[str, Any]] = []
    current_list: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if current_list is not None:
            if line == "]":
                current_list = None
            else:
                current_list.append(line)
            continue
        if line == "}":
            if stack:
                stack.pop()
            continue
        if line.endswith(" {") or line == "{":
            name = line[:-1].strip()
            section: dict[str, Any] = {}
            if stack:
                stack[-1][name] = section
            else:
                top.append((name, section))
            stack.append(section)
            continue
        key, sep, value = line.partition(" = ")
        if not sep:
            key, value = line.rstrip("="), ""
            key = key.strip()
        if not stack:
            continue
        if value == "[":
            current_list = []
            stack[-1][key] = current_list
        else:
            stack[-1][key] = value
    return top


def parse_list_sas(text: str) -> list[dict[str, Any]]:
    """The IKE_SAs of ``swanctl --list-sas --pretty``, each a dict of vici keys.

    Every IKE_SA dict gets ``name`` (its connection) and ``child-sas``, a list of the
    CHILD_SA dicts (vici keys: ``name``, ``state``, ``spi-in``, ``encr-alg``, ...).
    """
    sas = []
    for event, body in parse_pretty(text):
        if event != "list-sa event":
            continue
        for name, ike in body.items():
            if not isinstance(ike, dict):
                continue
            sa = dict(ike)
            sa["name"] = name
            children = ike.get("child-sas", {})
            sa["child-sas"] = [dict(c, key=k) for k, c in children.items() if isinstance(c, dict)]
            sas.append(sa)
    return sas


class StrongswanPeer:
    """One charon in one gateway namespace, configured from ``PeerSettings``.

    ``peer_address`` is the other gateway's public address (the remote IKE endpoint and,
    for PSK, the default remote identity); ``peer_lan`` its protected subnet.  Files:
    ``workdir/strongswan.conf``, ``workdir/swanctl/``, ``workdir/charon.log`` (filelog),
    ``workdir/charon.out`` (stdout/stderr) and the vici socket ``workdir/charon.vici``.
    """

    def __init__(self, topology: Topology | None, site: Site, peer_address: str, peer_lan: str,
                 workdir: Path, settings: PeerSettings | None = None) -> None:
        self.topology = topology
        self.site = site
        self.peer_address = peer_address
        self.peer_lan = peer_lan
        self.settings = settings if settings is not None else PeerSettings()
        self.dir = Path(workdir)
        self.conf = self.dir / "strongswan.conf"
        self.swanctl_dir = self.dir / "swanctl"
        self.vici = self.dir / "charon.vici"
        self.log = self.dir / "charon.log"
        self.out = self.dir / "charon.out"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- configuration -----------------------------------------------------------------
    @property
    def uri(self) -> str:
        return f"unix://{self.vici}"

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def local_id(self) -> str | None:
        s = self.settings
        if s.local_id is not None:
            return s.local_id
        if s.auth == "psk":
            return self.site.gw_public
        if s.cert is not None and self.site.gw_public in _cert_ip_sans(Path(s.cert)):
            return self.site.gw_public
        return None  # strongSwan uses the certificate's subject DN

    @property
    def remote_id(self) -> str | None:
        s = self.settings
        if s.remote_id is not None:
            return s.remote_id
        if s.auth == "psk":
            return self.peer_address
        return None  # %any: whatever identity a trusted certificate confirms

    def strongswan_conf(self) -> str:
        s = self.settings
        levels = "".join(f"      {k} = {v}\n" for k, v in s.log_levels.items())
        return f"""\
charon {{
  load_modular = no
  load = {s.plugins}
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
      time_add_ms = yes
{levels}    }}
  }}
{_indent(s.extra_charon, 1)}}}
"""

    def swanctl_conf(self) -> str:
        s = self.settings
        if s.auth not in ("psk", "pubkey"):
            raise LabError(f"unknown auth {s.auth!r} (psk or pubkey)")
        local = _kv("auth", s.auth) + _kv("id", self.local_id)
        if s.auth == "pubkey":
            if s.pkcs12 is None and (s.cert is None or s.key is None):
                raise LabError("auth=pubkey needs settings.cert and settings.key, or settings.pkcs12")
            if s.cert is not None:
                local += _kv("certs", "local" + _suffix(Path(s.cert)))
        local += s.extra_local
        remote = _kv("auth", s.auth) + _kv("id", self.remote_id) + s.extra_remote
        conn = (_kv("version", s.version)
                + _kv("local_addrs", self.site.gw_public)
                + _kv("remote_addrs", s.remote_addrs or self.peer_address)
                + _kv("proposals", s.ike_proposals)
                + _kv("rekey_time", s.rekey_time) + _kv("reauth_time", s.reauth_time)
                + _kv("over_time", s.over_time) + _kv("rand_time", s.rand_time)
                + _kv("dpd_delay", s.dpd_delay) + _kv("dpd_timeout", s.dpd_timeout)
                + _kv("keyingtries", s.keyingtries)
                + _kv("fragmentation", s.fragmentation) + _kv("encap", s.encap)
                + _kv("mobike", s.mobike)
                + _kv("send_cert", s.send_cert) + _kv("send_certreq", s.send_certreq)
                + s.extra_conn)
        child = (_kv("mode", "tunnel")
                 + _kv("local_ts", s.local_ts or self.site.lan_subnet)
                 + _kv("remote_ts", s.remote_ts or self.peer_lan)
                 + _kv("esp_proposals", s.esp_proposals)
                 + _kv("rekey_time", s.child_rekey_time) + _kv("life_time", s.child_life_time)
                 + _kv("rand_time", s.child_rand_time)
                 + _kv("rekey_bytes", s.child_rekey_bytes) + _kv("life_bytes", s.child_life_bytes)
                 + _kv("rekey_packets", s.child_rekey_packets)
                 + _kv("life_packets", s.child_life_packets)
                 + _kv("dpd_action", s.dpd_action) + _kv("start_action", s.start_action)
                 + _kv("close_action", s.close_action)
                 + s.extra_child)
        secrets = ""
        if s.auth == "psk":
            ids = "".join(_kv(f"id-{n}", i) for n, i in (("local", self.local_id),
                                                         ("remote", self.remote_id))
                          if i is not None and i != "%any")
            secrets = f"  ike-{s.name} {{\n{_indent(ids, 2)}    secret = {_quote(s.psk)}\n  }}\n"
        if s.pkcs12 is not None:
            secrets += (f"  pkcs12-local {{\n    file = local.p12\n"
                        f"    secret = {_quote(s.pkcs12_secret or '')}\n  }}\n")
        return (f"connections {{\n  {s.name} {{\n{_indent(conn, 2)}"
                f"    local {{\n{_indent(local, 3)}    }}\n"
                f"    remote {{\n{_indent(remote, 3)}    }}\n"
                f"    children {{\n      {s.child} {{\n{_indent(child, 4)}      }}\n    }}\n"
                f"  }}\n}}\nsecrets {{\n{secrets}}}\n")

    def write_config(self) -> None:
        """Write strongswan.conf, swanctl/swanctl.conf and the credential files."""
        s = self.settings
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.swanctl_dir.exists():
            shutil.rmtree(self.swanctl_dir)
        for sub in ("x509", "x509ca", "private", "rsa", "ecdsa", "pkcs12"):
            (self.swanctl_dir / sub).mkdir(parents=True)
        self.conf.write_text(self.strongswan_conf())
        (self.swanctl_dir / "swanctl.conf").write_text(self.swanctl_conf())
        if s.cert is not None:
            cert = Path(s.cert)
            shutil.copyfile(cert, self.swanctl_dir / "x509" / ("local" + _suffix(cert)))
        if s.key is not None:
            key = Path(s.key)
            target = self.swanctl_dir / _key_dir(key) / ("local" + _suffix(key, ".key"))
            shutil.copyfile(key, target)
            target.chmod(0o600)
        if s.pkcs12 is not None:
            target = self.swanctl_dir / "pkcs12" / "local.p12"
            shutil.copyfile(s.pkcs12, target)
            target.chmod(0o600)
        for i, ca in enumerate(s.cacerts):
            ca = Path(ca)
            shutil.copyfile(ca, self.swanctl_dir / "x509ca" / f"ca{i}{_suffix(ca)}")

    # -- life cycle --------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        """Write the config, start charon (private /run) and load the config over vici.

        Does not initiate (unless ``start_action = start``).
        """
        self.write_config()
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
        try:
            deadline = time.monotonic() + timeout
            while True:
                if self.proc.poll() is not None:
                    raise LabError(f"charon in {self.site.gw_ns} exited with "
                                   f"{self.proc.returncode}\n{self.log_tail()}")
                if self.vici.exists() and self.swanctl("--stats", check=False).returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise LabError(f"charon in {self.site.gw_ns}: vici socket not ready\n"
                                   f"{self.log_tail()}")
                time.sleep(0.05)
            self.load()
        except BaseException:
            self.stop()
            raise

    def load(self) -> None:
        """(Re)load connections, secrets and credentials from the swanctl directory."""
        self.swanctl("--load-all", "--noprompt")

    def reconfigure(self, settings: PeerSettings) -> None:
        """Rewrite the config with new settings and reload it into the running charon.

        (swanctl.conf and credentials only: strongswan.conf changes need a restart.)
        """
        self.settings = settings
        self.write_config()
        self.load()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def kill(self) -> None:
        """SIGKILL charon: the peer vanishes without sending a DELETE."""
        proc = self.proc
        if proc is None:
            return
        signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"charon {proc.pid} in {self.site.gw_ns} survived SIGKILL") from exc

    def stop(self) -> None:
        """SIGTERM charon (it sends DELETEs for its SAs), SIGKILL it if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        # Anything left in the session (charon if it ignored SIGTERM, an updown script).
        signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"charon {proc.pid} in {self.site.gw_ns} survived SIGKILL") from exc

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- control -----------------------------------------------------------------------
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
                           f"{(proc.stdout + proc.stderr).strip()[-3000:]}\n{self.log_tail()}")
        return proc

    def initiate(self, child: str | None = None, timeout: float = 20) -> None:
        """Initiate the CHILD_SA (and its IKE_SA if needed); wait until it is up."""
        child = child or self.settings.child
        proc = self.swanctl("--initiate", "--ike", self.name, "--child", child,
                            "--timeout", str(max(1, round(timeout))), check=False,
                            timeout=timeout + 10)
        if proc.returncode != 0:
            raise LabError(f"swanctl --initiate --child {child} in {self.site.gw_ns} failed: "
                           f"{(proc.stdout + proc.stderr).strip()[-2000:]}\n{self.log_tail()}")

    def terminate_ike(self, timeout: float = 10, force: bool = False) -> None:
        """Delete the IKE_SA (and its CHILD_SAs) with an INFORMATIONAL exchange."""
        args = ["--terminate", "--ike", self.name, "--timeout", str(max(1, round(timeout)))]
        if force:
            args.append("--force")
        self.swanctl(*args, timeout=timeout + 10)

    def terminate_child(self, child: str | None = None, timeout: float = 10) -> None:
        """Delete the CHILD_SA, keeping its IKE_SA."""
        self.swanctl("--terminate", "--child", child or self.settings.child,
                     "--timeout", str(max(1, round(timeout))), timeout=timeout + 10)

    def rekey_child(self, child: str | None = None, wait: bool = True,
                    timeout: float = 10) -> dict[str, Any] | None:
        """Rekey the CHILD_SA (CREATE_CHILD_SA); with ``wait``, return the new one.

        swanctl only queues the rekey; waiting means: an INSTALLED CHILD_SA of that name
        with a different inbound SPI, and the old one no longer INSTALLED.  (strongSwan
        5.9.8 keeps the old inbound SA, listed as DELETED, for ``delete_rekeyed_delay``
        = 5 s after a rekey, so list_sas() shows both for a while.)
        """
        child = child or self.settings.child
        old = self.child_sa(child)
        self.swanctl("--rekey", "--child", child)
        if not wait:
            return None
        old_spi = old["spi-in"] if old else None
        deadline = time.monotonic() + timeout
        while True:
            children = [c for sa in self.list_sas() for c in sa["child-sas"] if c.get("name") == child]
            installed = [c for c in children if c.get("state") == "INSTALLED"]
            if len(installed) == 1 and installed[0].get("spi-in") != old_spi:
                return installed[0]
            if time.monotonic() > deadline:
                raise LabError(f"CHILD_SA {child} not rekeyed within {timeout}s: {children}\n"
                               f"{self.log_tail()}")
            time.sleep(0.05)

    def rekey_ike(self, reauth: bool = False, wait: bool = True,
                  timeout: float = 15) -> dict[str, Any] | None:
        """Rekey (or, with ``reauth``, reauthenticate) the IKE_SA; with ``wait``, return
        the new ESTABLISHED IKE_SA once it is the only one and has an INSTALLED child."""
        old = self.ike_sa()
        args = ["--rekey", "--ike", self.name]
        if reauth:
            args.append("--reauth")
        self.swanctl(*args)
        if not wait:
            return None
        old_spis = (old["initiator-spi"], old["responder-spi"]) if old else None
        deadline = time.monotonic() + timeout
        while True:
            sas = self.list_sas()
            if (len(sas) == 1 and sas[0].get("state") == "ESTABLISHED"
                    and (sas[0].get("initiator-spi"), sas[0].get("responder-spi")) != old_spis
                    and any(c.get("state") == "INSTALLED" for c in sas[0]["child-sas"])):
                return sas[0]
            if time.monotonic() > deadline:
                raise LabError(f"IKE_SA {self.name} not rekeyed within {timeout}s: {sas}\n"
                               f"{self.log_tail()}")
            time.sleep(0.05)

    # -- state -------------------------------------------------------------------------
    def list_sas(self, noblock: bool = False) -> list[dict[str, Any]]:
        """The IKE_SAs (``swanctl --list-sas``), each with its ``child-sas`` list.

        Keys are vici's: IKE ``state``, ``local-host``/``-port``, ``remote-host``/``-port``,
        ``initiator-spi``, ``responder-spi``, ``encr-alg``, ``encr-keysize``,
        ``integ-alg``, ``prf-alg``, ``dh-group``, ``nat-local``/``nat-remote``/
        ``nat-fake``/``nat-any`` (present as "yes" when set), ``rekey-time``; CHILD
        ``name``, ``state``, ``mode``, ``protocol``, ``encap``, ``spi-in``, ``spi-out``,
        ``encr-alg``, ``integ-alg``, ``dh-group``, ``bytes-in``/``-out``,
        ``packets-in``/``-out``, ``rekey-time``, ``life-time``, ``local-ts``/``remote-ts``
        (lists).  Values are strings.
        """
        args = ["--list-sas", "--pretty"]
        if noblock:
            args.append("--noblock")
        return parse_list_sas(self.swanctl(*args, timeout=15).stdout)

    def ike_sa(self) -> dict[str, Any] | None:
        """The ESTABLISHED IKE_SA of this peer's connection, if any."""
        for sa in self.list_sas():
            if sa["name"] == self.name and sa.get("state") == "ESTABLISHED":
                return sa
        return None

    def child_sa(self, child: str | None = None) -> dict[str, Any] | None:
        """The INSTALLED CHILD_SA named ``child``, if any."""
        child = child or self.settings.child
        for sa in self.list_sas():
            for c in sa["child-sas"]:
                if c.get("name") == child and c.get("state") == "INSTALLED":
                    return c
        return None

    def child_installed(self, child: str | None = None) -> bool:
        return self.child_sa(child) is not None

    def wait_child_installed(self, child: str | None = None, timeout: float = 20) -> dict[str, Any]:
        """Wait until the CHILD_SA is INSTALLED here; return it."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.child_sa(child)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise LabError(f"CHILD_SA {child or self.settings.child} not INSTALLED in "
                               f"{self.site.gw_ns} within {timeout}s\n{self.log_tail()}")
            time.sleep(0.05)

    def wait_no_sas(self, timeout: float = 10) -> None:
        """Wait until this charon has no IKE_SA left."""
        deadline = time.monotonic() + timeout
        while True:
            sas = self.list_sas()
            if not sas:
                return
            if time.monotonic() > deadline:
                raise LabError(f"IKE_SAs still present in {self.site.gw_ns}: {sas}")
            time.sleep(0.05)

    def wait_log(self, pattern: str, timeout: float = 10, start: int = 0) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) appears in the log after character ``start``."""
        return wait_text(self.log_text, pattern, timeout, start, f"the log of {self.site.gw_ns}",
                         self.log_tail)

    def log_text(self) -> str:
        """charon's whole log file."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of charon's log (and of its stdout/stderr)."""
        parts = []
        for path in (self.log, self.out):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(parts) or f"(no log in {self.dir})"


def _suffix(path: Path, default: str = ".crt") -> str:
    return path.suffix if path.suffix in (".pem", ".crt", ".der", ".key", ".cer") else default


class StrongswanPair:
    """Two charons (hq and branch gateways) with an IKEv2/PSK tunnel between the LANs."""

    def __init__(self, topology: Topology, workdir: Path,
                 esp_proposal: str = "aes128gcm16") -> None:
        self.topology = topology
        self.workdir = Path(workdir)
        self.esp_proposal = esp_proposal
        hq, branch = topology.hq, topology.branch

        def settings(site: Site, peer: Site) -> PeerSettings:
            return PeerSettings(auth="psk", psk=PSK, name=CONN, child=CHILD,
                                local_id=f"{site.name}.gwbench", remote_id=f"{peer.name}.gwbench",
                                ike_proposals=IKE_PROPOSAL, esp_proposals=esp_proposal,
                                encap=True, fragmentation="yes", mobike=True)

        self.hq = StrongswanPeer(topology, hq, branch.gw_public, branch.lan_subnet,
                                 self.workdir / "hq", settings(hq, branch))
        self.branch = StrongswanPeer(topology, branch, hq.gw_public, hq.lan_subnet,
                                     self.workdir / "branch", settings(branch, hq))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> None:
        """Start both charons, bring the tunnel up and check a ping crosses it."""
        try:
            for peer in (self.hq, self.branch):
                peer.start()
            try:
                self.hq.initiate(CHILD, timeout=timeout)
            except LabError as exc:
                raise LabError(f"{exc}\n{self.logs()}") from exc
            self.hq.wait_child_installed(timeout=timeout)
            self.branch.wait_child_installed(timeout=timeout)
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
        for peer in (self.hq, self.branch):
            try:
                peer.stop()
            except LabError as exc:
                errors.append(str(exc))
        if errors:
            raise LabError("; ".join(errors))

    def esp_algorithm(self) -> str:
        """The negotiated ESP transform as reported by hq, e.g. ``AES_GCM_16-128``."""
        fields = self.hq.child_sa(CHILD)
        if fields is None:
            raise LabError(f"no INSTALLED CHILD_SA in: {self.hq.list_sas()}")
        algorithm = fields.get("encr-alg", "?")
        if "encr-keysize" in fields:
            algorithm += f"-{fields['encr-keysize']}"
        if "integ-alg" in fields:
            algorithm += f"/{fields['integ-alg']}"
        return algorithm

    def logs(self) -> str:
        """The tails of both charons' logs."""
        return f"[hq]\n{self.hq.log_tail()}\n[branch]\n{self.branch.log_tail()}"
