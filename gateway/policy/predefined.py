"""The predefined filter lists, filter actions and the three classic policies.

* Client (Respond Only): no rules, only the default response rule: talk in clear, and
  secure what a peer asks to secure.
* Server (Request Security): all IP traffic -> request security (falls back to clear for
  a peer that does not negotiate, accepts unsecured inbound and answers it secured); all
  ICMP -> permit; the default response rule.
* Secure Server (Require Security): all IP traffic -> require security (no fallback, no
  unsecured inbound); all ICMP -> permit; the default response rule.

"All IP traffic" and "all ICMP traffic" are the mirrored filters ``me -> any`` (any
protocol, or ICMP): this gateway's own traffic with every other host.  The ICMP permit is
the more specific filter (a protocol is given), so it wins over the IP rule (see
`gateway.policy.compiler`), which keeps ping and path-MTU discovery working while IKE
has not run.  Security methods default to `DEFAULT_METHODS` and peers authenticate as
`auth` says (empty: as the integration decides, e.g. from a connection).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.policy.model import (
    DEFAULT_METHODS,
    AuthMethod,
    Filter,
    FilterAction,
    FilterList,
    IpsecPolicy,
    Rule,
    SecurityMethod,
)

ALL_IP_TRAFFIC = FilterList("all-ip", (Filter("me", "any"),))
ALL_ICMP_TRAFFIC = FilterList("all-icmp", (Filter("me", "any", "icmp"),))

PERMIT = FilterAction("permit", "permit")
BLOCK = FilterAction("block", "block")
REQUEST_SECURITY = FilterAction("request-security", "negotiate", fallback_to_clear=True,
                                accept_unsecured_inbound=True, methods=DEFAULT_METHODS)
REQUIRE_SECURITY = FilterAction("require-security", "negotiate", methods=DEFAULT_METHODS)

#: Built-in filter lists and actions, by the names a config may use without defining them.
FILTER_LISTS: dict[str, FilterList] = {f.name: f for f in (ALL_IP_TRAFFIC, ALL_ICMP_TRAFFIC)}
FILTER_ACTIONS: dict[str, FilterAction] = {a.name: a for a in (PERMIT, BLOCK, REQUEST_SECURITY,
                                                               REQUIRE_SECURITY)}


def _with_methods(action: FilterAction, methods: Sequence[SecurityMethod]) -> FilterAction:
    return FilterAction(action.name, action.kind, action.fallback_to_clear,
                        action.accept_unsecured_inbound, tuple(methods))


def client_respond_only(*, methods: Sequence[SecurityMethod] = DEFAULT_METHODS,
                        auth: Sequence[AuthMethod] = ()) -> IpsecPolicy:
    """Client (Respond Only): communicate in clear; answer peers that request security."""
    return IpsecPolicy("client-respond-only", (), default_response=True,
                       default_response_methods=tuple(methods), default_response_auth=tuple(auth))


def server_request_security(*, methods: Sequence[SecurityMethod] = DEFAULT_METHODS,
                            auth: Sequence[AuthMethod] = ()) -> IpsecPolicy:
    """Server (Request Security): always ask for security, accept clear from peers that
    cannot negotiate; ICMP in clear."""
    rules = (
        Rule("all-ip-traffic", ALL_IP_TRAFFIC, _with_methods(REQUEST_SECURITY, methods), tuple(auth)),
        Rule("all-icmp-traffic", ALL_ICMP_TRAFFIC, PERMIT),
    )
    return IpsecPolicy("server-request-security", rules, default_response=True,
                       default_response_methods=tuple(methods), default_response_auth=tuple(auth))


def secure_server_require_security(*, methods: Sequence[SecurityMethod] = DEFAULT_METHODS,
                                   auth: Sequence[AuthMethod] = ()) -> IpsecPolicy:
    """Secure Server (Require Security): all IP traffic must be secured, no unsecured
    inbound, no fallback; ICMP in clear."""
    rules = (
        Rule("all-ip-traffic", ALL_IP_TRAFFIC, _with_methods(REQUIRE_SECURITY, methods), tuple(auth)),
        Rule("all-icmp-traffic", ALL_ICMP_TRAFFIC, PERMIT),
    )
    return IpsecPolicy("secure-server-require-security", rules, default_response=True,
                       default_response_methods=tuple(methods), default_response_auth=tuple(auth))


#: The predefined policies by the names the config uses (``policy.predefined``).
PREDEFINED: dict[str, Callable[..., IpsecPolicy]] = {
    "client": client_respond_only,
    "server": server_request_security,
    "secure-server": secure_server_require_security,
}
