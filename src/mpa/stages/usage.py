"""Token usage of a stage, per model role, for its manifest (and a cost, where the model config gives prices).

Each generate call appends one line to RUN_DIR/<stage>/usage.jsonl; the manifest sums the file, so the usage of a
stage that was stopped and resumed covers every invocation. Counts come from `GenResult`s, so this works the same
for every backend (the HF backend counts tokens too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpa.backends import GenResult
from mpa.config import ModelConfig
from mpa.rundir import JsonlWriter, iter_jsonl

USAGE_FILE = "usage.jsonl"
FIELDS = ("requests", "failed", "prompt_tokens", "completion_tokens")


def record_usage(path: Path, role: str, results: list[GenResult]) -> None:
    """Append the counts of one generate call."""
    row = {
        "role": role,
        "requests": len(results),
        "failed": sum(r.error is not None for r in results),
        "prompt_tokens": sum(r.prompt_tokens for r in results),
        "completion_tokens": sum(r.completion_tokens for r in results),
    }
    with JsonlWriter(path) as writer:
        writer.write_many([row])


def usage_summary(path: Path, models: dict[str, ModelConfig]) -> dict[str, dict[str, Any]]:
    """{role: {requests, failed, prompt_tokens, completion_tokens, cost_usd}} for every role in `models`;
    `cost_usd` is None when the model config gives no price (a missing one of the two counts as 0)."""
    totals = {role: dict.fromkeys(FIELDS, 0) for role in models}
    for row in iter_jsonl(path):
        if row["role"] in totals:
            for name in FIELDS:
                totals[row["role"]][name] += row[name]
    out: dict[str, dict[str, Any]] = {}
    for role, cfg in models.items():
        t = totals[role]
        prompt_price, completion_price = cfg.cost_per_1k_prompt_tokens, cfg.cost_per_1k_completion_tokens
        cost = None
        if prompt_price is not None or completion_price is not None:
            cost = (
                t["prompt_tokens"] * (prompt_price or 0.0) + t["completion_tokens"] * (completion_price or 0.0)
            ) / 1000
            cost = round(cost, 6)
        out[role] = {**t, "cost_usd": cost}
    return out
