"""The lab demo (README's first command, after the install) runs and passes."""

from __future__ import annotations

import subprocess
import sys

from e2e_support import NETNS, assert_lab_gone, lab_prefix

from appliance.lab.gateways import REPO

pytestmark = NETNS

PREFIX = lab_prefix("dmo")


def test_the_lab_demo_passes() -> None:
    command = [sys.executable, "-m", "appliance.lab", "demo", "--prefix", PREFIX, "--seconds", "1"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=REPO, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "demo passed" in out, out
    assert "through the tunnel: ping 10.1.0.10 -> 10.2.0.10: 5/5 replies" in out, out
    assert "alice has 10.3." in out and "-> hq-lan 10.1.0.10: 5/5 replies" in out, out
    assert_lab_gone(PREFIX)
