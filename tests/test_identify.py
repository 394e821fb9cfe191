"""Parity Identifier decisions: each matcher, self-consistency, and the reason every candidate gets."""

from __future__ import annotations

from typing import Any

import pytest

from mpa.config import IdentifyConfig
from mpa.stages.identify import decide

QA = {"qa_id": "a/0/0", "image_id": "a", "image_path": "a.png", "question": "q?", "answer_type": "other"}


def _decide(pseudo: str, teacher: list[str], student: str, **ident: Any) -> tuple[bool, bool, bool, str]:
    cand = decide(
        {**QA, "pseudo_answer": pseudo},
        {"answers": teacher, "error": None},
        {"answers": [student], "error": None},
        IdentifyConfig(**ident),
    )
    return cand.teacher_agrees, cand.student_correct, cand.selected, cand.reason


@pytest.mark.parametrize(
    ("matcher", "pseudo", "teacher", "student", "expected"),
    [
        # compat (the paper): the pseudo-answer, squashed, is a substring of the squashed prediction.
        ("compat", "Coca-Cola", "coca cola", "pepsi", (True, False, True, "selected")),
        ("compat", "2", "12", "3", (True, False, True, "selected")),  # the rule's leniency, kept
        ("compat", "red", "red", "dark red", (True, True, False, "student_correct")),
        ("compat", "red", "blue", "green", (False, False, False, "teacher_disagrees")),
        # exact: VQA-normalised equality.
        ("exact", "two", "2", "12", (True, False, True, "selected")),
        ("exact", "a dog", "Dog.", "dogs", (True, False, True, "selected")),
        ("exact", "red", "red", "red.", (True, True, False, "student_correct")),
        # anls: similarity >= 0.5.
        ("anls", "STARBUCKS", "starbuck", "costa", (True, False, True, "selected")),
        ("anls", "cafe", "cafe", "cafes", (True, True, False, "student_correct")),
        # relaxed: 5% numeric tolerance (charts).
        ("relaxed", "100", "103", "94", (True, False, True, "selected")),
        ("relaxed", "40%", "0.41", "0.4", (True, True, False, "student_correct")),
        ("relaxed", "Asia", "asia", "Europe", (True, False, True, "selected")),
    ],
)
def test_matchers(
    matcher: str, pseudo: str, teacher: str, student: str, expected: tuple[bool, bool, bool, str]
) -> None:
    assert _decide(pseudo, [teacher], student, matcher=matcher) == expected


def test_self_consistency_filters_unstable_teacher_answers() -> None:
    # Greedy agrees, but only 1 of 4 samples does: below the 0.5 share, so the sample is dropped.
    assert _decide("red", ["red", "red", "blue", "green", "blue"], "blue", self_consistency=4) == (
        False, False, False, "teacher_inconsistent"
    )  # fmt: skip
    # 3 of 4 agree: kept.
    assert _decide("red", ["red", "red", "red", "red", "blue"], "blue", self_consistency=4)[2] is True
    # A stricter share drops it again.
    kw = {"self_consistency": 4, "self_consistency_min_share": 0.9}
    assert _decide("red", ["red", "red", "red", "red", "blue"], "blue", **kw)[3] == "teacher_inconsistent"


def test_failed_generation_is_never_selected() -> None:
    cand = decide(
        {**QA, "pseudo_answer": "red"},
        {"answers": ["red"], "error": None},
        {"answers": [], "error": "RuntimeError: boom"},
        IdentifyConfig(strategy="all"),
    )
    assert (cand.selected, cand.reason) == (False, "failed")


@pytest.mark.parametrize(
    ("strategy", "teacher", "student", "expected"),
    [
        ("teacher_consistent", "red", "red", (True, "selected")),
        ("teacher_consistent", "blue", "blue", (False, "teacher_disagrees")),
        ("student_fails", "blue", "blue", (True, "selected")),
        ("student_fails", "red", "red", (False, "student_correct")),
        ("all", "blue", "red", (True, "selected")),
        ("parity", "red", "blue", (True, "selected")),
    ],
)
def test_strategy_tests(strategy: str, teacher: str, student: str, expected: tuple[bool, str]) -> None:
    assert _decide("red", [teacher], student, strategy=strategy)[2:] == expected
