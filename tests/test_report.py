"""`mpa report`: a real tiny run (quiet, with evaluation) → report.html / report.md / summary.json, checked against
the run's own files, for escaping, for partial runs, and rendered in headless Chromium.

The Chromium check needs /usr/bin/chromium (or `chromium` on PATH) and the `playwright` package (dev extra; it
drives the system browser, nothing is downloaded). Without them it is skipped with a line saying how to run it,
except in CI (`CI=true` or MPA_REQUIRE_BROWSER=1, set by .ci/run, which installs Chromium): there it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mpa.cli import main
from mpa.report import GALLERY_SIZE, write_report
from mpa.report.md import cell
from mpa.rundir import iter_jsonl

SECTION_IDS = ["headline", "benchmarks", "funnel", "training", "gallery", "changes", "cost", "config"]
BAR_MARKS = re.compile(r"\r|it/s|img/s|q/s|step/s|s/step|s/it|%\|")  # what a tqdm bar (ours or a library's) prints


def _mpa(*args: str, timeout_s: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "mpa.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout_s)  # fmt: skip


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def test_quiet_run_prints_only_the_table_and_the_report(quiet_run: tuple[Path, Any]) -> None:
    run, proc = quiet_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not BAR_MARKS.search(proc.stderr), f"progress output under --quiet:\n{proc.stderr[-2000:]}"
    assert " INFO " not in proc.stderr
    assert "gap closed" in proc.stdout and "parity funnel: images 20" in proc.stdout
    assert f"report: {run / 'report.html'}" in proc.stdout
    for name in ("report.html", "report.md", "summary.json", "environment.json"):
        assert (run / name).is_file(), name


def test_report_numbers_are_the_run_files_numbers(quiet_run: tuple[Path, Any], capsys: Any) -> None:
    run, _ = quiet_run
    assert main(["report", str(run)]) == 0
    assert f"report: {run / 'report.html'}" in capsys.readouterr().out
    md = (run / "report.md").read_text()
    for title in ("## Benchmarks", "## Parity funnel", "## Training", "## Gallery", "## What the student gained",
                  "## Time and cost", "## Versions"):  # fmt: skip
        assert title in md, title
    assert "Missing" not in md
    # Funnel = the identify manifest's counts.
    counts = json.loads((run / "identify/manifest.json").read_text())["counts"]
    for label, key in [("QA pairs (parsed, accepted)", "parseable"), ("teacher-consistent", "teacher_consistent"),
                       ("student fails", "student_fails"), ("selected", "selected"), ("images", "images")]:  # fmt: skip
        assert re.search(rf"^\| {re.escape(label)} \| {counts[key]} \|", md, re.M), label
    # Scores = the evaluate metrics.
    metrics = {r: json.loads((run / f"evaluate/{r}/jsonl/metrics.json").read_text())["overall"]
               for r in ("teacher", "student_before", "student_after")}  # fmt: skip
    row = next(line for line in md.splitlines() if line.startswith("| **jsonl**"))
    assert [f"{100 * metrics[r]:.1f}%" for r in metrics] == [c.strip() for c in row.split("|")[3:6]]
    # summary.json: the pipeline's keys plus the report's; gained - lost = the change in (binary) accuracy.
    summary = json.loads((run / "summary.json").read_text())
    assert summary["parity"] == counts and summary["stages"] == dict.fromkeys(
        ("annotate", "identify", "level", "evaluate"), "complete"
    )
    ch = summary["changes"]["jsonl"]
    assert ch["n"] == 20
    assert ch["gained"] - ch["lost"] == round(20 * (metrics["student_after"] - metrics["student_before"]))
    assert f"{ch['gained']} questions gained, {ch['lost']} lost, of 20." in md
    assert summary["environment"]["transformers"] and summary["timings_s"]["total"] > 0
    io = summary["io"]  # in / out / skipped / failed per stage and evaluation unit, from the manifests
    assert (
        io["identify"]["in"]["qa_pairs"] == counts["parseable"]
        and io["identify"]["out"]["selected"] == counts["selected"]
    )
    assert (
        io["annotate"]["out"]["qa_pairs"] == counts["parseable"]
        and io["evaluate/teacher/jsonl"]["in"]["questions"] == 20
    )
    # Training curves come from the trainer's log history, with the label-free validation loss.
    history = json.loads((run / "level/metrics.json").read_text())["log_history"]
    # The leveled student's held-out answers (level/val_predictions.jsonl) are the gallery's "student after".
    val = [json.loads(line) for line in (run / "level/val_predictions.jsonl").read_text().splitlines()]
    level_m = json.loads((run / "level/manifest.json").read_text())
    assert val and sum(r["correct"] for r in val) / len(val) == level_m["val_accuracy_after"]
    gallery = md.split("## Gallery")[1].split("## What")[0]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in gallery.splitlines() if line.startswith("| ")]
    after = [r[4] for r in rows if r[0] not in ("question", "---")]
    assert any(a != "—" for a in after) and {a for a in after if a != "—"} <= {cell(r["answer"]) for r in val}
    assert any("eval_loss" in h for h in history) and "best validation loss" in md


def test_html_is_self_contained_with_gallery(quiet_run: tuple[Path, Any]) -> None:
    run, _ = quiet_run
    write_report(run)
    page = (run / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in page, sid
    cands = list(iter_jsonl(run / "identify/candidates.jsonl"))
    n_sel = min(GALLERY_SIZE, sum(c["selected"] for c in cands))
    n_rej = min(GALLERY_SIZE, sum(not c["selected"] for c in cands))
    assert page.count('<figure class="card">') == n_sel + n_rej > 0
    assert page.count('class="thumb" src="data:image/png;base64,') == n_sel + n_rej
    assert page.count('class="plot" src="data:image/png;base64,') == 3  # benchmark, funnel, training curves


def test_untrusted_model_text_is_escaped(quiet_run: tuple[Path, Any], tmp_path: Path) -> None:
    run = _copy(quiet_run[0], tmp_path / "run")
    evil = "<script>alert(1)</script> | x"
    path = run / "identify/candidates.jsonl"
    cands = list(iter_jsonl(path))
    first = next(c for c in cands if c["selected"])
    first.update(student_answer=evil, question=evil)
    path.write_text("".join(json.dumps(c) + "\n" for c in cands))
    preds = run / "evaluate/student_after/jsonl/predictions.jsonl"
    rows = list(iter_jsonl(preds))
    rows[0]["answer"] = '<img src=x onerror="alert(2)">'
    rows[0]["score"] = 1.0 - rows[0]["score"]  # so it shows up among what was gained or lost
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report(run)
    page, md = (run / "report.html").read_text(), (run / "report.md").read_text()
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
    assert "<script" not in md and "&lt;script&gt;alert(1)&lt;/script&gt; \\| x" in md


def test_partial_run_says_what_is_missing(quiet_run: tuple[Path, Any], tmp_path: Path) -> None:
    run = _copy(quiet_run[0], tmp_path / "run")
    shutil.rmtree(run / "level")
    shutil.rmtree(run / "evaluate")
    (run / "timings.json").write_text(json.dumps({"annotate": 1.0, "identify": 2.0}))
    assert main(["report", str(run)]) == 0
    md, page = (run / "report.md").read_text(), (run / "report.html").read_text()
    assert "_Missing — no benchmark scores: the evaluate stage has not run in this run directory._" in md
    assert "_Missing — no leveled student and no training curves: the level stage has not run" in md
    assert "_Missing — no before/after comparison" in md
    assert re.search(r"^\| selected \| \d+ \|", md, re.M)  # the funnel is there
    assert page.count('class="missing"') == 3
    assert page.count('<figure class="card">') > 0 and page.count('class="plot"') == 1  # the funnel plot only
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stages"]["level"] == "not run" and summary["benchmarks"] == {} and summary["level"] == {}
    # Only annotate: no funnel past the QA pairs, no gallery, still a page.
    shutil.rmtree(run / "identify")
    write_report(run)
    md = (run / "report.md").read_text()
    assert "the funnel stops at annotation" in md and "| QA pairs (parsed, accepted) |" in md
    assert "| selected |" not in md


def test_token_usage_and_cost_per_stage_and_model(quiet_run: tuple[Path, Any], tmp_path: Path) -> None:
    """Manifest `usage` as annotate, identify and each evaluate unit write it ({role: counts}, see
    mpa.stages.usage), in the time/cost table and summary.json. Level records no usage: seconds only."""
    run = _copy(quiet_run[0], tmp_path / "run")

    def set_usage(rel: str, usage: dict[str, Any]) -> None:
        manifest = json.loads((run / rel).read_text())
        assert set(manifest["usage"]) == set(usage)  # the roles this stage really records
        (run / rel).write_text(json.dumps({**manifest, "usage": usage}))

    def counts(requests: int, prompt: int, completion: int, cost: float | None) -> dict[str, Any]:
        return {"requests": requests, "failed": 0, "prompt_tokens": prompt, "completion_tokens": completion,
                "cost_usd": cost}  # fmt: skip

    set_usage("annotate/manifest.json", {"teacher": counts(20, 1000, 300, 0.5)})
    set_usage("identify/manifest.json", {"teacher": counts(20, 900, 40, None), "student": counts(20, 800, 60, 0.25)})
    for role in ("teacher", "student_before", "student_after"):
        set_usage(f"evaluate/{role}/jsonl/manifest.json", {role: counts(20, 100, 20, None)})
    write_report(run)
    md = (run / "report.md").read_text()
    assert re.search(r"^\| annotate \| teacher \| [\d.]+ \| 20 \| 1,000 \| 300 \| 0\.5000 \|$", md, re.M)
    assert re.search(r"^\| identify \| teacher \| [\d.]+ \| 20 \| 900 \| 40 \| — \|$", md, re.M)
    assert re.search(r"^\|  \| student \|  \| 20 \| 800 \| 60 \| 0\.2500 \|$", md, re.M)
    assert re.search(r"^\| evaluate \| student_after \| [\d.]+ \| 20 \| 100 \| 20 \| — \|$", md, re.M)
    assert re.search(r"^\|  \| teacher \|  \| 20 \| 100 \| 20 \| — \|$", md, re.M)
    assert re.search(r"^\| level \| — \| [\d.]+ \| — \| — \| — \| — \|$", md, re.M)
    assert re.search(r"^\| \*\*total\*\* \|  \| [\d.]+ \| 120 \| 3,000 \| 460 \| 0\.7500 \|$", md, re.M)
    usage = json.loads((run / "summary.json").read_text())["usage"]
    assert usage["identify"]["student"]["prompt_tokens"] == 800 and usage["identify"]["student"]["cost_usd"] == 0.25
    assert set(usage) == {"annotate", "identify", "evaluate"}
    assert usage["evaluate"]["student_after"]["requests"] == 20


def test_report_errors_are_one_line(tmp_path: Path, capsys: Any) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"mpa: error: {tmp_path / 'nope'}: no such run directory"
    assert main(["report", str(tmp_path)]) == 2
    assert "is not an mpa run directory" in capsys.readouterr().err


def test_level_progress_is_a_plain_line_off_a_terminal(quiet_run: tuple[Path, Any], tmp_path: Path) -> None:
    """Without --quiet and with stderr not a terminal, training progress is plain lines (no carriage returns)."""
    run = _copy(quiet_run[0], tmp_path / "run")
    shutil.rmtree(run / "level")
    proc = _mpa("run", "--run-dir", str(run), "--stages", "level")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\r" not in proc.stderr
    line = r"^level \(train\): (\d+)/\1 step \(100%\) \[.*(step/s|s/step), loss="  # a slow machine shows s/step
    assert re.search(line, proc.stderr, re.M), proc.stderr
    assert re.search(r"INFO mpa.pipeline: level: done in", proc.stderr)


def _browser() -> Any:
    """Playwright driving the system Chromium, or a failure that says what to install."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    required = os.environ.get("CI") == "true" or os.environ.get("MPA_REQUIRE_BROWSER") == "1"
    if chromium is None:
        if not required:
            pytest.skip("no Chromium on PATH: `sudo apt-get install -y chromium` to run the browser check (CI does)")
        pytest.fail("the report test needs Chromium: `apt-get install -y chromium` (.ci/run does this)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if not required:
            pytest.skip("playwright not installed: pip install -c constraints.txt -e '.[dev]'")
        pytest.fail("the report test needs playwright: pip install -c constraints.txt -e '.[dev]'")
    return sync_playwright, chromium


def open_in_chromium(html_path: Path, screenshot: Path) -> dict[str, Any]:
    """Load the page in headless Chromium; returns what the page shows (images loaded, sections, gallery)."""
    sync_playwright, chromium = _browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html_path.resolve().as_uri(), wait_until="load")
            shown = page.evaluate("""() => ({
                images: Array.from(document.images).map(i => ({loaded: i.complete && i.naturalWidth > 0,
                                                                cls: i.className})),
                sections: Array.from(document.querySelectorAll('section[id]')).map(s => s.id),
                cards: document.querySelectorAll('.gallery figure.card img.thumb').length,
                scripts: document.scripts.length,
                height: document.body.scrollHeight})""")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    shown["requests"] = [u for u in requests if not u.startswith(("data:", "file:"))]
    return shown


def test_report_renders_in_chromium(quiet_run: tuple[Path, Any], tmp_path: Path) -> None:
    run, _ = quiet_run
    write_report(run)
    shot = tmp_path / "report.png"
    shown = open_in_chromium(run / "report.html", shot)
    assert shown["sections"] == SECTION_IDS
    assert all(img["loaded"] for img in shown["images"]), shown["images"]
    assert sum(img["cls"] == "plot" for img in shown["images"]) == 3
    assert shown["cards"] > 0
    assert shown["cards"] == (run / "report.html").read_text().count('<figure class="card">')
    assert shown["scripts"] == 0 and shown["requests"] == [] and shown["height"] > 2000
    assert shot.stat().st_size > 50_000
