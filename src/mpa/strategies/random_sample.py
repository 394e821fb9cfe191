"""`random`: a seeded sample of the answered pseudo-QAs, as many as the parity rule would keep — the control that
tells whether the parity rule picks better data than chance at the same training-set size."""

from __future__ import annotations

import random

from mpa.records import CandidateRecord
from mpa.strategies.base import Decision, Selection, Strategy, keep_only


def decide(teacher_match: bool, consistent: bool, student_correct: bool) -> Decision:
    return True, "selected"  # every candidate is in the pool; `finalize` draws the sample


def finalize(candidates: list[CandidateRecord], selection: Selection) -> list[CandidateRecord]:
    pool = [c for c in candidates if c.reason != "failed"]
    parity_size = sum(c.teacher_agrees and not c.student_correct for c in pool)
    chosen = {c.qa_id for c in random.Random(selection.seed).sample(pool, min(parity_size, len(pool)))}
    return keep_only(candidates, chosen, "not_sampled")


STRATEGY = Strategy(decide, finalize)
