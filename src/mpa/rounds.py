"""Rounds beyond the paper: level, ask the leveled student again, select the gaps it still has, level again.

    mpa run CONFIG --rounds 3          # or `rounds: {count: 3}` in the config

Round 1 is the run directory itself (a one-round run is exactly the paper's pipeline). Round r > 1 is a run
directory of its own, RUN_DIR/rounds/<r>/, whose student is round r-1's leveled student (full fine-tuning: its
model folder; LoRA: its merged model) and which runs identify → level → evaluate (student_after) like any run:
every stage resumes, skips or refuses by its fingerprint, so a run killed in any round goes on from there. With
`rounds.pool: same` a round reuses round 1's annotations and the teachers' answers (the teachers did not change);
with `slices` round r annotates only the r-th part of the pool.

Stopping reads no label: a round's gain is its label-free validation accuracy after leveling minus that of the
student it started from, on the same held-out teacher-consistent pseudo-QAs (`level` measures both). When the gain
is not above `rounds.min_gain` (and `rounds.stop_early`), no further round runs and the previous round's student is the
result. RUN_DIR/rounds.json holds the per-round table (also in summary.json and the report).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

from mpa import distributed
from mpa.config import MPAConfig
from mpa.counts import IdentifyCounts, LevelCounts
from mpa.pipeline import invocation, run_pipeline
from mpa.rundir import RunDir, atomic_write_json, hold_run_dir, read_json

log = logging.getLogger(__name__)
ROUNDS_FILE = "rounds.json"


def round_dir(cfg: MPAConfig, r: int) -> Path:
    return Path(cfg.run_dir) if r == 1 else Path(cfg.run_dir) / "rounds" / str(r)


def first_round(cfg: MPAConfig) -> MPAConfig:
    """Round 1's config: the run's own, with its pool part under `rounds.pool: slices`."""
    if cfg.rounds.count == 1 or cfg.rounds.pool == "same":
        return cfg
    return cfg.model_copy(update={"images": cfg.images.model_copy(update={"part": (1, cfg.rounds.count)})})


def next_round(cfg: MPAConfig, r: int, previous_level: dict[str, Any]) -> MPAConfig:
    """Round r's config: the previous round's leveled weights as the student, only student_after evaluated."""
    trained = previous_level.get("merged") or previous_level["student_after"]["model"]
    student = cfg.student.model_copy(update={"model": str(trained), "adapter": None, "revision": None})
    images = cfg.images
    if cfg.rounds.pool == "slices":
        images = images.model_copy(update={"part": (r, cfg.rounds.count)})
    evaluate = cfg.evaluate.model_copy(update={"models": ["student_after"]})
    return cfg.model_copy(update={"run_dir": str(round_dir(cfg, r)), "student": student, "images": images,
                                  "evaluate": evaluate})  # fmt: skip


def _seed_from_first(cfg: MPAConfig, rdir: Path) -> None:
    """Same pool: round 1's annotations (same fingerprint: skipped) and the teachers' answers (same teachers, same
    questions: not asked again). Copied once, before the round's identify starts."""
    first = Path(cfg.run_dir)
    if not (rdir / "annotate").exists():
        shutil.copytree(first / "annotate", rdir / "annotate")
        if (first / "contamination").exists():
            shutil.copytree(first / "contamination", rdir / "contamination")
    if not (rdir / "identify").exists():
        (rdir / "identify").mkdir(parents=True)
        for path in (first / "identify").glob("teacher*_answers.jsonl"):
            shutil.copy2(path, rdir / "identify" / path.name)


