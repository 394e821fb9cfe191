"""The stage contract: every stage of a run, in pipeline order, with what it reads, writes and counts.

This is the one list of stages. The CLI (`--stages`, subcommands), the run directory (order, clearing what
follows, version checks), the pipeline (which function runs a stage) and the report all read it; a stage's
manifest carries exactly the `counts` keys declared here (tests/test_stages_scripted.py checks that). Declaring
inputs and outputs the way distilabel's steps do lets a reader see the data flow without opening a stage.

The module imports nothing of mpa, so any module may import it without a cycle; a stage's code is found by name
(`runner`) only when it runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    """One stage: `run(cfg, rundir, force=...)` in `runner` reads `reads` and writes `writes` (paths relative to
    the run directory) and finishes with `<name>/manifest.json`, whose `counts` has the keys `counts`."""

    name: str
    help: str
    runner: str  # "module:function"
    upstream: str | None
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    counts: tuple[str, ...]
    headline: str  # the log line of a finished stage, formatted with its manifest's counts
    resumable_units: bool = False  # its work is split into units with manifests of their own (evaluate/<model>/<b>)

    def load(self) -> Callable[..., dict[str, Any]]:
        module, function = self.runner.split(":")
        return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


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
            counts=(
                "images",
                "images_ok",
                "images_duplicate",
                "images_skipped",
                "skip_reasons",
                "generations",
                "generation_status",
                "pairs_rejected",
                "qa_pairs",
            ),
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
            counts=(
                "images",
                "annotated",
                "parseable",
                "answered",
                "teacher_consistent",
                "student_fails",
                "selected",
                "reasons",
                "rejected_at_annotate",
                "selected_by_answer_type",
            ),
            headline="{parseable} QAs → {teacher_consistent} teacher-consistent → {selected} selected",
        ),
        Stage(
            name="level",
            help="PL: fine-tune the student on its knowledge gaps (LoRA or full), with guards against forgetting",
            runner="mpa.stages.level:run",
            upstream="identify",
            reads=("identify/candidates.jsonl",),
            writes=("level/data_summary.json", "level/adapter or level/model", "level/trainer"),
            counts=("gap", "train", "retention", "val"),
            headline="trained on {train} samples ({gap} gap, {retention} retention), {val} held out",
        ),
        Stage(
            name="evaluate",
            help="teacher, student before and student after on the configured benchmarks",
            runner="mpa.stages.evaluate:run",
            upstream=None,  # reads level's manifest when there is one (student_after); runs without it
            reads=("level/manifest.json",),
            writes=("evaluate/<model>/<benchmark>/", "evaluate/summary.json"),
            counts=("units", "units_run"),
            headline="{units_run} of {units} model/benchmark evaluations run",
            resumable_units=True,
        ),
    )
}
PIPELINE: tuple[str, ...] = tuple(STAGES)  # the order stages run in
# Stages whose outputs the next stage consumes (evaluate reads level's output but is not cleared with it: each of
# its units has its own fingerprint, so only the units built on changed work are redone).
CHAIN: tuple[str, ...] = tuple(name for name, s in STAGES.items() if not s.resumable_units)
