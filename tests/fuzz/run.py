"""Long fuzz runs of every parser family (issue 7), beyond the suite's moderate budget.

Each target of ``tests/unit/fuzz_targets.py`` (the same ones the ``test_fuzz_*`` tests
use, with the same invariants) runs for ``--seconds``; one JSON line per target is
printed: executions, seconds, executions per second, crashes (exceptions that escaped a
core) and findings (invariants that broke: silence, torn-down SAs, a poisoned replay
window, a secret in a config error).  Each distinct one goes to ``--out``/findings.jsonl
with its input in hex; the run goes on after it.  Exit status 1 if anything was found.

Engines: ``atheris`` (coverage-guided libFuzzer over the instrumented ``gateway``
package, seeded with the target's valid messages; the corpus it grows is kept in
``--out``/corpus/TARGET and reused by the next run), or ``random`` (no dependency: the
suite's mutations of the seeds, drawn from a seeded ``random.Random``, as many as fit the
time).  ``auto`` (the default) takes atheris when it imports.

atheris is an optional extra, not in install.sh: it ships wheels for CPython 3.11 on
x86-64 Linux (``.venv/bin/pip install atheris``, no compiler needed there); elsewhere it
builds from source against a clang with libFuzzer, which Debian's python image lacks.

Run from the repository root::

    .venv/bin/python tests/fuzz/run.py --seconds 120                  # every target
    .venv/bin/python tests/fuzz/run.py --target ike2 --target esp --seconds 600
    .venv/bin/python tests/fuzz/run.py --engine random --seconds 60 --seed 7

Targets: ike2, ike1 (both IKE cores behind IkeEndpoints), esp (the dataplane: ESP, AH,
UDP 4500, outbound), l2tp, ppp, dialup (L2TP into the dial-up service), config (the
YAML loader).  pytest does not collect this directory's files (none is named test_*).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NAMES = ("ike2", "ike1", "esp", "l2tp", "ppp", "dialup", "config")


def _paths() -> None:
    for p in (str(ROOT), str(ROOT / "tests" / "unit"), str(HERE)):
        if p not in sys.path:
            sys.path.insert(0, p)


def have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def run_atheris(name: str, seconds: int, out: Path) -> dict[str, object]:
    _paths()
    import fuzz_targets

    corpus = out / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(fuzz_targets.TARGETS[name]().seeds()):
        (corpus / f"seed-{i:04d}").write_bytes(seed)
    findings = out / f"findings-{name}.jsonl"
    findings.unlink(missing_ok=True)
    env = dict(os.environ, FUZZ_FINDINGS=str(findings),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, str(HERE / f"fuzz_{name}.py"), str(corpus), f"-max_total_time={seconds}",
           "-max_len=4096", "-rss_limit_mb=4096", "-print_final_stats=1", "-timeout=30"]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, errors="replace",
                          timeout=seconds + 600)
    elapsed = time.monotonic() - started
    stats = dict(re.findall(r"^stat::(\w+):\s*(\d+)", proc.stderr, re.M))
    executions = int(stats.get("number_of_executed_units", 0))
    if not executions:
        done = re.findall(r"^#(\d+)\s", proc.stderr, re.M)
        executions = int(done[-1]) if done else 0
    records = [json.loads(line) for line in findings.read_text().splitlines()] if findings.exists() else []
    summary: dict[str, object] = {"target": name, "engine": "atheris", "executions": executions,
                                  "seconds": round(elapsed, 1),
                                  "execs_per_second": round(executions / max(elapsed, 1e-9)),
                                  "crashes": sum(r["signature"].startswith("crash") for r in records),
                                  "findings": sum(r["signature"].startswith("finding") for r in records),
                                  "corpus": len(list(corpus.iterdir())),
                                  "coverage": int(stats["new_units_added"]) if "new_units_added" in stats
                                  else None}
    if proc.returncode not in (0, 1) and not records:  # libFuzzer itself failed (not a finding of ours)
        summary["error"] = proc.stderr.strip().splitlines()[-5:]
    if records:
        summary["findings_file"] = str(findings)
    return summary


def run_random(name: str, seconds: int, out: Path, seed: int) -> dict[str, object]:
    _paths()
    import fuzz_targets
    from fuzzing import mutant
    from harness import signature

    target = fuzz_targets.TARGETS[name]()
    seeds = target.seeds()
    rng = random.Random(seed)
    seen: dict[str, dict[str, str]] = {}
    executions = 0
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        for _ in range(50):
            data = mutant(rng, seeds)
            executions += 1
            try:
                target.feed(data)
            except Exception as exc:
                sig = signature(exc)
                if sig not in seen:
                    seen[sig] = {"target": name, "signature": sig, "input": data.hex(),
                                 "traceback": traceback.format_exc()[-4000:]}
    elapsed = time.monotonic() - started
    findings = out / f"findings-{name}.jsonl"
    findings.write_text("".join(json.dumps(r) + "\n" for r in seen.values()))
    summary: dict[str, object] = {"target": name, "engine": "random", "seed": seed, "executions": executions,
                                  "seconds": round(elapsed, 1),
                                  "execs_per_second": round(executions / max(elapsed, 1e-9)),
                                  "crashes": sum(s.startswith("crash") for s in seen),
                                  "findings": sum(s.startswith("finding") for s in seen)}
    if seen:
        summary["findings_file"] = str(findings)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", choices=[*NAMES, "all"],
                        help="a target (repeatable); default: all")
    parser.add_argument("--seconds", type=int, default=120, help="per target (default 120)")
    parser.add_argument("--engine", choices=["auto", "atheris", "random"], default="auto")
    parser.add_argument("--seed", type=int, default=1, help="for the random engine")
    parser.add_argument("--out", type=Path, default=Path("/tmp/gateway-fuzz"),
                        help="corpus and findings (default /tmp/gateway-fuzz)")
    args = parser.parse_args(argv)
    names = NAMES if not args.target or "all" in args.target else tuple(args.target)
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if have_atheris() else "random"
    elif engine == "atheris" and not have_atheris():
        parser.error("atheris is not installed (pip install atheris), or use --engine random")
    args.out.mkdir(parents=True, exist_ok=True)
    found = False
    for name in names:
        if engine == "atheris":
            summary = run_atheris(name, args.seconds, args.out)
        else:
            summary = run_random(name, args.seconds, args.out, args.seed)
        found = found or bool(summary["crashes"] or summary["findings"] or summary.get("error"))
        print(json.dumps(summary), flush=True)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
