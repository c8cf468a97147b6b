"""Files that hold secrets must be private to the gateway.

As OpenSSH refuses an unprotected private key, the gateway refuses a private key or a
pre-shared key file that its group or others may read or write, or that belongs to
another user (who could swap the key): the message names the file, its mode and the fix.
The config file itself may hold inline secrets (PSKs, manual SA keys, users' passwords
and hashes, L2TP secrets): readable by group or others it draws a warning; writable by
them (anyone could change the gateway's keys and policy) it is refused.

Only metadata is read here (``os.stat``), never the content.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from gateway.config.model import Config, Secret, User

#: permission bits a secret file must not have: any for group or others
LOOSE = 0o077


def _owner_fix(path: Path) -> str:
    return f"chown {'root' if os.geteuid() == 0 else os.geteuid()} {path}"


def private_file_problem(path: str | Path, what: str) -> str | None:
    """Why the file ``path``, holding ``what`` (e.g. "a private key"), must not be used,
    or None when it is private (or cannot be stat'ed: reading it reports that)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if mode & LOOSE:
        return (f"{path} holds {what} but group or others may {_access(mode)} it "
                f"(mode {mode:04o}): run chmod 600 {path}")
    if st.st_uid not in (0, os.geteuid()):
        return f"{path} holds {what} but belongs to another user (uid {st.st_uid}): run {_owner_fix(path)}"
    return None


def _access(mode: int) -> str:
    parts = [w for w, bits in (("read", 0o044), ("write", 0o022), ("execute", 0o011)) if mode & bits]
    return "/".join(parts)


def config_file_problems(path: str | Path, config: Config) -> list[tuple[tuple[str | int, ...], str, bool]]:
    """(key path, message, warning) for the config file itself: writable by group or
    others is an error; readable by them while it holds inline secrets, a warning (the key
    path is the first such secret, so the message points at a line)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return []
    mode = stat.S_IMODE(st.st_mode)
    out: list[tuple[tuple[str | int, ...], str, bool]] = []
    if mode & 0o022:
        out.append(((), f"the config file is writable by group or others (mode {mode:04o}), who could "
                        f"change the gateway's keys and policy: run chmod 600 {path}", False))
    elif st.st_uid not in (0, os.geteuid()):
        out.append(((), f"the config file belongs to another user (uid {st.st_uid}), who could change "
                        f"the gateway's keys and policy: run {_owner_fix(path)}", False))
    if mode & 0o044:
        first = next(inline_secrets(config), None)
        if first is not None:
            out.append((first, f"the config file holds secrets (this one first) and group or others may "
                               f"read it (mode {mode:04o}): run chmod 600 {path}", True))
    return out


def inline_secrets(config: Config) -> Iterator[tuple[str | int, ...]]:
    """Key paths of the secrets written in the config itself, in file order."""
    yield from _walk(config, ())


def _walk(value: Any, where: tuple[str | int, ...]) -> Iterator[tuple[str | int, ...]]:
    if isinstance(value, Secret):
        yield where
    elif isinstance(value, BaseModel):
        yield from _walk_model(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, (*where, key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _walk(item, (*where, i))


def _walk_model(model: BaseModel, where: tuple[str | int, ...]) -> Iterator[tuple[str | int, ...]]:
    for name in type(model).model_fields:
        item = getattr(model, name)
        if isinstance(model, User) and name == "password_hash" and item is not None:
            yield (*where, name)  # a salted hash: not the password, still not for everyone's eyes
        else:
            yield from _walk(item, (*where, name))
