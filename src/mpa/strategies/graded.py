"""`graded`: a gap score instead of a yes/no — keep the candidates the teachers stand by most and the student
misses, ranked.

Every candidate carries `gap_score` = teacher agreement − student agreement, in [-1, 1]: teacher agreement is the
mean, over the teachers, of each one's agreement with the pseudo-answer (the annotating teacher's share of its
self-consistency samples when it samples, else 0/1), and student agreement is 0/1 for its greedy answer. Kept:
scores ≥ `identify.min_gap_score` (default 0.5: most teachers right, student wrong), and with `identify.top_share`
only that share of all candidates, highest first (ties broken by a seeded hash, so reruns agree). With one greedy
teacher the score is -1, 0 or 1 and graded equals parity at any threshold in (0, 1].
"""

from __future__ import annotations

import hashlib

from mpa.records import CandidateRecord
from mpa.strategies.base import Decision, Selection, Strategy, keep_only


def decide(teacher_match: bool, consistent: bool, student_correct: bool) -> Decision:
    return True, "selected"  # provisional: `finalize` ranks every candidate by its score


def _tie_break(seed: int, qa_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{qa_id}".encode()).digest()[:8], "little")


def finalize(candidates: list[CandidateRecord], selection: Selection) -> list[CandidateRecord]:
    scored = [c for c in candidates if c.reason != "failed" and c.gap_score is not None]
    eligible = sorted((c for c in scored if c.gap_score >= selection.min_gap_score),  # type: ignore[operator]
                      key=lambda c: (-(c.gap_score or 0.0), _tie_break(selection.seed, c.qa_id)))  # fmt: skip
    if selection.top_share is not None:
        eligible = eligible[: int(selection.top_share * len(scored))]
    keep = {c.qa_id for c in eligible}
    return keep_only(candidates, keep, "below_gap_score")


STRATEGY = Strategy(decide, finalize)
