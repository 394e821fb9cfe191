"""Loaders for the VQA-style releases: TextVQA 0.5.1, ST-VQA Task 1 and OK-VQA v1.1 (plus their HF exports).

Each reads the official files from DATA_DIR, in file order (so `limit=N` is the first N questions of the file),
and checks that every referenced image exists. Formats, as confirmed against public loaders:

- TextVQA (`TextVQA_0.5.1_{val,train}.json`): {"data": [{"question_id": int, "image_id": str, "question",
  "answers": [10 strings], "image_classes", "set_name", ...}]}; images `train_images/{image_id}.jpg` for both
  train and val (HF `datasets` script `textvqa.py`, facebookresearch release). qid = question_id.
- ST-VQA (`train_task_1.json`, RRC ch. 11): {"data": [{"question_id": int, "file_path": "coco-text/....jpg",
  "question", "answers": [1-2 strings], ...}]}, images at `file_path` relative to DATA_DIR or DATA_DIR/train_images
  (big_vision `stvqa.py`; vl2g/MPA `dataLoader.py`). The test set has no public answers, so we hold out part of
  train: `split="heldout"` (default) is every question whose `sha256(str(question_id))` read as an integer is
  0 mod 10 (~10 %, fixed forever, independent of file order); `split="train"` is the rest. Questions about one
  image can fall on both sides (the rule hashes questions, not images).
- OK-VQA v1.1 (`OpenEnded_mscoco_val2014_questions.json` {"questions": [{"image_id", "question", "question_id"}]},
  `mscoco_val2014_annotations.json` {"annotations": [{"question_id", "image_id", "question_type": "one".."ten" |
  "other", "answer_type", "answers": [{"answer", "raw_answer", "answer_confidence", "answer_id"}] * 10}]});
  images `val2014/COCO_val2014_{image_id:012d}.jpg` (big_vision `okvqa.py`). question_type is mapped to its
  category name ("eight" -> "Plants and Animals"). Answers are the released `answer` fields, which v1.1 stemmed
  (e.g. plurals reduced; the unstemmed text is in `raw_answer`); we score against them as released and ignore
  `raw_answer`, so a prediction "races" only matches "race" if normalisation makes them equal. lmms-eval scores
  against the single `answers` column of its lmms-lab/OK-VQA export (5,046 val2014 rows), taken as is here too;
  whether that column holds the stemmed or the raw strings we could not confirm.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from mpa.evaluation import prompts
from mpa.evaluation.benchmarks.common import (
    BenchmarkError,
    BenchmarkSpec,
    EvalSample,
    check_images,
    check_split,
    check_unique_qids,
    read_json,
    require_data_dir,
    take,
    to_answers,
)
from mpa.evaluation.benchmarks.hf_export import find_export, samples_from_export, select_split

__all__ = [
    "OKVQA",
    "OKVQA_QUESTION_TYPES",
    "STVQA",
    "TEXTVQA",
    "load_okvqa",
    "load_stvqa",
    "load_textvqa",
    "stvqa_is_heldout",
]

TEXTVQA_LAYOUT = (
    "DATA_DIR/TextVQA_0.5.1_val.json and DATA_DIR/train_images/<image_id>.jpg (the TextVQA 0.5.1 release; val "
    "images live in train_images), or a Hugging Face export (lmms-lab/textvqa) saved as Parquet or save_to_disk"
)
STVQA_LAYOUT = (
    "DATA_DIR/train_task_1.json and the images at each entry's file_path, relative to DATA_DIR or "
    "DATA_DIR/train_images (the ST-VQA release)"
)
OKVQA_LAYOUT = (
    "DATA_DIR/OpenEnded_mscoco_val2014_questions.json, DATA_DIR/mscoco_val2014_annotations.json and COCO images "
    "DATA_DIR/val2014/COCO_val2014_<image_id:012d>.jpg or directly in DATA_DIR (the OK-VQA v1.1 release), "
    "or a Hugging Face export (lmms-lab/OK-VQA) saved as Parquet or save_to_disk"
)

# Category codes of OK-VQA's `question_type` (paper, table 1; names as in big_vision `okvqa.py`).
OKVQA_QUESTION_TYPES: dict[str, str] = {
    "one": "Vehicles and Transportation",
    "two": "Brands, Companies and Products",
    "three": "Objects, Material and Clothing",
    "four": "Sports and Recreation",
    "five": "Cooking and Food",
    "six": "Geography, History, Language and Culture",
    "seven": "People and Everyday life",
    "eight": "Plants and Animals",
    "nine": "Science and Technology",
    "ten": "Weather and Climate",
    "other": "Other",
}

STVQA_HELDOUT_MODULUS = 10  # 1 in 10 questions is held out


def _field(benchmark: str, entry: Any, key: str, where: str) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise BenchmarkError(f"{benchmark}: {where} has no {key!r} field")
    return entry[key]


def _records(benchmark: str, path: Path, key: str, layout: str) -> list[Any]:
    data = read_json(benchmark, path, layout)
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise BenchmarkError(f"{benchmark}: {path} has no top-level {key!r} list; expected {layout}")
    return data[key]


# ------------------------------------------------------------------------------------------------------ TextVQA


def load_textvqa(
    data_dir: Path | None, split: str | None, limit: int | None, cache_dir: Path | None
) -> list[EvalSample]:
    """TextVQA 0.5.1 val (default) or train, from the release JSON or a local HF export (lmms-lab/textvqa)."""
    split = split or "val"
    check_split("textvqa", split, ("val", "train"))
    root = require_data_dir("textvqa", data_dir, TEXTVQA_LAYOUT)
    ann = root / f"TextVQA_0.5.1_{split}.json"
    if not ann.is_file() and (parts := find_export(root)):
        aliases = ("val", "validation") if split == "val" else ("train",)

        def to_sample(where: str, row: dict[str, Any]) -> EvalSample:
            answers = to_answers("textvqa", row["answers"], where)
            return EvalSample(str(row["question_id"]), "", row["question"], answers, split)

        return samples_from_export(
            "textvqa",
            root,
            select_split("textvqa", parts, aliases, root),
            ("question_id", "question", "answers"),
            to_sample,
            cache_dir=cache_dir or root / ".mpa_cache" / "textvqa",
            limit=limit,
        )
    samples = []
    for i, entry in enumerate(take(_records("textvqa", ann, "data", TEXTVQA_LAYOUT), limit)):
        where = f"{ann} entry {i}"
        qid = str(_field("textvqa", entry, "question_id", where))
        image = root / "train_images" / f"{_field('textvqa', entry, 'image_id', where)}.jpg"
        answers = to_answers("textvqa", _field("textvqa", entry, "answers", where), where)
        samples.append(EvalSample(qid, str(image), _field("textvqa", entry, "question", where), answers, split))
    check_unique_qids("textvqa", samples, ann)
    return check_images("textvqa", samples, TEXTVQA_LAYOUT)


# ------------------------------------------------------------------------------------------------------- ST-VQA


def stvqa_is_heldout(question_id: str) -> bool:
    """Whether an ST-VQA train question belongs to our held-out split (deterministic, ~10 %)."""
    return int(hashlib.sha256(question_id.encode("utf-8")).hexdigest(), 16) % STVQA_HELDOUT_MODULUS == 0


def load_stvqa(data_dir: Path | None, split: str | None, limit: int | None, cache_dir: Path | None) -> list[EvalSample]:
    """ST-VQA Task 1 train questions, split into our "heldout" (default) and "train" parts by `stvqa_is_heldout`.

    Reads `train_task_1.json` (falls back to `train_task_3.json`, the file big_vision reads: same train questions).
    """
    split = split or "heldout"
    check_split("stvqa", split, ("heldout", "train"))
    root = require_data_dir("stvqa", data_dir, STVQA_LAYOUT)
    ann = root / "train_task_1.json"
    if not ann.is_file() and (root / "train_task_3.json").is_file():
        ann = root / "train_task_3.json"
    image_root = root / "train_images" if (root / "train_images").is_dir() else root
    samples: list[EvalSample] = []
    for i, entry in enumerate(_records("stvqa", ann, "data", STVQA_LAYOUT)):
        if limit is not None and len(samples) >= limit:
            break
        where = f"{ann} entry {i}"
        qid = str(_field("stvqa", entry, "question_id", where))
        if stvqa_is_heldout(qid) != (split == "heldout"):
            continue
        key = "file_path" if isinstance(entry, dict) and "file_path" in entry else "file_name"
        image = image_root / _field("stvqa", entry, key, where)
        answers = to_answers("stvqa", _field("stvqa", entry, "answers", where), where)
        samples.append(EvalSample(qid, str(image), _field("stvqa", entry, "question", where), answers, split))
    check_unique_qids("stvqa", samples, ann)
    return check_images("stvqa", samples, STVQA_LAYOUT)


# ------------------------------------------------------------------------------------------------------- OK-VQA


def _okvqa_type(code: Any) -> str | None:
    return None if code is None else OKVQA_QUESTION_TYPES.get(str(code), str(code))


def _okvqa_answers(entry: Any, where: str) -> tuple[str, ...]:
    answers = _field("okvqa", entry, "answers", where)
    if not isinstance(answers, list):
        raise BenchmarkError(f"okvqa: {where}: 'answers' must be a list of {{'answer': ...}} objects")
    return to_answers("okvqa", [_field("okvqa", a, "answer", f"{where} answer") for a in answers], where)


def load_okvqa(data_dir: Path | None, split: str | None, limit: int | None, cache_dir: Path | None) -> list[EvalSample]:
    """OK-VQA v1.1 val2014 (default "val") or train2014 ("train"), or a local HF export of lmms-lab/OK-VQA."""
    split = split or "val"
    check_split("okvqa", split, ("val", "train"))
    subset = f"{split}2014"
    root = require_data_dir("okvqa", data_dir, OKVQA_LAYOUT)
    q_path = root / f"OpenEnded_mscoco_{subset}_questions.json"
    a_path = root / f"mscoco_{subset}_annotations.json"
    if not q_path.is_file() and (parts := find_export(root)):
        aliases = ("val", "validation", "val2014") if split == "val" else ("train", "train2014")

        def to_sample(where: str, row: dict[str, Any]) -> EvalSample:
            answers = to_answers("okvqa", row["answers"], where)
            return EvalSample(
                str(row["question_id"]), "", row["question"], answers, split, _okvqa_type(row.get("question_type"))
            )

        return samples_from_export(
            "okvqa",
            root,
            select_split("okvqa", parts, aliases, root),
            ("question_id", "question", "answers"),
            to_sample,
            optional=("question_type",),
            cache_dir=cache_dir or root / ".mpa_cache" / "okvqa",
            limit=limit,
        )
    questions = _records("okvqa", q_path, "questions", OKVQA_LAYOUT)
    annotations = {
        str(_field("okvqa", a, "question_id", f"{a_path} annotation {i}")): a
        for i, a in enumerate(_records("okvqa", a_path, "annotations", OKVQA_LAYOUT))
    }
    image_dir = root / subset if (root / subset).is_dir() else root
    samples, unannotated = [], []
    for i, question in enumerate(take(questions, limit)):
        where = f"{q_path} question {i}"
        qid = str(_field("okvqa", question, "question_id", where))
        annotation = annotations.get(qid)
        if annotation is None:
            unannotated.append(qid)
            continue
        image_id = int(_field("okvqa", question, "image_id", where))
        image = image_dir / f"COCO_{subset}_{image_id:012d}.jpg"
        answers = _okvqa_answers(annotation, f"{a_path} question_id {qid}")
        text = _field("okvqa", question, "question", where)
        samples.append(EvalSample(qid, str(image), text, answers, split, _okvqa_type(annotation.get("question_type"))))
    if unannotated:
        raise BenchmarkError(
            f"okvqa: {len(unannotated)} questions of {q_path} have no annotation in {a_path}, "
            f"first: question_id {unannotated[0]}; expected the matching questions and annotations files"
        )
    check_unique_qids("okvqa", samples, q_path)
    return check_images("okvqa", samples, OKVQA_LAYOUT)


TEXTVQA = BenchmarkSpec(
    load_textvqa,
    metric="vqa_accuracy",
    prompt_id=prompts.TEXTVQA,
    description="TextVQA 0.5.1 val: DATA_DIR/TextVQA_0.5.1_val.json + DATA_DIR/train_images/<image_id>.jpg, "
    "or a local HF export (lmms-lab/textvqa, Parquet or save_to_disk)",
)
STVQA = BenchmarkSpec(
    load_stvqa,
    metric="anls",
    prompt_id=prompts.ANSWER_PROMPT_ID,
    description="ST-VQA Task 1, our held-out 10% of train: DATA_DIR/train_task_1.json + images at file_path "
    "(under DATA_DIR or DATA_DIR/train_images)",
)
OKVQA = BenchmarkSpec(
    load_okvqa,
    metric="vqa_accuracy",
    prompt_id=prompts.OKVQA,
    description="OK-VQA v1.1 val: DATA_DIR/OpenEnded_mscoco_val2014_questions.json + "
    "mscoco_val2014_annotations.json + DATA_DIR/val2014/COCO_val2014_<id:012d>.jpg, "
    "or a local HF export (lmms-lab/OK-VQA)",
)
