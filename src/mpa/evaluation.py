"""Evaluate one model on one benchmark: predictions (resumable), official metric, and the paper's compat score.

Writes OUT_DIR/predictions.jsonl (key: qid; prompt, raw output, parsed answer, score) and OUT_DIR/metrics.json
(overall, per split, per question type). Used by `mpa evaluate` and by the pipeline's evaluate stage.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mpa.backends import Backend, GenRequest, load_backend
from mpa.benchmarks import BENCHMARKS, EvalSample
from mpa.benchmarks.prompts import render_eval_prompt
from mpa.config import ModelConfig
from mpa.images import ImageSource, load_image
from mpa.metrics import anls, character_error_rate, compat_accuracy, relaxed_accuracy, vqa_accuracy, word_accuracy
from mpa.parsing import parse_short_answer
from mpa.rundir import JsonlWriter, atomic_write_json, iter_jsonl, repair_jsonl
from mpa.stages.common import progress

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


def _predict(
    backend: Backend,
    samples: Sequence[EvalSample],
    prompt_id: str,
    max_new_tokens: int,
    out: Path,
    metric: str,
    desc: str,
) -> None:
    repair_jsonl(out)
    done = {r["qid"] for r in iter_jsonl(out)}
    pending = [s for s in samples if s.qid not in done]
    bar = progress(total=len(samples), desc=desc, unit="q")
    bar.update(len(samples) - len(pending))
    with JsonlWriter(out) as writer:
        for start in range(0, len(pending), CHUNK):
            chunk = pending[start : start + CHUNK]
            images = {}
            for s in chunk:
                if s.image_path not in images:
                    images[s.image_path] = load_image(ImageSource(s.image_path, Path(s.image_path)))
            requests = [
                GenRequest(key=s.qid, prompt=render_eval_prompt(prompt_id, s.question),
                           image=images[s.image_path].image, max_new_tokens=max_new_tokens)
                for s in chunk
            ]  # fmt: skip
            records = []
            for s, req, res in zip(chunk, requests, backend.generate(requests), strict=True):
                raw = res.texts[0] if res.texts else ""
                answer = parse_short_answer(raw)
                error = res.error or images[s.image_path].error
                records.append({
                    "qid": s.qid, "split": s.split, "question_type": s.question_type, "question": s.question,
                    "prompt": req.prompt, "raw": raw, "answer": answer, "answers": list(s.answers),
                    "score": 0.0 if error else score(metric, answer, s.answers),
                    "compat": 0.0 if error else compat_accuracy(answer, s.answers), "error": error,
                })  # fmt: skip
            writer.write_many(records)
            bar.update(len(chunk))
    bar.close()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def aggregate(records: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Overall, per-split and per-question-type means of the official metric (and of compat)."""
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


def evaluate_model(
    model: ModelConfig,
    benchmark: str,
    samples: Sequence[EvalSample],
    out_dir: Path,
    *,
    metric: str | None = None,
    max_new_tokens: int = 32,
    backend: Backend | None = None,
    desc: str | None = None,
) -> dict[str, Any]:
    """Predict (resuming from OUT_DIR/predictions.jsonl), score and write OUT_DIR/metrics.json."""
    spec = BENCHMARKS[benchmark]
    metric = metric or spec.metric
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}'; choose one of {', '.join(sorted(METRICS))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    preds = out_dir / "predictions.jsonl"
    own = backend is None
    repair_jsonl(preds)
    done = {r["qid"] for r in iter_jsonl(preds)}
    if any(s.qid not in done for s in samples):
        backend = backend or load_backend(model)
        try:
            _predict(backend, samples, spec.prompt_id, max_new_tokens, preds, metric, desc or f"evaluate {benchmark}")
        finally:
            if own:
                backend.close()
    wanted = {s.qid for s in samples}
    records = [r for r in iter_jsonl(preds) if r["qid"] in wanted]
    metrics = {"benchmark": benchmark, "prompt_id": spec.prompt_id, **aggregate(records, metric)}
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
