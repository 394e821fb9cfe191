"""Evaluate stage: teacher, student before and student after on the configured benchmarks.

Each (model, benchmark) pair is a unit with its own fingerprint in RUN_DIR/evaluate/<model>/<benchmark>/
(predictions.jsonl, metrics.json, manifest.json), so a re-leveled student is re-evaluated without redoing the
teacher. RUN_DIR/evaluate/summary.json holds the before / after / teacher table with the share of the gap closed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from mpa.backends import Backend, for_trained_weights, load_backend
from mpa.config import BenchmarkConfig, ConfigError, ModelConfig, MPAConfig
from mpa.counts import EvaluateCounts
from mpa.evaluation import (
    BENCHMARKS,
    METRICS,
    BenchmarkError,
    evaluate_model,
    get_benchmark,
    load_benchmark,
    with_current_prompt_id,
)
from mpa.rundir import RunDir, atomic_write_json, fingerprint, read_json
from mpa.stages.common import model_identity
from mpa.stages.usage import USAGE_FILE, usage_summary

log = logging.getLogger(__name__)
STAGE = "evaluate"


def bench_label(b: BenchmarkConfig) -> str:
    return b.name + (f"_{b.split}" if b.split else "")


def unit_settings(cfg: MPAConfig, role: str, b: BenchmarkConfig, level_fp: str | None) -> dict[str, Any]:
    """What changes one unit's outputs: the model (for student_after: the level stage that made it) and the data."""
    model = {"level": level_fp} if role == "student_after" else model_identity(getattr(cfg, role.split("_")[0]))
    spec = get_benchmark(b.name)
    settings = {"model": model, "benchmark": b.model_dump(), "prompt_id": spec.prompt_id,
                "max_new_tokens": cfg.evaluate.max_new_tokens}  # fmt: skip
    if cfg.evaluate.repetition_penalty != 1.0:  # (absent when off, so earlier evaluations still resume)
        settings["repetition_penalty"] = cfg.evaluate.repetition_penalty
    return settings


def unit_key(
    cfg: MPAConfig, rd: RunDir, role: str, b: BenchmarkConfig, level_fp: str | None
) -> tuple[str, dict[str, Any]]:
    """A unit's fingerprint and settings. When the unit's folder recorded these settings under an older prompt id
    (`with_current_prompt_id`), the recorded ones, so a unit evaluated before its prompt got today's id is done."""
    settings = unit_settings(cfg, role, b, level_fp)
    fp = fingerprint(settings)
    unit = f"{STAGE}/{role}/{bench_label(b)}"
    recorded, sdir = rd.manifest(unit), rd.stage_dir(unit)
    if recorded is None and (sdir / "started.json").exists():
        recorded = read_json(sdir / "started.json")
    if (
        recorded is not None
        and recorded.get("fingerprint") != fp
        and fingerprint(with_current_prompt_id(recorded.get("settings", {}))) == fp
    ):
        return recorded["fingerprint"], recorded["settings"]
    return fp, settings


def check_benchmarks(cfg: MPAConfig) -> None:
    """Names, metrics and data layouts of the configured benchmarks, checked before any stage runs."""
    for i, b in enumerate(cfg.evaluate.benchmarks):
        if b.name not in BENCHMARKS:
            raise ConfigError(f"evaluate.benchmarks.{i}.name: unknown benchmark '{b.name}'; choose from "
                              f"{', '.join(sorted(BENCHMARKS))}")  # fmt: skip
        if b.metric is not None and b.metric not in METRICS:
            raise ConfigError(f"evaluate.benchmarks.{i}.metric: unknown '{b.metric}'; choose from "
                              f"{', '.join(sorted(METRICS))}")  # fmt: skip
        try:
            load_benchmark(b.name, Path(b.data_dir) if b.data_dir else None, split=b.split, limit=1)
        except BenchmarkError as err:
            raise ConfigError(f"evaluate.benchmarks.{i} ({b.name}): {err}") from None


def _model_for(cfg: MPAConfig, rd: RunDir, role: str) -> ModelConfig | None:
    if role == "teacher":
        return cfg.teacher
    if role == "student_before":
        return cfg.student
    manifest = rd.manifest("level")
    if manifest is None:
        return None
    trained = manifest["student_after"]  # the leveled weights; device / batch size / dtype from today's config
    after = cfg.student.model_copy(update={k: trained[k] for k in ("model", "adapter", "revision")})
    if for_trained_weights(after) is not after:
        log.warning("evaluate: student_after runs in-process (backend hf): the %s server serves only the base "
                    "weights, not the leveled ones in %s", cfg.student.backend,
                    trained["adapter"] or trained["model"])  # fmt: skip
    return for_trained_weights(after)


