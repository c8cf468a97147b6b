"""Issue 7, PPP beyond ``test_ppp_fuzz.py``: there, random and plausible frames go into
sessions in a few phases; here a real conversation for each method (MS-CHAPv2, CHAP-MD5,
PAP) is replayed to a fresh server or client up to frame k, and frame k is mutated
(lengths, codes, identifiers, option lengths, value sizes), so every state of LCP, each
authentication protocol and IPCP gets hostile input (``fuzz_targets.PppTarget``)."""

from __future__ import annotations

from fuzz_targets import PppTarget
from fuzzing import Edit, apply, edits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TARGET = PppTarget()


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(TARGET.seeds()), edits())
def test_mutated_frame_at_every_step_of_every_method(seed: bytes, changes: list[Edit]) -> None:
    TARGET.feed(seed[:2] + apply(seed[2:], changes, [s[2:] for s in TARGET.seeds()]))


def test_every_seed_passes_unchanged() -> None:
    for seed in TARGET.seeds():
        TARGET.feed(seed)
