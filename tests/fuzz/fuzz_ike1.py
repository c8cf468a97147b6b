"""atheris harness for the `ike1` target (tests/unit/fuzz_targets.py); see run.py."""

from harness import main

if __name__ == "__main__":
    main("ike1")
