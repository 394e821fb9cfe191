"""Loaders that need no release download: easy-VQA (the installed `easy_vqa` package), generic JSONL, OCR probe.

- easyvqa: `easy_vqa.get_{test,train}_questions()` -> (texts, answers, image_ids) and
  `get_{test,train}_image_paths()` -> {image_id: png path}. Split "test" (default; 9,673 questions on 1,000
  images) or "train". qid = f"{split}/{index}" in package order. question_type from the answer: "yes/no",
  "shape" (circle / rectangle / triangle) or "color" (the other answers of `easy_vqa.get_answers()`).
- jsonl: DATA_DIR is a `.jsonl` file or a folder holding `data.jsonl`; one object per line:
  {"image": path relative to the file (or absolute), "question": str, "answers": [str, ...] or "answer": str,
  optional "question_id", "question_type", "split" (default "test")}. qid = question_id, else the 1-based line
  number. `split=` keeps only lines of that split.
- ocr: same file rules; lines {"image": path, "text": str, optional "question_id", "split"}; the question is the
  fixed `OCR_QUESTION`, answers = (text,). Scored with `mpa.metrics.ocr`.
Blank lines are skipped; any other bad line is an error naming file:line and how to fix it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mpa.evaluation import prompts
from mpa.evaluation.benchmarks.common import (
    BenchmarkError,
    BenchmarkSpec,
    EvalSample,
    abs_path,
    check_images,
    check_split,
    take,
)

__all__ = ["EASYVQA", "JSONL", "OCR", "easyvqa_question_type", "load_easyvqa", "load_jsonl", "load_ocr"]

_SHAPES = frozenset({"circle", "rectangle", "triangle"})
JSONL_EXAMPLE = '{"image": "images/1.png", "question": "What is written?", "answers": ["stop"]}'
OCR_EXAMPLE = '{"image": "images/1.png", "text": "STOP"}'


# ------------------------------------------------------------------------------------------------------ easy-VQA


def easyvqa_question_type(answer: str) -> str | None:
    """'yes/no', 'shape' or 'color' for an easy-VQA answer; None for an answer outside `easy_vqa.get_answers()`."""
    import easy_vqa

    if answer in ("yes", "no"):
        return "yes/no"
    if answer in _SHAPES:
        return "shape"
    return "color" if answer in set(easy_vqa.get_answers()) else None


def easyvqa_split(split: str) -> tuple[list[str], list[str], list[int], dict[int, str]]:
    """Questions, answers, image ids and image id → path of one split ("train" or "test") of the easy_vqa package."""
    import easy_vqa

    if split == "test":
        texts, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    else:
        texts, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    return list(texts), list(answers), [int(i) for i in image_ids], {int(k): v for k, v in paths.items()}


def load_easyvqa(
    data_dir: Path | None, split: str | None, limit: int | None, cache_dir: Path | None
) -> list[EvalSample]:
    """easy-VQA from the installed package (`data_dir` and `cache_dir` are ignored)."""
    import easy_vqa

    split = split or "test"
    check_split("easyvqa", split, ("test", "train"))
    texts, answers, image_ids, paths = easyvqa_split(split)
    image_dir = Path(easy_vqa.__file__).parent / "data" / split / "images"
    types = {a: easyvqa_question_type(a) for a in set(answers)}
    samples = [
        EvalSample(
            f"{split}/{i}",
            paths.get(image_id, str(image_dir / f"{image_id}.png")),
            text,
            (answer,),
            split,
            types[answer],
        )
        for i, (text, answer, image_id) in enumerate(take(zip(texts, answers, image_ids, strict=True), limit))
    ]
    return check_images("easyvqa", samples, f"the easy-VQA images of the installed easy_vqa package in {image_dir}")


# --------------------------------------------------------------------------------------------------- JSONL files


def _jsonl_file(benchmark: str, data_dir: Path | None, example: str) -> Path:
    layout = f"DATA_DIR/data.jsonl or a path to a .jsonl file with one object per line like {example}"
    if data_dir is None:
        raise BenchmarkError(f"{benchmark}: needs a data file; expected {layout}")
    path = abs_path(data_dir)
    if path.is_dir():
        path = path / "data.jsonl"
    if not path.is_file():
        raise BenchmarkError(f"{benchmark}: {path} not found; expected {layout}")
    return path


def _read_lines(benchmark: str, path: Path, example: str) -> list[tuple[str, dict[str, Any]]]:
    """("file:line", object) for every non-blank line; a line that is not a JSON object is an error."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BenchmarkError(
                    f"{benchmark}: {where}: not valid JSON ({e.msg}); write one JSON object per line like {example}"
                ) from None
            if not isinstance(row, dict):
                raise BenchmarkError(f"{benchmark}: {where}: expected a JSON object per line like {example}")
            rows.append((where, row))
    return rows


