"""IKEv1/ISAKMP protocol numbers (RFC 2407, 2408, 2409, 3947, 3706; IANA "ISAKMP" and
"IPsec DOI" registries)."""

from __future__ import annotations

import enum

ISAKMP_VERSION = 0x10  # major 1, minor 0 (RFC 2408 3.1)
IKE_PORT = 500
NATT_PORT = 4500
DOI_IPSEC = 1  # RFC 2407 4.2
SIT_IDENTITY_ONLY = 1  # RFC 2407 4.2


class ExchangeType(enum.IntEnum):
    BASE = 1
    MAIN = 2  # Identity Protection
    AUTH_ONLY = 3
    AGGRESSIVE = 4
    INFORMATIONAL = 5
    TRANSACTION = 6  # Mode Config (draft-dukes-ike-mode-cfg)
    QUICK = 32


class Flag(enum.IntFlag):
    ENCRYPTION = 0x01
    COMMIT = 0x02
    AUTH_ONLY = 0x04


class PayloadType(enum.IntEnum):
    NONE = 0
    SA = 1
    PROPOSAL = 2
    TRANSFORM = 3
    KE = 4
    ID = 5
    CERT = 6
    CERTREQ = 7
    HASH = 8
    SIG = 9
    NONCE = 10
    NOTIFY = 11
    DELETE = 12
    VENDOR = 13
    ATTRIBUTE = 14  # Mode Config
    NAT_D = 20  # RFC 3947
    NAT_OA = 21
    NAT_D_DRAFT = 130  # draft-ietf-ipsec-nat-t-ike-02/03
    NAT_OA_DRAFT = 131
    FRAGMENT = 132  # Cisco/Microsoft IKE fragmentation


class ProtocolId(enum.IntEnum):
    ISAKMP = 1
    AH = 2
    ESP = 3
    IPCOMP = 4


KEY_IKE = 1  # the only Phase 1 transform ID (RFC 2407 4.4.2)


class Phase1Attr(enum.IntEnum):
    """RFC 2409 Appendix A: Phase 1 SA attribute classes."""

    ENCRYPTION = 1
    HASH = 2
    AUTH_METHOD = 3
    GROUP = 4
    GROUP_TYPE = 5
    LIFE_TYPE = 11
    LIFE_DURATION = 12
    PRF = 13
    KEY_LENGTH = 14
    FIELD_SIZE = 15
    GROUP_ORDER = 16


class Phase1Encryption(enum.IntEnum):
    DES_CBC = 1
    IDEA_CBC = 2
    BLOWFISH_CBC = 3
    RC5_CBC = 4
    TRIPLE_DES_CBC = 5
    CAST_CBC = 6
    AES_CBC = 7
    CAMELLIA_CBC = 8


class Phase1Hash(enum.IntEnum):
    MD5 = 1
    SHA1 = 2
    TIGER = 3
    SHA2_256 = 4
    SHA2_384 = 5
    SHA2_512 = 6


class AuthMethod(enum.IntEnum):
    PSK = 1
    DSS = 2
    RSA_SIG = 3
    RSA_ENC = 4
    RSA_ENC_REV = 5
    ECDSA_256 = 9  # RFC 4754
    ECDSA_384 = 10
    ECDSA_521 = 11
    XAUTH_INIT_PSK = 65001
    XAUTH_RESP_PSK = 65002
    XAUTH_INIT_RSA = 65005
    XAUTH_RESP_RSA = 65006


class LifeType(enum.IntEnum):
    SECONDS = 1
    KILOBYTES = 2


class Phase2Attr(enum.IntEnum):
    """RFC 2407 4.5: IPsec SA attribute classes."""

    LIFE_TYPE = 1
    LIFE_DURATION = 2
    GROUP = 3
    ENCAPSULATION = 4
    AUTH_ALGORITHM = 5
    KEY_LENGTH = 6
    KEY_ROUNDS = 7
    COMPRESS_DICT = 8
    PRIVATE_ALGORITHM = 9
    ECN_TUNNEL = 10
    ESN = 11


class Encapsulation(enum.IntEnum):
    TUNNEL = 1
    TRANSPORT = 2
    UDP_TUNNEL = 3  # RFC 3947
    UDP_TRANSPORT = 4
    UDP_TUNNEL_DRAFT = 61443  # draft-ietf-ipsec-nat-t-ike-00..03
    UDP_TRANSPORT_DRAFT = 61444


class EspTransform(enum.IntEnum):
    DES = 2
    TRIPLE_DES = 3
    NULL = 11
    AES_CBC = 12
    AES_CTR = 13
    AES_CCM_8 = 14
    AES_CCM_12 = 15
    AES_CCM_16 = 16
    AES_GCM_8 = 18
    AES_GCM_12 = 19
    AES_GCM_16 = 20


class AhTransform(enum.IntEnum):
    MD5 = 2
    SHA1 = 3
    SHA2_256 = 5
    SHA2_384 = 6
    SHA2_512 = 7


class AuthAlgorithm(enum.IntEnum):
    """Phase 2 "Authentication Algorithm" attribute values (RFC 2407 4.5, RFC 4868)."""

    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    DES_MAC = 3
    KPDK = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7


class IdType(enum.IntEnum):
    IPV4_ADDR = 1
    FQDN = 2
    USER_FQDN = 3
    IPV4_ADDR_SUBNET = 4
    IPV6_ADDR = 5
    IPV6_ADDR_SUBNET = 6
    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11


class CertEncoding(enum.IntEnum):
    PKCS7 = 1
    PGP = 2
    DNS_KEY = 3
    X509_SIG = 4
    X509_KE = 5
    KERBEROS = 6
    CRL = 7
    ARL = 8
    SPKI = 9
    X509_ATTR = 10


