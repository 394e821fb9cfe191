"""Export a selected set for other fine-tuning frameworks.

One file, image paths as the run recorded them (absolute for a folder of images):
- `llava`: the LLaVA-1.5 instruction JSON (a list of {"id", "image", "conversations": [{"from": "human"|"gpt",
  "value"}]}), read by LLaVA's scripts and Qwen2-VL-Finetune;
- `sharegpt`: LLaMA-Factory's multimodal ShareGPT/OpenAI layout ({"messages": [{"role", "content"}], "images"}).

A self-contained folder (`<format>/`, the images copied — hard-linked where the filesystem allows — into its
`images/` and named by content hash, paths relative to the folder), to train on where the run is not:
- `llamafactory`: `dataset_info.json` (dataset `mpa_parity`, formatting `sharegpt`, OpenAI-style tags) +
  `mpa_parity.json`; LLaMA-Factory resolves image paths against `media_dir`, which defaults to `dataset_dir`:
  `llamafactory-cli train ... --dataset_dir EXPORT --dataset mpa_parity`;
- `swift`: `mpa_parity.jsonl`, ms-swift's standard {"messages", "images"} rows (`<image>` in the user turn); ms-swift
  opens relative paths from the working directory, else under $ROOT_IMAGE_DIR:
  `cd EXPORT && swift sft --dataset mpa_parity.jsonl ...` or `ROOT_IMAGE_DIR=EXPORT swift sft ...`;
- `trl`: `mpa_parity.jsonl`, TRL's conversational prompt/completion rows with typed content
  ([{"type": "image"}, {"type": "text"}]) and an `images` column; `load_trl_export` gives the `datasets.Dataset`
  with PIL images that `SFTTrainer` takes.
The prompt is the same short-answer prompt the student is asked with in identify and evaluate.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mpa.prompts import render_answer_prompt
from mpa.records import CandidateRecord
from mpa.rundir import atomic_write_json, atomic_write_text

DATASET_NAME = "mpa_parity"
Rows = list[dict[str, Any]]


def to_llava(samples: Sequence[CandidateRecord], images: dict[str, str] | None = None) -> Rows:
    images = images or {s.image_id: s.image_path for s in samples}
    return [
        {
            "id": s.qa_id,
            "image": images[s.image_id],
            "conversations": [
                {"from": "human", "value": "<image>\n" + render_answer_prompt(s.question)},
                {"from": "gpt", "value": s.pseudo_answer},
            ],
        }
        for s in samples
    ]


def to_sharegpt(samples: Sequence[CandidateRecord], images: dict[str, str] | None = None) -> Rows:
    """LLaMA-Factory's and ms-swift's layout: one `<image>` token per image, in the user turn."""
    images = images or {s.image_id: s.image_path for s in samples}
    return [
        {
            "messages": [
                {"role": "user", "content": "<image>" + render_answer_prompt(s.question)},
                {"role": "assistant", "content": s.pseudo_answer},
            ],
            "images": [images[s.image_id]],
        }
        for s in samples
    ]


def to_trl(samples: Sequence[CandidateRecord], images: dict[str, str]) -> Rows:
    """TRL's conversational prompt/completion rows (loss on the completion only), typed content parts."""
    return [
        {
            "prompt": [{"role": "user", "content": [{"type": "image"},
                                                    {"type": "text", "text": render_answer_prompt(s.question)}]}],
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": s.pseudo_answer}]}],
            "images": [images[s.image_id]],
        }
        for s in samples
    ]  # fmt: skip


def copy_images(samples: Sequence[CandidateRecord], folder: Path) -> dict[str, str]:
    """Each distinct image once into `folder/images/<image_id><suffix>`; returns image_id -> path relative to
    `folder`. A hard link where the filesystem allows (no extra disk), else a copy; present files are kept."""
    out: dict[str, str] = {}
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for s in samples:
        if s.image_id in out:
            continue
        rel = f"images/{s.image_id.replace('/', '_')}{Path(s.image_path).suffix.lower() or '.png'}"
        dest = folder / rel
        if not dest.exists():
            try:
                os.link(s.image_path, dest)
            except OSError:
                shutil.copy2(s.image_path, dest)
        out[s.image_id] = rel
    return out


def _jsonl(rows: Rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _llamafactory(samples: Sequence[CandidateRecord], folder: Path) -> None:
    atomic_write_json(folder / f"{DATASET_NAME}.json", to_sharegpt(samples, copy_images(samples, folder)))
    info = {
        DATASET_NAME: {
            "file_name": f"{DATASET_NAME}.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
        }
    }
    atomic_write_json(folder / "dataset_info.json", info)


def _swift(samples: Sequence[CandidateRecord], folder: Path) -> None:
    atomic_write_text(folder / f"{DATASET_NAME}.jsonl", _jsonl(to_sharegpt(samples, copy_images(samples, folder))))


def _trl(samples: Sequence[CandidateRecord], folder: Path) -> None:
    atomic_write_text(folder / f"{DATASET_NAME}.jsonl", _jsonl(to_trl(samples, copy_images(samples, folder))))


FILE_FORMATS: dict[str, Callable[[Sequence[CandidateRecord]], Rows]] = {"llava": to_llava, "sharegpt": to_sharegpt}
FOLDER_FORMATS: dict[str, Callable[[Sequence[CandidateRecord], Path], None]] = {
    "llamafactory": _llamafactory,
    "swift": _swift,
    "trl": _trl,
}
FORMATS = (*FILE_FORMATS, *FOLDER_FORMATS)


def export_path(out_dir: Path, fmt: str) -> Path:
    """Where a format goes by default: `out_dir/parity_<format>.json`, or the folder `out_dir/<format>/`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format '{fmt}'; choose from {', '.join(FORMATS)}")
    return out_dir / (f"parity_{fmt}.json" if fmt in FILE_FORMATS else fmt)


def write_export(samples: Sequence[CandidateRecord], fmt: str, dest: Path) -> Path:
    """One format to `dest` (a file for llava / sharegpt, a folder for the others); returns `dest`."""
    if fmt in FILE_FORMATS:
        atomic_write_json(dest, FILE_FORMATS[fmt](samples))
    else:
        FOLDER_FORMATS[fmt](samples, dest)
    return dest


def write_exports(samples: Sequence[CandidateRecord], out_dir: Path, formats: Sequence[str]) -> dict[str, str]:
    """Every requested format at its `export_path` under `out_dir`; returns format -> path."""
    return {fmt: str(write_export(samples, fmt, export_path(out_dir, fmt))) for fmt in formats}


def load_trl_export(folder: Path | str) -> Any:
    """The `trl` export as the `datasets.Dataset` SFTTrainer takes: the JSONL rows with `images` opened as PIL
    images (paths resolved against the export folder, so it loads from any working directory)."""
    import datasets

    folder = Path(folder)
    ds = datasets.load_dataset("json", data_files=str(folder / f"{DATASET_NAME}.jsonl"), split="train")
    ds = ds.map(lambda row: {"images": [str(folder / p) for p in row["images"]]})
    return ds.cast_column("images", datasets.Sequence(datasets.Image()))
