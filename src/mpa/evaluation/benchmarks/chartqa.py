"""ChartQA loader: the official release (human and augmented files) or a local HF export of it.

Release layout (vis-nlp/ChartQA, "ChartQA Dataset/"; format as read by big_vision `chartqa.py` and vl2g/MPA):
`{sub}/{sub}_human.json` and `{sub}/{sub}_augmented.json` for sub in test/val/train, each a JSON list of
{"imgname": "41699051005347.png", "query": "...", "label": "..."}, images in `{sub}/png/{imgname}`.

Splits are per file: "test_human", "test_augmented" (default: both, human first), likewise "val_*"/"train_*";
"test", "val" and "train" mean both files of that part. qid = f"{split}/{index}" with index the 0-based position
in that file, so `limit=N` is the first N questions of the human file, then the augmented one.

HF exports (Parquet or save_to_disk), told apart by their columns:
- HuggingFaceM4/ChartQA: image, query, label (list of strings), human_or_machine (0 human, 1 machine =
  augmented); splits train/val/test.
- lmms-lab/ChartQA (lmms-eval's copy): image, question, answer, type ("human_test" | "augmented_test"); split test,
  built from test_human.json then test_augmented.json in file order (lmms-eval `upload_chartqa.py`).
The index in qids counts rows of one subset in export order, which equals the release index when the export kept
the file order (lmms-lab does; for HuggingFaceM4 we could not confirm it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpa.evaluation import prompts
from mpa.evaluation.benchmarks.common import (
    BenchmarkError,
    BenchmarkSpec,
    EvalSample,
    check_images,
    check_unique_qids,
    read_json,
    require_data_dir,
    to_answers,
)
from mpa.evaluation.benchmarks.hf_export import columns_of, find_export, samples_from_export, select_split

__all__ = ["CHARTQA", "CHARTQA_SPLITS", "load_chartqa"]

_PARTS = ("test", "val", "train")
_SOURCES = ("human", "augmented")
CHARTQA_SPLITS = tuple(f"{part}_{source}" for part in _PARTS for source in _SOURCES)
_HF_SPLIT = {"test": ("test",), "val": ("val", "validation"), "train": ("train",)}


def _layout(part: str) -> str:
    return (
        f"DATA_DIR/{part}/{part}_human.json, DATA_DIR/{part}/{part}_augmented.json and DATA_DIR/{part}/png/ "
        "(the ChartQA release), or a Hugging Face export (HuggingFaceM4/ChartQA or lmms-lab/ChartQA) "
        "saved as Parquet or save_to_disk"
    )


def _resolve_splits(split: str | None) -> tuple[str, list[str]]:
    """(release part, [file splits]) for a requested split; one part per call."""
    split = split or "test"
    if split in _PARTS:
        return split, [f"{split}_{source}" for source in _SOURCES]
    if split in CHARTQA_SPLITS:
        return split.split("_")[0], [split]
    raise BenchmarkError(f"chartqa: unknown split {split!r}; expected one of {', '.join(_PARTS + CHARTQA_SPLITS)}")


def _load_release(root: Path, part: str, splits: list[str], limit: int | None) -> list[EvalSample]:
    layout = _layout(part)
    samples: list[EvalSample] = []
    for split in splits:
        path = root / part / f"{split}.json"
        records = read_json("chartqa", path, layout)
        if not isinstance(records, list):
            raise BenchmarkError(f"chartqa: {path} is not a JSON list of {{imgname, query, label}}; expected {layout}")
        for index, record in enumerate(records):
            if limit is not None and len(samples) >= limit:
                break
            where = f"{path} entry {index}"
            if not isinstance(record, dict) or not {"imgname", "query", "label"} <= record.keys():
                raise BenchmarkError(f"chartqa: {where} needs 'imgname', 'query' and 'label'; expected {layout}")
            image = root / part / "png" / record["imgname"]
            answers = to_answers("chartqa", record["label"], where)
            samples.append(EvalSample(f"{split}/{index}", str(image), record["query"], answers, split))
    check_unique_qids("chartqa", samples, root / part)
    return check_images("chartqa", samples, layout)


def _load_export(
    root: Path, part: str, splits: list[str], limit: int | None, cache_dir: Path | None
) -> list[EvalSample]:
    parts = select_split("chartqa", find_export(root), _HF_SPLIT[part], root)
    columns = set(columns_of(parts[0]))
    counters = dict.fromkeys(splits, 0)
    if {"question", "answer", "type"} <= columns:  # lmms-lab/ChartQA
        required = ("question", "answer", "type")

        def source_of(row: dict[str, Any]) -> str:
            return "human" if row["type"] == "human_test" else "augmented"

        def question_answers(row: dict[str, Any], where: str) -> tuple[str, tuple[str, ...]]:
            return row["question"], to_answers("chartqa", row["answer"], where)
    else:  # HuggingFaceM4/ChartQA
        required = ("query", "label", "human_or_machine")

        def source_of(row: dict[str, Any]) -> str:
            return "human" if row["human_or_machine"] in (0, "human") else "augmented"

        def question_answers(row: dict[str, Any], where: str) -> tuple[str, tuple[str, ...]]:
            return row["query"], to_answers("chartqa", row["label"], where)

    def to_sample(where: str, row: dict[str, Any]) -> EvalSample | None:
        split = f"{part}_{source_of(row)}"
        if split not in counters:
            return None
        question, answers = question_answers(row, where)
        index, counters[split] = counters[split], counters[split] + 1
        return EvalSample(f"{split}/{index}", "", question, answers, split)

    return samples_from_export(
        "chartqa", root, parts, required, to_sample, cache_dir=cache_dir or root / ".mpa_cache" / "chartqa", limit=limit
    )


def load_chartqa(
    data_dir: Path | None, split: str | None, limit: int | None, cache_dir: Path | None
) -> list[EvalSample]:
    """ChartQA test (both files by default), one file ("test_human" / "test_augmented"), or val/train files."""
    part, splits = _resolve_splits(split)
    root = require_data_dir("chartqa", data_dir, _layout(part))
    if not (root / part / f"{splits[0]}.json").is_file() and find_export(root):
        return _load_export(root, part, splits, limit, cache_dir)
    return _load_release(root, part, splits, limit)


CHARTQA = BenchmarkSpec(
    load_chartqa,
    metric="relaxed_accuracy",
    prompt_id=prompts.CHARTQA,
    description="ChartQA test (human + augmented): DATA_DIR/test/test_{human,augmented}.json + "
    "DATA_DIR/test/png/, or a local HF export (HuggingFaceM4/ChartQA, lmms-lab/ChartQA)",
)
