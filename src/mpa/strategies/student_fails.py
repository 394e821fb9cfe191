"""`student_fails`: the student misses the pseudo-answer, whatever the teacher says (no teacher test)."""

from __future__ import annotations

from mpa.strategies.base import Decision, Strategy


def decide(teacher_match: bool, consistent: bool, student_correct: bool) -> Decision:
    return (False, "student_correct") if student_correct else (True, "selected")


STRATEGY = Strategy(decide)
