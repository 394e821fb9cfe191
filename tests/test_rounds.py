"""Rounds (mpa.rounds): each round levels the previous round's student; every round resumes like a stage; the
label-free stop rule; pool slices."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from mpa.config import ConfigError, build_config
from mpa.rounds import next_round, run_rounds
from mpa.rundir import RunDir, iter_jsonl
from tests.test_pipeline import make_tree


def _base(tmp_path: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    return {"run_dir": str(tmp_path / "run"), "images": {"path": str(tmp_path)}, "teacher": {"model": "t"},
            "student": {"model": "s"}, **sections}  # fmt: skip


def test_lora_rounds_need_a_merged_model_to_start_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"level\.merge: true"):
        build_config(_base(tmp_path, rounds={"count": 2}))
    build_config(_base(tmp_path, rounds={"count": 2}, level={"merge": True}))
    build_config(_base(tmp_path, rounds={"count": 2}, level={"method": "full"}))


def test_a_round_starts_from_the_previous_round_and_slices_the_pool(tmp_path: Path) -> None:
    cfg = build_config(_base(tmp_path, rounds={"count": 3, "pool": "slices"}, level={"merge": True}))
    level = {"merged": "/runs/x/level/merged", "student_after": {"model": "s", "adapter": "/runs/x/level/adapter"}}
    r2 = next_round(cfg, 2, level)
    assert r2.student.model == "/runs/x/level/merged" and r2.student.adapter is None
    assert r2.images.part == (2, 3) and r2.run_dir == str(tmp_path / "run" / "rounds" / "2")
    assert r2.evaluate.models == ["student_after"]
    full = {"student_after": {"model": "/runs/x/level/model", "adapter": None}}
    assert next_round(cfg, 3, full).student.model == "/runs/x/level/model"


def test_pool_parts_split_the_sources(tmp_path: Path) -> None:
    from mpa.images import list_sources

    for i in range(7):
        (tmp_path / f"{i}.png").write_bytes(b"x")
    cfg = build_config(_base(tmp_path))
    every = [s.source for s in list_sources(cfg.images)]
    parts = [[s.source for s in list_sources(cfg.images.model_copy(update={"part": (i, 3)}))] for i in (1, 2, 3)]
    assert sorted(s for part in parts for s in part) == sorted(every) and all(parts)
    with pytest.raises(ConfigError, match=r"images\.part"):
        build_config(_base(tmp_path, images={"path": str(tmp_path), "part": [4, 3]}))


def _finished(run_dir: Path) -> dict[str, float]:
    return {str(p.relative_to(run_dir)): json.loads(p.read_text())["finished_at"]
            for p in sorted(run_dir.glob("**/manifest.json")) if "contamination" not in str(p)}  # fmt: skip


def test_rounds_chain_the_students_and_resume_after_a_kill_between_rounds(
    tmp_path: Path, tiny_teacher_dir: Path, tiny_student_dir: Path, color_images: Path
) -> None:
    tree = make_tree(tmp_path / "run", tiny_teacher_dir, tiny_student_dir, color_images,
                     level={"method": "full", "val_fraction": 0.3, "epochs": 1},
                     rounds={"count": 2, "stop_early": False})  # fmt: skip
    run_dir = Path(tree["run_dir"])
    run_rounds(build_config(tree))
    table = json.loads((run_dir / "rounds.json").read_text())
    assert [r["round"] for r in table["rounds"]] == [1, 2]
    # a round's student is the previous round's leveled model, and its weights are in the fingerprint
    for r, previous in ((2, run_dir),):
        student = RunDir(run_dir / "rounds" / str(r)).require("identify")["settings"]["student"]
        assert student["model"] == str(previous / "level" / "model") and student["weights"]
        # the teacher's answers were reused (same teacher, same questions): only the student was asked
        roles = {u["role"] for u in iter_jsonl(run_dir / "rounds" / str(r) / "identify" / "usage.jsonl")}
        assert roles == {"student"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"]["rounds"] == table["rounds"]
    assert all(r["val_gain"] is not None for r in table["rounds"])

    # killed between rounds 1 and 2: round 1 is skipped, round 2 runs again to the same table
    done = _finished(run_dir)
    shutil.rmtree(run_dir / "rounds" / "2")
    (run_dir / "rounds.json").unlink()
    run_rounds(build_config(tree))
    again = _finished(run_dir)
    assert {k: v for k, v in again.items() if not k.startswith("rounds/")} == {
        k: v for k, v in done.items() if not k.startswith("rounds/")
    }
    assert again["rounds/2/level/manifest.json"] > done["rounds/2/level/manifest.json"]
    redone = json.loads((run_dir / "rounds.json").read_text())
    assert [r["selected"] for r in redone["rounds"]] == [r["selected"] for r in table["rounds"]]

    # `mpa publish` hands on the run's result: the final round's student, with that round's fingerprint
    from mpa.publish import publish

    for final in (redone["final_round"], 2):  # as the stop rule chose, and as if it had chosen round 2
        (run_dir / "rounds.json").write_text(json.dumps({**redone, "final_round": final}))
        level = RunDir(run_dir if final == 1 else run_dir / "rounds" / str(final)).require("level")
        model = publish(run_dir, tmp_path / "share").model
        assert model is not None and level["fingerprint"] in (model / "README.md").read_text()
        weights = Path(level["output"]) / "model.safetensors"
        assert (model / "model.safetensors").read_bytes() == weights.read_bytes()


def test_rounds_stop_when_label_free_validation_stops_improving(
    tmp_path: Path, tiny_teacher_dir: Path, tiny_student_dir: Path, color_images: Path
) -> None:
    # a learning rate of ~0 cannot change the student: round 1 gains nothing, so no round 2 runs
    tree = make_tree(tmp_path / "run", tiny_teacher_dir, tiny_student_dir, color_images,
                     level={"method": "full", "val_fraction": 0.3, "epochs": 1, "learning_rate": 1e-12},
                     rounds={"count": 3})  # fmt: skip
    run_rounds(build_config(tree))
    table = json.loads((Path(tree["run_dir"]) / "rounds.json").read_text())
    assert [r["round"] for r in table["rounds"]] == [1]
    assert table["rounds"][0]["val_gain"] == 0.0 and "gained +0.0000" in table["stopped"]
    assert table["final_round"] == 1 and not (Path(tree["run_dir"]) / "rounds" / "2").exists()
