"""Both IKE versions behind one sans-IO interface, for the daemon.

IKEv1 and IKEv2 share UDP ports 500 and 4500; the version field of the header (RFC 2408
3.1, RFC 7296 3.1) says which core a message is for.  Connections belong to the core of
their configured version, so commands and timers go where the connection lives.
"""

from __future__ import annotations

from typing import Any

from gateway.ike.endpointbase import ChildPolicy
from gateway.ike.events import Datagram, Note
from gateway.ike.settings import PeerConfig, ResponderLimits
from gateway.ike.v1.endpoint import IkeV1Endpoint
from gateway.ike.v2.endpoint import IkeV2Endpoint


class IkeEndpoints:
    def __init__(self, v2: IkeV2Endpoint, v1: IkeV1Endpoint) -> None:
        self.v2 = v2
        self.v1 = v1
        self._dropped: dict[str, int] = {}
        self._notes: list[Note] = []

    @property
    def configs(self) -> dict[str, PeerConfig]:
        return {**self.v2.configs, **self.v1.configs}

    @property
    def counters(self) -> dict[str, int]:
        out = dict(self._dropped)
        for prefix, ep in (("", self.v2), ("ikev1_", self.v1)):
            for k, v in ep.counters.items():
                out[prefix + k] = out.get(prefix + k, 0) + v
        return out

    def set_limits(self, limits: ResponderLimits) -> None:
        """The responder limits (cookies, half-open SAs) of both versions."""
        self.v2.set_limits(limits)
        self.v1.set_limits(limits)

    @property
    def half_open(self) -> dict[str, int]:
        """Half-open responder SAs now, by IKE version (what the limits bound)."""
        return {"v2": self.v2.half_open, "v1": self.v1.half_open}

    def set_child_policy(self, check: ChildPolicy | None) -> None:
        """Let the IPsec policy answer peers' CHILD_SA requests in both versions."""
        self.v2.child_policy = self.v1.child_policy = check

    def _of(self, name: str) -> IkeV1Endpoint | IkeV2Endpoint:
        return self.v1 if name in self.v1.configs else self.v2

    def receive(self, data: bytes, local_port: int, remote: tuple[str, int], now: float) -> None:
        major = data[17] >> 4 if len(data) >= 28 else 0
        core = {2: self.v2, 1: self.v1}.get(major)
        if core is None:
            self._count("bad_version")
            return
        try:
            core.receive(data, local_port, remote, now)
        except Exception as exc:  # a bug must cost one message, not the gateway
            self._count("internal_error")
            fields = (("peer", f"{remote[0]}:{remote[1]}"), ("version", str(major)),
                      ("error", type(exc).__name__))
            self._notes.append(Note("ike.internal_error", "error", fields))

    def _count(self, reason: str) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + 1

    def datagrams_to_send(self) -> list[Datagram]:
        return self.v2.datagrams_to_send() + self.v1.datagrams_to_send()

    def next_event(self) -> object | None:
        if self._notes:
            return self._notes.pop(0)
        ev = self.v2.next_event()
        return ev if ev is not None else self.v1.next_event()

    def get_timer(self) -> float | None:
        times = [t for t in (self.v2.get_timer(), self.v1.get_timer()) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        self.v2.handle_timer(now)
        self.v1.handle_timer(now)

    def initiate(self, name: str, now: float, *, keep_up: bool = True) -> None:
        self._of(name).initiate(name, now, keep_up=keep_up)

    def terminate(self, name: str, now: float, reason: str = "terminated by operator") -> int:
        return self._of(name).terminate(name, now, reason)

    def add(self, config: PeerConfig) -> None:
        """A connection added at run time, to the core of its IKE version."""
        (self.v1 if config.version == 1 else self.v2).add_config(config)

    def remove(self, name: str, now: float, reason: str = "removed from the config") -> int:
        """A connection removed at run time: its IKE SAs are deleted, the peer told."""
        return self._of(name).remove_config(name, now, reason)

    def replace(self, config: PeerConfig, now: float, reason: str = "changed in the config") -> int:
        """A connection whose settings changed: its SAs go, the new settings take its place
        (maybe in the other IKE version's core). Initiating again is the caller's."""
        count = self.remove(config.name, now, reason)
        self.add(config)
        return count

    def rekey(self, name: str, now: float, *, ike: bool = False) -> int:
        return self._of(name).rekey(name, now, ike=ike)

    def sas(self, now: float) -> list[dict[str, Any]]:
        return self.v2.sas(now) + self.v1.sas(now)

    def ike_sa_of_child(self, spi_in: int) -> Any:
        return self.v2.ike_sa_of_child(spi_in) or self.v1.ike_sa_of_child(spi_in)

    def peer_moved(self, spi_in: int, remote: tuple[str, int]) -> bool:
        """Authenticated ESP of a CHILD_SA came from ``remote``: a peer behind a NAT whose
        mapping changed. Its IKE SA follows (DPD and rekeys go there); False when there is
        no such SA, it is not behind a NAT, or it is there already."""
        sa = self.ike_sa_of_child(spi_in)
        if sa is None or not sa.nat_remote or sa.remote == remote:
            return False
        self._notes.append(Note("ike.peer_moved", "info", (
            ("ike_sa", sa.ident), ("old", sa.remote_str), ("new", f"{remote[0]}:{remote[1]}"),
            ("by", "esp"))))
        sa.remote = remote
        return True

    def negotiating(self, name: str) -> bool:
        return self._of(name).negotiating(name)

    def established(self, name: str) -> bool:
        return self._of(name).established(name)

    def note_established(self, name: str) -> None:
        self._of(name).note_established(name)
