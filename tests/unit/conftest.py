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

# Every IKE timer question is checked against a pass over every SA: an SA whose deadline
# changed without the endpoint hearing of it (EndpointBase.touch) fails the test at hand.
from gateway.ike.endpointbase import EndpointBase  # noqa: E402

EndpointBase.check_timers = True
