"""The one interface of a selection strategy: a per-candidate decision, plus an optional whole-set step.

identify judges every pseudo-QA (does the teacher's answer match the pseudo-answer, consistently across its
samples; does the student's?) and hands these three facts to `Strategy.decide`, which keeps or drops the candidate
and says why. `Strategy.finalize` then sees every candidate at once, for rules that depend on the whole set (the
`random` strategy samples as many as the parity rule would keep). A strategy never sees failed generations: they
are rejected with reason `failed` before it is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mpa.records import CandidateRecord, Reason

Decision = tuple[bool, Reason]  # (selected, reason); the reason of a selected candidate is "selected"


class Decide(Protocol):
    def __call__(self, teacher_match: bool, consistent: bool, student_correct: bool) -> Decision: ...


@dataclass(frozen=True)
class Selection:
    """What a whole-set step may read besides the candidates: the run's seed and the graded rule's settings
    (`identify.min_gap_score`, `identify.top_share`)."""

    seed: int = 0
    min_gap_score: float = 0.5
    top_share: float | None = None


class Finalize(Protocol):
    def __call__(self, candidates: list[CandidateRecord], selection: Selection) -> list[CandidateRecord]: ...


def unchanged(candidates: list[CandidateRecord], selection: Selection) -> list[CandidateRecord]:
    """The whole-set step of a strategy that has none: the per-candidate decisions stand."""
    return candidates


@dataclass(frozen=True)
class Strategy:
    """`decide(teacher_match, consistent, student_correct)`: teacher_match = the teacher's greedy answer matches the
    pseudo-answer; consistent = it does, enough of its self-consistency samples agree and, with more teachers,
    enough of them agree under `identify.consensus` (equal to teacher_match with one greedy teacher);
    student_correct = the student's greedy answer matches. `finalize(candidates, selection)` returns the candidates
    in the same order, any of them re-decided (seeded by `selection.seed`, so reruns agree); each candidate carries
    its `gap_score` for rules that rank."""

    decide: Decide
    finalize: Finalize = unchanged


def keep_only(candidates: list[CandidateRecord], keep: set[str], dropped: Reason) -> list[CandidateRecord]:
    """The whole-set step's verdict: every answered candidate is selected if its qa_id is in `keep`, else dropped
    with reason `dropped`; failed ones stay failed. Same order."""
    out = []
    for c in candidates:
        if c.reason != "failed":
            pick = c.qa_id in keep
            c = c.model_copy(update={"selected": pick, "reason": "selected" if pick else dropped})
        out.append(c)
    return out


def teacher_rejected(teacher_match: bool) -> Decision:
    """A candidate dropped because the teacher does not stand by the pseudo-answer, with the finer reason."""
    return False, "teacher_inconsistent" if teacher_match else "teacher_disagrees"
