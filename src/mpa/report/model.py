"""What the report shows, read from a run directory: the data model (`RunReport` and its parts) and the readers.

A pure function of the run directory: it only reads the files the stages wrote (and the images they point to),
so it works on any run, finished or not — a section whose stage has not run says so. `collect(run_dir)` reads
everything the report shows; `write_summary(rd)` (also called at the end of every pipeline run) is the one place
the machine-readable summary.json is built. The renderers (`mpa.report.md`, `.html`, `.plots`) import this module
and never the reverse; `mpa.report.write_report` ties them together.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mpa.contract import CHAIN, PIPELINE, STAGES
from mpa.counts import AnnotateCounts, IdentifyCounts, LevelCounts
from mpa.errors import MPAError
from mpa.records import CandidateRecord
from mpa.review import review_summary
from mpa.rundir import RunDir, atomic_write_json, iter_jsonl, latest_by_key, read_json, read_records

T = TypeVar("T")
EXAMPLES = 10  # benchmark questions shown for what the student gained, and for what it lost
ROLES = ("teacher", "student_before", "student_after")
USAGE_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd")
PACKAGES = ("mpa", "torch", "transformers", "peft", "trl", "accelerate", "datasets")
GALLERY_SIZE = 9  # cards per gallery (selected / rejected)
TEACHER_REASONS = ("teacher_disagrees", "teacher_inconsistent")
STATUS_PHRASES = {"interrupted": "was interrupted (or is still running)", "not run": "has not run",
                  "not configured": "is not configured (no evaluate.benchmarks)"}  # fmt: skip


@dataclass(frozen=True)
class FunnelStep:
    label: str
    count: int
    dropped: dict[str, int]  # why items did not reach this step from the one before (reason -> count)


@dataclass(frozen=True)
class Curves:
    """Training log: (step, loss) for the training loss and the label-free validation loss."""

    train: list[tuple[int, float]]
    val: list[tuple[int, float]]
    best: tuple[int, float] | None
    source: str  # the file they come from


@dataclass(frozen=True)
class Change:
    """A benchmark question whose score moved between the student before and after leveling."""

    qid: str
    question_type: str
    question: str
    answers: list[str]
    before: str
    after: str
    teacher: str | None


@dataclass(frozen=True)
class BenchmarkChanges:
    label: str
    n: int  # questions answered by both students
    gained: list[Change]  # score rose
    lost: list[Change]  # score fell
    by_type: dict[str, tuple[int, int]]  # question type -> (gained, lost)

    def counts(self) -> dict[str, Any]:
        return {"n": self.n, "gained": len(self.gained), "lost": len(self.lost),
                "per_question_type": {t: {"gained": g, "lost": lo} for t, (g, lo) in self.by_type.items()}}  # fmt: skip


@dataclass(frozen=True)
class RunReport:
    """Everything the report shows, read from one run directory."""

    root: Path
    summary: dict[str, Any]  # = summary.json
    status: dict[str, str]  # stage -> complete | interrupted | not run | not configured
    funnel: list[FunnelStep]
    strategy: str | None
    curves: Curves | None
    selected: list[dict[str, Any]]  # gallery candidates (identify/candidates.jsonl records)
    rejected: list[dict[str, Any]]
    changes: list[BenchmarkChanges]
    config_text: str | None
    environment: dict[str, str]
    environment_recorded: bool  # False: the run did not record one; these are the report machine's versions
    missing: dict[str, str] = field(default_factory=dict)  # section id -> what is missing and why


# ---------------------------------------------------------------------------------------------- reading the run
def stage_status(rd: RunDir) -> dict[str, str]:
    out = {}
    for stage in CHAIN:
        started = (rd.stage_dir(stage) / "started.json").exists()
        out[stage] = "complete" if rd.manifest(stage) else "interrupted" if started else "not run"
    ev = rd.stage_dir("evaluate")
    if rd.manifest("evaluate") or (ev / "summary.json").exists():  # (summary only: a run from before the manifest)
        out["evaluate"] = "complete"
    elif any(ev.glob("*/*/started.json")):
        out["evaluate"] = "interrupted"
    elif not _configured_benchmarks(rd):
        out["evaluate"] = "not configured"
    else:
        out["evaluate"] = "not run"
    return out


def _configured_benchmarks(rd: RunDir) -> list[Any]:
    path = rd.root / "config.yaml"
    tree = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    return ((tree or {}).get("evaluate") or {}).get("benchmarks") or []


def _by_role(usage: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A manifest's `usage`, per model role ({role: counts}) or flat (counts), as {role: counts}."""
    if any(k in usage for k in USAGE_FIELDS):
        return {"all": usage}
    return {role: counts for role, counts in usage.items() if isinstance(counts, dict)}


