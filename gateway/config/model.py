"""The configuration schema: typed, validated, documented in configs/README.md.

Pydantic checks shapes and single values; `gateway.config.checks` adds the rules that
span several keys.  Secrets (pre-shared keys, manual SA keys) are held in `Secret`,
whose repr and str never show the value.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

from gateway.config.yamlsource import HexInt

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


class Secret:
    """A secret value: bytes inside, ``***`` outside."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        import hmac

        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return id(self)


def _ipv4(value: Any) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError:
        raise ValueError("not an IPv4 address") from None


def _network(value: Any) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as exc:
        raise ValueError(f"not an IPv4 subnet ({exc})") from None


def _host(value: Any) -> str:
    text = str(value)
    if text in ("%any", "any"):
        return "%any"
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        pass
    if _HOSTNAME.match(text) and not text.replace(".", "").isdigit():
        return text
    raise ValueError("not an IP address or host name (or %any)")


def _duration(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError("not a duration (e.g. 30s, 15m, 4h, 1d)")
        seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def _size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError("not a size (e.g. 500M, 4G)")
    return int(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " ")


def _spi(value: Any) -> int:
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            raise ValueError("not an SPI (an integer, e.g. 0x1001)") from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("not an SPI (an integer, e.g. 0x1001)")
    if not 256 <= value <= 0xFFFFFFFF:
        raise ValueError("SPI must be between 256 and 0xffffffff (1-255 are reserved, RFC 4303 2.1)")
    return value


def _hex_secret(value: Any) -> Secret:
    if isinstance(value, HexInt):
        text = value.text
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError("a key must be written in hex, e.g. 0x00112233...")
    text = text.strip().lower()
    text = text[2:] if text.startswith("0x") else text
    text = text.replace(":", "").replace(" ", "")
    if len(text) % 2:
        raise ValueError("a hex key needs an even number of digits")
    try:
        return Secret(bytes.fromhex(text))
    except ValueError:
        raise ValueError("not a hex key") from None


def _text_secret(value: Any) -> Secret:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return Secret(value.encode())


def _absolute_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("give an absolute path")
    return value


def _listen(value: Any) -> tuple[str, int]:
    text = str(value)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("not an address:port (e.g. 127.0.0.1:9436)")
    return (host.strip("[]") or "0.0.0.0"), int(port)


IPv4 = Annotated[ipaddress.IPv4Address, BeforeValidator(_ipv4)]
Subnet = Annotated[ipaddress.IPv4Network, BeforeValidator(_network)]
Host = Annotated[str, BeforeValidator(_host)]
Duration = Annotated[int, BeforeValidator(_duration)]
Size = Annotated[int, BeforeValidator(_size)]
Spi = Annotated[int, BeforeValidator(_spi)]
HexKey = Annotated[Secret, BeforeValidator(_hex_secret), PlainSerializer(lambda s: "***")]
TextSecret = Annotated[Secret, BeforeValidator(_text_secret), PlainSerializer(lambda s: "***")]
Listen = Annotated[tuple[str, int], BeforeValidator(_listen)]
AbsolutePath = Annotated[str, BeforeValidator(_absolute_path)]
Interface = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,15}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)


class GatewaySection(Strict):
    name: str = "gateway"
    public_interface: Interface
    public_address: IPv4
    lan_interfaces: list[Interface] = []


class DataplaneSection(Strict):
    backend: Literal["userspace", "kernel"] = "userspace"
    tun_name: Interface = "gw0"
    tun_mtu: int = Field(1400, ge=576, le=9000)
    #: TCP segmentation/coalescing with the TUN and UDP GSO/GRO on port 4500 (userspace)
    offload: bool = True
    replay_window: int = Field(1024, ge=0, le=65536)
    socket_mark: int = Field(0x4750, ge=1, le=0xFFFFFFFF)
    routing_table: int = Field(4750, ge=1, le=0xFFFFFFF0)


class ManagementEntry(Strict):
    source: Subnet
    protocol: Literal["tcp", "udp", "icmp"]
    port: int | None = Field(None, ge=1, le=65535)


class EdgeSection(Strict):
    nftables: bool = True
    management: list[ManagementEntry] = []


class ControlSection(Strict):
    socket: str = "/run/gateway/control.sock"


class MetricsSection(Strict):
    listen: Listen | None = None


