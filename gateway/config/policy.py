"""The schema of the ``policy:`` section (pydantic: each value checked on its own).

`gateway.policy.config` documents the section and turns it into an `IpsecPolicy`
(`build_policy`, names resolved across keys); this module only holds the shapes, so that
the top-level `gateway.config.model.Config` can carry them without an import cycle.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from gateway.config.model import CertAuth, Duration, IPv4, PskAuth, Size, Strict
from gateway.crypto.dh import DH_BY_NAME
from gateway.policy.model import AddressSpec, Filter, SecurityMethod, parse_address, parse_protocol

_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
Name = Annotated[str, Field(pattern=_NAME)]
Address = Annotated[AddressSpec, BeforeValidator(parse_address)]
Protocol = Annotated[int, BeforeValidator(parse_protocol)]
Port = Annotated[int, Field(ge=0, le=65535)]
Auth = Annotated[PskAuth | CertAuth, Field(discriminator="method")]


def _method(value: Any) -> Any:
    """A string is an ESP suite with an optional PFS group last (``aes256-sha256-ecp256``)."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    head, _, last = text.rpartition("-")
    if head and last in DH_BY_NAME:
        return {"protocol": "esp", "esp": head, "pfs": last}
    return {"protocol": "esp", "esp": text}


class FilterSpec(Strict):
    source: Address = "me"
    destination: Address = "any"
    protocol: Protocol = 0
    source_port: Port = 0
    destination_port: Port = 0
    mirrored: bool = True

    @model_validator(mode="after")
    def _check(self) -> FilterSpec:
        self.to_filter()
        return self

    def to_filter(self) -> Filter:
        return Filter(self.source, self.destination, self.protocol, self.source_port,
                      self.destination_port, self.mirrored)


class MethodSpec(Strict):
    protocol: Literal["esp", "ah", "esp+ah"] = "esp"
    esp: str | None = None
    ah: str | None = None
    pfs: str | None = None
    lifetime: Duration | None = None
    lifetime_bytes: Size | None = None

    @model_validator(mode="after")
    def _check(self) -> MethodSpec:
        self.to_method()
        return self

    def to_method(self) -> SecurityMethod:
        return SecurityMethod(self.protocol, self.esp, self.ah, self.pfs, self.lifetime, self.lifetime_bytes)


Method = Annotated[MethodSpec, BeforeValidator(_method)]


class FilterActionSpec(Strict):
    action: Literal["permit", "block", "negotiate"]
    fallback_to_clear: bool = False
    accept_unsecured_inbound: bool = False
    #: for negotiate, in order of preference; left out: the project's default ESP proposals
    methods: list[Method] | None = None


class RuleSpec(Strict):
    name: Name
    filter_list: Name
    filter_action: Name
    connection: str | None = None
    auth: list[Auth] = []
    tunnel_endpoint: IPv4 | None = None
    connection_type: Literal["all", "lan", "remote-access"] = "all"
    enabled: bool = True


class PolicySection(Strict):
    name: Name | None = None
    predefined: Literal["client", "server", "secure-server"] | None = None
    #: authentication for rules that name none, and for the default response rule
    connection: str | None = None
    auth: list[Auth] = []
    #: security methods of the predefined rules and the default response rule
    methods: list[Method] | None = None
    filter_lists: dict[Name, list[FilterSpec]] = {}
    filter_actions: dict[Name, FilterActionSpec] = {}
    rules: list[RuleSpec] = []
    #: answer peers asking to secure traffic no rule covers; left out: on when the policy
    #: has authentication (its auth or connection), off otherwise
    default_response: bool | None = None
