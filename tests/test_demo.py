"""`mpa demo --quick` on the bundled models: the student improves on easy-VQA test without a label of the pool —
and a broken Parity Leveler (pseudo-answers shuffled across the parity set) does not reach the same margin."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mpa.cli import main
from mpa.config import build_config
from mpa.demo.run import MODELS_DIR, demo_tree, write_pool
from mpa.demo.world import N_LABELLED, split_train
from mpa.pipeline import run_pipeline
from mpa.rundir import atomic_write_text, iter_jsonl

pytestmark = [
    pytest.mark.models,
    pytest.mark.skipif(not (MODELS_DIR / "teacher" / "config.json").exists(), reason="demo models missing"),
]
MARGIN = 0.05  # absolute VQA-accuracy gain the quick demo must show


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--quick", "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_quick_demo_improves_the_student(quick_demo: Path) -> None:
    summary = json.loads((quick_demo / "summary.json").read_text())
    row = summary["benchmarks"]["easyvqa_test"]
    assert row["metric"] == "vqa_accuracy" and row["n"] == 1500
    assert row["teacher"] >= row["student_before"] + 0.15  # a real gap
    assert row["student_after"] >= row["student_before"] + MARGIN
    assert row["gap_closed"] >= 0.2  # the full demo closes ~68%; the quick budget about a quarter
    parity = summary["parity"]
    excluded = json.loads((quick_demo / "annotate/manifest.json").read_text())["counts"]["skip_reasons"]
    assert parity["annotated"] == 400 - excluded.get("contaminated", 0)  # copies of test images are left out
    assert 0 < parity["selected"] <= parity["teacher_consistent"]
    assert summary["timings_s"]["total"] > 0


def test_pool_labels_are_never_read(quick_demo: Path) -> None:
    """The pool is the unlabeled half of train; nothing in the run dir carries its easy-VQA answers."""
    import easy_vqa

    pool = (quick_demo / "inputs/pool.txt").read_text().split()
    paths = {int(k): v for k, v in easy_vqa.get_train_image_paths().items()}
    labelled, unlabeled = split_train(sorted(paths))
    assert len(labelled) == N_LABELLED
    assert set(pool) <= {paths[i] for i in unlabeled}
    qa = list(iter_jsonl(quick_demo / "annotate/qa.jsonl"))
    assert qa and all(q["image_path"] in set(pool) for q in qa)


def test_shuffled_pseudo_answers_do_not_reach_the_margin(quick_demo: Path, tmp_path: Path) -> None:
    """Control: the same run with the selected set's answers shuffled (a broken PI/PL) must not pass the bar."""
    tree = demo_tree(tmp_path / "broken", quick=True)
    tree["images"]["path"] = str(write_pool(quick_demo, 400))  # the same pool file as the real run
    import shutil

    shutil.copytree(quick_demo / "annotate", tmp_path / "broken/annotate")
    shutil.copytree(quick_demo / "identify", tmp_path / "broken/identify")
    for role in ("teacher", "student_before"):
        shutil.copytree(quick_demo / "evaluate" / role, tmp_path / "broken/evaluate" / role)
    cands = list(iter_jsonl(tmp_path / "broken/identify/candidates.jsonl"))
    answers = [c["pseudo_answer"] for c in cands]
    random.Random(0).shuffle(answers)
    for c, a in zip(cands, answers, strict=True):
        c["pseudo_answer"] = a
    atomic_write_text(tmp_path / "broken/identify/candidates.jsonl", "".join(json.dumps(c) + "\n" for c in cands))
    run_pipeline(build_config(tree), ["level", "evaluate"])
    row = json.loads((tmp_path / "broken/summary.json").read_text())["benchmarks"]["easyvqa_test"]
    assert row["student_after"] < row["student_before"] + MARGIN


@pytest.mark.slow
def test_train_models_from_scratch_quick(tmp_path: Path) -> None:
    """The training script runs end to end (at 10% of the budget) and writes loadable checkpoints + prompt."""
    from mpa.demo.train import train_models

    report = train_models(tmp_path, quick=True)
    assert set(report) == {"teacher", "student"}
    for name in ("teacher", "student"):
        assert (tmp_path / name / "config.json").exists() and not (tmp_path / name / "_trainer").exists()
        assert 0.0 <= report[name]["all"] <= 1.0
    assert (tmp_path / "annotate_prompt.txt").read_text().startswith("Write {k} question-answer pairs")


def test_the_quick_demo_publishes_and_its_cards_and_exports_load(quick_demo: Path, tmp_path: Path) -> None:
    """What the issue checks on a finished demo run: `mpa publish` reloads with `datasets`, its cards load with
    huggingface_hub's card classes, the leveled model loads, and the trainer exports read back."""
    import datasets
    from huggingface_hub import DatasetCard, ModelCard
    from transformers import AutoModelForImageTextToText

    from mpa.export import load_trl_export
    from tests.test_export import read_like_llamafactory

    share = tmp_path / "share"
    assert main(["publish", str(quick_demo), "--out", str(share)]) == 0
    summary = json.loads((quick_demo / "summary.json").read_text())
    gaps = datasets.load_dataset(str(share / "dataset"), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(gaps) == summary["parity"]["selected"] and gaps[0]["image"].size == (64, 64)
    data = DatasetCard.load(share / "dataset" / "README.md").data
    assert data.size_categories == ["n<1K"] and data.configs[0]["config_name"] == "default"
    card = ModelCard.load(share / "model" / "README.md")
    (result,) = card.data.eval_results
    assert result.metric_value == summary["benchmarks"]["easyvqa_test"]["student_after"]
    assert card.data.library_name == "transformers" and card.data.base_model is None  # a local student
    assert AutoModelForImageTextToText.from_pretrained(share / "model") is not None
    for fmt in ("llamafactory", "trl"):
        assert main(["export", "--run-dir", str(quick_demo), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
    assert len(read_like_llamafactory(tmp_path / "llamafactory", "mpa_parity")) == len(gaps)
    assert len(load_trl_export(tmp_path / "trl")) == len(gaps)
