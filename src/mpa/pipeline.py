"""Run the stages in order over one run directory, and plan a run without running it.

Each stage is a plain `run(cfg, rundir, force=...)` function; this module only sequences them, saves the resolved
config and times them. Python users can call `run_pipeline` directly.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from mpa import distributed
from mpa.backends import check_model
from mpa.config import ConfigError, MPAConfig, dump_config
from mpa.contract import PIPELINE
from mpa.contract import STAGES as CONTRACT
from mpa.errors import StageConflictError
from mpa.report import current_environment, write_summary
from mpa.rundir import (
    STAGES,
    Decision,
    RunDir,
    atomic_write_json,
    atomic_write_text,
    fingerprint,
    hold_run_dir,
    read_json,
)
from mpa.stages import annotate, evaluate, identify, level

log = logging.getLogger(__name__)


def stage_fingerprints(cfg: MPAConfig, rd: RunDir) -> dict[str, tuple[str, dict[str, Any]]]:
    """The fingerprint and settings each stage would run with. Like the stages themselves, a stage's upstream
    fingerprint is the finished upstream manifest's when there is one, else the one the config implies."""

    def upstream(stage: str, computed: str) -> str:
        manifest = rd.manifest(stage)
        return manifest["fingerprint"] if manifest else computed

    a = annotate.planned_settings(cfg, rd) if Path(cfg.images.path).exists() else {"images": cfg.images.model_dump()}
    a_fp = fingerprint(a)
    i = identify.stage_settings(cfg, upstream("annotate", a_fp))
    i_fp = fingerprint(i)
    lv = level.stage_settings(cfg, upstream("identify", i_fp), rd)
    return {"annotate": (a_fp, a), "identify": (i_fp, i), "level": (fingerprint(lv), lv)}


def plan(cfg: MPAConfig, rd: RunDir) -> list[dict[str, Any]]:
    """What `mpa run` would do for each stage: run, resume, skip, or refuse (with the changed keys)."""
    out = []
    fps = stage_fingerprints(cfg, rd)
    level_manifest = rd.manifest("level")
    level_fp = level_manifest["fingerprint"] if level_manifest else fps["level"][0]
    units = {
        f"evaluate/{role}/{evaluate.bench_label(b)}": evaluate.unit_key(cfg, rd, role, b, level_fp)
        for role in cfg.evaluate.models
        for b in cfg.evaluate.benchmarks
    }
    for stage, (fp, settings) in [*fps.items(), *units.items()]:
        decision = rd.decide(stage, fp, settings)  # the run directory's one resume / refuse rule
        if stage == "level" and level.review_changed_only(rd, fp, settings):
            decision = Decision("run")  # new reviewer decisions: re-level (mpa.review)
        out.append({"stage": stage, "action": decision.action, "detail": decision.detail, "fingerprint": fp})
    return out


def check_inputs(cfg: MPAConfig, stages: list[str] | None = None) -> None:
    """Fail fast, before anything is written, on inputs that cannot work (names the key and the fix)."""
    stages = stages or list(PIPELINE)
    if "evaluate" in stages:
        evaluate.check_benchmarks(cfg)
    if "annotate" in stages and not Path(cfg.images.path).exists():
        raise ConfigError(f"images.path: {cfg.images.path} does not exist (give a folder, .txt/.jsonl list or dataset)")
    models = [
        ("teacher", cfg.teacher),
        ("student", cfg.student),
        *((f"teachers.{i}", t) for i, t in enumerate(cfg.teachers)),
    ]
    for role, model in models:
        if model.adapter and not (Path(model.adapter).expanduser() / "adapter_config.json").exists():
            raise ConfigError(f"{role}.adapter: {model.adapter} has no adapter_config.json (a PEFT adapter folder)")
        # what the backend needs of the model: a checkpoint folder whose processor loads (chat template,
        # torchvision, num2words), a script file, or nothing here (a served model is the server's business)
        check_model(model, role, load={"annotate", "identify", "level", "evaluate"} & set(stages) != set())
    if cfg.annotate.prompt_file and not Path(cfg.annotate.prompt_file).is_file():
        raise ConfigError(f"annotate.prompt_file: {cfg.annotate.prompt_file} not found")
    if cfg.annotate.samples_per_image > 1 and cfg.annotate.temperature == 0:
        raise ConfigError(
            "annotate.samples_per_image > 1 needs annotate.temperature > 0 (greedy decoding gives one answer)"
        )


