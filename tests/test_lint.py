"""The code base stays ruff-clean and every example config validates."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed (appliance/install.sh installs it)")
    proc = subprocess.run([ruff, "check", "gateway", "appliance", "tests", "bench"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_example_configs_pass_check_config() -> None:
    configs = sorted(str(p) for p in (REPO / "configs").glob("*.yaml"))
    assert configs, "configs/ holds no example configuration"
    proc = subprocess.run([sys.executable, "-m", "gateway", "check-config", *configs], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
