"""L2TP (RFC 2661) as a sans-IO core: LNS for dial-in clients, LAC for branch routers.

``L2tpEndpoint`` is the whole interface; ``events`` says what it reports; ``message`` and
``avp`` are the wire codecs; ``reliable`` is the control channel's delivery (RFC 2661 5.8).
"""

from gateway.l2tp.constants import CdnResult, ErrorCode, MessageType, StopCcnResult
from gateway.l2tp.endpoint import L2tpEndpoint
from gateway.l2tp.errors import L2tpMalformed, L2tpRefused
from gateway.l2tp.events import (
    FrameReceived,
    L2tpEvent,
    LinkInfo,
    Note,
    SessionDown,
    SessionKey,
    SessionUp,
    TunnelDown,
    TunnelUp,
)
from gateway.l2tp.settings import L2tpSettings

__all__ = [
    "CdnResult", "ErrorCode", "FrameReceived", "L2tpEndpoint", "L2tpEvent", "L2tpMalformed", "L2tpRefused",
    "L2tpSettings", "LinkInfo", "MessageType", "Note", "SessionDown", "SessionKey", "SessionUp",
    "StopCcnResult", "TunnelDown", "TunnelUp",
]
