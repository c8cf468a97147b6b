"""PPP (RFC 1661) for L2TP, sans-IO, as the server (authenticator, address assigner) and
as the client: LCP, PAP, CHAP-MD5, MS-CHAPv2, IPCP.  See `gateway.ppp.session`."""

from gateway.ppp.auth import UserSecret, nt_hash, salted_hash
from gateway.ppp.config import ClientConfig, LcpConfig, PppConfig, ServerConfig
from gateway.ppp.events import AuthFailed, AuthSucceeded, IpPacket, LinkDown, LinkUp, Note, PppEvent
from gateway.ppp.frame import PppMalformed
from gateway.ppp.session import Phase, PppSession

__all__ = [
    "AuthFailed",
    "AuthSucceeded",
    "ClientConfig",
    "IpPacket",
    "LcpConfig",
    "LinkDown",
    "LinkUp",
    "Note",
    "Phase",
    "PppConfig",
    "PppEvent",
    "PppMalformed",
    "PppSession",
    "ServerConfig",
    "UserSecret",
    "nt_hash",
    "salted_hash",
]
