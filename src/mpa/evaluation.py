"""Evaluate one model on one benchmark: predictions (resumable), official metric, and the paper's compat score.

Writes OUT_DIR/predictions.jsonl (key: qid; prompt, raw output, parsed answer, score) and OUT_DIR/metrics.json
(overall, per split, per question type). Used by `mpa evaluate` and by the pipeline's evaluate stage.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mpa.backends import Backend, GenRequest, load_backend
from mpa.benchmarks import BENCHMARKS, EvalSample
from mpa.benchmarks.prompts import render_eval_prompt
from mpa.config import ModelConfig
from mpa.errors import ConfigError
from mpa.images import ImageSource, load_image
from mpa.metrics import anls, character_error_rate, compat_accuracy, relaxed_accuracy, vqa_accuracy, word_accuracy
from mpa.parsing import parse_short_answer
from mpa.rundir import JsonlWriter, atomic_write_json, changed_keys, done_keys, fingerprint, latest_by_key
from mpa.stages.common import checked, model_identity, progress

log = logging.getLogger(__name__)
CHUNK = 256

METRICS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "vqa_accuracy": vqa_accuracy,
    "anls": anls,
    "relaxed_accuracy": relaxed_accuracy,
    "compat": compat_accuracy,
    "ocr": lambda pred, answers: word_accuracy(pred, answers[0]),
}


def score(metric: str, prediction: str, answers: Sequence[str]) -> float:
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}'; choose one of {', '.join(sorted(METRICS))}")
    return float(METRICS[metric](prediction, answers))


def _prediction_text(metric: str, raw: str) -> str:
    """What is scored: the short answer, except for OCR, where the whole transcription counts. ANLS compares
    characters, so a final period is kept (the ST-VQA answer "Fair grounds." must match itself); the other
    metrics normalise it away or, for ChartQA's relaxed accuracy, need it gone."""
    if metric == "ocr":
        return " ".join(raw.split())
    return parse_short_answer(raw, strip_period=metric != "anls")


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
            records = []
            for s in chunk:
                res = results.get(s.qid)
                raw = res.texts[0] if res is not None and res.texts else ""
                error = images[s.image_path].error or (res.error if res is not None else None)
                answer = _prediction_text(metric, raw)
                records.append({
                    "qid": s.qid, "split": s.split, "question_type": s.question_type, "question": s.question,
                    "prompt": render_eval_prompt(prompt_id, s.question), "raw": raw, "answer": answer,
                    "answers": list(s.answers), "score": 0.0 if error else score(metric, answer, s.answers),
                    "error": error,
                })  # fmt: skip
            writer.write_many(records)
            bar.update(len(chunk))
    bar.close()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def aggregate(records: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Overall, per-split and per-question-type means of the official metric (and of compat), scored here from
    the stored answers, so a changed `metric` never reports another metric's numbers. Failed questions score 0."""
    for r in records:
        if "raw" in r:  # re-derived, so stored answers follow today's rules for this metric
            r["answer"] = _prediction_text(metric, r["raw"])
        r["score"] = 0.0 if r.get("error") else score(metric, r["answer"], r["answers"])
        r["compat"] = 0.0 if r.get("error") else compat_accuracy(r["answer"], r["answers"])
    groups: dict[str, dict[str, list[float]]] = {"per_split": defaultdict(list), "per_question_type": defaultdict(list)}
    for r in records:
        groups["per_split"][r["split"]].append(r["score"])
        if r.get("question_type"):
            groups["per_question_type"][r["question_type"]].append(r["score"])
    out: dict[str, Any] = {
        "metric": metric,
        "n": len(records),
        "overall": _mean([r["score"] for r in records]),
        "compat": _mean([r["compat"] for r in records]),
        "failed": sum(1 for r in records if r.get("error")),
    }
    for name, group in groups.items():
        out[name] = {k: {"score": _mean(v), "n": len(v)} for k, v in sorted(group.items())}
    if metric == "ocr":
        out["character_error_rate"] = _mean([character_error_rate(r["answer"], r["answers"][0]) for r in records])
    return out


def _check_settings(out_dir: Path, model: ModelConfig, benchmark: str, prompt_id: str, max_new_tokens: int,
                    metric: str, repetition_penalty: float) -> None:  # fmt: skip
    """Predictions in OUT_DIR are reused only for the same model, benchmark, prompt and decoding settings."""
    settings = {"model": model_identity(model), "benchmark": benchmark, "prompt_id": prompt_id,
                "max_new_tokens": max_new_tokens, "ocr": metric == "ocr"}  # fmt: skip
    if repetition_penalty != 1.0:  # (absent when off, so earlier evaluation folders still resume)
        settings["repetition_penalty"] = repetition_penalty
    path = out_dir / "settings.json"
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if fingerprint(previous) != fingerprint(settings):
            keys = ", ".join(changed_keys(previous, settings))
            raise ConfigError(f"{out_dir} holds predictions made with other settings (changed: {keys}); "
                              "choose another --out or delete that folder")  # fmt: skip
    else:
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
    spec = BENCHMARKS[benchmark]
    metric = metric or spec.metric
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}'; choose one of {', '.join(sorted(METRICS))}")
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
