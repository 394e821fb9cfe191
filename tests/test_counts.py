"""Stage counts are typed (`mpa.counts`): written through their model, read back through it, across versions."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mpa.contract import STAGES
from mpa.counts import AnnotateCounts, IdentifyCounts, LevelCounts


def test_a_count_the_model_does_not_declare_cannot_be_written() -> None:
    with pytest.raises(ValidationError, match="selcted"):
        IdentifyCounts(selcted=3)  # type: ignore[call-arg]


def test_counts_read_back_across_versions() -> None:
    """An older manifest without a later count reads it as 0; a newer one's unknown count is left out."""
    old = {"counts": {"images": 5, "images_ok": 4, "generations": 4, "generation_status": {"ok": 3, "refusal": 1},
                      "pairs_rejected": {"answer_too_long": 2}, "qa_pairs": 7}}  # fmt: skip
    counts = AnnotateCounts.read(old)
    assert (counts.images_ok, counts.images_duplicate, counts.qa_pairs) == (4, 0, 7)
    assert counts.rejected() == {"refusal": 1, "answer_too_long": 2}
    assert (
        LevelCounts.read({"counts": {"gap": 2, "train": 3, "retention": 1, "val": 1, "from_the_future": 9}}).train == 3
    )


def test_every_stage_says_what_went_in_and_out_from_its_counts() -> None:
    io = STAGES["identify"].io({"counts": {"parseable": 10, "selected": 3,
                                           "reasons": {"selected": 3, "student_correct": 5, "failed": 2}}})  # fmt: skip
    assert io == {"in": {"qa_pairs": 10}, "out": {"selected": 3}, "skipped": {"student_correct": 5},
                  "failed": {"answer failed": 2}}  # fmt: skip
    unit = STAGES["evaluate"].io({"metrics": {"n": 12, "failed": 1}})
    assert unit["in"] == {"questions": 12} and unit["out"] == {"scored": 11}
    assert all(isinstance(STAGES[s].read_counts({}), STAGES[s].counts) for s in STAGES)
