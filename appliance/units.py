"""Install the systemd units of systemd/ for a checkout at some prefix.

    python -m appliance.units --prefix /opt/gateway --dest /etc/systemd/system

The units in the repository name the install location ``/opt/gateway`` (the project with
its ``.venv``); ``--prefix`` rewrites it, so a checkout elsewhere gets units that point at
itself (the tests verify the units this way, with ``systemd-analyze verify``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

UNITS = Path(__file__).resolve().parents[1] / "systemd"
DEFAULT_PREFIX = "/opt/gateway"


def render(text: str, prefix: str) -> str:
    """A unit's text with the install location replaced by ``prefix``."""
    return text.replace(DEFAULT_PREFIX, prefix.rstrip("/") or "/")


def install(dest: Path, prefix: str = DEFAULT_PREFIX, config: str | None = None) -> list[Path]:
    """Write every unit of systemd/ into ``dest`` (``config``: another config file path)."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for unit in sorted(UNITS.glob("*.service")):
        text = render(unit.read_text(), prefix)
        if config is not None:
            text = text.replace("/etc/gateway/gateway.yaml", config)
        target = dest / unit.name
        target.write_text(text)
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.units", description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="where the project and its .venv live")
    parser.add_argument("--dest", default="/etc/systemd/system", type=Path)
    parser.add_argument("--config", help="the gateway config file (default /etc/gateway/gateway.yaml)")
    args = parser.parse_args(argv)
    for path in install(args.dest, args.prefix, args.config):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
