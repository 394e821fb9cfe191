"""Reviewer decisions (`mpa.review`) and the run-directory lock, on scripted runs (no weights; fast suite).

What `level` then trains on is checked on a real tiny model in tests/test_view.py (Chromium → `mpa level`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mpa.cli import main
from mpa.config import LevelConfig, build_config
from mpa.errors import MPAError, RunBusyError
from mpa.pipeline import plan, run_pipeline, stage_fingerprints
from mpa.records import CandidateRecord
from mpa.review import apply_review, current_decisions, record_decisions, review_summary
from mpa.rundir import RunDir, iter_jsonl, read_records
from mpa.stages.level import split_data
from tests.test_stages_scripted import pool, scripted_tree  # noqa: F401  (pool is a fixture)


@pytest.fixture
def identified(tmp_path: Path, pool: Path) -> Path:  # noqa: F811
    """A scripted run through identify: 12 candidates, 8 selected (the colours the student does not know)."""
    tree = scripted_tree(tmp_path, pool)
    run_pipeline(build_config(tree), ["annotate", "identify"])
    return Path(tree["run_dir"])


def candidates(run: Path) -> list[CandidateRecord]:
    return list(read_records(run / "identify" / "candidates.jsonl", CandidateRecord))


def test_rejected_leave_every_set_and_accepted_join_the_gap(identified: Path) -> None:
    cands = candidates(identified)
    selected = [c.qa_id for c in cands if c.selected]
    known = [c.qa_id for c in cands if c.student_correct]
    record_decisions(identified, selected[:2], "reject", "ann")
    record_decisions(identified, known[:1], "accept", "bob")
    record_decisions(identified, [selected[2]], "reject", "ann")
    record_decisions(identified, [selected[2]], "clear", "ann")  # withdrawn: selected again
    decisions = current_decisions(identified)
    assert {q: d.decision for q, d in decisions.items()} == {selected[0]: "reject", selected[1]: "reject",
                                                             known[0]: "accept"}  # fmt: skip
    reviewed = apply_review(cands, decisions)
    assert {c.qa_id for c in reviewed} == {c.qa_id for c in cands} - set(selected[:2])
    added = next(c for c in reviewed if c.qa_id == known[0])
    assert added.selected and added.reason == "accepted"
    data = split_data(reviewed, LevelConfig(val_fraction=0.3, retention_ratio=1.0), seed=0)
    used = {c.qa_id for rows in data.values() for c in rows}
    assert not used & set(selected[:2]) and selected[2] in used
    assert known[0] in {c.qa_id for c in data["gap"] + data["val"]}
    log = list(iter_jsonl(identified / "review" / "decisions.jsonl"))
    assert len(log) == 5 and {r["who"] for r in log} == {"ann", "bob"} and all(r["at"].endswith("+00:00") for r in log)
    summary = review_summary(identified)
    assert summary is not None
    assert (summary["rejected"], summary["accepted"], summary["rejected_from_selected"]) == (2, 1, 2)
    assert summary["added_to_selected"] == 1 and summary["reviewers"] == {"ann": 2, "bob": 1}
    # the report (md, html) and summary.json say what the review changed
    from mpa.report import write_report

    paths = write_report(identified)
    assert json.loads(paths["summary"].read_text())["review"] == summary
    line = "2 rejected (2 of them selected), 1 accepted (1 added to the selection) by ann (2), bob (1)"
    assert line in paths["md"].read_text() and line in paths["html"].read_text()


def test_decisions_are_part_of_levels_fingerprint_and_re_level_without_force(identified: Path) -> None:
    cfg = build_config(_tree(identified))
    rd = RunDir(identified)
    before = stage_fingerprints(cfg, rd)["level"]
    assert "review" not in before[1]  # a run nobody reviewed keeps the fingerprint it always had
    # Pretend level finished with no decisions: a new decision re-levels (plan: run), another change is refused.
    rd.begin("level", *before)
    rd.finish("level", *before, {"counts": {}})
    sel = next(c.qa_id for c in candidates(identified) if c.selected)
    record_decisions(identified, [sel], "reject", "ann")
    after = stage_fingerprints(cfg, rd)["level"]
    assert after[0] != before[0] and after[1]["review"]
    row = next(r for r in plan(cfg, rd) if r["stage"] == "level")
    assert row["action"] == "run"
    changed = build_config(_tree(identified), ["level.epochs=7"])
    row = next(r for r in plan(changed, rd) if r["stage"] == "level")
    assert row["action"] == "refuse" and "level.epochs" in row["detail"]
    record_decisions(identified, [sel], "clear", "ann")  # back to no decisions: the old fingerprint
    assert stage_fingerprints(cfg, rd)["level"][0] == before[0]


def test_an_unknown_qa_id_is_refused_and_nothing_is_written(identified: Path) -> None:
    known = [c.qa_id for c in candidates(identified)]
    with pytest.raises(MPAError, match="no candidate 'nope'"):
        record_decisions(identified, [known[0], "nope"], "reject", "ann", known=known)
    assert not (identified / "review" / "decisions.jsonl").exists()


HOLDER = textwrap.dedent("""
    import sys, time
    from mpa.rundir import hold_run_dir
    with hold_run_dir(sys.argv[1], "mpa run cfg.yaml (test holder)"):
        print("held", flush=True)
        time.sleep(120)
""")


def test_nothing_writes_while_another_process_changes_the_run(
    identified: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(identified)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        qa = candidates(identified)[0].qa_id
        with pytest.raises(RunBusyError, match=rf"pid {holder.pid}: mpa run cfg.yaml \(test holder\)"):
            record_decisions(identified, [qa], "reject", "ann")
        assert not (identified / "review" / "decisions.jsonl").exists()
        # `mpa run` on the same directory: one line, exit 1, nothing changed
        code = main(["identify", "--run-dir", str(identified)])
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1 and "being changed by another mpa process" in err
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # the kernel drops the flock with the process: no stale lock
        holder.wait()
    record_decisions(identified, [qa], "reject", "ann")
    assert len(current_decisions(identified)) == 1


def _tree(run: Path) -> dict[str, object]:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())