class NotifyType(enum.IntEnum):
    """RFC 2408 3.14.1 errors, RFC 2407 4.6.3 status, RFC 3706 DPD."""

    INVALID_PAYLOAD_TYPE = 1
    DOI_NOT_SUPPORTED = 2
    SITUATION_NOT_SUPPORTED = 3
    INVALID_COOKIE = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_MINOR_VERSION = 6
    INVALID_EXCHANGE_TYPE = 7
    INVALID_FLAGS = 8
    INVALID_MESSAGE_ID = 9
    INVALID_PROTOCOL_ID = 10
    INVALID_SPI = 11
    INVALID_TRANSFORM_ID = 12
    ATTRIBUTES_NOT_SUPPORTED = 13
    NO_PROPOSAL_CHOSEN = 14
    BAD_PROPOSAL_SYNTAX = 15
    PAYLOAD_MALFORMED = 16
    INVALID_KEY_INFORMATION = 17
    INVALID_ID_INFORMATION = 18
    INVALID_CERT_ENCODING = 19
    INVALID_CERTIFICATE = 20
    CERT_TYPE_UNSUPPORTED = 21
    INVALID_CERT_AUTHORITY = 22
    INVALID_HASH_INFORMATION = 23
    AUTHENTICATION_FAILED = 24
    INVALID_SIGNATURE = 25
    ADDRESS_NOTIFICATION = 26
    NOTIFY_SA_LIFETIME = 27
    CERTIFICATE_UNAVAILABLE = 28
    UNSUPPORTED_EXCHANGE_TYPE = 29
    UNEQUAL_PAYLOAD_LENGTHS = 30
    CONNECTED = 16384
    RESPONDER_LIFETIME = 24576
    REPLAY_STATUS = 24577
    INITIAL_CONTACT = 24578
    R_U_THERE = 36136
    R_U_THERE_ACK = 36137


#: Vendor IDs we recognise (most are MD5 hashes of a string; RFC 3947 7, RFC 3706 2,
#: draft-ietf-ipsec-nat-t-ike, and what Windows sends).
VENDOR_IDS: dict[bytes, str] = {
    bytes.fromhex("4a131c81070358455c5728f20e95452f"): "RFC 3947",
    bytes.fromhex("90cb80913ebb696e086381b5ec427b1f"): "draft-ietf-ipsec-nat-t-ike-02\\n",
    bytes.fromhex("cd60464335df21f87cfdb2fc68b6a448"): "draft-ietf-ipsec-nat-t-ike-02",
    bytes.fromhex("7d9419a65310ca6f2c179d9215529d56"): "draft-ietf-ipsec-nat-t-ike-03",
    bytes.fromhex("4485152d18b6bbcd0be8a8469579ddcc"): "draft-ietf-ipsec-nat-t-ike-00",
    bytes.fromhex("afcad71368a1f1c96b8696fc77570100"): "DPD",
    bytes.fromhex("4048b7d56ebce88525e7de7f00d6c2d3"): "FRAGMENTATION",
    bytes.fromhex("fb1de3cdf341b7ea16b7e5be0855f120"): "MS-Negotiation Discovery Capable",
    bytes.fromhex("e3a5966a76379fe707228231e5ce8652"): "IKE CGA version 1",
    bytes.fromhex("214ca4faffa7f32d6748e5303395ae83"): "MS-MamieExists",
    bytes.fromhex("72872b95fcda2eb708efe322119b4971"): "NLBS_PRESENT",
    bytes.fromhex("26244d38eddb61b3172a36e3d0cfb819"): "Vid-Initial-Contact",
    bytes.fromhex("7003cbc1097dbe9c2600ba6983bc8b35"): "KAME/racoon",
    bytes.fromhex("882fe56d6fd20dbc2251613b2ebe5beb"): "strongSwan",
    bytes.fromhex("09002689dfd6b712"): "XAuth",
    bytes.fromhex("12f5f28c457168a9702d9fe274cc0100"): "Cisco Unity",
}

#: "MS NT5 ISAKMPOAKLEY" is followed by a 4-octet version (RFC-less; 9 = Windows 7+).
MS_NT5_PREFIX = bytes.fromhex("1e2b516905991c7d7c96fcbfb587e461")
MS_NT5_VERSIONS = {2: "Windows 2000", 3: "Windows XP", 4: "Windows Server 2003",
                   5: "Windows Vista", 6: "Windows Server 2008", 8: "Windows 7", 9: "Windows 8+"}

VID_RFC3947 = bytes.fromhex("4a131c81070358455c5728f20e95452f")
VID_NATT_DRAFT02N = bytes.fromhex("90cb80913ebb696e086381b5ec427b1f")
VID_NATT_DRAFT02 = bytes.fromhex("cd60464335df21f87cfdb2fc68b6a448")
VID_NATT_DRAFT03 = bytes.fromhex("7d9419a65310ca6f2c179d9215529d56")
VID_DPD = bytes.fromhex("afcad71368a1f1c96b8696fc77570100")
#: The fragmentation VID as Windows and strongSwan send it: MD5("FRAGMENTATION") with its
#: last 4 octets replaced by capability flags (0x80000000: fragment before encryption).
VID_FRAGMENTATION = bytes.fromhex("4048b7d56ebce88525e7de7f00d6c2d3")
VID_FRAGMENTATION_FLAGS = bytes.fromhex("4048b7d56ebce88525e7de7f00d6c2d380000000")

#: NAT-T draft VIDs (any of them means the draft payload numbers 130/131 and encapsulation
#: modes 61443/61444).
NATT_DRAFT_VIDS = (VID_NATT_DRAFT02N, VID_NATT_DRAFT02, VID_NATT_DRAFT03)
