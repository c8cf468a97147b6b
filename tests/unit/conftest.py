"""Shared setup for the unit tests.

The SA-building helpers live in ``ipsec_testkit.py`` next to this file; make sure that
directory is importable whatever pytest's import mode or package layout is.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
