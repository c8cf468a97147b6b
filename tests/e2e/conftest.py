"""Setup for the end-to-end tests (root, network namespaces, real gateway processes).

The helpers live in ``e2e_support.py`` next to this file; make sure this directory is
importable whatever pytest's import mode is.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
