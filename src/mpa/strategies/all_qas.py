"""`all`: every answered pseudo-QA, with no test at all (the ablation: is selecting worth anything?)."""

from __future__ import annotations

from mpa.strategies.base import Decision, Strategy


def decide(teacher_match: bool, consistent: bool, student_correct: bool) -> Decision:
    return True, "selected"


STRATEGY = Strategy(decide)
