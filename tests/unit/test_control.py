"""The control socket: JSON lines between the daemon and the CLI."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from gateway.control.protocol import ControlError, ControlServer, request


def serve_in_thread(path: Path, handlers: dict) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    server = ControlServer(str(path), handlers)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(5)
    return loop, thread


def test_request_reply_and_errors(tmp_path: Path) -> None:
    def broken(req: dict) -> None:
        raise RuntimeError("secret detail that must not leak")

    path = tmp_path / "c.sock"
    loop, thread = serve_in_thread(path, {"status": lambda req: {"name": "hq"}, "boom": broken})
    try:
        assert request(str(path), "status") == {"name": "hq"}
        with pytest.raises(ControlError, match="unknown request; commands: boom, status"):
            request(str(path), "nope")
        with pytest.raises(ControlError, match="internal error") as info:
            request(str(path), "boom")
        assert "secret" not in str(info.value)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    assert not path.exists()


def test_no_daemon_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="cannot reach the gateway"):
        request(str(tmp_path / "absent.sock"), "status")


def test_a_handler_may_be_a_coroutine(tmp_path: Path) -> None:
    async def slow(req: dict) -> dict:
        await asyncio.sleep(0.01)
        if req.get("fail"):
            raise ControlError("config not reloaded: reasons")
        return {"waited": True}

    path = tmp_path / "c.sock"
    loop, thread = serve_in_thread(path, {"reload": slow})
    try:
        assert request(str(path), "reload") == {"waited": True}
        with pytest.raises(ControlError, match="config not reloaded: reasons"):
            request(str(path), "reload", fail=True)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
