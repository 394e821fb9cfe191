"""Evaluation benchmarks: read each official release (or a local HF export) into a list of `EvalSample`s.

    from mpa.evaluation.benchmarks import get_benchmark, load_benchmark
    samples = load_benchmark("chartqa", Path("data/ChartQA Dataset"), split="test_human", limit=100)
    spec = get_benchmark("chartqa")         # metric "relaxed_accuracy", prompt id "eval.chartqa@1"

A benchmark is one module defining a `BenchmarkSpec` (its loader, metric, prompt id and expected files) and one
line in BENCHMARKS below; the config, `mpa evaluate --benchmark` and their help texts accept exactly the registry's
names. Modules are imported when first used, so a benchmark living outside mpa can be registered by its import
path too.

Local files only, nothing is downloaded. Every loader returns samples in a stable, documented order (the order of
the release files), so `limit=N` is always the same first N questions; every returned `image_path` exists, and any
missing file or malformed record is a `BenchmarkError` naming the file and the expected layout.
Each loader module documents its format and sources: `vqa_formats` (TextVQA, ST-VQA, OK-VQA), `chartqa`,
`simple` (easy-VQA, JSONL, OCR probe), `hf_export` (Parquet / save_to_disk exports and image extraction).
"""

from __future__ import annotations

from pathlib import Path

from mpa.evaluation.benchmarks.common import BenchmarkError, BenchmarkSpec, EvalSample, abs_path
from mpa.lazy import import_ref

__all__ = ["BENCHMARKS", "BenchmarkError", "BenchmarkSpec", "EvalSample", "get_benchmark", "load_benchmark"]

BENCHMARKS: dict[str, str] = {
    "textvqa": "mpa.evaluation.benchmarks.vqa_formats:TEXTVQA",
    "stvqa": "mpa.evaluation.benchmarks.vqa_formats:STVQA",
    "chartqa": "mpa.evaluation.benchmarks.chartqa:CHARTQA",
    "okvqa": "mpa.evaluation.benchmarks.vqa_formats:OKVQA",
    "easyvqa": "mpa.evaluation.benchmarks.simple:EASYVQA",
    "jsonl": "mpa.evaluation.benchmarks.simple:JSONL",
    "ocr": "mpa.evaluation.benchmarks.simple:OCR",
}


def get_benchmark(name: str) -> BenchmarkSpec:
    """The benchmark registered as `name` (its module imported now); an unknown name is a `BenchmarkError`."""
    if name not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}")
    spec = import_ref(BENCHMARKS[name])
    if not isinstance(spec, BenchmarkSpec):
        raise TypeError(f"{BENCHMARKS[name]} is a {type(spec).__name__}, not a BenchmarkSpec")
    return spec


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
    spec = get_benchmark(name)
    if limit is not None and limit < 1:
        raise BenchmarkError(f"{name}: limit must be >= 1 (or None for all samples), got {limit}")
    return spec.load(data_dir, split, limit, abs_path(cache_dir) if cache_dir is not None else None)
