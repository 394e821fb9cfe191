"""What each stage counts, as typed models: the stage writes its manifest's `counts` through its model, and every
reader (the next stage, the report, the CLI's summary) reads them back through the same model
(`contract.Stage.read_counts`), never by key strings.

Each model also says the stage's bookkeeping in one shape for every stage — what went in, what came out, and
what was skipped or failed, by reason (`io()`; `RunDir.finish` stores it in the manifest as `io`, and it is
collected into RUN_DIR/summary.json) — so "where did my 100,000 images go?" has one answer per stage.

The module imports nothing of mpa (the contract, which any module may import, names these models).
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: int(v) for k, v in counts.items() if v}


def _io(into: dict[str, int], out: dict[str, int], skipped: dict[str, int], failed: dict[str, int]) -> dict[str, Any]:
    return {"in": into, "out": out, "skipped": _nonzero(skipped), "failed": _nonzero(failed)}


class Counts(BaseModel):
    """A stage's counts. Every field has a default so that a manifest written before a count was added still
    reads; writing one with a key the model does not declare is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def read(cls, manifest: dict[str, Any]) -> Self:
        """The counts of a stage's `manifest` (counts a newer mpa wrote and this one does not know are left out, so
        a run directory stays readable across versions)."""
        counts = manifest.get("counts") or {}
        return cls.model_validate({k: v for k, v in counts.items() if k in cls.model_fields})

    def io(self) -> dict[str, Any]:
        """`{"in": {...}, "out": {...}, "skipped": {reason: n}, "failed": {reason: n}}`."""
        raise NotImplementedError


class AnnotateCounts(Counts):
    images: int = 0  # listed in the pool
    images_ok: int = 0  # decoded and annotated
    images_duplicate: int = 0  # byte-identical to an earlier image
    images_skipped: int = 0
    skip_reasons: dict[str, int] = Field(default_factory=dict)  # unreadable, too_small, contaminated, ...
    images_flagged: int = 0  # near-duplicates of a benchmark image (left out unless contamination.allow)
    questions_in_benchmarks: int = 0  # pseudo-questions whose normalised text is a benchmark question
    generations: int = 0  # teacher calls
    generation_status: dict[str, int] = Field(default_factory=dict)  # ok, unparseable, empty, refusal, failed
    pairs_rejected: dict[str, int] = Field(default_factory=dict)  # answer_too_long, duplicate_question, ...
    qa_pairs: int = 0  # accepted question/answer pairs

    def rejected(self) -> dict[str, int]:
        """What never became a QA pair, by reason: whole generations (not ok) and single pairs."""
        return {**{k: v for k, v in self.generation_status.items() if k != "ok"}, **self.pairs_rejected}

    def io(self) -> dict[str, Any]:
        status = self.generation_status
        skipped = {
            "image duplicate": self.images_duplicate,
            **{f"image {reason}": n for reason, n in self.skip_reasons.items()},
            **{f"generation {s}": n for s, n in status.items() if s not in ("ok", "failed")},
            **{f"pair {reason}": n for reason, n in self.pairs_rejected.items()},
        }
        return _io({"images": self.images}, {"images_annotated": self.images_ok, "qa_pairs": self.qa_pairs},
                   skipped, {"generation failed": status.get("failed", 0)})  # fmt: skip


class IdentifyCounts(Counts):
    images: int = 0
    annotated: int = 0  # teacher generations at annotate
    parseable: int = 0  # QA pairs annotate kept
    answered: int = 0  # by both models
    teacher_consistent: int = 0
    student_fails: int = 0  # teacher-consistent and the student disagrees
    selected: int = 0
    reasons: dict[str, int] = Field(default_factory=dict)  # every candidate's reason (selected, student_correct, ...)
    rejected_at_annotate: dict[str, int] = Field(default_factory=dict)  # AnnotateCounts.rejected()
    selected_by_answer_type: dict[str, int] = Field(default_factory=dict)
    teacher_agreement: dict[str, float] = Field(default_factory=dict)  # per teacher role: share agreeing
    gap_scores: dict[str, int] = Field(default_factory=dict)  # histogram of candidates' gap scores ("+0.50": n)

    def io(self) -> dict[str, Any]:
        skipped = {r: n for r, n in self.reasons.items() if r not in ("selected", "failed")}
        return _io({"qa_pairs": self.parseable}, {"selected": self.selected}, skipped,
                   {"answer failed": self.reasons.get("failed", 0)})  # fmt: skip


class LevelCounts(Counts):
    gap: int = 0  # selected samples after balancing
    train: int = 0  # gap + retention rows trained on
    retention: int = 0
    val: int = 0  # held out for label-free validation

    def io(self) -> dict[str, Any]:
        return _io({"gap_samples": self.gap, "retention_samples": self.retention},
                   {"train_rows": self.train, "val_rows": self.val}, {}, {})  # fmt: skip


class EvaluateCounts(Counts):
    units: int = 0  # model × benchmark evaluations configured
    units_run: int = 0  # of those, run this time (the others were complete)

    def io(self) -> dict[str, Any]:
        return _io({"units": self.units}, {"units_run": self.units_run}, {}, {})


def unit_io(metrics: dict[str, Any]) -> dict[str, Any]:
    """The same shape for one evaluation unit (evaluate/<model>/<benchmark>), from its metrics."""
    n, failed = metrics.get("n", 0), metrics.get("failed", 0)
    return _io({"questions": n}, {"scored": n - failed}, {}, {"generation failed": failed})
