"""The metric registry of evaluation: metric name → the function that scores one prediction, plus the scoring of a
whole predictions file (overall, per split, per question type).

    from mpa.evaluation.metrics import METRICS, score
    score("anls", "Fair grounds.", ["fair grounds."])

The functions themselves are the pure ports in `mpa.metrics` (references and quirks documented there); this is the
one place that names them. A benchmark's `metric`, a config's `evaluate.benchmarks.N.metric` and
`mpa evaluate --metric` accept exactly these names. (`mpa.metrics.MATCHERS` is another thing: the rules by which
identify decides whether two models' answers agree, named in `identify.matcher`.)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from mpa.metrics import anls, character_error_rate, compat_accuracy, relaxed_accuracy, vqa_accuracy, word_accuracy
from mpa.parsing import parse_short_answer

__all__ = ["METRICS", "aggregate", "check_metric", "prediction_text", "score"]

METRICS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "vqa_accuracy": vqa_accuracy,
    "anls": anls,
    "relaxed_accuracy": relaxed_accuracy,
    "compat": compat_accuracy,
    "ocr": lambda pred, answers: word_accuracy(pred, answers[0]),
}


def check_metric(metric: str) -> str:
    """`metric` if it is registered; otherwise a ValueError listing the valid names."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}'; choose one of {', '.join(sorted(METRICS))}")
    return metric


def score(metric: str, prediction: str, answers: Sequence[str]) -> float:
    return float(METRICS[check_metric(metric)](prediction, answers))


def prediction_text(metric: str, raw: str) -> str:
    """What is scored: the short answer, except for OCR, where the whole transcription counts. ANLS compares
    characters, so a final period is kept (the ST-VQA answer "Fair grounds." must match itself); the other
    metrics normalise it away or, for ChartQA's relaxed accuracy, need it gone."""
    if metric == "ocr":
        return " ".join(raw.split())
    return parse_short_answer(raw, strip_period=metric != "anls")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def aggregate(records: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Overall, per-split and per-question-type means of the official metric (and of compat), scored here from
    the stored answers, so a changed `metric` never reports another metric's numbers. Failed questions score 0."""
    for r in records:
        if "raw" in r:  # re-derived, so stored answers follow today's rules for this metric
            r["answer"] = prediction_text(metric, r["raw"])
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
