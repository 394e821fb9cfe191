"""`mpa evaluate` and the pipeline's evaluate stage: predictions, metrics, resume, and the before/after table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from mpa.backends.scripted import PALETTE
from mpa.cli import main
from mpa.config import ConfigError, build_config
from mpa.evaluation import BENCHMARKS, BenchmarkSpec, EvalSample, evaluate_model, load_benchmark
from mpa.evaluation.benchmarks.simple import JSONL
from mpa.evaluation.prompts import OKVQA
from mpa.metrics import normalize_vqa_answer
from mpa.pipeline import plan, run_pipeline
from mpa.prompts import ANSWER_PROMPT_ID, render_answer_prompt
from mpa.rundir import RunDir, iter_jsonl
from tests.test_pipeline import make_tree
from tests.test_stages_scripted import scripted_tree


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
    tree["contamination"] = {"check": False}  # the benchmark is the pool itself: the guard would drop it all
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
    from mpa.evaluation.metrics import aggregate, prediction_text, score

    answer = prediction_text(metric, raw)
    assert answer == expected_answer
    assert score(metric, answer, answers) == pytest.approx(expected_score)
    # Rescoring stored predictions re-derives the answer from the raw text (old files stored a stripped one).
    record = {"raw": raw, "answer": raw.rstrip("."), "answers": answers, "split": "val", "question_type": None}
    assert aggregate([record], metric)["overall"] == pytest.approx(expected_score)


# --------------------------------------------------------------------- a benchmark added as a new module adds one


def load_colour_cards(
    data_dir: Path | None, split: str | None, limit: int | None, cache_dir: Path | None
) -> list[EvalSample]:
    """Solid-colour cards DATA_DIR/<n>_<colour>.png, each asked its colour (a loader as a new module defines it)."""
    paths = sorted(Path(data_dir or ".").glob("*.png"))
    question = "What colour is the card?"
    return [EvalSample(p.stem, str(p), question, (p.stem.split("_")[1],), "test", "colour") for p in paths][:limit]


COLOUR_CARDS = BenchmarkSpec(
    load_colour_cards, metric="vqa_accuracy", prompt_id=ANSWER_PROMPT_ID, description="DATA_DIR/<n>_<colour>.png"
)
COLOURS = ("red", "green", "blue", "yellow", "orange", "purple")  # the scripted student knows only red and green


def _cards(folder: Path) -> Path:
    from PIL import Image

    folder.mkdir()
    for i, colour in enumerate(COLOURS):
        Image.new("RGB", (20, 16), PALETTE[colour]).save(folder / f"{i:02d}_{colour}.png")
    return folder


def test_a_new_benchmark_is_one_spec_and_one_registry_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Registering the spec is all it takes: the CLI lists it, the config accepts it, the stage and
    `evaluate_model` score the (scripted) models on it with its metric and prompt."""
    monkeypatch.setitem(BENCHMARKS, "colour_cards", f"{__name__}:COLOUR_CARDS")
    cards = _cards(tmp_path / "cards")
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "colour_cards" in capsys.readouterr().out
    tree = scripted_tree(tmp_path, cards, evaluate={"benchmarks": [{"name": "colour_cards", "data_dir": str(cards)}]})
    cfg = build_config(tree)
    run_pipeline(cfg, ["evaluate"])
    row = json.loads((Path(tree["run_dir"]) / "evaluate" / "summary.json").read_text())["colour_cards"]
    assert (row["metric"], row["n"], row["teacher"]) == ("vqa_accuracy", 6, 1.0)
    assert row["student_before"] == pytest.approx(2 / 6)
    metrics = evaluate_model(cfg.student, "colour_cards", load_benchmark("colour_cards", cards), tmp_path / "ev")
    assert metrics["overall"] == pytest.approx(2 / 6) and metrics["prompt_id"] == "answer.short@1"
    assert metrics["per_question_type"] == {"colour": {"score": pytest.approx(2 / 6), "n": 6}}
    preds = list(iter_jsonl(tmp_path / "ev" / "predictions.jsonl"))
    assert [p["answer"] for p in preds] == ["red", "green", "brown", "brown", "brown", "brown"]
    assert {p["prompt"] for p in preds} == {render_answer_prompt("What colour is the card?")}


# Evaluations made before the evaluation short-answer prompt and the identify / level one shared an id recorded
# `eval.short_answer@1`; a spec naming it reproduces exactly what they wrote.
LEGACY_JSONL = dataclasses.replace(JSONL, prompt_id="eval.short_answer@1")
OKVQA_JSONL = dataclasses.replace(JSONL, prompt_id=OKVQA)  # a prompt with another text


def test_evaluations_recorded_under_the_old_short_answer_id_still_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = scripted_tree(tmp_path, _cards(tmp_path / "cards"))  # benchmark jsonl: the cards
    cfg, run, ev = build_config(tree), Path(tree["run_dir"]), tmp_path / "ev"
    samples = load_benchmark("jsonl", tmp_path / "bench.jsonl")
    with monkeypatch.context() as m:
        m.setitem(BENCHMARKS, "jsonl", f"{__name__}:LEGACY_JSONL")
        run_pipeline(cfg, ["evaluate"])
        evaluate_model(cfg.student, "jsonl", samples, ev)
    assert json.loads((run / "evaluate/teacher/jsonl/manifest.json").read_text())["settings"]["prompt_id"] == (
        "eval.short_answer@1"
    )
    kept = [*run.glob("evaluate/*/*/*.json*"), run / "evaluate/manifest.json", ev / "predictions.jsonl"]
    before = {p: p.read_bytes() for p in kept}
    assert {r["action"] for r in plan(cfg, RunDir(run)) if r["stage"].startswith("evaluate/")} == {"skip"}
    run_pipeline(cfg, ["evaluate"])  # not refused, nothing asked again
    metrics = evaluate_model(cfg.student, "jsonl", samples, ev)
    assert {p: p.read_bytes() for p in kept} == before
    assert metrics["prompt_id"] == "answer.short@1" and metrics["overall"] == pytest.approx(2 / 6)
    with monkeypatch.context() as m:  # the alias covers only the same text: another prompt is still refused
        m.setitem(BENCHMARKS, "jsonl", f"{__name__}:OKVQA_JSONL")
        with pytest.raises(ConfigError, match="changed: prompt_id"):
            evaluate_model(cfg.student, "jsonl", samples, ev)