def _text(benchmark: str, row: dict[str, Any], key: str, where: str, example: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkError(
            f"{benchmark}: {where}: {key!r} must be a non-empty string; expected a line like {example}"
        )
    return value


def _line_answers(row: dict[str, Any], where: str) -> tuple[str, ...]:
    if "answers" in row:
        answers = row["answers"]
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise BenchmarkError(
                f"jsonl: {where}: 'answers' must be a non-empty list of strings; expected a line like {JSONL_EXAMPLE}"
            )
        return tuple(answers)
    if isinstance(row.get("answer"), str):
        return (row["answer"],)
    raise BenchmarkError(
        f"jsonl: {where}: needs 'answers' (a list of strings) or 'answer' (a string); "
        f"expected a line like {JSONL_EXAMPLE}"
    )


def _load_lines(
    benchmark: str,
    data_dir: Path | None,
    split: str | None,
    limit: int | None,
    example: str,
    build: Callable[[dict[str, Any], str, str, str, str], EvalSample],
) -> list[EvalSample]:
    """Shared JSONL reading: `build(row, where, qid, image_path, split)` makes the sample of one line."""
    path = _jsonl_file(benchmark, data_dir, example)
    rows = _read_lines(benchmark, path, example)
    samples: list[EvalSample] = []
    seen: dict[str, str] = {}
    splits_found: set[str] = set()
    for where, row in rows:
        row_split = row.get("split", "test")
        if not isinstance(row_split, str):
            raise BenchmarkError(f"{benchmark}: {where}: 'split' must be a string; expected a line like {example}")
        splits_found.add(row_split)
        if split is not None and row_split != split:
            continue
        qid = str(row["question_id"]) if row.get("question_id") is not None else where.rsplit(":", 1)[1]
        if qid in seen:
            raise BenchmarkError(f"{benchmark}: {where}: question id {qid!r} already used at {seen[qid]}")
        seen[qid] = where
        image = Path(_text(benchmark, row, "image", where, example))
        image = image if image.is_absolute() else path.parent / image
        sample = build(row, where, qid, str(image), row_split)
        if limit is None or len(samples) < limit:
            samples.append(sample)
    if split is not None and not samples and rows:
        raise BenchmarkError(
            f"{benchmark}: {path} has no lines with split {split!r} (found: {', '.join(sorted(splits_found))})"
        )
    return check_images(benchmark, samples, f"image paths relative to {path.parent} (or absolute)")


def load_jsonl(data_dir: Path | None, split: str | None, limit: int | None, cache_dir: Path | None) -> list[EvalSample]:
    """A generic VQA JSONL file (see the module docstring for the line format)."""

    def build(row: dict[str, Any], where: str, qid: str, image: str, row_split: str) -> EvalSample:
        question = _text("jsonl", row, "question", where, JSONL_EXAMPLE)
        question_type = row.get("question_type")
        if question_type is not None and not isinstance(question_type, str):
            raise BenchmarkError(f"jsonl: {where}: 'question_type' must be a string or null")
        return EvalSample(qid, image, question, _line_answers(row, where), row_split, question_type)

    return _load_lines("jsonl", data_dir, split, limit, JSONL_EXAMPLE, build)


def load_ocr(data_dir: Path | None, split: str | None, limit: int | None, cache_dir: Path | None) -> list[EvalSample]:
    """The OCR probe: a JSONL of {"image", "text"}; each sample asks `prompts.OCR_QUESTION` and expects `text`."""

    def build(row: dict[str, Any], where: str, qid: str, image: str, row_split: str) -> EvalSample:
        text = row.get("text")
        if not isinstance(text, str):
            raise BenchmarkError(f"ocr: {where}: 'text' must be a string; expected a line like {OCR_EXAMPLE}")
        return EvalSample(qid, image, prompts.OCR_QUESTION, (text,), row_split)

    return _load_lines("ocr", data_dir, split, limit, OCR_EXAMPLE, build)


EASYVQA = BenchmarkSpec(
    load_easyvqa,
    metric="vqa_accuracy",
    prompt_id=prompts.ANSWER_PROMPT_ID,
    description="easy-VQA test: 9,673 questions on 1,000 images, from the installed easy_vqa package (no DATA_DIR)",
)
JSONL = BenchmarkSpec(
    load_jsonl,
    metric="vqa_accuracy",
    prompt_id=prompts.ANSWER_PROMPT_ID,
    description='Generic JSONL: DATA_DIR/data.jsonl (or the file) with {"image", "question", "answers"|"answer"} lines',
)
OCR = BenchmarkSpec(
    load_ocr,
    metric="ocr",
    prompt_id=prompts.OCR,
    description='OCR probe: DATA_DIR/data.jsonl (or the file) with {"image", "text"} lines; '
    "scored by CER and word accuracy (mpa.metrics.ocr)",
)
