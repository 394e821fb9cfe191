"""The stages on scripted models (`mpa.backends.scripted`): no weights, so the whole run directory contract —
selection, resume, refusal, exit codes, file modes, the report — is checked in the fast suite in seconds.

The teacher knows every colour; the student knows only red and green, so its knowledge gap is exactly the images
of the other colours. The same checks on tiny real checkpoints live in test_pipeline.py (marker `models`).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from mpa.backends.scripted import PALETTE, Script
from mpa.cli import main
from mpa.config import build_config
from mpa.pipeline import run_pipeline
from mpa.rundir import iter_jsonl

COLOURS = ("red", "green", "blue", "yellow", "orange", "purple")
STUDENT_KNOWS = ("red", "green")


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    """12 solid images, two per colour, named after their colour (names are never read by the pipeline)."""
    from PIL import Image

    folder = tmp_path / "pool"
    folder.mkdir()
    for i in range(12):
        colour = COLOURS[i % len(COLOURS)]
        Image.new("RGB", (24 + i, 20), PALETTE[colour]).save(folder / f"{i:02d}_{colour}.png")
    return folder


def benchmark_images(tmp_path: Path) -> list[Path]:
    """One test image per colour: the colour with a white square in the middle — not a copy of any pool image
    (the contamination guard would leave copies out), still answered with its colour by the scripted models."""
    from PIL import Image, ImageDraw

    folder = tmp_path / "bench_images"
    if not folder.exists():
        folder.mkdir()
        for i, colour in enumerate(COLOURS * 2):
            image = Image.new("RGB", (64, 64), PALETTE[colour])
            ImageDraw.Draw(image).rectangle((22 + i, 22, 41, 41), fill=(255, 255, 255))
            image.save(folder / f"{i:02d}_{colour}.png")
    return sorted(folder.glob("*.png"))


def scripted_tree(tmp_path: Path, pool: Path, student: Script | None = None, teacher: Script | None = None,
                  **sections: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    teacher_file = (teacher or Script()).write(tmp_path / "teacher.json")
    student_file = (student or Script(knows=STUDENT_KNOWS)).write(tmp_path / "student.json")
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"image": str(p), "question": "What colour is the image?",
                                         "answers": [p.stem.split("_")[1]]}) + "\n"
                             for p in benchmark_images(tmp_path)))  # fmt: skip
    tree: dict[str, Any] = {
        "run_dir": str(tmp_path / "run"),
        "images": {"path": str(pool)},
        "teacher": {"model": str(teacher_file), "backend": "scripted"},
        "student": {"model": str(student_file), "backend": "scripted"},
        "evaluate": {
            "benchmarks": [{"name": "jsonl", "data_dir": str(bench)}],
            "models": ["teacher", "student_before"],
        },
    }
    for name, values in sections.items():
        tree.setdefault(name, {}).update(values)
    return tree


def test_the_gap_is_exactly_what_the_student_does_not_know(tmp_path: Path, pool: Path) -> None:
    tree = scripted_tree(tmp_path, pool)
    manifests = run_pipeline(build_config(tree), ["annotate", "identify", "evaluate"])
    assert manifests["annotate"]["counts"]["qa_pairs"] == 12
    rows = list(iter_jsonl(Path(tree["run_dir"]) / "identify" / "candidates.jsonl"))
    selected = {r["image_path"] for r in rows if r["selected"]}
    unknown = {str(p) for p in pool.glob("*.png") if p.stem.split("_")[1] not in STUDENT_KNOWS}
    assert selected == unknown and len(selected) == 8
    assert {r["reason"] for r in rows if not r["selected"]} == {"student_correct"}
    summary = json.loads((Path(tree["run_dir"]) / "evaluate" / "summary.json").read_text())["jsonl"]
    assert summary["teacher"] == 1.0 and summary["student_before"] == pytest.approx(4 / 12)


def test_a_rerun_skips_and_a_changed_student_is_refused(
    tmp_path: Path, pool: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = scripted_tree(tmp_path, pool)
    run_pipeline(build_config(tree), ["annotate", "identify"])
    before = {p: p.read_bytes() for p in Path(tree["run_dir"]).rglob("*.jsonl")}
    run_pipeline(build_config(tree), ["annotate", "identify"])
    assert {p: p.read_bytes() for p in Path(tree["run_dir"]).rglob("*.jsonl")} == before
    Script(knows=("red",)).write(Path(tree["student"]["model"]))  # other weights, same path
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tree))
    capsys.readouterr()
    assert main(["run", str(config), "--stages", "annotate,identify"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "identify" in err[0] and "--force" in err[0], err


def test_nothing_selected_exits_1_and_still_writes_the_report(
    tmp_path: Path, pool: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = scripted_tree(tmp_path, pool, student=Script())  # the student knows everything: no gap
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tree))
    assert main(["run", "-q", str(config), "--stages", "annotate,identify,level"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to train on" in err[0], err
    report = (Path(tree["run_dir"]) / "report.md").read_text()
    assert "nothing was selected" in report.lower()


def test_level_reaches_the_student_through_its_backend_and_a_scripted_one_is_refused(
    tmp_path: Path, pool: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Training goes through the backend layer (`load_training`): a scripted student has no weights, so level stops
    with a config error naming what to do, after the gap was found and without writing a level manifest."""
    tree = scripted_tree(tmp_path, pool)
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tree))
    assert main(["run", "-q", str(config), "--stages", "annotate,identify,level"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scripted" in err[0] and "--stages" in err[0], err
    run = Path(tree["run_dir"])
    assert (run / "identify" / "manifest.json").exists() and not (run / "level" / "manifest.json").exists()


def test_every_request_failing_exits_1_and_the_rerun_resumes(
    tmp_path: Path, pool: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = scripted_tree(tmp_path, pool)
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tree))
    monkeypatch.setenv("MPA_SCRIPTED_FAIL", "*")  # the teacher's server is down
    assert main(["run", "-q", str(config), "--stages", "annotate"]) == 1
    assert "every request of a batch" in capsys.readouterr().err
    monkeypatch.delenv("MPA_SCRIPTED_FAIL")  # and back
    assert main(["run", "-q", str(config), "--stages", "annotate"]) == 0
    assert len(list(iter_jsonl(Path(tree["run_dir"]) / "annotate" / "qa.jsonl"))) == 12


def test_config_errors_exit_2(tmp_path: Path, pool: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = scripted_tree(tmp_path, pool, identify={"strategy": "nope"})
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tree))
    assert main(["run", str(config)]) == 2
    assert "identify.strategy" in capsys.readouterr().err


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_run_directory_files_follow_the_umask(tmp_path: Path, pool: Path, umask: int) -> None:
    tree = scripted_tree(tmp_path, pool)
    old = os.umask(umask)
    try:
        from mpa import rundir

        rundir.file_mode.cache_clear()
        run_pipeline(build_config(tree), ["annotate", "identify"])
    finally:
        os.umask(old)
        rundir.file_mode.cache_clear()
    files = [p for p in Path(tree["run_dir"]).rglob("*") if p.is_file()]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o666 & ~umask}, files