def run(cfg: MPAConfig, rd: RunDir, *, force: bool = False) -> dict[str, Any]:
    """Evaluate every configured (model, benchmark) unit that is not done; returns the stage manifest.

    Units resume and refuse on their own fingerprints (a re-leveled student re-evaluates only student_after). The
    stage manifest, `evaluate/manifest.json`, is rewritten only when a unit ran or the set of units changed; its
    fingerprint is that of the units' fingerprints, so it says which evaluations the summary is made of."""
    check_benchmarks(cfg)
    started_at = time.time()
    unit_fps: dict[str, str] = {}
    level = rd.manifest("level")
    level_fp = level["fingerprint"] if level else None
    samples: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    ran = 0
    for role in cfg.evaluate.models:
        model = _model_for(cfg, rd, role)
        if model is None:
            log.warning("evaluate: no leveled student in %s yet; skipping student_after", rd.root)
            continue
        backend: Backend | None = None
        for b in cfg.evaluate.benchmarks:
            label = bench_label(b)
            fp, settings = unit_key(cfg, rd, role, b, level_fp)
            unit = f"{STAGE}/{role}/{label}"
            unit_fps[unit] = fp
            if rd.begin(unit, fp, settings, force=force):
                if label not in samples:
                    try:
                        samples[label] = load_benchmark(
                            b.name, Path(b.data_dir) if b.data_dir else None, split=b.split, limit=b.limit
                        )
                    except BenchmarkError as err:
                        raise ConfigError(f"evaluate.benchmarks ({b.name}): {err}") from None
                backend = backend or load_backend(model, cfg.engine)
                metrics = evaluate_model(model, b.name, samples[label], rd.stage_dir(unit), metric=b.metric,
                                         max_new_tokens=cfg.evaluate.max_new_tokens, backend=backend,
                                         repetition_penalty=cfg.evaluate.repetition_penalty,
                                         desc=f"evaluate {role} on {label}")  # fmt: skip
                usage = {role: usage_summary(rd.stage_dir(unit) / USAGE_FILE, {"model": model})["model"]}
                rd.finish(unit, fp, settings, {"metrics": metrics, "usage": usage})
                ran += 1
            results.setdefault(label, {})[role] = rd.require(unit)["metrics"]
        if backend is not None:
            backend.close()
    summary = summarize(results)
    atomic_write_json(rd.stage_dir(STAGE) / "summary.json", summary)
    fp = fingerprint(unit_fps)
    previous = rd.manifest(STAGE)
    if not ran and previous is not None and previous.get("fingerprint") == fp:
        return previous  # nothing new: the manifest (and its finished_at) stands
    outputs = {"counts": EvaluateCounts(units=len(unit_fps), units_run=ran).model_dump(), "summary": summary}
    # finished when its last unit did (now, if one ran): the pipeline times only stages that worked just now
    finished_at = max((rd.require(u)["finished_at"] for u in unit_fps), default=None) if not ran else None
    return rd.write_manifest(STAGE, fp, {"units": unit_fps}, outputs, started_at, finished_at)


def gap_closed(teacher: float | None, before: float | None, after: float | None) -> float | None:
    """(after - before) / (teacher - before); None when undefined (no gap, or a value missing)."""
    if teacher is None or before is None or after is None or teacher <= before:
        return None
    return (after - before) / (teacher - before)


def summarize(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """One row per benchmark: metric, teacher, student before, student after, gap closed, per question type."""
    out: dict[str, Any] = {}
    for label, by_role in results.items():
        first = next(iter(by_role.values()))
        row: dict[str, Any] = {"metric": first["metric"], "n": first["n"]}
        for role in ("teacher", "student_before", "student_after"):
            row[role] = by_role[role]["overall"] if role in by_role else None
            row[f"{role}_compat"] = by_role[role]["compat"] if role in by_role else None
        row["gap_closed"] = gap_closed(row["teacher"], row["student_before"], row["student_after"])
        types = sorted({t for m in by_role.values() for t in m["per_question_type"]})
        row["per_question_type"] = {
            t: {role: by_role[role]["per_question_type"].get(t, {}).get("score") for role in by_role} for t in types
        }
        out[label] = row
    return out