def reopen_failed(rd: RunDir, stages: list[str]) -> list[str]:
    """Reopen finished stages whose manifest counts failed requests (a flaky API, an OOM): their manifest is
    removed, so the next run resumes them and retries only the failed records (kept records are not redone), and
    the work built on them — later pipeline stages and the leveled student's evaluations — is cleared to be redone.
    Returns the reopened stages and evaluation units."""
    reopened: list[str] = []
    units = [s for s in STAGES if s in stages]
    if "evaluate" in stages:
        units += [str(p.parent.relative_to(rd.root)) for p in sorted(rd.root.glob("evaluate/*/*/manifest.json"))]
    for unit in units:
        manifest = rd.manifest(unit)
        if manifest is None or not (manifest.get("io") or {}).get("failed"):
            continue
        log.warning("%s: reopening to retry %s", unit, manifest["io"]["failed"])
        rd.manifest_path(unit).unlink()
        reopened.append(unit)
        if unit in STAGES:
            if unit != STAGES[-1]:
                rd.clear_from(STAGES[STAGES.index(unit) + 1])  # that stage and every one after it
            for after in rd.root.glob("evaluate/student_after/*"):
                shutil.rmtree(after, ignore_errors=True)
    return reopened


def save_config(cfg: MPAConfig, rd: RunDir) -> Path:
    """The resolved config and the package versions of this invocation (config.yaml, environment.json)."""
    path = rd.root / "config.yaml"
    atomic_write_text(path, dump_config(cfg))
    atomic_write_json(rd.root / "environment.json", current_environment())
    return path


def run_pipeline(
    cfg: MPAConfig, stages: list[str] | None = None, *, force: bool = False, retry_failed: bool = False
) -> dict[str, dict[str, Any]]:
    """Run `stages` (default: all) in order; returns each stage's manifest. Timings go to RUN_DIR/timings.json.

    Stages that would be refused (other settings, no --force) are found before anything runs or is written.
    With `retry_failed`, finished stages that recorded failed requests are reopened first (see `reopen_failed`)."""
    stages = stages or list(PIPELINE)
    check_inputs(cfg, stages)
    rd = RunDir(cfg.run_dir)
    rd.check_version()
    if not force:  # reopening failed stages (--retry-failed) does not change these decisions
        for row in plan(cfg, rd):
            if row["action"] == "refuse" and row["stage"].split("/")[0] in stages:
                raise StageConflictError(f"stage '{row['stage']}' in {rd.root} was run with other settings; "
                                         f"{row['detail']}, or choose another --run-dir")  # fmt: skip
    # Checked, nothing written yet. One process changes a run directory at a time (another `mpa run`, a decision
    # saved by `mpa view`).
    lock = hold_run_dir(rd.root, invocation()) if distributed.is_main() else contextlib.nullcontext()
    with lock:
        return _run_stages(cfg, rd, stages, retry_failed=retry_failed, force=force)


def invocation() -> str:
    """The command line of this process, as the run-directory lock shows it to a process it turns away."""
    return " ".join(["mpa" if sys.argv[0].endswith(("mpa", "cli.py")) else Path(sys.argv[0]).name, *sys.argv[1:]])[:200]


def _run_stages(
    cfg: MPAConfig, rd: RunDir, stages: list[str], *, force: bool, retry_failed: bool
) -> dict[str, dict[str, Any]]:
    if retry_failed:
        reopen_failed(rd, stages)
    if distributed.world_size() > 1 and stages != ["level"]:
        raise ConfigError(
            f"under torchrun/accelerate ({distributed.world_size()} processes) run only the level stage: "
            "`torchrun --nproc_per_node N -m mpa.cli level CONFIG`; run the other stages in one process"
        )
    if distributed.is_main():
        save_config(cfg, rd)
    manifests: dict[str, dict[str, Any]] = {}
    timings_path = rd.root / "timings.json"
    timings = read_json(timings_path) if timings_path.exists() else {}
    for stage in stages:
        log.info("%s: starting", stage)
        t0 = time.perf_counter()
        manifests[stage] = CONTRACT[stage].load()(cfg, rd, force=force)
        elapsed = time.perf_counter() - t0
        if manifests[stage].get("finished_at", 0) >= time.time() - elapsed - 1:
            timings[stage] = round(elapsed, 2)  # only record stages that did work now (not skipped ones)
        if distributed.is_main():
            atomic_write_json(timings_path, timings)
        log.info("%s: done in %.1f s — %s", stage, elapsed, _headline(stage, manifests[stage]))
    if distributed.is_main():
        write_summary(rd)  # the report (`mpa report`, mpa.report.write_report) is left to the caller
    return manifests


def _headline(stage: str, manifest: dict[str, Any]) -> str:
    return CONTRACT[stage].headline.format_map(CONTRACT[stage].read_counts(manifest).model_dump())
