"""Both IKE cores behind one interface: dispatch by header version, errors contained."""

from __future__ import annotations

from typing import Any

from gateway.ike.endpoints import IkeEndpoints
from gateway.ike.events import Note
from gateway.ike.v1.endpoint import IkeV1Endpoint
from gateway.ike.v2.endpoint import IkeV2Endpoint


def header(version: int) -> bytes:
    return b"\x11" * 8 + bytes(8) + bytes([0, version, 2, 0]) + bytes(4) + (28).to_bytes(4, "big")


def endpoints() -> tuple[IkeEndpoints, list[tuple[str, bytes]]]:
    seen: list[tuple[str, bytes]] = []
    ep = IkeEndpoints(IkeV2Endpoint("192.0.2.1", []), IkeV1Endpoint("192.0.2.1", []))
    ep.v1.receive = lambda data, *a: seen.append(("v1", data))  # type: ignore[method-assign]
    ep.v2.receive = lambda data, *a: seen.append(("v2", data))  # type: ignore[method-assign]
    return ep, seen


def test_messages_go_to_the_core_their_header_names() -> None:
    ep, seen = endpoints()
    for version in (0x10, 0x20, 0x30):
        ep.receive(header(version), 500, ("198.51.100.7", 500), 0.0)
    ep.receive(b"\xff", 4500, ("198.51.100.7", 4500), 0.0)
    assert [core for core, _ in seen] == ["v1", "v2"]
    assert ep.counters["bad_version"] == 2


def test_an_exception_in_a_core_costs_one_message_not_the_gateway() -> None:
    ep, _ = endpoints()

    def broken(*args: Any) -> None:
        raise RuntimeError("bug")

    ep.v1.receive = broken  # type: ignore[method-assign]
    ep.receive(header(0x10), 500, ("198.51.100.7", 500), 0.0)
    assert ep.counters["internal_error"] == 1
    note = ep.next_event()
    assert isinstance(note, Note) and note.what == "ike.internal_error" and note.level == "error"
    assert ("error", "RuntimeError") in note.fields
