"""`mpa publish`: the dataset folder reloads with `datasets` (images embedded, both configs), the cards load and
parse with huggingface_hub's card classes and carry the metadata, and pushing without a token or without network is
one line that keeps the folders. The model folder and card are checked on a real tiny leveled run (models)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import pytest
from huggingface_hub import DatasetCard, ModelCard
from PIL import Image

from mpa import __version__
from mpa.cli import main
from mpa.publish import PAPER_BIBTEX, publish, size_category
from mpa.review import record_decisions
from tests.test_review import candidates, identified  # noqa: F401  (fixture)
from tests.test_stages_scripted import pool  # noqa: F401  (fixture)


def load(folder: Path, tmp_path: Path, config: str | None = None) -> datasets.Dataset:
    """`load_dataset(folder)` with a cache of the test's own: datasets keys a local folder's cache on the data
    files' names and mtimes, not their folder, so another test's copy of the same layout could be served."""
    return datasets.load_dataset(str(folder), config, split="train", cache_dir=str(tmp_path / "hf_cache"))


def test_dataset_reloads_with_embedded_images_and_its_card_has_the_metadata(
    identified: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cands = candidates(identified)
    sel = [c for c in cands if c.selected]
    extra = next(c for c in cands if not c.selected)
    record_decisions(identified, [sel[0].qa_id], "reject", "ann")
    record_decisions(identified, [extra.qa_id], "accept", "bob")
    assert main(["publish", str(identified), "--out", str(tmp_path / "share")]) == 0
    out = capsys.readouterr().out
    assert "(8 selected rows, 12 candidates)" in out and "model: none (the run has not leveled)" in out
    dataset = tmp_path / "share" / "dataset"
    for c in cands:  # the images travel inside the Parquet files, not as paths to the pool
        Path(c.image_path).rename(Path(c.image_path).with_suffix(".gone"))
    gaps = load(dataset, tmp_path)
    assert len(gaps) == 8 and isinstance(gaps.features["image"], datasets.Image)
    by_id = {r["qa_id"]: r for r in gaps}
    assert set(by_id) == {c.qa_id for c in sel[1:]} | {extra.qa_id}
    assert by_id[extra.qa_id]["review"] == "accept" and by_id[sel[1].qa_id]["review"] is None
    first = next(c for c in sel[1:])
    row = by_id[first.qa_id]
    assert (row["question"], row["answer"], row["student_answer"]) == (first.question, first.pseudo_answer,
                                                                       first.student_answer)  # fmt: skip
    original = Image.open(Path(first.image_path).with_suffix(".gone"))
    assert isinstance(row["image"], Image.Image) and row["image"].tobytes() == original.convert("RGB").tobytes()
    every = load(dataset, tmp_path, "candidates")
    assert len(every) == 12 and {r["reason"] for r in every} == {"selected", "student_correct"}
    assert {r["qa_id"]: r["review"] for r in every if r["review"]} == {sel[0].qa_id: "reject", extra.qa_id: "accept"}

    card = DatasetCard.load(dataset / "README.md")
    data = card.data.to_dict()
    assert data["task_categories"] == ["visual-question-answering", "image-text-to-text"]
    assert data["size_categories"] == ["n<1K"] and "license" not in data  # the licence is the user's to set
    assert [c["config_name"] for c in data["configs"]] == ["default", "candidates"]
    text = card.text
    for needle in ("Licence: not set", "| teacher-consistent | 12 |", "| **published (after review)** | 8 |",
                   "matcher: `exact`; strategy: `parity`", f"mpa {__version__}", PAPER_BIBTEX,
                   "annotation prompt: `annotate.generic@1`", "(weights ", "backend scripted",
                   "1 accepted (1 added to the selection) by ann (1), bob (1)"):  # fmt: skip
        assert needle in text, needle


def test_large_sets_are_sharded_and_still_load_as_one(identified: Path, tmp_path: Path) -> None:  # noqa: F811
    published = publish(identified, tmp_path / "share", max_shard_bytes=300)
    shards = sorted((published.dataset / "data").glob("*.parquet"))
    assert len(shards) > 1 and shards[0].name.endswith(f"-of-{len(shards):05d}.parquet")
    assert len(load(published.dataset, tmp_path)) == published.rows == 8
    publish(identified, tmp_path / "share")  # republished in one shard: no stale shard is left behind
    assert len(list((published.dataset / "data").glob("*.parquet"))) == 1
    publish(identified, tmp_path / "share", candidates=False)
    assert not (published.dataset / "candidates").exists()
    assert "candidates" not in DatasetCard.load(published.dataset / "README.md").text.split("## Load")[1][:400]


def test_publish_never_clobbers_a_foreign_folder_nor_writes_half_a_set(
    identified: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mine = tmp_path / "mine"
    (mine / "model").mkdir(parents=True)
    (mine / "model" / "weights.bin").write_text("precious")
    assert main(["publish", str(identified), "--out", str(mine)]) == 2
    assert "is not empty and was not written by `mpa publish`" in capsys.readouterr().err
    assert (mine / "model" / "weights.bin").read_text() == "precious"
    assert main(["publish", str(identified), "--out", str(tmp_path / "share")]) == 0
    assert main(["publish", str(identified), "--out", str(tmp_path / "share")]) == 0  # its own output: replaced
    gone = Path(next(c for c in candidates(identified) if c.selected).image_path)
    gone.rename(gone.with_suffix(".bak"))
    assert main(["publish", str(identified), "--out", str(tmp_path / "new")]) == 2
    assert f"{gone}: the image of candidate" in capsys.readouterr().err and not (tmp_path / "new").exists()


@pytest.mark.parametrize(("n", "label"), [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (250_000, "100K<n<1M")])
def test_size_category(n: int, label: str) -> None:
    assert size_category(n) == label


def _publish_cli(run: Path, out: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mpa.cli", "publish", str(run), "--out", str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip


def test_push_without_a_token_or_network_is_one_line_and_keeps_the_folders(
    identified: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    base["HF_HOME"] = str(tmp_path / "hf_home")  # no cached login
    proc = _publish_cli(identified, tmp_path / "a", base, "--push-to-hub", "me/colours")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("mpa: error: --push-to-hub: no ")
    assert (tmp_path / "a" / "dataset" / "README.md").is_file()
    secret = "hf_" + "x" * 34
    offline = {**base, "HF_TOKEN": secret, "HF_HUB_OFFLINE": "1"}
    proc = _publish_cli(identified, tmp_path / "b", offline, "--push-to-hub", "me/colours", "--private")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("mpa: error")]
    assert proc.returncode == 1 and len(errors) == 1 and "could not upload the dataset" in errors[0], proc.stderr
    assert (tmp_path / "b" / "dataset" / "data").is_dir()
    unreachable = {**base, "HF_TOKEN": secret, "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens there
    proc = _publish_cli(identified, tmp_path / "c", unreachable, "--push-to-hub", "me/colours")
    assert proc.returncode == 1 and "could not upload the dataset" in proc.stderr
    for root in (tmp_path, identified):  # the token is never written anywhere
        for path in root.rglob("*"):
            assert not path.is_file() or secret.encode() not in path.read_bytes(), path
    assert main(["publish", str(identified), "--out", str(tmp_path / "d"), "--private"]) == 2


@pytest.mark.models
def test_model_folder_loads_and_its_card_has_the_results(
    quiet_run: tuple[Path, Any], tiny_student_dir: Path, tmp_path: Path
) -> None:
    import json

    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    run = shutil.copytree(quiet_run[0], tmp_path / "run")
    assert main(["publish", str(run), "--out", str(tmp_path / "share"), "--base-model", "org/tiny-student"]) == 0
    model_dir = tmp_path / "share" / "model"
    card = ModelCard.load(model_dir / "README.md")
    data = card.data
    assert data.base_model == "org/tiny-student" and data.library_name == "peft"
    assert data.pipeline_tag == "image-text-to-text" and data.base_model_relation == "adapter"
    summary = json.loads((run / "evaluate" / "summary.json").read_text())["jsonl"]
    (result,) = data.eval_results  # parsed back from the card's model-index
    assert (result.dataset_name, result.metric_type, result.metric_value) == ("jsonl", "vqa_accuracy",
                                                                              summary["student_after"])  # fmt: skip
    text = card.text
    assert f"{100 * summary['teacher']:.1f}%" in text and f"{100 * summary['student_before']:.1f}%" in text
    level = json.loads((run / "level" / "manifest.json").read_text())
    assert f"| learning_rate | `{level['settings']['level']['learning_rate']}` |" in text
    history = json.loads((run / "level" / "metrics.json").read_text())["log_history"]
    evals = [h for h in history if "eval_loss" in h]
    assert evals and all(f"| {h['eval_loss']:.4f} |" in text for h in evals)
    assert "## Intended use and limits" in text and PAPER_BIBTEX in text
    adapter_config = json.loads((model_dir / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "org/tiny-student"
    # the folder is a working adapter + processor (loaded here on the local copy of the base)
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_student_dir), model_dir)
    assert model.peft_config["default"].r > 0 and AutoProcessor.from_pretrained(model_dir) is not None
    # without --base-model (a local student) the card says so rather than naming a path as the base model
    assert main(["publish", str(run), "--out", str(tmp_path / "share2"), "--push-to-hub", "org/x"]) in (1, 2)
    card2 = ModelCard.load(tmp_path / "share2" / "model" / "README.md")
    assert card2.data.base_model is None and "base_model is not set" in card2.text
    assert card2.data.datasets == ["org/x"]
