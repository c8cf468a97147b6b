"""atheris harness for the `l2tp` target (tests/unit/fuzz_targets.py); see run.py."""

from harness import main

if __name__ == "__main__":
    main("l2tp")
