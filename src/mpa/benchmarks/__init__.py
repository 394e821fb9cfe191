"""Evaluation benchmarks: read each official release (or a local HF export) into a list of `EvalSample`s.

    from mpa.benchmarks import BENCHMARKS, load_benchmark
    samples = load_benchmark("chartqa", Path("data/ChartQA Dataset"), split="test_human", limit=100)
    spec = BENCHMARKS["chartqa"]            # metric "relaxed_accuracy", prompt id "eval.chartqa@1"

Local files only, nothing is downloaded. Every loader returns samples in a stable, documented order (the order of
the release files), so `limit=N` is always the same first N questions; every returned `image_path` exists, and any
missing file or malformed record is a `BenchmarkError` naming the file and the expected layout.
Each loader module documents its format and sources: `vqa_formats` (TextVQA, ST-VQA, OK-VQA), `chartqa`,
`simple` (easy-VQA, JSONL, OCR probe), `hf_export` (Parquet / save_to_disk exports and image extraction).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mpa.benchmarks import prompts
from mpa.benchmarks.common import BenchmarkError, EvalSample, abs_path

__all__ = ["BENCHMARKS", "BenchmarkError", "BenchmarkSpec", "EvalSample", "load_benchmark"]


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark: registry `name`, the metric that scores it, its answering prompt id, and a one-line layout."""

    name: str
    metric: str  # "vqa_accuracy" | "anls" | "relaxed_accuracy" | "ocr"
    prompt_id: str  # a key of mpa.benchmarks.prompts.EVAL_PROMPTS
    description: str


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec(
            name="textvqa",
            metric="vqa_accuracy",
            prompt_id=prompts.TEXTVQA,
            description="TextVQA 0.5.1 val: DATA_DIR/TextVQA_0.5.1_val.json + DATA_DIR/train_images/<image_id>.jpg, "
            "or a local HF export (lmms-lab/textvqa, Parquet or save_to_disk)",
        ),
        BenchmarkSpec(
            name="stvqa",
            metric="anls",
            prompt_id=prompts.SHORT_ANSWER,
            description="ST-VQA Task 1, our held-out 10% of train: DATA_DIR/train_task_1.json + images at file_path "
            "(under DATA_DIR or DATA_DIR/train_images)",
        ),
        BenchmarkSpec(
            name="chartqa",
            metric="relaxed_accuracy",
            prompt_id=prompts.CHARTQA,
            description="ChartQA test (human + augmented): DATA_DIR/test/test_{human,augmented}.json + "
            "DATA_DIR/test/png/, or a local HF export (HuggingFaceM4/ChartQA, lmms-lab/ChartQA)",
        ),
        BenchmarkSpec(
            name="okvqa",
            metric="vqa_accuracy",
            prompt_id=prompts.OKVQA,
            description="OK-VQA v1.1 val: DATA_DIR/OpenEnded_mscoco_val2014_questions.json + "
            "mscoco_val2014_annotations.json + DATA_DIR/val2014/COCO_val2014_<id:012d>.jpg, "
            "or a local HF export (lmms-lab/OK-VQA)",
        ),
        BenchmarkSpec(
            name="easyvqa",
            metric="vqa_accuracy",
            prompt_id=prompts.SHORT_ANSWER,
            description="easy-VQA test: 9,673 questions on 1,000 images, from the installed easy_vqa package "
            "(no DATA_DIR)",
        ),
        BenchmarkSpec(
            name="jsonl",
            metric="vqa_accuracy",
            prompt_id=prompts.SHORT_ANSWER,
            description='Generic JSONL: DATA_DIR/data.jsonl (or the file) with {"image", "question", '
            '"answers"|"answer"} lines',
        ),
        BenchmarkSpec(
            name="ocr",
            metric="ocr",
            prompt_id=prompts.OCR,
            description='OCR probe: DATA_DIR/data.jsonl (or the file) with {"image", "text"} lines; '
            "scored by CER and word accuracy (mpa.metrics.ocr)",
        ),
    )
}

_LOADERS: dict[str, str] = {
    "textvqa": "mpa.benchmarks.vqa_formats:load_textvqa",
    "stvqa": "mpa.benchmarks.vqa_formats:load_stvqa",
    "okvqa": "mpa.benchmarks.vqa_formats:load_okvqa",
    "chartqa": "mpa.benchmarks.chartqa:load_chartqa",
    "easyvqa": "mpa.benchmarks.simple:load_easyvqa",
    "jsonl": "mpa.benchmarks.simple:load_jsonl",
    "ocr": "mpa.benchmarks.simple:load_ocr",
}

Loader = Callable[[Path | None, str | None, int | None, Path | None], list[EvalSample]]


def load_benchmark(
    name: str,
    data_dir: Path | None,
    *,
    split: str | None = None,
    limit: int | None = None,
    cache_dir: Path | None = None,
) -> list[EvalSample]:
    """Load benchmark `name` (a key of `BENCHMARKS`) from `data_dir`.

    `split`: the benchmark's split (None = its default: TextVQA/OK-VQA "val", ST-VQA "heldout", ChartQA both test
    files, easy-VQA "test", JSONL/OCR every line). `limit`: keep the first N samples in file order (N >= 1).
    `cache_dir`: where images of a Hugging Face export are extracted (default DATA_DIR/.mpa_cache/<name>).
    """
    if name not in _LOADERS:
        raise BenchmarkError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}")
    if limit is not None and limit < 1:
        raise BenchmarkError(f"{name}: limit must be >= 1 (or None for all samples), got {limit}")
    module, function = _LOADERS[name].split(":")
    loader: Loader = getattr(importlib.import_module(module), function)
    return loader(data_dir, split, limit, abs_path(cache_dir) if cache_dir is not None else None)
