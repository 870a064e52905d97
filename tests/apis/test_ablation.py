"""The time left that ``ablate`` announces before each run."""
from __future__ import annotations

from cncnn_cli.apis.ablation import time_left


def _runs(*variants: str) -> list[tuple]:
    return [(variant, None, f"run/{variant}") for variant in variants]


def test_nothing_is_promised_before_the_first_run_ends():
    assert time_left({}, _runs("baseline", "full")) == ""


def test_each_run_takes_its_own_variants_mean():
    durations = {"baseline": [60.0, 120.0], "full": [600.0]}
    assert time_left(durations, _runs("full", "full")) == "; about 20 min left for this and the remaining runs"
    assert time_left(durations, _runs("baseline")) == "; about 2 min left for this and the remaining runs"


def test_a_variant_not_trained_yet_counts_as_the_costliest_so_far_and_says_at_least():
    durations = {"baseline": [60.0], "hl": [180.0]}
    # hl+lh and full unseen: 3 min each at least; hl itself 3 min
    assert time_left(durations, _runs("hl", "hl+lh", "full")) == "; at least 9 min left for this and the remaining runs"
