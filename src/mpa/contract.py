"""The stage contract: every stage of a run, in pipeline order, with what it reads, writes and counts.

This is the one list of stages. The CLI (`--stages`, subcommands), the run directory (order, clearing what
follows, version checks), the pipeline (which function runs a stage) and the report all read it; a stage's
manifest's `counts` are written and read through the typed model declared here (`mpa.counts`;
tests/test_stages_scripted.py checks every stage writes exactly its fields). Declaring
inputs and outputs the way distilabel's steps do lets a reader see the data flow without opening a stage.

The module imports nothing of mpa but the count models and `mpa.lazy` (which import nothing of mpa), so any
module may import it without a cycle; a stage's code is found by name (`runner`) only when it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mpa.counts import AnnotateCounts, Counts, EvaluateCounts, IdentifyCounts, LevelCounts, unit_io
from mpa.lazy import import_ref


@dataclass(frozen=True)
class Stage:
    """One stage: `run(cfg, rundir, force=...)` in `runner` reads `reads` and writes `writes` (paths relative to
    the run directory) and finishes with `<name>/manifest.json`, whose `counts` is a `counts` model."""

    name: str
    help: str
    runner: str  # "module:function"
    upstream: str | None
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    counts: type[Counts]
    headline: str  # the log line of a finished stage, formatted with its manifest's counts
    resumable_units: bool = False  # its work is split into units with manifests of their own (evaluate/<model>/<b>)

    def load(self) -> Callable[..., dict[str, Any]]:
        return import_ref(self.runner)  # type: ignore[no-any-return]

    def read_counts(self, manifest: dict[str, Any]) -> Counts:
        """The counts of this stage's `manifest`, typed (see `Counts.read`)."""
        return self.counts.read(manifest)

    def io(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """in / out / skipped / failed of a finished stage, or of one of its units (an evaluation unit's manifest
        carries `metrics`, not counts)."""
        if "metrics" in manifest:
            return unit_io(manifest["metrics"] or {})
        return self.read_counts(manifest).io()


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            name="annotate",
            help="PA: the teacher writes question/answer pairs for every image",
            runner="mpa.stages.annotate:run",
            upstream=None,
            reads=(),
            writes=("annotate/images.jsonl", "annotate/annotations.jsonl", "annotate/qa.jsonl", "annotate/usage.jsonl"),
            counts=AnnotateCounts,
            headline="{images_ok} images, {qa_pairs} QA pairs",
        ),
        Stage(
            name="identify",
            help="PI: teacher and student answer each pseudo-question; keep the student's knowledge gaps",
            runner="mpa.stages.identify:run",
            upstream="annotate",
            reads=("annotate/qa.jsonl", "annotate/images.jsonl"),
            writes=(
                "identify/teacher_answers.jsonl",
                "identify/student_answers.jsonl",
                "identify/candidates.jsonl",
                "identify/parity.jsonl",
                "identify/usage.jsonl",
                "identify/export/",
            ),
            counts=IdentifyCounts,
            headline="{parseable} QAs → {teacher_consistent} teacher-consistent → {selected} selected",
        ),
        Stage(
            name="level",
            help="PL: fine-tune the student on its knowledge gaps (LoRA or full), with guards against forgetting",
            runner="mpa.stages.level:run",
            upstream="identify",
            reads=("identify/candidates.jsonl",),
            writes=("level/data_summary.json", "level/adapter or level/model", "level/trainer"),
            counts=LevelCounts,
            headline="trained on {train} samples ({gap} gap, {retention} retention), {val} held out",
        ),
        Stage(
            name="evaluate",
            help="teacher, student before and student after on the configured benchmarks",
            runner="mpa.stages.evaluate:run",
            upstream=None,  # reads level's manifest when there is one (student_after); runs without it
            reads=("level/manifest.json",),
            writes=("evaluate/<model>/<benchmark>/", "evaluate/summary.json"),
            counts=EvaluateCounts,
            headline="{units_run} of {units} model/benchmark evaluations run",
            resumable_units=True,
        ),
    )
}
PIPELINE: tuple[str, ...] = tuple(STAGES)  # the order stages run in
# Stages whose outputs the next stage consumes (evaluate reads level's output but is not cleared with it: each of
# its units has its own fingerprint, so only the units built on changed work are redone).
CHAIN: tuple[str, ...] = tuple(name for name, s in STAGES.items() if not s.resumable_units)
