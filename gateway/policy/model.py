"""The IPsec policy vocabulary: filters, filter lists, filter actions, rules, policies.

This is the classic host IPsec policy model operators know from the "IP Security
Policies" consoles: a rule joins a *filter list* (which packets) to a *filter action*
(permit them in clear, block them, or negotiate security for them), and says how peers
authenticate, whether the traffic is tunneled (and to which endpoint) and on which kind
of connection the rule applies.  In RFC 4301 terms a filter is a set of selectors
(4.4.1.1) and a filter action the processing choice PROTECT / BYPASS / DISCARD (4.4.1).

Everything here is plain, frozen data, validated on construction (`PolicyError`, naming
the object at fault).  `gateway.policy.compiler` turns a policy into ordered SPD entries.

Addresses in a filter are ``any``, ``me`` (every address of this gateway, resolved at
compile time), a host address or a subnet; the protocol is ``any`` (0), a name (``tcp``,
``udp``, ``icmp``, ...) or a number; ports (0 = any) only go with TCP and UDP.  A filter
is *mirrored* unless told otherwise: it then also covers the replies, i.e. the packets
with source and destination (addresses and ports) swapped, travelling the other way.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from gateway.crypto.algorithms import UnknownAlgorithm, parse_esp_suite, parse_integrity
from gateway.crypto.dh import parse_dh_group


class PolicyError(ValueError):
    """Inconsistent policy input.  `path` (when known) locates it in the config."""

    def __init__(self, message: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


# --------------------------------------------------------------------------------------
# Addresses and protocols
# --------------------------------------------------------------------------------------

#: A filter side: ``"any"``, ``"me"`` or a network (a host is a /32).
AddressSpec = Literal["any", "me"] | ipaddress.IPv4Network

#: IANA protocol numbers by the names a filter may use.
PROTOCOLS: dict[str, int] = {"any": 0, "icmp": 1, "igmp": 2, "ipip": 4, "tcp": 6, "udp": 17,
                             "gre": 47, "esp": 50, "ah": 51, "ospf": 89, "sctp": 132}
_PROTOCOL_NAMES = {number: name for name, number in PROTOCOLS.items()}
_PORT_PROTOCOLS = (6, 17)


def parse_address(value: object) -> AddressSpec:
    """``any``, ``me``, a host address or a subnet (host bits must be zero)."""
    if isinstance(value, ipaddress.IPv4Network):
        return value
    if isinstance(value, ipaddress.IPv4Address):
        return ipaddress.IPv4Network(value)
    text = str(value).strip().lower()
    if text in ("any", "me"):
        return text  # type: ignore[return-value]
    try:
        return ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise PolicyError(f"{value!r} is not 'any', 'me', an IPv4 address or subnet ({exc})") from None


def format_address(spec: AddressSpec) -> str:
    if isinstance(spec, str):
        return spec
    return str(spec.network_address) if spec.prefixlen == 32 else str(spec)


def parse_protocol(value: object) -> int:
    """A protocol name from `PROTOCOLS` or a number 0..255 (0: any)."""
    if isinstance(value, bool):
        raise PolicyError(f"{value!r} is not a protocol")
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip().lower()
        if text in PROTOCOLS:
            return PROTOCOLS[text]
        if not text.isdigit():
            raise PolicyError(f"unknown protocol {value!r} (names: {', '.join(PROTOCOLS)}; or a number)")
        number = int(text)
    if not 0 <= number <= 255:
        raise PolicyError(f"protocol {number} is not between 0 and 255")
    return number


def protocol_name(number: int) -> str:
    return _PROTOCOL_NAMES.get(number, str(number))


# --------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """One filter: source and destination, protocol, ports (0: any), mirrored or not.

    Strings are accepted for the addresses and the protocol and normalised (`parse_address`,
    `parse_protocol`), so ``Filter("me", "10.2.0.0/24", "tcp", destination_port=22)`` works.
    """

    source: AddressSpec
    destination: AddressSpec
    protocol: int = 0
    source_port: int = 0
    destination_port: int = 0
    mirrored: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", parse_address(self.source))
        object.__setattr__(self, "destination", parse_address(self.destination))
        object.__setattr__(self, "protocol", parse_protocol(self.protocol))
        for name in ("source_port", "destination_port"):
            port = getattr(self, name)
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise PolicyError(f"filter {self}: {name} {port!r} is not a port (0..65535, 0: any)")
        if (self.source_port or self.destination_port) and self.protocol not in _PORT_PROTOCOLS:
            raise PolicyError(f"filter {self}: ports need protocol tcp or udp")
        if self.source == "me" and self.destination == "me":
            raise PolicyError(f"filter {self}: source and destination cannot both be 'me'")

    @property
    def specificity(self) -> tuple[int, int, int]:
        """(address prefix bits of both sides, protocol given, ports given); ``me`` counts
        as a host (/32), ``any`` as /0.  Larger is more specific (see the compiler)."""
        bits = sum(32 if side == "me" else 0 if side == "any" else side.prefixlen  # type: ignore[union-attr]
                   for side in (self.source, self.destination))
        return bits, int(self.protocol != 0), int(self.source_port != 0) + int(self.destination_port != 0)

    def __str__(self) -> str:
        src = format_address(self.source)
        dst = format_address(self.destination)
        if self.source_port:
            src += f":{self.source_port}"
        if self.destination_port:
            dst += f":{self.destination_port}"
        return f"{src} -> {dst} {protocol_name(self.protocol)}"


@dataclass(frozen=True)
class FilterList:
    """A named set of filters; a rule applies its action to every packet one matches."""

    name: str
    filters: tuple[Filter, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        if not self.name:
            raise PolicyError("a filter list needs a name")


# --------------------------------------------------------------------------------------
# Filter actions
# --------------------------------------------------------------------------------------

SecurityProtocol = Literal["esp", "ah", "esp+ah"]


@dataclass(frozen=True)
class SecurityMethod:
    """One acceptable protection, in a filter action's order of preference.

    `esp` names an ESP suite as `gateway.crypto.algorithms` does (``aes128gcm16``,
    ``aes256-sha256``), `ah` an integrity algorithm (``sha256``, RFC 4302); `pfs` a DH
    group for a fresh key exchange per Quick Mode / CREATE_CHILD_SA (RFC 7296 1.3.1) or
    None.  Lifetimes (seconds, bytes) are optional; None leaves them to the connection.
    """

    protocol: SecurityProtocol = "esp"
    esp: str | None = None
    ah: str | None = None
    pfs: str | None = None
    lifetime: int | None = None
    lifetime_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.protocol not in ("esp", "ah", "esp+ah"):
            raise PolicyError(f"security method: protocol {self.protocol!r} is not esp, ah or esp+ah")
        wants_esp = self.protocol in ("esp", "esp+ah")
        wants_ah = self.protocol in ("ah", "esp+ah")
        for kind, wanted, given in (("ESP", wants_esp, self.esp), ("AH", wants_ah, self.ah)):
            if wanted and given is None:
                raise PolicyError(f"security method {self.protocol}: name the {kind} algorithm")
            if not wanted and given is not None:
                raise PolicyError(f"security method {self.protocol}: takes no {kind} algorithm")
        try:
            if self.esp is not None:
                object.__setattr__(self, "esp", parse_esp_suite(self.esp).name)
            if self.ah is not None:
                object.__setattr__(self, "ah", parse_integrity(self.ah).name)
            if self.pfs is not None:
                object.__setattr__(self, "pfs", parse_dh_group(self.pfs).name)
        except UnknownAlgorithm as exc:
            raise PolicyError(f"security method: {exc}") from None
        for name in ("lifetime", "lifetime_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise PolicyError(f"security method: {name} must be a positive integer")

    @property
    def esp_proposal(self) -> str | None:
        """The ESP proposal in the project's string form, the PFS group last
        (``aes256-sha256-ecp256``: `gateway.ike.proposals.parse_child_proposal`)."""
        if self.esp is None:
            return None
        return f"{self.esp}-{self.pfs}" if self.pfs else self.esp

    @property
    def ah_proposal(self) -> str | None:
        """The AH proposal (``sha256``, ``sha256-ecp256`` with PFS)."""
        if self.ah is None:
            return None
        return f"{self.ah}-{self.pfs}" if self.pfs else self.ah

    def __str__(self) -> str:
        parts = []
        if self.ah is not None:
            parts.append(f"AH {self.ah}")
        if self.esp is not None:
            parts.append(f"ESP {self.esp}")
        text = " + ".join(parts)
        if self.pfs:
            text += f" with PFS {self.pfs}"
        return text


#: Methods used where none are given: the project's default ESP proposals for IKEv2
#: (`gateway.config.model.DEFAULT_PROPOSALS`), AEAD first, no PFS.
DEFAULT_METHODS: tuple[SecurityMethod, ...] = (
    SecurityMethod("esp", esp="aes128gcm16"),
    SecurityMethod("esp", esp="aes256gcm16"),
    SecurityMethod("esp", esp="aes256-sha256"),
)

ActionKind = Literal["permit", "block", "negotiate"]


@dataclass(frozen=True)
class FilterAction:
    """What happens to matching packets.

    ``permit``: sent and received in clear.  ``block``: discarded.  ``negotiate``: protected
    with one of `methods` (in order of preference).  For ``negotiate`` only:
    `fallback_to_clear` is *request* security (talk in clear to a peer that does not answer
    IKE) against *require* security (False); `accept_unsecured_inbound` accepts a matching
    packet that arrives in clear (and still answers it secured).
    """

    name: str
    kind: ActionKind
    fallback_to_clear: bool = False
    accept_unsecured_inbound: bool = False
    methods: tuple[SecurityMethod, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        where = f"filter action {self.name!r}"
        if self.kind not in ("permit", "block", "negotiate"):
            raise PolicyError(f"{where}: {self.kind!r} is not permit, block or negotiate")
        if self.kind == "negotiate":
            if not self.methods:
                raise PolicyError(f"{where}: negotiate needs at least one security method")
        else:
            if self.methods:
                raise PolicyError(f"{where}: {self.kind} takes no security methods")
            if self.fallback_to_clear or self.accept_unsecured_inbound:
                raise PolicyError(f"{where}: fallback_to_clear and accept_unsecured_inbound "
                                  "only apply to negotiate")

    @property
    def requires(self) -> bool:
        """Negotiate without falling back to clear (*require* security)."""
        return self.kind == "negotiate" and not self.fallback_to_clear


# --------------------------------------------------------------------------------------
# Rules and policies
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthMethod:
    """One way to authenticate peers (IKE phase 1), kept opaque here: the method, where it
    came from (for messages) and the settings the IKE side resolves (e.g. the config's
    `PskAuth`/`CertAuth`; never shown)."""

    method: Literal["psk", "cert"]
    source: str = ""
    settings: object = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.method} ({self.source})" if self.source else self.method


ConnectionType = Literal["all", "lan", "remote-access"]


@dataclass(frozen=True)
class Rule:
    """A filter list, the action for it, how peers authenticate (in order of preference),
    the tunnel endpoint (the peer gateway's address; None: transport mode), the kind of
    connection the rule applies to, and whether it is enabled.  `connection` optionally
    names the configured connection the rule negotiates with."""

    name: str
    filter_list: FilterList
    action: FilterAction
    auth: tuple[AuthMethod, ...] = ()
    tunnel_endpoint: ipaddress.IPv4Address | None = None
    connection_type: ConnectionType = "all"
    enabled: bool = True
    connection: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "auth", tuple(self.auth))
        if not self.name:
            raise PolicyError("a rule needs a name")
        if self.tunnel_endpoint is not None and not isinstance(self.tunnel_endpoint, ipaddress.IPv4Address):
            try:
                object.__setattr__(self, "tunnel_endpoint", ipaddress.IPv4Address(str(self.tunnel_endpoint)))
            except ValueError:
                raise PolicyError(f"rule {self.name!r}: tunnel endpoint {self.tunnel_endpoint!r} "
                                  "is not an IPv4 address") from None
        if self.connection_type not in ("all", "lan", "remote-access"):
            raise PolicyError(f"rule {self.name!r}: connection type {self.connection_type!r} "
                              "is not all, lan or remote-access")
        if self.tunnel_endpoint is not None and self.action.kind != "negotiate":
            raise PolicyError(f"rule {self.name!r}: a tunnel endpoint only applies to a negotiate "
                              f"action, not {self.action.kind} ({self.action.name!r})")

    @property
    def tunnel(self) -> bool:
        return self.tunnel_endpoint is not None


@dataclass(frozen=True)
class IpsecPolicy:
    """Rules plus the default response rule: when `default_response` is on, a peer that
    asks to secure traffic no rule covers is answered (with `default_response_methods`,
    authenticated by `default_response_auth`); the gateway never initiates for it."""

    name: str
    rules: tuple[Rule, ...] = ()
    default_response: bool = True
    default_response_methods: tuple[SecurityMethod, ...] = DEFAULT_METHODS
    default_response_auth: tuple[AuthMethod, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "default_response_methods", tuple(self.default_response_methods))
        object.__setattr__(self, "default_response_auth", tuple(self.default_response_auth))
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise PolicyError(f"policy {self.name!r}: two rules are named {rule.name!r}")
            seen.add(rule.name)
        if self.default_response and not self.default_response_methods:
            raise PolicyError(f"policy {self.name!r}: the default response rule needs security methods")
