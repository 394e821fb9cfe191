"""`teacher_consistent`: the teacher stands by the pseudo-answer, whatever the student says (no student test)."""

from __future__ import annotations

from mpa.strategies.base import Decision, Strategy, teacher_rejected


def decide(teacher_match: bool, consistent: bool, student_correct: bool) -> Decision:
    return (True, "selected") if consistent else teacher_rejected(teacher_match)


STRATEGY = Strategy(decide)
