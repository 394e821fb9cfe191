"""Parity Leveler (PL): fine-tune the student on its knowledge gaps, with guards against forgetting.

Training data (all label-free, from identify/candidates.jsonl):
  gap set        the selected candidates, optionally balanced by answer type / answer and capped per answer;
  retention mix  teacher-consistent QAs the student already answers right (`retention_ratio` per gap sample);
  validation     `val_fraction` of ALL teacher-consistent QAs (gap and retention alike), held out from training,
                 used for label-free validation loss (early stopping, best checkpoint) and accuracy.
The student is trained through its backend's `Training` (`mpa.backends.load_training`; for checkpoints in Hugging
Face format, `backends.hf_train`) with exactly the prompt it is asked with at identify and evaluation, and a killed
run goes on from its last checkpoint to the uninterrupted result.
Outputs in RUN_DIR/level/: adapter/ (LoRA) or model/ (full), merged/ on request, trainer/ checkpoints,
data_summary.json, metrics.json, manifest.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from mpa import distributed
from mpa.backends import GenRequest, for_trained_weights, load_backend, load_training
from mpa.config import ConfigError, LevelConfig, ModelConfig, MPAConfig
from mpa.counts import LevelCounts
from mpa.errors import RunError
from mpa.metrics import match_answers, normalize_vqa_answer
from mpa.prompts import ANSWER_PROMPT_ID, render_answer_prompt
from mpa.records import CandidateRecord
from mpa.review import apply_review, current_decisions, review_digest
from mpa.rundir import RunDir, atomic_write_json, atomic_write_text, fingerprint, read_records
from mpa.stages.common import model_identity

log = logging.getLogger(__name__)
STAGE = "level"


def stage_settings(cfg: MPAConfig, upstream_fp: str, rd: RunDir) -> dict[str, Any]:
    settings = {
        "identify": upstream_fp,
        "student": model_identity(cfg.student),
        "level": cfg.level.model_dump(),
        "answer_prompt": ANSWER_PROMPT_ID,
        "seed": cfg.seed,
    }
    digest = review_digest(current_decisions(rd.root))
    if digest is not None:  # reviewer decisions change the data (a run nobody reviewed keeps its fingerprint)
        settings["review"] = digest
    return settings


def review_changed_only(rd: RunDir, fp: str, settings: dict[str, Any]) -> bool:
    """True when level's folder differs from now only by the reviewer decisions: those are a deliberate change of
    the training data, so level is redone without --force (any other change is still refused)."""
    return rd.decide(STAGE, fp, settings).changed == ("review",)


def _unit(seed: int, key: str) -> float:
    """A stable pseudo-random number in [0, 1) per key: membership does not depend on the set's size or order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") / 2**64


def balance(rows: list[CandidateRecord], lvl: LevelConfig, rng: random.Random) -> list[CandidateRecord]:
    """Cap samples per answer, then oversample smaller groups (answer type or answer) to the largest group."""
    if lvl.max_per_answer is not None:
        by_answer: dict[str, list[CandidateRecord]] = defaultdict(list)
        for row in rows:
            by_answer[normalize_vqa_answer(row.pseudo_answer)].append(row)
        rows = [
            r
            for group in by_answer.values()
            for r in (group if len(group) <= lvl.max_per_answer else rng.sample(group, lvl.max_per_answer))
        ]
    if lvl.balance == "none" or not rows:
        return rows
    groups: dict[str, list[CandidateRecord]] = defaultdict(list)
    for row in rows:
        key = row.answer_type if lvl.balance == "answer_type" else normalize_vqa_answer(row.pseudo_answer)
        groups[key].append(row)
    target = max(len(g) for g in groups.values())
    out = []
    for key in sorted(groups):
        group = groups[key]
        out.extend(group + rng.choices(group, k=target - len(group)))
    return out


def split_data(cands: list[CandidateRecord], lvl: LevelConfig, seed: int) -> dict[str, list[CandidateRecord]]:
    """Gap (balanced), retention and validation sets, disjoint; every choice seeded."""
    rng = random.Random(seed)
    val = [c for c in cands if c.teacher_agrees and c.reason != "failed" and _unit(seed, c.qa_id) < lvl.val_fraction]
    val_ids = {c.qa_id for c in val}
    gap = [c for c in cands if c.selected and c.qa_id not in val_ids]
    gap_balanced = balance(gap, lvl, rng)
    pool = [c for c in cands if c.teacher_agrees and c.student_correct and not c.selected and c.qa_id not in val_ids]
    n_ret = min(len(pool), round(lvl.retention_ratio * len(gap_balanced)))
    retention = rng.sample(pool, n_ret)
    train = gap_balanced + retention
    rng.shuffle(train)
    return {"gap": gap, "train": train, "retention": retention, "val": val}


