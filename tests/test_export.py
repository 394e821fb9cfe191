"""`mpa export`: every format loaded back the way its tool reads it, from a scripted run (fast suite), after review.

- LLaMA-Factory: `dataset_info.json` names the file, the `sharegpt` formatting and the OpenAI-style tags; rows are
  read with `datasets` JSON, roles must alternate user/assistant starting with the user, the number of `<image>`
  tokens must equal the number of images, and each image path is joined to `media_dir` (= `dataset_dir` by default).
- ms-swift: JSONL rows {"messages", "images"} read from the export folder as the working directory.
- TRL: `load_trl_export` → `datasets.Dataset` with PIL images; the collator of TRL's SFTTrainer on a real tiny
  processor and model is in the models suite (`test_trl_export_trains_through_trls_collator`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import pytest
from PIL import Image

from mpa.cli import main
from mpa.export import DATASET_NAME, export_path, load_trl_export
from mpa.prompts import render_answer_prompt
from mpa.review import record_decisions, reviewed_selection
from tests.test_review import candidates, identified  # noqa: F401  (fixture)
from tests.test_stages_scripted import pool  # noqa: F401  (fixture)

IMAGE_TOKEN = "<image>"


def _export(run: Path, fmt: str, out: Path | None = None) -> Path:
    args = ["export", "--run-dir", str(run), "--format", fmt] + (["--out", str(out)] if out else [])
    assert main(args) == 0
    return out or export_path(run / "identify" / "export", fmt)


def read_like_llamafactory(dataset_dir: Path, name: str) -> list[tuple[list[dict[str, str]], list[Path]]]:
    """LLaMA-Factory's path for a local sharegpt dataset: dataset_info.json → file → columns / tags → turns."""
    info = json.loads((dataset_dir / "dataset_info.json").read_text())[name]
    assert info["formatting"] == "sharegpt"
    cols, tags = info["columns"], info["tags"]
    rows = datasets.load_dataset("json", data_files=str(dataset_dir / info["file_name"]), split="train")
    out = []
    for row in rows:
        turns = row[cols["messages"]]
        roles = [t[tags["role_tag"]] for t in turns]
        assert roles == [tags["user_tag"], tags["assistant_tag"]] * (len(roles) // 2) and roles, roles
        images = [dataset_dir / p for p in row[cols["images"]]]  # media_dir defaults to dataset_dir
        text = "".join(t[tags["content_tag"]] for t in turns)
        assert text.count(IMAGE_TOKEN) == len(images)
        out.append(([{"role": r, "content": t[tags["content_tag"]]} for r, t in zip(roles, turns, strict=True)],
                    images))  # fmt: skip
    return out


def test_llamafactory_export_loads_like_llamafactory(identified: Path, tmp_path: Path) -> None:  # noqa: F811
    sel = reviewed_selection(identified)
    folder = _export(identified, "llamafactory")
    rows = read_like_llamafactory(folder, DATASET_NAME)
    assert len(rows) == len(sel) == 8
    for (turns, images), c in zip(rows, sel, strict=True):
        assert turns[0]["content"] == IMAGE_TOKEN + render_answer_prompt(c.question)
        assert turns[1]["content"] == c.pseudo_answer
        assert len(images) == 1 and images[0].is_file()
        assert Image.open(images[0]).tobytes() == Image.open(c.image_path).tobytes()
    # self-contained: moved elsewhere, it still loads (paths are relative to the folder)
    moved = tmp_path / "elsewhere"
    folder.rename(moved)
    assert len(read_like_llamafactory(moved, DATASET_NAME)) == 8


def test_swift_export_loads_like_swift(identified: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    folder = _export(identified, "swift", tmp_path / "swift_out")
    monkeypatch.chdir(folder)  # ms-swift opens relative image paths from the working directory
    rows = datasets.load_dataset("json", data_files=f"{DATASET_NAME}.jsonl", split="train")
    assert rows.column_names == ["messages", "images"] and len(rows) == 8
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][0]["content"].count(IMAGE_TOKEN) == len(row["images"]) == 1
        assert not os.path.isabs(row["images"][0]) and Image.open(row["images"][0]).size


def test_trl_export_is_a_dataset_of_pil_images_and_conversations(identified: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = _export(identified, "trl")
    ds = load_trl_export(folder)
    assert set(ds.column_names) == {"prompt", "completion", "images"} and len(ds) == 8
    row = ds[0]
    assert isinstance(row["images"][0], Image.Image)
    from trl.data_utils import is_conversational, prepare_multimodal_messages

    assert is_conversational(row)
    prompt = prepare_multimodal_messages(row["prompt"], images=row["images"])
    assert prompt[0]["content"][0]["type"] == "image" and prompt[0]["content"][0]["image"] is not None


def test_exports_follow_the_review(identified: Path) -> None:  # noqa: F811
    cands = candidates(identified)
    sel = [c for c in cands if c.selected]
    extra = next(c for c in cands if not c.selected)
    record_decisions(identified, [sel[0].qa_id, sel[1].qa_id], "reject", "ann")
    record_decisions(identified, [extra.qa_id], "accept", "ann")
    for fmt in ("llamafactory", "swift", "trl", "llava", "sharegpt"):
        out = _export(identified, fmt)
        if fmt == "llava":
            questions = {r["id"] for r in json.loads(out.read_text())}
            assert questions == {c.qa_id for c in sel[2:]} | {extra.qa_id}
    rows = read_like_llamafactory(identified / "identify" / "export" / "llamafactory", DATASET_NAME)
    answers = sorted(t[1]["content"] for t, _ in rows)
    assert answers == sorted([c.pseudo_answer for c in sel[2:]] + [extra.pseudo_answer])


@pytest.mark.models
def test_trl_export_trains_through_trls_collator(identified: Path, tiny_student_dir: Path) -> None:  # noqa: F811
    """TRL's own VLM collator (what SFTTrainer uses for image rows) on the export, then a real forward pass."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    ds = load_trl_export(_export(identified, "trl"))
    processor = AutoProcessor.from_pretrained(tiny_student_dir)
    # SFTTrainer passes completion_only_loss=True for prompt/completion rows (its default)
    batch = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)([ds[0], ds[1]])
    assert batch["pixel_values"].shape[0] == 2
    labelled = processor.tokenizer.decode(batch["labels"][0][batch["labels"][0] != -100])
    assert labelled.startswith(ds[0]["completion"][0]["content"][0]["text"])  # loss on the pseudo-answer only
    model = AutoModelForImageTextToText.from_pretrained(tiny_student_dir)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)
