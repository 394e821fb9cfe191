"""Parity Identifier decisions: each matcher, self-consistency, the reason every candidate gets, and each selection
strategy (through the config and the real stage, with scripted models that answer by key)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mpa.backends import GenRequest, GenResult
from mpa.cli import build_parser
from mpa.config import ConfigError, IdentifyConfig, build_config
from mpa.records import AnswerRecord, CandidateRecord, QARecord
from mpa.rundir import RunDir, atomic_write_json, iter_jsonl
from mpa.stages import identify
from mpa.stages.identify import decide
from mpa.strategies import REGISTRY, Decision, Selection, Strategy

QA = {"qa_id": "a/0/0", "image_id": "a", "image_path": "a.png", "question": "q?", "answer_type": "other"}


def _decide(pseudo: str, teacher: list[str], student: str, **ident: Any) -> tuple[bool, bool, bool, str]:
    cand = decide(
        QARecord(**QA, pseudo_answer=pseudo),
        AnswerRecord(qa_id=QA["qa_id"], raw=teacher, answers=teacher),
        AnswerRecord(qa_id=QA["qa_id"], raw=[student], answers=[student]),
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
        QARecord(**QA, pseudo_answer="red"),
        AnswerRecord(qa_id=QA["qa_id"], raw=["red"], answers=["red"]),
        AnswerRecord(qa_id=QA["qa_id"], raw=[], answers=[], error="RuntimeError: boom"),
        IdentifyConfig(strategy="all"),
    )
    assert (cand.selected, cand.reason) == (False, "failed")


class Scripted:
    """A backend that answers each request from a script keyed by qa_id: the greedy answer, then the samples
    (requests with n > 1); an answer of None is a failed request."""

    name = "scripted"

    def __init__(self, script: dict[str, list[str | None]]) -> None:
        self.script = script

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        results = []
        for r in requests:
            answers = self.script[r.key]
            texts = answers[:1] if r.n == 1 else answers[1 : 1 + r.n]
            failed = any(t is None for t in texts)
            results.append(GenResult(r.key, [] if failed else [str(t) for t in texts], "boom" if failed else None))
        return results

    def close(self) -> None:
        pass


# qa_id -> (teacher: greedy answer + 2 samples, student answer); the pseudo-answer is always "red".
Case = tuple[list[str | None], str | None]
KINDS: dict[str, Case] = {
    "gap": (["red", "red", "red"], "blue"),  # teacher right and consistent, student wrong: the parity set
    "known": (["red", "red", "red"], "red"),  # both right
    "teacher_wrong": (["blue", "blue", "blue"], "blue"),  # both wrong
    "teacher_wrong_student_right": (["blue", "blue", "blue"], "red"),
    "unstable": (["red", "blue", "green"], "blue"),  # greedy right, samples disagree: not consistent
    "failed": (["red", "red", "red"], None),  # the student's request failed
}


def _run(tmp_path: Path, cases: dict[str, Case], seed: int = 0, **ident: Any) -> list[CandidateRecord]:
    """identify.run on a run dir holding `cases` as annotated pseudo-QAs (all about one image, pseudo-answer
    "red"), with a config built the way a YAML file is; returns candidates.jsonl, checking parity.jsonl is its
    selected part."""
    run_dir = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8), "red").save(image)
    tree = {"run_dir": str(run_dir), "seed": seed, "images": {"path": str(tmp_path)}, "teacher": {"model": "t"},
            "student": {"model": "s"}, "identify": {"self_consistency": 2, **ident}}  # fmt: skip
    cfg = build_config(tree)
    qas = [{"qa_id": q, "image_id": "a", "image_path": str(image), "question": f"{q}?", "pseudo_answer": "red",
            "answer_type": "other"} for q in cases]  # fmt: skip
    (run_dir / "annotate").mkdir(parents=True)
    (run_dir / "annotate/qa.jsonl").write_text("".join(json.dumps(qa) + "\n" for qa in qas))
    counts = {"images_ok": 1, "generations": len(qas), "qa_pairs": len(qas), "generation_status": {"ok": len(qas)},
              "pairs_rejected": {}}  # fmt: skip
    atomic_write_json(run_dir / "annotate/manifest.json", {"fingerprint": "annotate", "counts": counts})
    teacher = Scripted({q: t for q, (t, _) in cases.items()})
    student = Scripted({q: [s] for q, (_, s) in cases.items()})
    identify.run(cfg, RunDir(run_dir), teacher=teacher, student=student)
    cands = [CandidateRecord(**r) for r in iter_jsonl(run_dir / "identify/candidates.jsonl")]
    assert [CandidateRecord(**r) for r in iter_jsonl(run_dir / "identify/parity.jsonl")] == [
        c for c in cands if c.selected
    ]
    assert all(c.selected == (c.reason == "selected") for c in cands)
    return cands


# The reason each strategy gives each kind of candidate, in KINDS order (the failed one aside: `failed` under every
# strategy). Every row differs from every other, so swapping two strategies, or making one behave like another, fails.
EXPECTED_REASONS = {
    "parity": ("selected", "student_correct", "teacher_disagrees", "teacher_disagrees", "teacher_inconsistent"),
    "all": ("selected", "selected", "selected", "selected", "selected"),
    "teacher_consistent": ("selected", "selected", "teacher_disagrees", "teacher_disagrees", "teacher_inconsistent"),
    "student_fails": ("selected", "student_correct", "selected", "student_correct", "selected"),
    # a seeded sample of the answered five, as many as parity keeps (one)
    "random": ("not_sampled", "not_sampled", "not_sampled", "selected", "not_sampled"),
    # gap scores (teacher sample share minus student): 1, 0, 0, -1, 0; kept at >= 0 (STRATEGY_OPTIONS)
    "graded": ("selected", "selected", "selected", "below_gap_score", "selected"),
}
STRATEGY_OPTIONS: dict[str, dict[str, Any]] = {"graded": {"min_gap_score": 0.0}}


def test_strategy_table_tells_every_strategy_apart() -> None:
    assert set(EXPECTED_REASONS) == set(REGISTRY)
    assert len(set(EXPECTED_REASONS.values())) == len(EXPECTED_REASONS)
    selected_sets = {tuple(r == "selected" for r in row) for row in EXPECTED_REASONS.values()}
    assert len(selected_sets) == len(EXPECTED_REASONS)  # different selections, not only different reasons


@pytest.mark.parametrize("strategy", sorted(EXPECTED_REASONS))
def test_each_strategy_selects_its_own_set(tmp_path: Path, strategy: str) -> None:
    cands = _run(tmp_path, KINDS, strategy=strategy, **STRATEGY_OPTIONS.get(strategy, {}))
    assert [c.qa_id for c in cands] == list(KINDS)
    assert [c.gap_score for c in cands][:5] == [1.0, 0.0, 0.0, -1.0, 0.0]  # kept on every candidate
    assert tuple(c.reason for c in cands) == (*EXPECTED_REASONS[strategy], "failed")


def _random_cases() -> dict[str, Case]:
    """32 pseudo-QAs in file order: every third one a gap (11 of them), two failed ones."""
    kinds = ["known", "gap", "teacher_wrong"]
    cases = {f"q{i:02d}": KINDS[kinds[i % 3]] for i in range(32)}
    cases["q00"] = cases["q05"] = KINDS["failed"]
    return cases


def test_random_is_a_seeded_sample_the_size_of_the_parity_set(tmp_path: Path) -> None:
    cases = _random_cases()
    parity = [c.qa_id for c in _run(tmp_path, cases, strategy="parity") if c.selected]
    assert len(parity) == 11

    def sample(seed: int) -> list[str]:
        cands = _run(tmp_path, cases, seed=seed, strategy="random")
        assert {c.reason for c in cands if c.qa_id in ("q00", "q05")} == {"failed"}  # never drawn
        assert {c.reason for c in cands if not c.selected} == {"failed", "not_sampled"}
        return [c.qa_id for c in cands if c.selected]

    first = sample(0)
    assert len(first) == len(parity)
    answered = [q for q in cases if q not in ("q00", "q05")]
    assert first != answered[: len(parity)] and first != list(cases)[: len(parity)]  # not "the first N"
    assert first != parity  # not the parity rule either
    assert sample(0) == first  # the same seed draws the same sample
    assert sample(1) != first  # another seed, another sample


def _agreement(teacher_match: bool, consistent: bool, student_correct: bool) -> Decision:
    return (True, "selected") if consistent and student_correct else (False, "student_correct")


def _first_two(candidates: list[CandidateRecord], selection: Selection) -> list[CandidateRecord]:
    kept = [c.qa_id for c in candidates if c.selected][:2]
    out = []
    for c in candidates:
        if c.selected and c.qa_id not in kept:
            c = c.model_copy(update={"selected": False, "reason": "not_sampled"})
        out.append(c)
    return out


AGREEMENT = Strategy(_agreement, _first_two)  # registered by the test below, as a plugin module would be


def test_a_registered_strategy_works_through_config_cli_and_identify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(
        ConfigError, match="unknown strategy 'agreement'; valid strategies: all, graded, parity, random"
    ):
        _run(tmp_path, KINDS, strategy="agreement")
    monkeypatch.setitem(REGISTRY, "agreement", f"{__name__}:AGREEMENT")
    assert build_parser().parse_args(["identify", "--strategy", "agreement"]).strategy == "agreement"
    cases = {**KINDS, "known2": KINDS["known"], "known3": KINDS["known"]}
    cands = _run(tmp_path, cases, strategy="agreement")
    assert [c.qa_id for c in cands if c.selected] == ["known", "known2"]
    assert {c.qa_id: c.reason for c in cands}["known3"] == "not_sampled"  # dropped by the whole-set step


def test_unknown_strategy_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"run_dir": "r", "images": {"path": "i"}, "teacher": {"model": "t"}, "student": {"model": "s"},
                      "identify": {"strategy": "parity_v2"}})  # fmt: skip
    assert "identify.strategy" in str(info.value)
    assert "valid strategies: all, graded, parity, random, student_fails, teacher_consistent" in str(info.value)


def _answers(*answers: str) -> AnswerRecord:
    return AnswerRecord(qa_id="q", raw=list(answers), answers=list(answers))


def test_teacher_consensus_rules_votes_and_gap_score() -> None:
    qa = QARecord(qa_id="q", image_id="i", image_path="i.png", question="colour?", pseudo_answer="red",
                  answer_type="other")  # fmt: skip
    first, wrong, right, student = _answers("red"), _answers("blue"), _answers("red"), _answers("blue")
    for rule, agrees in (("all", False), ("majority", True), ("any", True)):
        c = decide(qa, first, student, IdentifyConfig(consensus=rule), [wrong, right])
        assert c.teacher_agrees is agrees and c.selected is agrees
        assert c.teacher_votes == [True, False, True]
        assert c.gap_score == round(2 / 3, 4)  # two of three teachers agree, the student does not
        assert c.reason == ("selected" if agrees else "teacher_inconsistent")
    tie = decide(qa, first, student, IdentifyConfig(consensus="majority"), [wrong])
    assert not tie.teacher_agrees  # one of two is not a majority
    alone = decide(qa, first, _answers("red"), IdentifyConfig())
    assert alone.teacher_votes is None and alone.gap_score == 0.0
    failed = decide(qa, first, student, IdentifyConfig(), [AnswerRecord(qa_id="q", raw=[], answers=[], error="x")])
    assert failed.reason == "failed"  # any teacher's failed request: never selected


def test_graded_ranks_by_gap_score_with_a_threshold_or_a_top_share(tmp_path: Path) -> None:
    cases: dict[str, Case] = {
        "full": (["red", "red", "red"], "blue"),  # samples agree 2/2, student wrong: 1.0
        "half": (["red", "red", "blue"], "blue"),  # 1/2: 0.5
        "none": (["red", "blue", "blue"], "blue"),  # 0/2: 0.0
        "known": (["red", "red", "red"], "red"),  # 1.0 - 1: 0.0
    }
    scores = {c.qa_id: c.gap_score for c in _run(tmp_path, cases, strategy="graded")}
    assert scores == {"full": 1.0, "half": 0.5, "none": 0.0, "known": 0.0}
    assert [c.qa_id for c in _run(tmp_path, cases, strategy="graded") if c.selected] == ["full", "half"]
    assert [c.qa_id for c in _run(tmp_path, cases, strategy="graded", min_gap_score=0.75) if c.selected] == ["full"]
    top = _run(tmp_path, cases, strategy="graded", min_gap_score=-1.0, top_share=0.5)
    assert [c.qa_id for c in top if c.selected] == ["full", "half"]  # the best half of four
    assert {c.reason for c in top if not c.selected} == {"below_gap_score"}
    # parity on the same answers keeps only what its yes/no rule allows (self-consistency share >= 0.5)
    assert [c.qa_id for c in _run(tmp_path, cases, strategy="parity") if c.selected] == ["full", "half"]
