"""The control socket protocol: one JSON object per line each way, over a Unix socket.

Request ``{"command": "status"}``; reply ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``.  The daemon serves it (`ControlServer`); the CLI
uses `request`.  A handler may be a coroutine (``reload`` waits for routes to change).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("gateway.control")

Handler = Callable[[dict[str, Any]], Any]  # returns the result, or an awaitable of it
MAX_REQUEST = 65536


class ControlError(RuntimeError):
    pass


class ControlServer:
    def __init__(self, path: str, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._client, path=self.path,
                                                       limit=MAX_REQUEST)
        os.chmod(self.path, 0o660)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(json.dumps(await self._dispatch(line)).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            command = request["command"]
            handler = self.handlers[command]
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": f"unknown request; commands: {', '.join(sorted(self.handlers))}"}
        try:
            result = handler(request)
            if inspect.isawaitable(result):
                result = await result
            return {"ok": True, "result": result}
        except ControlError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception:
            log.exception("control.handler_failed command=%s", command)
            return {"ok": False, "error": "internal error (see the gateway log)"}


def request(path: str, command: str, timeout: float = 5.0, **args: Any) -> Any:
    """Send one command to the daemon and return its result (raises ControlError)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            raise ControlError(f"cannot reach the gateway at {path}: {exc.strerror}") from None
        buf = b""
        try:
            sock.sendall(json.dumps({"command": command, **args}).encode() + b"\n")
            while not buf.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError as exc:
            raise ControlError(f"the gateway at {path} did not answer: {exc}") from None
    try:
        reply = json.loads(buf)
    except ValueError:
        raise ControlError("the gateway sent an unreadable reply") from None
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "request failed"))
    return reply["result"]
