"""End to end on tiny real models: `mpa run` leaves every artifact; reruns skip; changed settings are refused;
an interrupted stage resumes to the same records as an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mpa.backends import GenRequest, GenResult, load_backend
from mpa.cli import main
from mpa.config import MPAConfig, build_config
from mpa.pipeline import run_pipeline
from mpa.records import AnnotationRecord, AnswerRecord, CandidateRecord, ImageRecord, QARecord
from mpa.rundir import RunDir, iter_jsonl
from mpa.stages import annotate, identify


def make_tree(run_dir: Path, teacher: Path, student: Path, images: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {
        "run_dir": str(run_dir),
        "images": {"path": str(images)},
        "teacher": {"model": str(teacher), "batch_size": 8},
        "student": {"model": str(student), "batch_size": 8},
        "annotate": {"max_new_tokens": 32},
        "level": {"epochs": 2, "batch_size": 4, "learning_rate": 0.003, "val_fraction": 0.0},
    }
    for name, values in sections.items():
        tree.setdefault(name, {}).update(values)
    return tree


@pytest.fixture
def tree(tmp_path: Path, tiny_teacher_dir: Path, tiny_student_dir: Path, color_images: Path) -> dict[str, Any]:
    return make_tree(tmp_path / "run", tiny_teacher_dir, tiny_student_dir, color_images)


def _records(path: Path) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


def test_full_run_via_cli_leaves_every_artifact(tree: dict[str, Any], tmp_path: Path) -> None:
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(tree))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mpa.cli", "run", str(cfg_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "parity funnel: images 20" in proc.stdout
    run = Path(tree["run_dir"])
    for rel in [
        "config.yaml", "timings.json",
        "annotate/images.jsonl", "annotate/annotations.jsonl", "annotate/qa.jsonl", "annotate/manifest.json",
        "identify/teacher_answers.jsonl", "identify/student_answers.jsonl", "identify/candidates.jsonl",
        "identify/parity.jsonl", "identify/export/parity_llava.json", "identify/export/parity_sharegpt.json",
        "identify/manifest.json", "level/adapter/adapter_config.json", "level/metrics.json", "level/manifest.json",
    ]:  # fmt: skip
        assert (run / rel).is_file(), rel
    # Every record matches its schema.
    schemas = [
        ("annotate/images.jsonl", ImageRecord), ("annotate/annotations.jsonl", AnnotationRecord),
        ("annotate/qa.jsonl", QARecord), ("identify/teacher_answers.jsonl", AnswerRecord),
        ("identify/student_answers.jsonl", AnswerRecord), ("identify/candidates.jsonl", CandidateRecord),
    ]  # fmt: skip
    for rel, schema in schemas:
        for rec in _records(run / rel):
            schema.model_validate(rec)
    # The trained teacher writes parseable pairs for (nearly) every image; the random student fails them.
    counts = json.loads((run / "identify/manifest.json").read_text())["counts"]
    assert counts["images"] == 20 and counts["annotated"] == 20
    assert counts["parseable"] >= 18
    assert counts["teacher_consistent"] >= 14
    assert counts["selected"] == counts["student_fails"] >= 10
    cands = _records(run / "identify/candidates.jsonl")
    assert len(cands) == counts["parseable"]
    for c in cands:
        assert c["selected"] == (c["teacher_agrees"] and not c["student_correct"])
        assert (c["reason"] == "selected") == c["selected"]
    assert sum(counts["reasons"].values()) == len(cands)
    llava = json.loads((run / "identify/export/parity_llava.json").read_text())
    assert len(llava) == counts["selected"]
    assert llava[0]["conversations"][0]["value"].startswith("<image>\n")
    assert Path(llava[0]["image"]).is_file()
    level = json.loads((run / "level/manifest.json").read_text())
    assert level["counts"]["train"] == counts["selected"]
    losses = [h["loss"] for h in json.loads((run / "level/metrics.json").read_text())["log_history"] if "loss" in h]
    assert losses[-1] < losses[0]


def test_records_load_with_datasets(tree: dict[str, Any]) -> None:
    import datasets

    run_pipeline(build_config(tree), ["annotate", "identify"])
    run = Path(tree["run_dir"])
    for rel in ["annotate/qa.jsonl", "annotate/annotations.jsonl", "identify/candidates.jsonl"]:
        ds = datasets.load_dataset("json", data_files=str(run / rel), split="train")
        assert len(ds) == len(_records(run / rel)) > 0


def test_rerun_skips_and_changed_settings_are_refused(tree: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    cfg = build_config(tree)
    run_pipeline(cfg, ["annotate", "identify"])
    run = Path(tree["run_dir"])
    stamps = {p: p.stat().st_mtime_ns for p in run.rglob("*.jsonl")}
    run_pipeline(cfg, ["annotate", "identify"])
    assert stamps == {p: p.stat().st_mtime_ns for p in run.rglob("*.jsonl")}
    # A different matcher: identify is refused with the changed key named; nothing is modified.
    rc = main(["identify", "--run-dir", str(run), "--matcher", "compat"])
    err = capsys.readouterr().err
    assert rc == 2 and "identify.matcher" in err and "--force" in err
    assert stamps == {p: p.stat().st_mtime_ns for p in run.rglob("*.jsonl")}
    # `mpa validate` shows the same plan without running anything.
    assert main(["validate", "--run-dir", str(run), "--matcher", "compat"]) == 0
    out = capsys.readouterr().out
    assert "annotate  skip" in out and "identify  refuse  changed: identify.matcher" in out
    # --force redoes identify (and only it), with the new matcher.
    assert main(["identify", "--run-dir", str(run), "--matcher", "compat", "--force"]) == 0
    manifest = json.loads((run / "identify/manifest.json").read_text())
    assert manifest["settings"]["identify"]["matcher"] == "compat"
    assert (run / "annotate/qa.jsonl").stat().st_mtime_ns == stamps[run / "annotate/qa.jsonl"]


class CrashAfter:
    """A real backend that raises after `calls` generate calls: a crash in the middle of a stage."""

    def __init__(self, cfg: Any, calls: int) -> None:
        self.inner = load_backend(cfg)
        self.name = "hf"
        self.left = calls

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        if self.left == 0:
            raise KeyboardInterrupt("simulated crash")
        self.left -= 1
        return self.inner.generate(requests)

    def close(self) -> None:
        self.inner.close()


def test_interrupted_stages_resume_to_the_same_records(
    tmp_path: Path, tiny_teacher_dir: Path, tiny_student_dir: Path, color_images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(annotate, "CHUNK_IMAGES", 4)
    monkeypatch.setattr(identify, "CHUNK_QUESTIONS", 4)
    sampled = {"temperature": 1.0, "samples_per_image": 2}

    def cfg_for(name: str) -> MPAConfig:
        tree = make_tree(tmp_path / name, tiny_teacher_dir, tiny_student_dir, color_images, annotate=sampled)
        return build_config(tree)

    ref = cfg_for("ref")
    run_pipeline(ref, ["annotate", "identify"])
    cfg = cfg_for("crash")
    rd = RunDir(cfg.run_dir)
    with pytest.raises(KeyboardInterrupt):
        annotate.run(cfg, rd, backend=CrashAfter(cfg.teacher, 2))
    assert rd.manifest("annotate") is None
    ann = Path(cfg.run_dir) / "annotate/annotations.jsonl"
    assert 0 < len(_records(ann)) < 40
    with ann.open("a") as handle:
        handle.write('{"key": "torn')  # killed mid-write
    annotate.run(cfg, rd)
    with pytest.raises(KeyboardInterrupt):
        identify.run(cfg, rd, teacher=CrashAfter(cfg.teacher, 1))
    identify.run(cfg, rd)
    for rel in ["annotate/annotations.jsonl", "identify/teacher_answers.jsonl", "identify/student_answers.jsonl"]:
        key = "key" if "annotations" in rel else "qa_id"
        got = sorted(_records(Path(cfg.run_dir) / rel), key=lambda r: r[key])
        want = sorted(_records(Path(ref.run_dir) / rel), key=lambda r: r[key])
        assert [r[key] for r in got] == [r[key] for r in want]  # zero lost, zero duplicated
        assert got == want  # same seeded samples despite other batch boundaries
    for rel in ["annotate/qa.jsonl", "identify/candidates.jsonl", "identify/parity.jsonl"]:
        assert (Path(cfg.run_dir) / rel).read_text() == (Path(ref.run_dir) / rel).read_text()


@pytest.mark.parametrize("strategy", ["all", "random", "teacher_consistent", "student_fails"])
def test_selection_strategies(tree: dict[str, Any], strategy: str) -> None:
    base = run_pipeline(build_config(tree), ["annotate", "identify"])["identify"]["counts"]
    tree["identify"] = {"strategy": strategy}
    counts = run_pipeline(build_config(tree), ["identify"], force=True)["identify"]["counts"]
    cands = _records(Path(tree["run_dir"]) / "identify/candidates.jsonl")
    expected = {
        "all": base["parseable"],
        "random": base["selected"],
        "teacher_consistent": base["teacher_consistent"],
        "student_fails": sum(not c["student_correct"] for c in cands),
    }[strategy]
    assert counts["selected"] == expected
    if strategy == "random":
        assert counts["reasons"]["not_sampled"] == base["parseable"] - base["selected"]


def test_bad_and_duplicate_images_are_recorded_not_fatal(
    tree: dict[str, Any], color_images: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "mixed images"
    folder.mkdir()
    first = sorted(color_images.glob("*.png"))[:3]
    for p in first:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "copy of first.png").write_bytes(first[0].read_bytes())
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    (folder / "cut.png").write_bytes(first[1].read_bytes()[:60])
    tree["images"]["path"] = str(folder)
    counts = run_pipeline(build_config(tree), ["annotate"])["annotate"]["counts"]
    assert counts["images"] == 7
    assert (counts["images_ok"], counts["images_duplicate"], counts["images_skipped"]) == (3, 1, 3)
    assert counts["generations"] == 3  # the duplicate is annotated once
    recs = {Path(r["source"]).name: r for r in _records(Path(tree["run_dir"]) / "annotate/images.jsonl")}
    assert recs["empty.png"]["reason"] == "empty file"
    assert recs["notes.jpg"]["reason"].startswith("not a decodable image")
    # Sorted order: "copy of first.png" comes first, so the original file is the duplicate of it.
    assert recs["copy of first.png"]["status"] == "ok"
    dup = recs[first[0].name]
    assert dup["status"] == "duplicate" and dup["reason"].endswith("copy of first.png")
    assert dup["image_id"] == recs["copy of first.png"]["image_id"]


def test_list_file_and_hf_dataset_inputs(tree: dict[str, Any], color_images: Path, tmp_path: Path) -> None:
    import datasets

    paths = sorted(color_images.glob("*.png"))[:4]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in paths) + "\n")
    tree["images"]["path"] = str(listing)
    by_list = run_pipeline(build_config(tree), ["annotate"])["annotate"]["counts"]
    assert by_list["images_ok"] == 4
    ds = datasets.Dataset.from_dict({"picture": [str(p) for p in paths]}).cast_column("picture", datasets.Image())
    ds.save_to_disk(str(tmp_path / "ds"))
    tree2 = {
        **tree,
        "run_dir": str(tmp_path / "run_ds"),
        "images": {"path": str(tmp_path / "ds"), "image_column": "picture"},
    }
    by_ds = run_pipeline(build_config(tree2), ["annotate"])["annotate"]["counts"]
    assert by_ds["images_ok"] == 4 and by_ds["qa_pairs"] == by_list["qa_pairs"]
    qa = _records(tmp_path / "run_ds/annotate/qa.jsonl")
    assert all(Path(q["image_path"]).is_file() for q in qa)  # dataset images are materialised in the run dir


def test_empty_image_folder_is_a_clear_error(
    tree: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "nothing").mkdir()
    tree["images"]["path"] = str(tmp_path / "nothing")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(tree))
    assert main(["run", str(cfg_path)]) == 2
    assert "no images found" in capsys.readouterr().err


def test_image_gone_before_identify_is_failed_not_answered_blind(tree: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "imgs"
    shutil.copytree(tree["images"]["path"], folder)
    tree["images"]["path"] = str(folder)
    cfg = build_config(tree)
    run_pipeline(cfg, ["annotate"])
    gone = sorted(folder.glob("*.png"))[0]
    gone.unlink()
    counts = run_pipeline(cfg, ["identify"])["identify"]["counts"]
    run = Path(tree["run_dir"])
    failed = [c for c in _records(run / "identify/candidates.jsonl") if c["reason"] == "failed"]
    assert failed and all(c["image_path"] == str(gone.resolve()) for c in failed)
    assert not any(c["selected"] for c in failed) and counts["reasons"]["failed"] == len(failed)
    answers = {r["qa_id"]: r for r in _records(run / "identify/student_answers.jsonl")}
    assert all(answers[c["qa_id"]]["raw"] == [] and "empty file" not in answers[c["qa_id"]]["error"] for c in failed)


def test_new_images_change_the_annotate_fingerprint(tree: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    from mpa.errors import StageConflictError

    folder = tmp_path / "imgs"
    shutil.copytree(tree["images"]["path"], folder)
    tree["images"]["path"] = str(folder)
    listing = tmp_path / "twice.txt"
    first = sorted(folder.glob("*.png"))[0]
    listing.write_text(f"{first}\n{first}\n")  # a path listed twice is used once
    once = run_pipeline(build_config({**tree, "run_dir": str(tmp_path / "r2"), "images": {"path": str(listing)}}),
                        ["annotate"])  # fmt: skip
    assert once["annotate"]["counts"]["images"] == 1
    run_pipeline(build_config(tree), ["annotate"])
    shutil.copy(first, folder / "zz_new.png")
    with pytest.raises(StageConflictError, match="changed: sources"):
        run_pipeline(build_config(tree), ["annotate"])


class Flaky:
    """A real backend whose requests fail when their key is in `failing` (like a flaky API answering 500s)."""

    def __init__(self, cfg: Any, failing: set[str]) -> None:
        self.inner, self.name, self.failing = load_backend(cfg), "hf", failing

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        ok = [r for r in requests if r.key not in self.failing]
        by_key = {r.key: r for r in self.inner.generate(ok)} if ok else {}
        return [by_key.get(r.key) or GenResult(key=r.key, error="APIError: 503 overloaded") for r in requests]

    def close(self) -> None:
        self.inner.close()


def test_retry_failed_reopens_finished_stages_and_redoes_what_follows(
    tree: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = run_pipeline(build_config({**tree, "run_dir": str(tmp_path / "ref")}), ["annotate", "identify"])
    cfg = build_config(tree)
    failing = {r["image_id"] for r in _records(tmp_path / "ref/annotate/images.jsonl")[:5]}
    monkeypatch.setattr(annotate, "load_backend", lambda model, engine=None: Flaky(model, failing))
    first = run_pipeline(cfg, ["annotate", "identify"])
    assert first["annotate"]["io"]["failed"] == {"generation failed": 5}
    assert first["identify"]["counts"]["parseable"] < ref["identify"]["counts"]["parseable"]
    monkeypatch.undo()
    again = run_pipeline(cfg, ["annotate", "identify"])  # a plain rerun keeps the finished stages
    assert again["annotate"]["finished_at"] == first["annotate"]["finished_at"]
    retried = run_pipeline(cfg, ["annotate", "identify"], retry_failed=True)
    assert retried["annotate"]["io"]["failed"] == {} and retried["annotate"]["counts"] == ref["annotate"]["counts"]
    assert retried["identify"]["counts"] == ref["identify"]["counts"]  # identify was redone on the full set
    run = Path(tree["run_dir"])
    anns = _records(run / "annotate/annotations.jsonl")
    assert len(anns) == 20 + 5  # only the 5 failed generations were redone (the failed records stay, superseded)
    for rel in ["annotate/qa.jsonl", "identify/candidates.jsonl", "identify/parity.jsonl"]:
        assert (run / rel).read_text() == (tmp_path / "ref" / rel).read_text()


def test_changing_only_the_decision_rule_reuses_the_answers(
    tree: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mpa.errors import StageConflictError

    run = Path(tree["run_dir"])
    exact = run_pipeline(build_config(tree), ["annotate", "identify"])["identify"]["counts"]
    answers = {n: (run / "identify" / n).read_bytes() for n in ("teacher_answers.jsonl", "student_answers.jsonl")}
    tree["identify"] = {"matcher": "compat", "strategy": "teacher_consistent"}
    with pytest.raises(StageConflictError, match=r"identify\.matcher"):
        run_pipeline(build_config(tree), ["identify"])

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded although only the decision rule changed")

    monkeypatch.setattr(identify, "load_backend", no_model)
    counts = run_pipeline(build_config(tree), ["identify"], force=True)["identify"]["counts"]
    assert {n: (run / "identify" / n).read_bytes() for n in answers} == answers
    assert counts["selected"] == counts["teacher_consistent"] and counts["parseable"] == exact["parseable"]
    cands = _records(run / "identify/candidates.jsonl")
    assert all(c["selected"] == c["teacher_agrees"] for c in cands if c["reason"] != "failed")
    tree["identify"]["max_new_tokens"] = 8  # changes the answers themselves: they are asked for again
    with pytest.raises(AssertionError, match="a model was loaded"):
        run_pipeline(build_config(tree), ["identify"], force=True)
