"""Manually keyed SAs: a connection's `manual:` block turned into SAD and SPD entries.

This is what `ip xfrm state/policy` or setkey do by hand; it lets the dataplane carry
traffic (and be tested against independent decoders) without IKE.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gateway.config.model import Connection, ManualSa
from gateway.crypto.algorithms import parse_esp_suite, parse_integrity
from gateway.dataplane.replay import ReplayWindow
from gateway.dataplane.sa import Direction, Mode, SecurityAssociation, UdpEncap
from gateway.dataplane.selectors import SelectorPair, TrafficSelector
from gateway.dataplane.spd import Policy


@dataclass
class ManualTunnel:
    """The SAs and the policy of one manually keyed connection."""

    name: str
    outbound: SecurityAssociation
    inbound: SecurityAssociation
    policy: Policy
    local_subnets: list[ipaddress.IPv4Network]
    remote_subnets: list[ipaddress.IPv4Network]


def selector_pairs(local: list[ipaddress.IPv4Network],
                   remote: list[ipaddress.IPv4Network]) -> tuple[SelectorPair, ...]:
    return tuple(SelectorPair(TrafficSelector(lo), TrafficSelector(re)) for lo in local for re in remote)


def build_manual(name: str, conn: Connection, public_address: ipaddress.IPv4Address,
                 default_replay_window: int) -> ManualTunnel:
    assert conn.manual is not None
    remote = ipaddress.IPv4Address(conn.remote)
    mode = Mode(conn.mode)
    if mode is Mode.TUNNEL:
        local_nets, remote_nets = list(conn.local_subnets), list(conn.remote_subnets)
    else:
        local_nets = list(conn.local_subnets) or [ipaddress.IPv4Network(public_address)]
        remote_nets = list(conn.remote_subnets) or [ipaddress.IPv4Network(remote)]
    selectors = selector_pairs(local_nets, remote_nets)
    encap = UdpEncap(4500, conn.remote_port) if conn.encapsulation == "udp" else None
    window = conn.manual.replay_window
    if window is None:
        window = default_replay_window

    def make(spec: ManualSa, direction: Direction) -> SecurityAssociation:
        common = {
            "name": name, "spi": spec.spi, "direction": direction, "mode": mode,
            "local": public_address, "remote": remote, "encap": encap, "esn": conn.manual.esn,
            "selectors": selectors,
            "replay": ReplayWindow(window, conn.manual.esn) if direction is Direction.IN else None,
        }
        if conn.protocol == "ah":
            integ = parse_integrity(spec.algorithm)
            assert spec.integrity_key is not None
            return SecurityAssociation(protocol=51, ah=integ,
                                       integrity=integ.bind(spec.integrity_key.reveal()), **common)
        suite = parse_esp_suite(spec.algorithm)
        assert suite.integrity is None or spec.integrity_key is not None
        return SecurityAssociation.build_esp(
            name=name, spi=spec.spi, direction=direction, mode=mode, local=public_address, remote=remote,
            suite=suite, encryption_key=spec.encryption_key.reveal() if spec.encryption_key else b"",
            integrity_key=spec.integrity_key.reveal() if spec.integrity_key else b"", encap=encap,
            esn=conn.manual.esn, selectors=selectors, replay_window=window)

    out_sa = make(conn.manual.outbound, Direction.OUT)
    in_sa = make(conn.manual.inbound, Direction.IN)
    policy = Policy(name, selectors, mode=mode,
                    esp_out=out_sa if conn.protocol == "esp" else None,
                    ah_out=out_sa if conn.protocol == "ah" else None)
    return ManualTunnel(name, out_sa, in_sa, policy, local_nets, remote_nets)
