"""Settings of a PPP session: LCP timers and options, and each role's authentication and
addressing.  Plain frozen dataclasses; the daemon builds them from its YAML model.

Defaults follow RFC 1661 4.6 (Restart timer 3 s, Max-Terminate 2, Max-Configure 10,
Max-Failure 5).  The MRU default of 1400 leaves room for L2TP, UDP, ESP and IP headers
inside a 1500-octet path.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

METHODS = ("pap", "chap-md5", "mschapv2")


def _check_methods(methods: tuple[str, ...], who: str) -> None:
    if not methods:
        raise ValueError(f"{who}: at least one authentication method is needed")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"{who}: unknown authentication method {m!r} (known: {', '.join(METHODS)})")
    if len(set(methods)) != len(methods):
        raise ValueError(f"{who}: authentication methods repeat")


def _check_ipv4(value: str, what: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"{what}: {value!r} is not an IPv4 address") from None


@dataclass(frozen=True)
class LcpConfig:
    """LCP (RFC 1661 6) and the option negotiation automaton's timers (RFC 1661 4.6)."""

    mru: int = 1400
    restart_interval: float = 3.0
    max_configure: int = 10
    max_terminate: int = 2
    max_failure: int = 5
    #: seconds between LCP Echo-Requests (RFC 1661 5.8); None: no keepalives
    echo_interval: float | None = 20.0
    #: unanswered Echo-Requests after which the link is declared dead
    echo_failures: int = 3
    #: send Echo-Requests only when nothing arrived for an interval (any frame proves life)
    echo_adaptive: bool = True
    magic_number: bool = True
    #: ask the peer to compress towards us (RFC 1661 6.5/6.6); we always accept both forms
    request_pfc: bool = False
    request_acfc: bool = False
    #: compress towards a peer that asked for it
    compress_to_peer: bool = True

    def __post_init__(self) -> None:
        if not 128 <= self.mru <= 1500:
            raise ValueError(f"lcp mru {self.mru} outside 128..1500")
        if self.restart_interval <= 0:
            raise ValueError("lcp restart_interval must be positive")
        for name in ("max_configure", "max_terminate", "max_failure", "echo_failures"):
            if getattr(self, name) < 1:
                raise ValueError(f"lcp {name} must be at least 1")
        if self.echo_interval is not None and self.echo_interval <= 0:
            raise ValueError("lcp echo_interval must be positive (or None)")


@dataclass(frozen=True)
class ServerConfig:
    """We are the authenticator and hand out the address (an LNS for dial-in users)."""

    #: our own address on the link (IPCP IP-Address, RFC 1332 3.3)
    local_address: str
    #: DNS servers offered (RFC 1877 1.1, 1.3): at most two
    dns: tuple[str, ...] = ()
    #: the methods we accept, most preferred first (offered in LCP Auth-Protocol)
    methods: tuple[str, ...] = ("mschapv2", "chap-md5")
    #: our name in CHAP Challenges (RFC 1994 4.1)
    name: str = "gateway"
    #: the whole authentication phase must end within this many seconds
    auth_timeout: float = 30.0

    def __post_init__(self) -> None:
        _check_methods(self.methods, "ppp server")
        _check_ipv4(self.local_address, "ppp server local_address")
        if len(self.dns) > 2:
            raise ValueError("ppp server: at most two DNS servers (RFC 1877)")
        for d in self.dns:
            _check_ipv4(d, "ppp server dns")
        if self.auth_timeout <= 0:
            raise ValueError("ppp server auth_timeout must be positive")


@dataclass(frozen=True)
class ClientConfig:
    """We authenticate to the peer and take the address it gives (a LAC dialing an LNS)."""

    user: str
    password: str = field(repr=False)
    #: the methods we agree to, most preferred first (PAP sends the password in clear:
    #: list it only where the peer needs it)
    methods: tuple[str, ...] = ("mschapv2", "chap-md5")
    #: ask for DNS servers (RFC 1877)
    request_dns: bool = True
    #: the address we ask for; 0.0.0.0: whatever the peer assigns
    address: str = "0.0.0.0"
    auth_timeout: float = 30.0

    def __post_init__(self) -> None:
        _check_methods(self.methods, "ppp client")
        _check_ipv4(self.address, "ppp client address")
        if not self.user:
            raise ValueError("ppp client: user must not be empty")
        if self.auth_timeout <= 0:
            raise ValueError("ppp client auth_timeout must be positive")


@dataclass(frozen=True)
class PppConfig:
    """All of a session's settings; ``server`` or ``client`` must match its role."""

    lcp: LcpConfig = field(default_factory=LcpConfig)
    server: ServerConfig | None = None
    client: ClientConfig | None = None
