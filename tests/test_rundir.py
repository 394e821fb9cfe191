"""Run-directory bookkeeping: JSONL repair, atomic manifests, fingerprints and stage conflicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpa.errors import MPAError
from mpa.rundir import (
    JsonlWriter,
    RunDir,
    StageConflictError,
    changed_keys,
    done_keys,
    fingerprint,
    iter_jsonl,
    repair_jsonl,
)


def test_torn_last_line_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with JsonlWriter(path) as w:
        w.write_many([{"k": "a"}, {"k": "b"}])
    with path.open("a") as handle:
        handle.write('{"k": "c", "val')  # a crash mid-write
    assert [r["k"] for r in iter_jsonl(path)] == ["a", "b"]  # readers ignore the torn tail
    assert repair_jsonl(path) == len('{"k": "c", "val')
    assert done_keys(path, "k") == {"a", "b"}
    with JsonlWriter(path) as w:
        w.write_many([{"k": "c"}])
    assert [json.loads(line)["k"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_corrupt_middle_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"k": 1}\nnot json\n{"k": 2}\n')
    with pytest.raises(MPAError, match=r"r\.jsonl:2: corrupt record"):
        list(iter_jsonl(path))


def test_fingerprint_is_order_independent() -> None:
    assert fingerprint({"a": 1, "b": {"c": 2}}) == fingerprint({"b": {"c": 2}, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_changed_keys_are_dotted() -> None:
    assert changed_keys({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 0}) == ["a.c", "d"]


def test_stage_lifecycle(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    settings = {"x": 1}
    fp = fingerprint(settings)
    assert rd.begin("annotate", fp, settings) is True  # fresh: run
    assert rd.begin("annotate", fp, settings) is True  # started, not finished: resume
    rd.finish("annotate", fp, settings, {"counts": {"n": 3}})
    assert rd.begin("annotate", fp, settings) is False  # complete: skip
    assert rd.require("annotate")["counts"] == {"n": 3}
    other = {"x": 2}
    with pytest.raises(StageConflictError, match="changed: x"):
        rd.begin("annotate", fingerprint(other), other)
    (tmp_path / "identify").mkdir()
    (tmp_path / "identify" / "marker").write_text("")
    assert rd.begin("annotate", fingerprint(other), other, force=True) is True
    assert not (tmp_path / "identify").exists()  # later stages are cleared with --force
    assert rd.manifest("annotate") is None


def test_interrupted_stage_with_other_settings_is_refused(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    rd.begin("identify", fingerprint({"m": "exact"}), {"m": "exact"})
    with pytest.raises(StageConflictError, match="changed: m"):
        rd.begin("identify", fingerprint({"m": "compat"}), {"m": "compat"})


def test_require_names_the_missing_stage(tmp_path: Path) -> None:
    with pytest.raises(StageConflictError, match="stage 'annotate' has not finished"):
        RunDir(tmp_path).require("annotate")


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    rd.begin("annotate", "f", {})
    path = tmp_path / "annotate" / "started.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema_version": 99}))
    with pytest.raises(StageConflictError, match="another mpa version"):
        rd.check_version()


def test_records_are_read_back_as_the_type_they_were_written_as(tmp_path: Path) -> None:
    from mpa.errors import MPAError
    from mpa.records import QARecord
    from mpa.rundir import read_records

    good = QARecord(qa_id="a/0/0", image_id="a", image_path="a.png", question="q?", pseudo_answer="red",
                    answer_type="other")  # fmt: skip
    path = tmp_path / "qa.jsonl"
    path.write_text(good.model_dump_json() + "\n" + good.model_dump_json().replace('"other"', '"colour"') + "\n")
    records = read_records(path, QARecord)
    assert next(records) == good
    with pytest.raises(MPAError, match=r"qa\.jsonl:2: not a QARecord \(answer_type: .*delete the stage folder"):
        next(records)


def test_one_resume_rule() -> None:
    from mpa.rundir import resume_decision

    settings = {"a": 1, "b": {"c": 2}}
    begun = {"fingerprint": "f1", "settings": settings}
    assert resume_decision(None, False, "f1", settings).action == "run"
    assert resume_decision(begun, True, "f1", settings).action == "skip"
    assert resume_decision(begun, False, "f1", settings).action == "resume"
    refused = resume_decision(begun, True, "f2", {"a": 1, "b": {"c": 3}})
    assert refused.action == "refuse" and refused.changed == ("b.c",) and "b.c" in refused.detail