def _val_accuracy(cfg: MPAConfig, student: ModelConfig, val: list[CandidateRecord], out: Path) -> float | None:
    """Share of held-out teacher-consistent QAs the model answers like the pseudo-answer (label-free). Each answer
    is written to `out` (val_predictions.jsonl: the report shows them as "student after")."""
    if not val:
        return None
    from mpa.images import ImageSource, load_image
    from mpa.parsing import parse_short_answer

    backend = load_backend(student)
    try:
        images = {r.image_id: load_image(ImageSource(r.image_path, Path(r.image_path))).image for r in val}
        requests = [
            GenRequest(key=r.qa_id, prompt=render_answer_prompt(r.question), image=images[r.image_id],
                       max_new_tokens=cfg.identify.max_new_tokens, repetition_penalty=cfg.identify.repetition_penalty)
            for r in val
        ]  # fmt: skip
        results = backend.generate(requests)
    finally:
        backend.close()
    ident = cfg.identify
    answers = [parse_short_answer(res.texts[0]) if res.texts else "" for res in results]
    hits = [
        match_answers(answer, r.pseudo_answer, ident.matcher,
                      anls_threshold=ident.anls_threshold, relaxed_tolerance=ident.relaxed_tolerance)
        for r, answer in zip(val, answers, strict=True)
    ]  # fmt: skip
    rows = [{"qa_id": r.qa_id, "answer": a, "correct": h, "error": res.error}
            for r, a, h, res in zip(val, answers, hits, results, strict=True)]  # fmt: skip
    atomic_write_text(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return sum(hits) / len(hits)


def trained_student(cfg: MPAConfig, sdir: Path) -> ModelConfig:
    """The leveled student as a model config (base + adapter, or the fully fine-tuned folder), on a backend that
    loads those weights: a served student (backend openai) is validated in-process, never through a server that
    holds only the base model."""
    if cfg.level.method == "lora":
        trained = cfg.student.model_copy(update={"adapter": str(sdir / "adapter")})
    else:
        trained = cfg.student.model_copy(update={"model": str(sdir / "model"), "adapter": None, "revision": None})
    return for_trained_weights(trained)


def run(cfg: MPAConfig, rd: RunDir, *, force: bool = False) -> dict[str, Any]:
    """Fine-tune the student on the selected set (resuming from the last checkpoint); returns the manifest."""
    upstream = rd.require("identify")
    if cfg.student.adapter:
        raise ConfigError(
            "student.adapter: level trains a new adapter on the base student and cannot stack it on another; "
            "merge the adapter into the model first (peft merge_and_unload + save_pretrained) and pass that folder"
        )
    settings = stage_settings(cfg, upstream["fingerprint"], rd)
    fp = fingerprint(settings)
    # Under torchrun every process trains; only the main one writes the run directory (the others wait for it).
    force = force or review_changed_only(rd, fp, settings)
    proceed = rd.begin(STAGE, fp, settings, force=force) if distributed.is_main() else True
    distributed.barrier()
    if not proceed or (not distributed.is_main() and rd.is_complete(STAGE, fp)):
        log.info("level: already complete with these settings, skipped")
        return rd.require(STAGE)
    sdir = rd.stage_dir(STAGE)
    cands = list(read_records(rd.stage_dir("identify") / "candidates.jsonl", CandidateRecord))
    reviewed = apply_review(cands, current_decisions(rd.root))
    data = split_data(reviewed, cfg.level, cfg.seed)
    counts = LevelCounts(**{name: len(rows) for name, rows in data.items()})
    if distributed.is_main():
        review = {"removed": len(cands) - len(reviewed), "accepted": sum(c.reason == "accepted" for c in reviewed)}
        atomic_write_json(sdir / "data_summary.json", {
            "counts": counts.model_dump(), "review": review, "val_ids": [r.qa_id for r in data["val"]],
            "train_ids": sorted({r.qa_id for r in data["train"]}),
        })  # fmt: skip
    if not data["train"]:
        raise RunError(
            f"level: nothing to train on in {rd.stage_dir('identify')} (selected={counts.gap}): the student already "
            "matches the teacher on every pseudo-QA, or annotation gave no usable pairs; see identify/manifest.json"
        )
    training = load_training(cfg.student, cfg, sdir / "trainer")
    try:
        resume = training.fit(data["train"], data["val"])
        out_dir = sdir / ("adapter" if cfg.level.method == "lora" else "model")
        merge = cfg.level.method == "lora" and cfg.level.merge
        training.save(out_dir, sdir / "merged" if merge else None)
        history = training.history
    finally:
        training.close()  # the trained model leaves the device before validation loads the saved one
    if not distributed.is_main():
        distributed.barrier()  # the main process validates and writes the manifest
        return rd.require(STAGE)
    outputs: dict[str, Any] = {"counts": counts.model_dump(), "output": str(out_dir), "resumed": resume is not None,
                               "resumed_from": Path(resume).name if resume else None}  # fmt: skip
    if merge:
        outputs["merged"] = str(sdir / "merged")
    after = trained_student(cfg, sdir)
    val_before = sum(r.student_correct for r in data["val"]) / len(data["val"]) if data["val"] else None
    metrics = {
        "log_history": history,
        "best_checkpoint": _best(history),
        "val_accuracy_before": val_before,
        "val_accuracy_after": _val_accuracy(cfg, after, data["val"], sdir / "val_predictions.jsonl"),
    }
    atomic_write_json(sdir / "metrics.json", metrics)
    outputs.update({k: v for k, v in metrics.items() if k != "log_history"})
    outputs["student_after"] = after.model_dump()
    outputs["world_size"] = distributed.world_size()
    manifest = rd.finish(STAGE, fp, settings, outputs)
    distributed.barrier()
    return manifest


def _best(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    evals = [h for h in history if "eval_loss" in h]
    if not evals:
        return None
    best = min(evals, key=lambda h: h["eval_loss"])
    return {"step": best.get("step"), "eval_loss": best["eval_loss"]}