def round_row(r: int, rd: RunDir) -> dict[str, Any]:
    """One row of the per-round table, read from a round's run directory."""
    identify_m, level_m = rd.manifest("identify"), rd.manifest("level")
    row: dict[str, Any] = {"round": r, "run_dir": str(rd.root)}
    row["selected"] = IdentifyCounts.read(identify_m).selected if identify_m else None
    row["trained_on"] = LevelCounts.read(level_m).train if level_m else None
    before = level_m.get("val_accuracy_before") if level_m else None
    after = level_m.get("val_accuracy_after") if level_m else None
    row.update(val_accuracy_before=before, val_accuracy_after=after,
               val_gain=None if before is None or after is None else round(after - before, 4))  # fmt: skip
    summary = rd.stage_dir("evaluate") / "summary.json"
    scores = read_json(summary) if summary.exists() else {}
    row["benchmarks"] = {label: b.get("student_after") for label, b in scores.items()}
    return row


def run_rounds(
    cfg: MPAConfig, stages: list[str] | None = None, *, force: bool = False, retry_failed: bool = False
) -> dict[str, dict[str, Any]]:
    """Run round 1 (`run_pipeline`), then rounds 2..count while they gain; returns the last round's manifests.
    Rounds apply only when `stages` include level; RUN_DIR/rounds.json gets the per-round table."""
    stages = stages or ["annotate", "identify", "level", "evaluate"]
    manifests = run_pipeline(first_round(cfg), stages, force=force, retry_failed=retry_failed)  # checks, then locks
    if cfg.rounds.count == 1 or "level" not in stages:
        return manifests
    lock = hold_run_dir(cfg.run_dir, invocation()) if distributed.is_main() else contextlib.nullcontext()
    with lock:  # the rounds after the first write RUN_DIR/rounds.json and summary.json
        return _more_rounds(cfg, stages, manifests, force=force, retry_failed=retry_failed)


def _more_rounds(
    cfg: MPAConfig, stages: list[str], manifests: dict[str, dict[str, Any]], *, force: bool, retry_failed: bool
) -> dict[str, dict[str, Any]]:
    """Rounds 2..count after round 1 (whose `manifests` are returned if no further round runs)."""
    rows = [round_row(1, RunDir(cfg.run_dir))]
    stopped = None
    for r in range(2, cfg.rounds.count + 1):
        gain = rows[-1]["val_gain"]
        if cfg.rounds.stop_early and gain is not None and gain <= cfg.rounds.min_gain:
            stopped = f"round {r - 1} gained {gain:+.4f} label-free validation accuracy (not > {cfg.rounds.min_gain})"
            log.info("rounds: stopping — %s", stopped)
            break
        previous = RunDir(round_dir(cfg, r - 1)).require("level")
        rcfg = next_round(cfg, r, previous)
        if cfg.rounds.pool == "same":
            _seed_from_first(cfg, round_dir(cfg, r))
        log.info("round %d of %d: student = %s", r, cfg.rounds.count, rcfg.student.model)
        # (annotate stays in the list: with the same pool its copied folder has the same fingerprint and is skipped)
        manifests = run_pipeline(rcfg, stages, force=force, retry_failed=retry_failed)
        rows.append(round_row(r, RunDir(round_dir(cfg, r))))
    final = _final_round(rows, cfg)
    table = {"count": cfg.rounds.count, "pool": cfg.rounds.pool, "rounds": rows, "stopped": stopped,
             "final_round": final, "final_student": _student_of(rows, final)}  # fmt: skip
    atomic_write_json(Path(cfg.run_dir) / ROUNDS_FILE, table)
    from mpa.report import write_summary

    write_summary(RunDir(cfg.run_dir))  # summary.json carries the table
    return manifests


def _final_round(rows: list[dict[str, Any]], cfg: MPAConfig) -> int:
    """The last round of the run of rounds that gained (label-free); round 1 when none did."""
    final = 1
    for row in rows[1:]:
        if row["val_gain"] is not None and row["val_gain"] > cfg.rounds.min_gain:
            final = row["round"]
        elif cfg.rounds.stop_early:
            break
    return final


def _student_of(rows: list[dict[str, Any]], r: int) -> str | None:
    level = RunDir(rows[r - 1]["run_dir"]).manifest("level")
    return level.get("merged") or level["student_after"]["model"] if level else None
