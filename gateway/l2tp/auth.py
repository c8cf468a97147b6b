"""Tunnel authentication (RFC 2661 4.4.3, 5.1.1): a CHAP-like exchange of the Challenge and
Challenge Response AVPs during control connection setup, over a shared secret."""

from __future__ import annotations

import hashlib
import hmac

from gateway.l2tp.constants import MessageType

CHALLENGE_SIZE = 16


def challenge_response(message_type: MessageType | int, secret: bytes, challenge: bytes) -> bytes:
    """MD5 of the CHAP identifier, the secret and the challenge (RFC 1994 4.1), where the
    identifier is the Message Type of the message carrying the response: 2 in an SCCRP,
    3 in an SCCCN (RFC 2661 5.1.1)."""
    return hashlib.md5(bytes((int(message_type),)) + secret + challenge).digest()


def response_matches(message_type: MessageType | int, secret: bytes, challenge: bytes,
                     response: object) -> bool:
    """Whether ``response`` (a Challenge Response AVP value, or None) answers our challenge."""
    if not isinstance(response, bytes):
        return False
    return hmac.compare_digest(response, challenge_response(message_type, secret, challenge))
