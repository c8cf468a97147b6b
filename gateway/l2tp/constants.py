"""The numbers RFC 2661 assigns: message types (3.2), AVP types (4.4), result and error codes
(4.4.2), capability and type bits, and the protocol's fixed values."""

from __future__ import annotations

from enum import IntEnum

L2TP_PORT = 1701
VERSION = 2  # the Ver field of every L2TP (v2) header (RFC 2661 3.1)
PROTOCOL_VERSION = (1, 0)  # the Protocol Version AVP value we speak (RFC 2661 4.4.2)
DEFAULT_PEER_WINDOW = 4  # a peer that sends no Receive Window Size AVP (RFC 2661 4.4.3, 5.8)


class MessageType(IntEnum):
    """Control message types (RFC 2661 3.2)."""

    SCCRQ = 1
    SCCRP = 2
    SCCCN = 3
    STOPCCN = 4
    HELLO = 6
    OCRQ = 7
    OCRP = 8
    OCCN = 9
    ICRQ = 10
    ICRP = 11
    ICCN = 12
    CDN = 14
    WEN = 15
    SLI = 16


#: messages about the control connection as a whole; every other type is about one session
TUNNEL_MESSAGES = frozenset({MessageType.SCCRQ, MessageType.SCCRP, MessageType.SCCCN,
                             MessageType.STOPCCN, MessageType.HELLO})


def message_name(value: int | None) -> str:
    if value is None:
        return "ZLB"
    try:
        return MessageType(value).name
    except ValueError:
        return f"type-{value}"


class AvpType(IntEnum):
    """Attribute types of the IETF (vendor 0) AVPs (RFC 2661 4.4)."""

    MESSAGE_TYPE = 0
    RESULT_CODE = 1
    PROTOCOL_VERSION = 2
    FRAMING_CAPABILITIES = 3
    BEARER_CAPABILITIES = 4
    TIE_BREAKER = 5
    FIRMWARE_REVISION = 6
    HOST_NAME = 7
    VENDOR_NAME = 8
    ASSIGNED_TUNNEL_ID = 9
    RECEIVE_WINDOW_SIZE = 10
    CHALLENGE = 11
    Q931_CAUSE_CODE = 12
    CHALLENGE_RESPONSE = 13
    ASSIGNED_SESSION_ID = 14
    CALL_SERIAL_NUMBER = 15
    MINIMUM_BPS = 16
    MAXIMUM_BPS = 17
    BEARER_TYPE = 18
    FRAMING_TYPE = 19
    CALLED_NUMBER = 21
    CALLING_NUMBER = 22
    SUB_ADDRESS = 23
    TX_CONNECT_SPEED = 24
    PHYSICAL_CHANNEL_ID = 25
    INITIAL_RECEIVED_LCP_CONFREQ = 26
    LAST_SENT_LCP_CONFREQ = 27
    LAST_RECEIVED_LCP_CONFREQ = 28
    PROXY_AUTHEN_TYPE = 29
    PROXY_AUTHEN_NAME = 30
    PROXY_AUTHEN_CHALLENGE = 31
    PROXY_AUTHEN_ID = 32
    PROXY_AUTHEN_RESPONSE = 33
    CALL_ERRORS = 34
    ACCM = 35
    RANDOM_VECTOR = 36
    PRIVATE_GROUP_ID = 37
    RX_CONNECT_SPEED = 38
    SEQUENCING_REQUIRED = 39


def avp_name(vendor: int, attribute: int) -> str:
    if vendor == 0:
        try:
            return AvpType(attribute).name
        except ValueError:
            pass
    return f"vendor-{vendor}:type-{attribute}" if vendor else f"type-{attribute}"


class StopCcnResult(IntEnum):
    """Result codes of StopCCN (RFC 2661 4.4.2)."""

    GENERAL_REQUEST = 1
    GENERAL_ERROR = 2
    ALREADY_EXISTS = 3
    NOT_AUTHORIZED = 4
    BAD_PROTOCOL_VERSION = 5
    SHUTTING_DOWN = 6
    FSM_ERROR = 7


class CdnResult(IntEnum):
    """Result codes of CDN (RFC 2661 4.4.2)."""

    LOST_CARRIER = 1
    GENERAL_ERROR = 2
    ADMINISTRATIVE = 3
    NO_FACILITIES_TEMPORARY = 4
    NO_FACILITIES_PERMANENT = 5
    INVALID_DESTINATION = 6
    NO_CARRIER = 7
    BUSY = 8
    NO_DIAL_TONE = 9
    TIMEOUT = 10
    NO_FRAMING = 11


class ErrorCode(IntEnum):
    """General error codes, the second field of a Result Code AVP (RFC 2661 4.4.2)."""

    NO_ERROR = 0
    NO_CONTROL_CONNECTION = 1
    BAD_LENGTH = 2
    BAD_VALUE = 3
    NO_RESOURCES = 4
    BAD_SESSION_ID = 5
    VENDOR_ERROR = 6
    TRY_ANOTHER = 7
    UNKNOWN_MANDATORY_AVP = 8


STOPCCN_TEXT = {
    1: "general request to clear control connection",
    2: "general error",
    3: "control channel already exists",
    4: "requester is not authorized to establish a control channel",
    5: "protocol version of the requester is not supported",
    6: "requester is being shut down",
    7: "finite state machine error",
}
CDN_TEXT = {
    1: "call disconnected due to loss of carrier",
    2: "call disconnected for the reason indicated in error code",
    3: "call disconnected for administrative reasons",
    4: "call failed due to lack of appropriate facilities (temporary)",
    5: "call failed due to lack of appropriate facilities (permanent)",
    6: "invalid destination",
    7: "call failed due to no carrier detected",
    8: "call failed due to detection of a busy signal",
    9: "call failed due to lack of a dial tone",
    10: "call was not established within time allotted by LAC",
    11: "call was connected but no appropriate framing was detected",
}
ERROR_TEXT = {
    0: "no general error",
    1: "no control connection exists yet for this LAC-LNS pair",
    2: "length is wrong",
    3: "a field value was out of range or a reserved field was non-zero",
    4: "insufficient resources to handle this operation now",
    5: "the Session ID is invalid in this context",
    6: "a generic vendor-specific error occurred",
    7: "try another",
    8: "unknown mandatory AVP received",
}

# Framing Capabilities / Framing Type bits (RFC 2661 4.4.3, 4.4.5)
FRAMING_SYNC = 0x1
FRAMING_ASYNC = 0x2
# Bearer Capabilities / Bearer Type bits (RFC 2661 4.4.3, 4.4.5)
BEARER_DIGITAL = 0x1
BEARER_ANALOG = 0x2


class ProxyAuthenType(IntEnum):
    """Values of the Proxy Authen Type AVP (RFC 2661 4.4.5)."""

    TEXTUAL = 1
    CHAP = 2
    PAP = 3
    NONE = 4
    MSCHAP_V1 = 5
