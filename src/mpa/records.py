"""On-disk record types: the contract between stages (one frozen schema per JSONL artifact).

Every record has a stable key so a resumed stage skips what is done and never writes a record twice. Records are
plain JSON objects, so `datasets.load_dataset("json", data_files=...)` reads every artifact.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageRecord(_Record):
    """annotate/images.jsonl — one line per input image (key: `source`)."""

    source: str  # the path (or dataset row) as given: the key
    image_id: str  # content hash; identical files share it
    status: Literal["ok", "duplicate", "skipped"]
    path: str | None = None  # where later stages read the image (ok images only)
    reason: str | None = None  # why skipped, or which image it duplicates
    width: int | None = None
    height: int | None = None


class AnnotationRecord(_Record):
    """annotate/annotations.jsonl — one line per teacher generation (key: `key` = image_id/sample)."""

    key: str
    image_id: str
    sample: int
    prompt_id: str
    raw: str  # the teacher's text, always kept
    status: str  # parse status: ok | empty | refusal | unparseable | failed
    fmt: str
    n_pairs: int
    rejected: list[dict[str, str]]  # {"question", "answer", "reason"}
    error: str | None = None


class QARecord(_Record):
    """annotate/qa.jsonl — one accepted pseudo question/answer pair (key: `qa_id`)."""

    qa_id: str  # image_id/sample/index
    image_id: str
    image_path: str
    question: str
    pseudo_answer: str
    answer_type: Literal["yes/no", "number", "other"]


class AnswerRecord(_Record):
    """identify/{teacher,student}_answers.jsonl — one model's answers to one pseudo-question (key: `qa_id`)."""

    qa_id: str
    raw: list[str]  # greedy answer first, then self-consistency samples (teacher only)
    answers: list[str]  # parsed short answers, same order
    error: str | None = None


Reason = Literal[
    "selected",
    "teacher_disagrees",
    "teacher_inconsistent",
    "student_correct",
    "not_sampled",
    "below_gap_score",
    "failed",
    "accepted",  # never written by identify: level's view of a candidate a reviewer added (mpa.review)
]


class CandidateRecord(_Record):
    """identify/candidates.jsonl — the decision on every pseudo-QA, with its reason (key: `qa_id`)."""

    qa_id: str
    image_id: str
    image_path: str
    question: str
    pseudo_answer: str
    answer_type: str
    teacher_answer: str
    student_answer: str
    teacher_agrees: bool
    teacher_consistency: float  # share of teacher samples agreeing with the pseudo-answer
    student_correct: bool
    selected: bool
    reason: Reason
    gap_score: float | None = None  # teacher agreement share minus student agreement, in [-1, 1] (strategy graded)
    teacher_votes: list[bool] | None = None  # with more teachers: each one's verdict, the annotating teacher first
