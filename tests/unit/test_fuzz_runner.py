"""The long-run script of issue 7 (tests/fuzz/run.py) still runs: one second of its
dependency-free engine on two targets, one JSON summary line each."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "fuzz" / "run.py"


def test_random_engine_prints_one_summary_per_target(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("fuzz_run", RUN)
    assert spec is not None and spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    status = run.main(["--engine", "random", "--target", "config", "--target", "esp", "--seconds", "1",
                       "--out", str(tmp_path)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [s["target"] for s in lines] == ["config", "esp"]
    for s in lines:
        assert s["engine"] == "random" and s["executions"] > 0 and s["crashes"] == 0 and s["findings"] == 0
    assert status == 0
