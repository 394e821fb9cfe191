"""`mpa evaluate` and the pipeline's evaluate stage: predictions, metrics, resume, and the before/after table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mpa.cli import main
from mpa.config import build_config
from mpa.metrics import normalize_vqa_answer
from mpa.pipeline import run_pipeline
from mpa.rundir import iter_jsonl
from tests.test_pipeline import make_tree


def test_evaluate_cli_on_easyvqa(tiny_teacher_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ev"
    args = ["evaluate", "--model", str(tiny_teacher_dir), "--benchmark", "easyvqa", "--limit", "60", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert '"benchmark": "easyvqa"' in printed and "type yes/no" in printed
    preds = list(iter_jsonl(out / "predictions.jsonl"))
    assert [p["qid"] for p in preds] == [f"test/{i}" for i in range(60)]
    for p in preds:
        assert p["prompt"] == p["question"] + "\nAnswer the question using a single word or phrase."
        # easy-VQA has one answer per question: VQA accuracy is normalised exact match.
        assert p["score"] == float(normalize_vqa_answer(p["answer"]) == normalize_vqa_answer(p["answers"][0]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 60 and metrics["metric"] == "vqa_accuracy"
    assert metrics["overall"] == pytest.approx(sum(p["score"] for p in preds) / 60)
    assert set(metrics["per_question_type"]) == {"yes/no", "shape", "color"}
    assert sum(v["n"] for v in metrics["per_question_type"].values()) == 60
    # Resume: drop the last 25 predictions and tear a line; the rerun completes them and gets the same metrics.
    lines = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
    (out / "predictions.jsonl").write_text("".join(lines[:35]) + lines[35][:20])
    assert main(args) == 0
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert (out / "predictions.jsonl").read_text().splitlines() == [ln.rstrip("\n") for ln in lines]


def test_evaluate_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--model", "m", "--benchmark", "nope"]) == 2
    assert "unknown 'nope'" in capsys.readouterr().err
    assert main(["evaluate", "--model", "m", "--benchmark", "chartqa", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mpa: error: ") and "test_human.json" in err


def _colour_benchmark(tmp_path: Path, labels: list[tuple[Path, str]]) -> Path:
    path = tmp_path / "colours.jsonl"
    rows = [{"image": str(p), "question": "What colour is the image?", "answers": [c], "question_type": "colour"}
            for p, c in labels]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pipeline_closes_the_gap_on_a_benchmark(
    tmp_path: Path,
    tiny_teacher_dir: Path,
    tiny_student_dir: Path,
    color_images: Path,
    color_image_labels: list[tuple[Path, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Whole method + evaluation: the leveled student closes most of its gap to the teacher (label-free training)."""
    bench = _colour_benchmark(tmp_path, color_image_labels)
    tree: dict[str, Any] = make_tree(tmp_path / "run", tiny_teacher_dir, tiny_student_dir, color_images)
    tree["level"].update({"method": "full", "epochs": 40, "learning_rate": 0.003, "freeze_vision": False})
    tree["evaluate"] = {"benchmarks": [{"name": "jsonl", "data_dir": str(bench)}]}
    cfg_path = tmp_path / "cfg.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump(tree))
    assert main(["run", str(cfg_path)]) == 0
    out = capsys.readouterr().out
    assert "gap closed" in out and "jsonl" in out
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    row = summary["benchmarks"]["jsonl"]
    assert row["teacher"] >= 0.9 and row["student_before"] <= 0.2
    assert row["student_after"] >= 0.6 and row["gap_closed"] >= 0.5
    assert summary["parity"]["selected"] > 0 and summary["timings_s"]["total"] > 0
    assert set(summary["timings_s"]) == {"annotate", "identify", "level", "evaluate", "total"}
    # Re-leveling with other settings re-evaluates only the new student, not the teacher or the old student.
    teacher_preds = run / "evaluate/teacher/jsonl/predictions.jsonl"
    stamp = teacher_preds.stat().st_mtime_ns
    tree["level"]["epochs"] = 1
    run_pipeline(build_config(tree), force=True)
    assert teacher_preds.stat().st_mtime_ns == stamp
    after = json.loads((run / "evaluate/summary.json").read_text())["jsonl"]
    assert after["teacher"] == row["teacher"] and after["student_before"] == row["student_before"]
    assert after["student_after"] < row["student_after"]  # one epoch learns less than forty


def test_validate_lists_evaluation_units(tree_with_bench: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    path = Path(tree_with_bench["run_dir"]).parent / "c.yaml"
    path.write_text(yaml.safe_dump(tree_with_bench))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    for role in ("teacher", "student_before", "student_after"):
        assert f"evaluate/{role}/easyvqa run" in out.replace("  ", " ")


@pytest.fixture
def tree_with_bench(tmp_path: Path, tiny_llava_dir: Path, color_images: Path) -> dict[str, Any]:
    tree = make_tree(tmp_path / "run", tiny_llava_dir, tiny_llava_dir, color_images)
    tree["evaluate"] = {"benchmarks": [{"name": "easyvqa", "limit": 10}]}
    return tree


def test_unknown_benchmark_in_config_is_refused(tree_with_bench: dict[str, Any]) -> None:
    from mpa.config import ConfigError

    tree_with_bench["evaluate"]["benchmarks"][0]["name"] = "mmmu"
    with pytest.raises(ConfigError, match=r"evaluate\.benchmarks\.0\.name: unknown benchmark 'mmmu'"):
        run_pipeline(build_config(tree_with_bench))


@pytest.mark.parametrize(
    ("metric", "raw", "answers", "expected_answer", "expected_score"),
    [
        # ST-VQA: a ground truth ending in a period must match itself exactly (was 0.92 with the period stripped).
        ("anls", "Fair grounds.", ["Fair grounds."], "Fair grounds.", 1.0),
        ("anls", "Answer: Fair grounds.", ["Fair grounds.", "fairgrounds"], "Fair grounds.", 1.0),
        ("anls", "STOP", ["stop"], "STOP", 1.0),
        # ChartQA's relaxed accuracy needs the period gone to read the number.
        ("relaxed_accuracy", "12.", ["12"], "12", 1.0),
        # VQA accuracy normalises periods away either way.
        ("vqa_accuracy", "Yes.", ["yes"] * 10, "Yes", 1.0),
    ],
)
def test_final_period_is_kept_only_where_the_metric_compares_characters(
    metric: str, raw: str, answers: list[str], expected_answer: str, expected_score: float
) -> None:
    from mpa.evaluation import _prediction_text, aggregate, score

    answer = _prediction_text(metric, raw)
    assert answer == expected_answer
    assert score(metric, answer, answers) == pytest.approx(expected_score)
    # Rescoring stored predictions re-derives the answer from the raw text (old files stored a stripped one).
    record = {"raw": raw, "answer": raw.rstrip("."), "answers": answers, "split": "val", "question_type": None}
    assert aggregate([record], metric)["overall"] == pytest.approx(expected_score)
