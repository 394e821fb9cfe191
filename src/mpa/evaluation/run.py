"""Evaluate one model on one benchmark: predictions (resumable), official metric, and the paper's compat score.

Writes OUT_DIR/predictions.jsonl (key: qid; prompt, raw output, parsed answer, score) and OUT_DIR/metrics.json
(overall, per split, per question type). The one entry point of `mpa evaluate --model` and of the pipeline's
evaluate stage (`mpa.stages.evaluate`, one call per model and benchmark).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mpa.backends import Backend, GenRequest, load_backend
from mpa.config import ModelConfig
from mpa.errors import ConfigError
from mpa.evaluation.benchmarks import EvalSample, get_benchmark
from mpa.evaluation.metrics import aggregate, check_metric, prediction_text, score
from mpa.evaluation.prompts import canonical_prompt_id, render_eval_prompt
from mpa.images import ImageSource, load_image
from mpa.progress import progress
from mpa.rundir import JsonlWriter, atomic_write_json, done_keys, fingerprint, latest_by_key, resume_decision
from mpa.stages.common import checked, model_identity
from mpa.stages.usage import USAGE_FILE, record_usage

log = logging.getLogger(__name__)
CHUNK = 256


def _predict(
    backend: Backend,
    samples: Sequence[EvalSample],
    prompt_id: str,
    max_new_tokens: int,
    out: Path,
    metric: str,
    desc: str,
    repetition_penalty: float = 1.0,
) -> None:
    done = done_keys(out, "qid")
    pending = [s for s in samples if s.qid not in done]
    bar = progress(total=len(samples), desc=desc, unit="q")
    bar.update(len(samples) - len(pending))
    with JsonlWriter(out) as writer:
        for start in range(0, len(pending), CHUNK):
            chunk = pending[start : start + CHUNK]
            images = {s.image_path: load_image(ImageSource(s.image_path, Path(s.image_path))) for s in chunk}
            asked = [s for s in chunk if images[s.image_path].image is not None]
            requests = [
                GenRequest(key=s.qid, prompt=render_eval_prompt(prompt_id, s.question),
                           image=images[s.image_path].image, max_new_tokens=max_new_tokens,
                           repetition_penalty=repetition_penalty)
                for s in asked
            ]  # fmt: skip
            results = {r.key: r for r in checked(requests, backend.generate(requests))} if requests else {}
            if results:  # tokens (and, with prices, cost) of every call: a served or API model bills them
                record_usage(out.parent / USAGE_FILE, "model", list(results.values()))
            records = []
            for s in chunk:
                res = results.get(s.qid)
                raw = res.texts[0] if res is not None and res.texts else ""
                error = images[s.image_path].error or (res.error if res is not None else None)
                answer = prediction_text(metric, raw)
                records.append({
                    "qid": s.qid, "split": s.split, "question_type": s.question_type, "question": s.question,
                    "prompt": render_eval_prompt(prompt_id, s.question), "raw": raw, "answer": answer,
                    "answers": list(s.answers), "score": 0.0 if error else score(metric, answer, s.answers),
                    "error": error,
                })  # fmt: skip
            writer.write_many(records)
            bar.update(len(chunk))
    bar.close()


def with_current_prompt_id(recorded: dict[str, Any]) -> dict[str, Any]:
    """Evaluation settings as recorded on disk, their prompt id read by today's name (`LEGACY_IDS` of
    `mpa.evaluation.prompts`), so an evaluation made before a prompt got its current id still resumes."""
    if "prompt_id" not in recorded:
        return recorded
    return {**recorded, "prompt_id": canonical_prompt_id(recorded["prompt_id"])}


def _check_settings(out_dir: Path, model: ModelConfig, benchmark: str, prompt_id: str, max_new_tokens: int,
                    metric: str, repetition_penalty: float) -> None:  # fmt: skip
    """Predictions in OUT_DIR are reused only for the same model, benchmark, prompt and decoding settings."""
    settings = {"model": model_identity(model), "benchmark": benchmark, "prompt_id": prompt_id,
                "max_new_tokens": max_new_tokens, "ocr": metric == "ocr"}  # fmt: skip
    if repetition_penalty != 1.0:  # (absent when off, so earlier evaluation folders still resume)
        settings["repetition_penalty"] = repetition_penalty
    path = out_dir / "settings.json"
    previous = with_current_prompt_id(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else None
    # the run directory's one rule; an unfinished folder resumes (done predictions are kept), so "finished" only
    # matters for the message
    begun = None if previous is None else {"fingerprint": fingerprint(previous), "settings": previous}
    decision = resume_decision(begun, False, fingerprint(settings), settings)
    if decision.action == "refuse":
        raise ConfigError(f"{out_dir} holds predictions made with other settings (changed: "
                          f"{', '.join(decision.changed)}); choose another --out or delete that folder")  # fmt: skip
    if previous is None:
        atomic_write_json(path, settings)


def evaluate_model(
    model: ModelConfig,
    benchmark: str,
    samples: Sequence[EvalSample],
    out_dir: Path,
    *,
    metric: str | None = None,
    max_new_tokens: int = 32,
    repetition_penalty: float = 1.0,
    backend: Backend | None = None,
    desc: str | None = None,
) -> dict[str, Any]:
    """Predict (resuming from OUT_DIR/predictions.jsonl), score and write OUT_DIR/metrics.json."""
    spec = get_benchmark(benchmark)
    metric = check_metric(metric or spec.metric)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(out_dir, model, benchmark, spec.prompt_id, max_new_tokens, metric, repetition_penalty)
    preds = out_dir / "predictions.jsonl"
    own = backend is None
    done = done_keys(preds, "qid")
    if any(s.qid not in done for s in samples):
        backend = backend or load_backend(model)
        try:
            _predict(
                backend,
                samples,
                spec.prompt_id,
                max_new_tokens,
                preds,
                metric,
                desc or f"evaluate {benchmark}",
                repetition_penalty,
            )
        finally:
            if own:
                backend.close()
    wanted = {s.qid for s in samples}
    records = [r for r in latest_by_key(preds, "qid").values() if r["qid"] in wanted]
    metrics = {"benchmark": benchmark, "prompt_id": spec.prompt_id, **aggregate(records, metric)}
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