def add_usage(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Sum two usage counts field by field; a field unknown on both sides (e.g. no price: cost None) stays None."""
    out = {}
    for k in USAGE_FIELDS:
        x, y = a.get(k), b.get(k)
        out[k] = None if x is None and y is None else (x or 0) + (y or 0)
    return out


def _usage(rd: RunDir) -> dict[str, dict[str, dict[str, Any]]]:
    """Requests, tokens and cost per stage and model role where the backends recorded them (manifest `usage`);
    the evaluate stage's units are summed per evaluated model."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for stage in ("annotate", "identify", "level"):
        usage = (rd.manifest(stage) or {}).get("usage")
        if usage:
            out[stage] = {role: add_usage(c, {}) for role, c in _by_role(usage).items()}
    for path in sorted(rd.stage_dir("evaluate").glob("*/*/manifest.json")):
        usage = read_json(path).get("usage")
        role = path.parent.parent.name  # evaluate/<role>/<benchmark>/manifest.json
        for counts in _by_role(usage or {}).values():
            ev = out.setdefault("evaluate", {})
            ev[role] = add_usage(ev.get(role, {}), counts)
    return out


def environment(rd: RunDir) -> tuple[dict[str, str], bool]:
    """Versions the run recorded (RUN_DIR/environment.json), else those installed here (and say so)."""
    path = rd.root / "environment.json"
    if path.exists():
        return {k: str(v) for k, v in read_json(path).items()}, True
    return current_environment(), False


def current_environment() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def compare_students(rd: RunDir, label: str) -> BenchmarkChanges | None:
    """What the student gained and lost on one benchmark, question by question (None: a side is missing)."""
    paths = {role: rd.stage_dir("evaluate") / role / label / "predictions.jsonl" for role in ROLES}
    if not (paths["student_before"].exists() and paths["student_after"].exists()):
        return None
    before = latest_by_key(paths["student_before"], "qid")
    after = latest_by_key(paths["student_after"], "qid")
    teacher = latest_by_key(paths["teacher"], "qid") if paths["teacher"].exists() else {}
    gained, lost, by_type = [], [], Counter[tuple[str, str]]()
    both = [q for q in before if q in after]
    for qid in both:
        b, a = before[qid], after[qid]
        if a["score"] == b["score"]:
            continue
        t = teacher.get(qid)
        change = Change(qid, b.get("question_type") or "-", b["question"], list(b["answers"]), b["answer"],
                        a["answer"], t["answer"] if t else None)  # fmt: skip
        up = a["score"] > b["score"]
        (gained if up else lost).append(change)
        by_type[(change.question_type, "gained" if up else "lost")] += 1
    types = sorted({t for t, _ in by_type})
    return BenchmarkChanges(label, len(both), gained, lost,
                            {t: (by_type[(t, "gained")], by_type[(t, "lost")]) for t in types})  # fmt: skip


def build_summary(rd: RunDir, changes: list[BenchmarkChanges] | None = None) -> dict[str, Any]:
    """summary.json: benchmark table, parity funnel, leveling, seconds per stage, plus stage status, what the
    student gained / lost per benchmark, token usage where recorded, and the versions the run used."""
    timings = read_json(rd.root / "timings.json") if (rd.root / "timings.json").exists() else {}
    eval_path = rd.stage_dir("evaluate") / "summary.json"
    benchmarks = read_json(eval_path) if eval_path.exists() else {}
    identify_m, level_m = rd.manifest("identify"), rd.manifest("level")
    level_keys = ("val_accuracy_before", "val_accuracy_after", "best_checkpoint", "output")
    if changes is None:
        changes = [c for label in benchmarks if (c := compare_students(rd, label)) is not None]
    env_path = rd.root / "environment.json"
    return {
        "benchmarks": benchmarks,
        "parity": IdentifyCounts.read(identify_m).model_dump() if identify_m else {},
        "level": {**{k: level_m.get(k) for k in level_keys}, "counts": LevelCounts.read(level_m).model_dump()}
        if level_m
        else {},
        "timings_s": {**timings, "total": round(sum(timings.values()), 2)},
        "stages": stage_status(rd),
        "io": _stage_io(rd),
        "changes": {c.label: c.counts() for c in changes},
        "usage": _usage(rd),
        "environment": read_json(env_path) if env_path.exists() else {},
        "rounds": read_json(rd.root / "rounds.json") if (rd.root / "rounds.json").exists() else None,
        "contamination": _contamination(rd),
        "review": review_summary(rd.root),
    }


def _contamination(rd: RunDir) -> dict[str, Any] | None:
    """The contamination guard's counts and flagged pool images (RUN_DIR/contamination/), if it ran."""
    manifest = rd.root / "contamination" / "manifest.json"
    if not manifest.exists():
        return None
    flagged = list(iter_jsonl(rd.root / "contamination" / "flagged.jsonl"))
    return {**read_json(manifest)["counts"], "flagged_images": flagged}


def _stage_io(rd: RunDir) -> dict[str, Any]:
    """in / out / skipped / failed by reason for every finished stage and evaluation unit (see mpa.counts)."""
    units = [*CHAIN, *(str(p.parent.relative_to(rd.root)) for p in sorted(rd.root.glob("evaluate/*/*/manifest.json")))]
    out = {}
    for unit in units:
        manifest = rd.manifest(unit)
        if manifest is not None:
            out[unit] = manifest.get("io") or STAGES[unit.split("/")[0]].io(manifest)
    return out


def write_summary(rd: RunDir) -> dict[str, Any]:
    """Build and write RUN_DIR/summary.json (atomically); returns it."""
    summary = build_summary(rd)
    atomic_write_json(rd.root / "summary.json", summary)
    return summary


def funnel(rd: RunDir) -> list[FunnelStep]:
    """images → generations → QA pairs → answered → teacher-consistent → student fails → selected, each step with
    the counts by reason of what it dropped (from the annotate and identify manifests)."""
    a, i = rd.manifest("annotate"), rd.manifest("identify")
    if a is None:
        return []
    c = AnnotateCounts.read(a)
    steps = [
        FunnelStep("images", c.images_ok, {**c.skip_reasons, "duplicate": c.images_duplicate}),
        FunnelStep("teacher generations", c.generations, {}),
        FunnelStep("QA pairs (parsed, accepted)", c.qa_pairs, c.rejected()),
    ]
    if i is not None:
        p = IdentifyCounts.read(i)
        r = p.reasons
        steps += [
            FunnelStep("answered by both models", p.answered, {"failed": r.get("failed", 0)}),
            FunnelStep("teacher-consistent", p.teacher_consistent, {k: r.get(k, 0) for k in TEACHER_REASONS}),
            FunnelStep("student fails", p.student_fails, {"student_correct": r.get("student_correct", 0)}),
            FunnelStep("selected", p.selected, {"not_sampled": r.get("not_sampled", 0)}),
        ]
    return [FunnelStep(s.label, s.count, {k: v for k, v in s.dropped.items() if v}) for s in steps]


def curves(rd: RunDir) -> Curves | None:
    """The trainer's log history: level/metrics.json when level finished, else the latest checkpoint's state."""
    path = rd.stage_dir("level") / "metrics.json"
    if not path.exists():
        states = sorted(rd.stage_dir("level").glob("trainer/checkpoint-*/trainer_state.json"),
                        key=lambda p: int(p.parent.name.split("-")[-1]))  # fmt: skip
        if not states:
            return None
        path = states[-1]
    history = read_json(path).get("log_history", [])
    train = [(int(h["step"]), float(h["loss"])) for h in history if "loss" in h and "step" in h]
    val = [(int(h["step"]), float(h["eval_loss"])) for h in history if "eval_loss" in h and "step" in h]
    best = min(val, key=lambda sv: sv[1]) if val else None
    return Curves(train, val, best, str(path.relative_to(rd.root)))


def spread(rows: list[T], key: Callable[[T], str], k: int) -> list[T]:
    """Up to k rows, taking turns between the values of `key` (so every reason / type shows up), in file order."""
    groups: dict[str, list[T]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    out: list[T] = []
    while len(out) < k and any(groups.values()):
        for name in sorted(groups):
            if groups[name] and len(out) < k:
                out.append(groups[name].pop(0))
    return out


def collect(run_dir: Path | str) -> RunReport:
    """Read everything the report shows from RUN_DIR."""
    rd = RunDir(run_dir)
    if not rd.root.is_dir():
        raise MPAError(f"{rd.root}: no such run directory")
    if not any((rd.root / name).exists() for name in ("config.yaml", *PIPELINE)):
        raise MPAError(f"{rd.root} is not an mpa run directory (no config.yaml and no stage folder)")
    eval_path = rd.stage_dir("evaluate") / "summary.json"
    labels = list(read_json(eval_path)) if eval_path.exists() else []
    changes = [c for label in labels if (c := compare_students(rd, label)) is not None]
    summary = build_summary(rd, changes)
    status = summary["stages"]
    missing: dict[str, str] = {}
    for section, stage, what in [
        ("benchmarks", "evaluate", "no benchmark scores"),
        ("funnel", "identify", "the funnel stops at annotation"),
        ("training", "level", "no leveled student and no training curves"),
        ("gallery", "identify", "no teacher/student answers to show"),
        ("changes", "evaluate", "no before/after comparison"),
    ]:
        if status[stage] != "complete":
            missing[section] = f"{what}: the {stage} stage {STATUS_PHRASES[status[stage]]} in this run directory"
    identified = rd.manifest("identify")
    counts = IdentifyCounts.read(identified) if identified else None
    if counts is not None and counts.selected == 0 and status["level"] != "complete":
        why = (
            "the student already matched the teacher on all of those (try more or other images, or another annotate "
            "task)"
            if counts.teacher_consistent
            else "so no pseudo-answer passed the noise filter (check annotate/qa.jsonl and identify.matcher)"
        )
        missing["training"] = (
            f"nothing was selected, so there was nothing to train on: of {counts.answered} answered "
            f"pseudo-QAs the teacher agreed with its own answer on {counts.teacher_consistent}; {why}"
        )
    if status["evaluate"] == "complete" and "student_after" not in str(summary["benchmarks"]):
        missing["changes"] = "no before/after comparison: the leveled student was not evaluated"
    path = rd.stage_dir("identify") / "candidates.jsonl"
    # read through the record type they were written as (a hand-edited line is one error naming file and line)
    cands = [c.model_dump() for c in read_records(path, CandidateRecord)] if status["identify"] == "complete" else []
    after = {r["qa_id"]: r for r in iter_jsonl(rd.stage_dir("level") / "val_predictions.jsonl")}
    cands = [{**c, "after": after.get(c["qa_id"])} for c in cands]
    held_out_first = sorted(cands, key=lambda c: c["after"] is None)  # stable: file order within each group
    ident = rd.manifest("identify") or {}
    config_path = rd.root / "config.yaml"
    env, recorded = environment(rd)
    return RunReport(
        root=rd.root,
        summary=summary,
        status=status,
        funnel=funnel(rd),
        strategy=(ident.get("settings") or {}).get("identify", {}).get("strategy"),
        curves=curves(rd),
        selected=spread([c for c in held_out_first if c["selected"]], lambda c: c["answer_type"], GALLERY_SIZE),
        rejected=spread([c for c in held_out_first if not c["selected"]], lambda c: c["reason"], GALLERY_SIZE),
        changes=changes,
        config_text=config_path.read_text(encoding="utf-8") if config_path.exists() else None,
        environment=env,
        environment_recorded=recorded,
        missing=missing,
    )
