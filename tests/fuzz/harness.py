"""The atheris side of ``run.py``: one target from ``tests/unit/fuzz_targets.py`` under
libFuzzer, with coverage instrumentation of the ``gateway`` package.

A harness does not stop at the first finding (libFuzzer would): each distinct finding
(an invariant that broke, or an exception that escaped a core, by its last frames) is
appended once to ``$FUZZ_FINDINGS`` as a JSON line with the input in hex, and the run goes
on.  Started by ``run.py``; by hand::

    FUZZ_FINDINGS=/tmp/f.jsonl python tests/fuzz/fuzz_ike2.py CORPUS_DIR -max_total_time=60
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (str(ROOT), str(ROOT / "tests" / "unit")):
    if p not in sys.path:
        sys.path.insert(0, p)


def signature(exc: BaseException) -> str:
    """What makes two findings the same: the exception type and where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames))
    first = str(exc).splitlines()[0][:120] if str(exc) else ""
    kind = "finding" if type(exc).__name__ == "Finding" else "crash"
    return f"{kind} {type(exc).__name__} at {where}" + (f": {first}" if kind == "finding" else "")


def main(name: str) -> None:
    import atheris

    # the target too: it imports the cores it drives (gateway.ppp, gateway.l2tp, ...)
    with atheris.instrument_imports(include=["gateway"]):
        import fuzz_targets

        target = fuzz_targets.TARGETS[name]()
    seen: set[str] = set()
    out = os.environ.get("FUZZ_FINDINGS")

    def one_input(data: bytes) -> None:
        try:
            target.feed(data)
        except Exception as exc:  # recorded, and the run goes on
            sig = signature(exc)
            if sig in seen:
                return
            seen.add(sig)
            record = {"target": name, "signature": sig, "input": data.hex(),
                      "traceback": traceback.format_exc()[-4000:]}
            if out:
                with open(out, "a") as f:
                    f.write(json.dumps(record) + "\n")
            print(f"FINDING {sig}", file=sys.stderr, flush=True)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