def test_every_stage_writes_what_the_contract_declares(tmp_path: Path, pool: Path) -> None:
    """Manifest counts are exactly the declared keys; every declared file exists (level: tests/test_level.py)."""
    from mpa.contract import STAGES

    tree = scripted_tree(tmp_path, pool)
    manifests = run_pipeline(build_config(tree), ["annotate", "identify", "evaluate"])
    run = Path(tree["run_dir"])
    for name, manifest in manifests.items():
        stage = STAGES[name]
        assert set(manifest["counts"]) == set(stage.counts.model_fields), name
        assert "{" not in stage.headline.format_map(manifest["counts"])
        assert (run / name / "manifest.json").is_file()
        for rel in stage.writes:
            if "<" not in rel:
                assert (run / rel).exists(), rel
    assert manifests["evaluate"]["counts"] == {"units": 2, "units_run": 2}
    again = run_pipeline(build_config(tree), ["evaluate"])["evaluate"]
    assert again["counts"]["units_run"] == 2 and again["finished_at"] == manifests["evaluate"]["finished_at"]


def test_evaluation_usage_and_cost_reach_the_manifest_and_the_report(tmp_path: Path, pool: Path) -> None:
    tree = scripted_tree(tmp_path, pool)
    tree["teacher"].update(cost_per_1k_prompt_tokens=1.0, cost_per_1k_completion_tokens=2.0)
    run_pipeline(build_config(tree), ["annotate", "identify", "evaluate"])
    run = Path(tree["run_dir"])
    unit = json.loads((run / "evaluate" / "teacher" / "jsonl" / "manifest.json").read_text())["usage"]["teacher"]
    assert unit["requests"] == 12 and unit["completion_tokens"] == 12 and unit["prompt_tokens"] > 12
    assert unit["cost_usd"] == pytest.approx((unit["prompt_tokens"] + 2 * unit["completion_tokens"]) / 1000)
    from mpa.report import write_report

    write_report(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["usage"]["evaluate"]["teacher"]["requests"] == 12


def test_the_scripted_backend_refuses_an_adapter(tmp_path: Path) -> None:
    """Part of the backend contract (tests/test_backend_contract.py): an adapter is applied or refused."""
    from mpa.backends import load_backend
    from mpa.config import ConfigError, model_config

    script = Script().write(tmp_path / "m.json")
    with pytest.raises(ConfigError, match="no weights to apply the adapter"):
        load_backend(model_config(model=str(script), backend="scripted", adapter=str(tmp_path)))
