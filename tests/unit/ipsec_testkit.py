"""Builders for SAs, keys and IPv4 packets shared by the dataplane unit tests.

Everything is deterministic: keys are derived from a seed, never from os.urandom.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable

from gateway.crypto.algorithms import INTEGRITY, parse_esp_suite
from gateway.dataplane import ip
from gateway.dataplane.replay import ReplayWindow
from gateway.dataplane.sa import Direction, Mode, SecurityAssociation, UdpEncap
from gateway.dataplane.selectors import SelectorPair, TrafficSelector

#: Two gateways' public addresses (RFC 5737 documentation ranges) and protected subnets.
A_PUB = ipaddress.IPv4Address("198.51.100.1")
B_PUB = ipaddress.IPv4Address("203.0.113.2")
NET_A = ipaddress.IPv4Network("10.1.0.0/24")
NET_B = ipaddress.IPv4Network("10.2.0.0/24")

#: Every ESP suite the registry can build, as operators spell them.
ALL_ESP_SUITES = (
    "aes128gcm16", "aes256gcm16",
    "aes128-sha1", "aes128-sha256", "aes128-sha384", "aes128-sha512",
    "aes256-sha1", "aes256-sha256", "aes256-sha384", "aes256-sha512",
    "3des-md5", "3des-sha1",
    "null-sha256",
)


def keymat(length: int, seed: int) -> bytes:
    """``length`` deterministic, non-trivial octets."""
    return bytes((seed * 131 + i * 29 + (i * i) % 7) & 0xFF for i in range(length))


def esp_keys(suite_name: str, seed: int = 1) -> tuple[bytes, bytes | None]:
    """(encryption key incl. any salt, integrity key or None) for ``suite_name``."""
    suite = parse_esp_suite(suite_name)
    enc = keymat(suite.encryption.keymat_size, seed)
    auth = keymat(suite.integrity.key_size, seed + 100) if suite.integrity else None
    return enc, auth


def fixed_random(value: bytes) -> Callable[[int], bytes]:
    """A deterministic stand-in for os.urandom (IV generation)."""

    def _random(n: int) -> bytes:
        return (value * (n // max(len(value), 1) + 1))[:n]

    return _random


def esp_sa(suite_name: str, spi: int, direction: Direction, *, mode: Mode = Mode.TUNNEL,
           local: ipaddress.IPv4Address = A_PUB, remote: ipaddress.IPv4Address = B_PUB,
           esn: bool = False, replay_size: int | None = 1024, seed: int = 1,
           enc_key: bytes | None = None, auth_key: bytes | None = None,
           encap: UdpEncap | None = None, selectors: tuple[SelectorPair, ...] = (),
           random: Callable[[int], bytes] | None = None, name: str | None = None,
           ) -> SecurityAssociation:
    suite = parse_esp_suite(suite_name)
    default_enc, default_auth = esp_keys(suite_name, seed)
    enc_key = default_enc if enc_key is None else enc_key
    auth_key = default_auth if auth_key is None else auth_key
    replay = None
    if direction is Direction.IN and replay_size is not None:
        replay = ReplayWindow(replay_size, esn)
    return SecurityAssociation(
        name=name or f"esp-{suite_name}-{direction.value}-{spi:x}",
        spi=spi, protocol=ip.PROTO_ESP, direction=direction, mode=mode,
        local=local, remote=remote, esp=suite,
        cipher=suite.encryption.bind(enc_key),
        integrity=suite.integrity.bind(auth_key) if suite.integrity else None,
        encap=encap, esn=esn, replay=replay, selectors=selectors,
        random=random or fixed_random(b"\xa5\x5a\x3c"),
    )


def esp_pair(suite_name: str, spi: int = 0x1001, *, esn: bool = False,
             replay_size: int | None = 1024, seed: int = 1, mode: Mode = Mode.TUNNEL,
             ) -> tuple[SecurityAssociation, SecurityAssociation]:
    """(outbound SA at A, matching inbound SA at B): same SPI and keys."""
    out = esp_sa(suite_name, spi, Direction.OUT, mode=mode, local=A_PUB, remote=B_PUB,
                 esn=esn, seed=seed)
    inb = esp_sa(suite_name, spi, Direction.IN, mode=mode, local=B_PUB, remote=A_PUB,
                 esn=esn, replay_size=replay_size, seed=seed)
    return out, inb


def ah_key(integ_name: str, seed: int = 1) -> bytes:
    return keymat(INTEGRITY[integ_name].key_size, seed + 200)


def ah_sa(integ_name: str, spi: int, direction: Direction, *, mode: Mode = Mode.TUNNEL,
          local: ipaddress.IPv4Address = A_PUB, remote: ipaddress.IPv4Address = B_PUB,
          esn: bool = False, replay_size: int | None = 1024, seed: int = 1,
          selectors: tuple[SelectorPair, ...] = (), name: str | None = None,
          ) -> SecurityAssociation:
    integ = INTEGRITY[integ_name]
    replay = None
    if direction is Direction.IN and replay_size is not None:
        replay = ReplayWindow(replay_size, esn)
    return SecurityAssociation(
        name=name or f"ah-{integ_name}-{direction.value}-{spi:x}",
        spi=spi, protocol=ip.PROTO_AH, direction=direction, mode=mode,
        local=local, remote=remote, ah=integ, integrity=integ.bind(ah_key(integ_name, seed)),
        esn=esn, replay=replay, selectors=selectors,
    )


def selector_pair(local: str, remote: str, protocol: int = 0) -> SelectorPair:
    return SelectorPair(TrafficSelector(ipaddress.IPv4Network(local)),
                        TrafficSelector(ipaddress.IPv4Network(remote)), protocol)


# --------------------------------------------------------------------------------------
# Packets
# --------------------------------------------------------------------------------------


def _addr(a: str | ipaddress.IPv4Address) -> bytes:
    return ipaddress.IPv4Address(a).packed


def udp_packet(src: str | ipaddress.IPv4Address, dst: str | ipaddress.IPv4Address,
               sport: int = 40000, dport: int = 53, data: bytes = b"hello, tunnel",
               *, ident: int = 0x1234, ttl: int = 64) -> bytes:
    """A complete IPv4/UDP packet with correct checksums."""
    s, d = _addr(src), _addr(dst)
    seg = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    seg = ip.transport_checksum_fix(ip.PROTO_UDP, s, d, seg[:6] + b"\xff\xff" + seg[8:])
    return ip.build_header(s, d, ip.PROTO_UDP, len(seg), ident=ident, ttl=ttl) + seg


def tcp_packet(src: str | ipaddress.IPv4Address, dst: str | ipaddress.IPv4Address,
               sport: int = 40000, dport: int = 22, data: bytes = b"",
               *, ident: int = 0x4321, flags: int = 0x02) -> bytes:
    """A complete IPv4/TCP packet (SYN by default) with correct checksums."""
    s, d = _addr(src), _addr(dst)
    seg = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, flags, 65535, 0, 0) + data
    seg = ip.transport_checksum_fix(ip.PROTO_TCP, s, d, seg)
    return ip.build_header(s, d, ip.PROTO_TCP, len(seg), ident=ident) + seg


def icmp_echo(src: str | ipaddress.IPv4Address, dst: str | ipaddress.IPv4Address,
              data: bytes = b"ping" * 8, *, ident: int = 0x0101, seq: int = 1) -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, 0x77, seq) + data
    body = body[:2] + ip.checksum(body).to_bytes(2, "big") + body[4:]
    return ip.build_header(_addr(src), _addr(dst), ip.PROTO_ICMP, len(body), ident=ident) + body


def outer_ip(src: str | ipaddress.IPv4Address, dst: str | ipaddress.IPv4Address, proto: int,
             payload: bytes) -> bytes:
    """What a raw socket would hand us: an IPv4 header (as the kernel built it) + payload."""
    return ip.build_header(_addr(src), _addr(dst), proto, len(payload), ident=0x5151) + payload


def flip_bit(data: bytes, bit: int) -> bytes:
    buf = bytearray(data)
    buf[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(buf)
