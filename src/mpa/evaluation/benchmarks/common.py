"""Shared types and checks of the benchmark loaders: `BenchmarkSpec`, `EvalSample`, `BenchmarkError`, file helpers.

Every loader reads local files only and fails loudly: a missing annotation file, a malformed record or a missing
image is a `BenchmarkError` whose one-line message names the file and the layout that was expected. Nothing is
dropped silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

__all__ = [
    "BenchmarkError",
    "BenchmarkSpec",
    "EvalSample",
    "Loader",
    "abs_path",
    "check_images",
    "check_split",
    "check_unique_qids",
    "read_json",
    "require_data_dir",
    "take",
    "to_answers",
]


class BenchmarkError(ValueError):
    """A benchmark cannot be loaded: the message names the missing or bad file and the expected layout."""


@dataclass(frozen=True)
class EvalSample:
    """One evaluation question: an image on disk, the question, and its ground-truth answers.

    `qid` is unique within the benchmark (the official question id where one exists); `split` is the split it
    came from ("val", "test_human", "heldout", ...); `question_type` is the benchmark's own category, if any.
    """

    qid: str
    image_path: str
    question: str
    answers: tuple[str, ...]
    split: str
    question_type: str | None = None


# (data_dir, split, limit, cache_dir) -> samples in file order; see `mpa.evaluation.benchmarks.load_benchmark`.
Loader = Callable[[Path | None, str | None, int | None, Path | None], list[EvalSample]]


@dataclass(frozen=True)
class BenchmarkSpec:
    """What a benchmark is, defined next to its loader: how to read it, the metric that scores it (a key of
    `mpa.evaluation.metrics.METRICS`), the prompt that asks it (a key of `mpa.evaluation.prompts.EVAL_PROMPTS`),
    and a one-line description of the files it expects."""

    load: Loader
    metric: str
    prompt_id: str
    description: str


def abs_path(path: Path | str) -> Path:
    """Absolute, normalised path (no symlink resolution, so paths stay the ones the user gave)."""
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def require_data_dir(benchmark: str, data_dir: Path | str | None, layout: str) -> Path:
    """The data directory as an absolute path; an error naming the expected layout when it is absent."""
    if data_dir is None:
        raise BenchmarkError(f"{benchmark}: needs a data directory; expected {layout}")
    path = abs_path(data_dir)
    if not path.is_dir():
        raise BenchmarkError(f"{benchmark}: data directory {path} not found; expected {layout}")
    return path


def read_json(benchmark: str, path: Path, layout: str) -> Any:
    """Parse a JSON file; missing or invalid files raise a `BenchmarkError` naming the file and the layout."""
    if not path.is_file():
        raise BenchmarkError(f"{benchmark}: {path} not found; expected {layout}")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise BenchmarkError(
            f"{benchmark}: {path} is not valid JSON ({e.msg} at line {e.lineno}); expected {layout}"
        ) from None


def check_split(benchmark: str, split: str, valid: Iterable[str]) -> None:
    valid = tuple(valid)
    if split not in valid:
        raise BenchmarkError(f"{benchmark}: unknown split {split!r}; expected one of {', '.join(valid)}")


def take(items: Iterable[Any], limit: int | None) -> Iterator[Any]:
    """The first `limit` items (all when `limit` is None)."""
    return iter(items) if limit is None else islice(items, limit)


def to_answers(benchmark: str, value: Any, where: str) -> tuple[str, ...]:
    """Ground-truth answers as a tuple of strings: a list of strings/numbers, or a single string/number.

    Numbers (some exports store numeric labels) become their `str()`; anything else is an error naming `where`.
    """
    items = value if isinstance(value, (list, tuple)) else [value]
    answers = []
    for item in items:
        if isinstance(item, str):
            answers.append(item)
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            answers.append(str(item))
        else:
            raise BenchmarkError(f"{benchmark}: {where}: answers must be strings, got {item!r}")
    if not answers:
        raise BenchmarkError(f"{benchmark}: {where}: no ground-truth answers")
    return tuple(answers)


def check_unique_qids(benchmark: str, samples: list[EvalSample], source: Path | str) -> None:
    seen: set[str] = set()
    for sample in samples:
        if sample.qid in seen:
            raise BenchmarkError(f"{benchmark}: {source}: question id {sample.qid!r} appears more than once")
        seen.add(sample.qid)


def check_images(benchmark: str, samples: list[EvalSample], expected: str) -> list[EvalSample]:
    """Return `samples` unchanged if every image file exists, else raise naming the first missing one and the count."""
    missing = [s.image_path for s in samples if not os.path.isfile(s.image_path)]
    if missing:
        raise BenchmarkError(
            f"{benchmark}: {len(missing)} of {len(samples)} images referenced by the annotations are missing, "
            f"first: {missing[0]}; expected {expected}"
        )
    return samples