class LoggingSection(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    #: a private directory for Wireshark's ESP SA table (gateway.keylog): debugging only
    save_keys: AbsolutePath | None = None


#: What a connection accepts when its config names no proposals, by IKE version.  IKEv1's
#: defaults cover the built-in L2TP/IPsec clients: Windows 10/11 (AES-256/SHA-1 with ECP-384,
#: ECP-256 or MODP-2048), macOS/iOS (AES-256 with SHA2-256 or SHA-1, MODP-2048) and ESP with
#: AES-CBC and SHA-1 (what they and SoftEther offer in Phase 2).  3DES, MD5 and MODP-1024 are
#: never accepted unless named.
DEFAULT_PROPOSALS = {
    2: (["aes256gcm16-prfsha256-ecp256", "aes256-sha256-modp2048"],
        ["aes128gcm16", "aes256gcm16", "aes256-sha256"]),
    1: (["aes256-aes128-sha256-sha1-ecp384-ecp256-modp3072-modp2048"],
        ["aes256-aes128-sha256-sha1", "aes256gcm16-aes128gcm16"]),
}


class Proposals(Strict):
    ike: list[str] = DEFAULT_PROPOSALS[2][0]
    esp: list[str] = DEFAULT_PROPOSALS[2][1]


class Lifetimes(Strict):
    ike: Duration = 14400
    reauth: Duration | None = None
    child: Duration = 3600
    jitter: float = Field(0.1, ge=0.0, le=0.5)
    child_bytes: Size | None = None
    child_packets: int | None = Field(None, ge=1)


class PskAuth(Strict):
    method: Literal["psk"]
    psk: TextSecret | None = None
    psk_file: str | None = None
    id: str | None = None
    remote_id: str | None = None


class CertAuth(Strict):
    method: Literal["cert"]
    cert: str
    key: str
    ca: list[str]
    id: str | None = None
    remote_id: str | None = None


class ManualSa(Strict):
    """One direction of a manually keyed SA, as `ip xfrm state` or setkey would hold it."""

    spi: Spi
    algorithm: str
    encryption_key: HexKey | None = None
    integrity_key: HexKey | None = None


class ManualKeying(Strict):
    esn: bool = False
    replay_window: int | None = Field(None, ge=0, le=65536)
    outbound: ManualSa
    inbound: ManualSa


class Dpd(Strict):
    """Liveness checks (RFC 7296 2.4) and what to do when the peer is gone."""

    interval: Duration | None = 30
    timeout: Duration = 30
    action: Literal["clear", "restart", "hold"] = "restart"


class IkeOptions(Strict):
    version: Literal[1, 2] = 2
    start: Literal["none", "start"] = "none"
    fragmentation: bool = True
    fragment_size: int = Field(1280, ge=576, le=9000)
    remote_port: int = Field(500, ge=1, le=65535)
    rsa_pss: bool = False
    initial_contact: bool = True


PppMethod = Literal["mschapv2", "chap-md5", "pap"]


class L2tpServer(Strict):
    """The LNS for dial-in users: L2TP (RFC 2661) inside this connection's IPsec transport
    SAs, PPP with authentication against `users` and an address from `pool`."""

    role: Literal["lns"]
    pool: str
    #: our address on every PPP link (IPCP); default: the first address of the pool subnet
    local_address: IPv4 | None = None
    #: DNS servers for the clients (RFC 1877); default: the pool's
    dns: list[IPv4] = []
    #: accepted methods, most preferred first; PAP (a clear password inside ESP) only if named
    auth: list[PppMethod] = ["mschapv2", "chap-md5"]
    #: L2TP tunnel authentication (RFC 2661 5.1.1): required of the peer when set
    secret: TextSecret | None = None
    hello_interval: Duration = 60
    mru: int = Field(1400, ge=576, le=1500)
    #: TCP MSS of sessions' SYNs is lowered to this (PPP + L2TP + ESP overhead)
    mss: int = Field(1360, ge=536, le=1460)
    #: disconnect a session after this long without traffic
    idle_timeout: Duration | None = None
    #: disconnect a session after this long in any case
    session_limit: Duration | None = None


class L2tpClient(Strict):
    """A LAC (a branch router): dial the LNS at `remote` over L2TP inside IPsec transport
    mode, authenticate as `user`, and route `remote_subnets` over the PPP link."""

    role: Literal["lac"]
    user: str = Field(min_length=1, max_length=253)
    password: TextSecret
    auth: list[PppMethod] = ["mschapv2", "chap-md5"]
    remote_subnets: list[Subnet] = []
    secret: TextSecret | None = None
    hello_interval: Duration = 60
    mru: int = Field(1400, ge=576, le=1500)
    mss: int = Field(1360, ge=536, le=1460)
    #: first and longest wait before dialing again after a failure (doubling between)
    redial_min: Duration = 5
    redial_max: Duration = 120


class User(Strict):
    """A dial-in user. Store `nt_hash` (MS-CHAPv2 and PAP) or `password_hash` (PAP only,
    salted scrypt); a clear `password` is needed only for CHAP-MD5 (RFC 1994 needs it)."""

    nt_hash: HexKey | None = None
    #: salted (not the password itself, still a secret: never in a repr or a dump)
    password_hash: Annotated[str, PlainSerializer(lambda s: "***")] | None = Field(None, repr=False)
    password: TextSecret | None = None
    #: a fixed address instead of one from the pool
    address: IPv4 | None = None
    max_sessions: int = Field(1, ge=1, le=1000)
    idle_timeout: Duration | None = None
    session_limit: Duration | None = None


class DemandDial(Strict):
    """A demand-dial interface (the branch router's dial-on-demand, as in Windows RRAS and
    pppd's ``demand``): routes and a trap policy are in place from the start, the first
    packet for the remote subnets dials, and the packets that wait meanwhile are held
    (never sent in clear) and delivered once the tunnel is up."""

    #: hang up after this long without a data packet either way (none: stay up once dialed)
    idle_timeout: Duration | None = 300
    #: packets held while dialing; further ones are dropped (counted hold_full)
    queue: int = Field(32, ge=0, le=4096)
    #: dial at start and again whenever the tunnel goes down; never hang up when idle
    persistent: bool = False
    #: a dial (IKE, and for a LAC L2TP and PPP too) that is not up after this long failed
    dial_timeout: Duration = 30
    #: after a failed dial, the next waits redial_min, doubling up to redial_max
    redial_min: Duration = 5
    redial_max: Duration = 120


class Connection(Strict):
    remote: Host
    local_subnets: list[Subnet] = []
    remote_subnets: list[Subnet] = []
    mode: Literal["tunnel", "transport"] = "tunnel"
    protocol: Literal["esp", "ah"] = "esp"
    encapsulation: Literal["auto", "udp", "none"] = "auto"
    remote_port: int = Field(4500, ge=1, le=65535)
    keying: Literal["ike", "manual"] = "ike"
    proposals: Proposals = Proposals()
    lifetimes: Lifetimes = Lifetimes()
    auth: Annotated[PskAuth | CertAuth, Field(discriminator="method")] | None = None
    manual: ManualKeying | None = None
    ike: IkeOptions = IkeOptions()
    dpd: Dpd = Dpd()
    pool: str | None = None
    #: L2TP/PPP over this connection's transport-mode SAs (IKEv1): an LNS or a LAC
    l2tp: Annotated[L2tpServer | L2tpClient, Field(discriminator="role")] | None = None
    #: bring the tunnel up when traffic needs it and down when idle (`DemandDial`)
    demand_dial: DemandDial | None = None

    @model_validator(mode="after")
    def _version_defaults(self) -> Connection:
        """Proposals the config leaves out default by IKE version (`DEFAULT_PROPOSALS`); an
        L2TP connection is IKEv1 transport mode unless the config says otherwise (what the
        L2TP/IPsec clients built into operating systems speak, RFC 3193)."""
        if self.l2tp is not None:
            if "mode" not in self.model_fields_set:
                object.__setattr__(self, "mode", "transport")
            if "ike" not in self.model_fields_set or "version" not in self.ike.model_fields_set:
                object.__setattr__(self, "ike", self.ike.model_copy(update={"version": 1}))
        given = self.proposals.model_fields_set
        ike, esp = DEFAULT_PROPOSALS[self.ike.version]
        if self.ike.version != 2 and not {"ike", "esp"} <= given:
            proposals = Proposals(ike=self.proposals.ike if "ike" in given else ike,
                                  esp=self.proposals.esp if "esp" in given else esp)
            object.__setattr__(self, "proposals", proposals)
        return self


class Pool(Strict):
    """Virtual IPs (and DNS servers) handed to remote-access clients (RFC 7296 3.15)."""

    subnet: Subnet
    dns: list[IPv4] = []


class IkeSection(Strict):
    cookie_threshold: int = Field(10, ge=0, le=100000)
    retransmit_timeout: float = Field(4.0, gt=0, le=60)
    retransmit_tries: int = Field(5, ge=0, le=20)
    #: responder limits (gateway.ike.settings.ResponderLimits): half-open SAs in all, per
    #: IKE version, and per source address; seconds a half-open SA waits for its peer
    half_open_max: int = Field(2000, ge=1, le=1000000)
    half_open_per_source: int = Field(100, ge=1, le=1000000)
    half_open_timeout: float = Field(30.0, gt=0, le=600)


# The policy section's schema builds on the types above (and the policy model): imported
# here, after them, so that either package may be imported first.
from gateway.config.policy import PolicySection  # noqa: E402


class Config(Strict):
    gateway: GatewaySection
    dataplane: DataplaneSection = DataplaneSection()
    edge: EdgeSection = EdgeSection()
    control: ControlSection = ControlSection()
    metrics: MetricsSection = MetricsSection()
    logging: LoggingSection = LoggingSection()
    ike: IkeSection = IkeSection()
    pools: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")], Pool] = {}
    connections: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")], Connection] = {}
    users: dict[Annotated[str, Field(min_length=1, max_length=253)], User] = {}
    #: the IPsec policy (gateway.policy): filter lists, filter actions, rules
    policy: PolicySection | None = None
