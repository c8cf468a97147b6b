"""The IPsec policy: filter lists, filter actions, rules and the predefined policies
(`model`, `predefined`), compiled into ordered SPD entries (`compiler`), explained per
packet (`explain`), read from the ``policy:`` config section (`config`), put in the
running gateway (`runtime`, imported on its own: it needs the config model), and the
`gateway policy` commands (`cli`).  Sans-IO."""

from gateway.policy.compiler import CompiledPolicy, DefaultResponse, PolicyEntry, compile_policy
from gateway.policy.explain import Explanation, explain
from gateway.policy.model import (
    DEFAULT_METHODS,
    AuthMethod,
    Filter,
    FilterAction,
    FilterList,
    IpsecPolicy,
    PolicyError,
    Rule,
    SecurityMethod,
)
from gateway.policy.predefined import (
    PREDEFINED,
    client_respond_only,
    secure_server_require_security,
    server_request_security,
)

__all__ = [
    "DEFAULT_METHODS",
    "PREDEFINED",
    "AuthMethod",
    "CompiledPolicy",
    "DefaultResponse",
    "Explanation",
    "Filter",
    "FilterAction",
    "FilterList",
    "IpsecPolicy",
    "PolicyEntry",
    "PolicyError",
    "Rule",
    "SecurityMethod",
    "client_respond_only",
    "compile_policy",
    "explain",
    "secure_server_require_security",
    "server_request_security",
]
