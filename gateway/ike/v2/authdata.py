"""What the AUTH payload signs, and the NAT detection hashes (RFC 7296 2.15, 2.23).

    InitiatorSignedOctets = RealMessage1 | NonceRData | prf(SK_pi, RestOfInitIDPayload)
    ResponderSignedOctets = RealMessage2 | NonceIData | prf(SK_pr, RestOfRespIDPayload)
    PSK AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct

from gateway.crypto.prf import PrfAlgorithm

KEY_PAD = b"Key Pad for IKEv2"


def signed_octets(prf: PrfAlgorithm, real_message: bytes, peer_nonce: bytes, sk_p: bytes,
                  id_body: bytes) -> bytes:
    return real_message + peer_nonce + prf.compute(sk_p, id_body)


def psk_auth(prf: PrfAlgorithm, secret: bytes, octets: bytes) -> bytes:
    return prf.compute(prf.compute(secret, KEY_PAD), octets)


def psk_verify(prf: PrfAlgorithm, secret: bytes, octets: bytes, received: bytes) -> bool:
    return hmac.compare_digest(psk_auth(prf, secret, octets), received)


def nat_detection_hash(spi_i: bytes, spi_r: bytes, address: str, port: int) -> bytes:
    """SHA-1(SPIi | SPIr | IP | Port) of 2.23."""
    return hashlib.sha1(spi_i + spi_r + socket.inet_aton(address) + struct.pack("!H", port)).digest()
