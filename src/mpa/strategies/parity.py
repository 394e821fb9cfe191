"""`parity` (the paper's rule, the default): the teacher stands by the pseudo-answer and the student misses it."""

from __future__ import annotations

from mpa.strategies.base import Decision, Strategy, teacher_rejected


def decide(teacher_match: bool, consistent: bool, student_correct: bool) -> Decision:
    if not consistent:
        return teacher_rejected(teacher_match)
    return (False, "student_correct") if student_correct else (True, "selected")


STRATEGY = Strategy(decide)
