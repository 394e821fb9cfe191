"""`mpa view`: the review page, served by the real CLI (uvicorn) and driven over HTTP on a scripted run (fast
suite), then in headless Chromium through Playwright on a real tiny leveled run: filter, reject two samples, and the
next `mpa level` trains without them (models)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpa.review import current_decisions
from mpa.rundir import hold_run_dir, iter_jsonl
from tests.test_report import _browser
from tests.test_review import candidates, identified  # noqa: F401  (fixture)
from tests.test_stages_scripted import pool  # noqa: F401  (fixture)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def view_server(run: Path, *extra: str) -> Iterator[str]:
    """`mpa view RUN --port P` as its own process group, ended by that group when the test is done."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mpa.cli", "view", str(run), "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"mpa view: {base}"), line + (proc.stderr.read() if proc.stderr else "")
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/api/meta", timeout=5).read()
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and proc.poll() is None, "mpa view did not come up"
                time.sleep(0.2)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as res:
        return json.loads(res.read())


def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_page_lists_filters_searches_pages_and_serves_thumbnails(identified: Path) -> None:  # noqa: F811
    cands = candidates(identified)
    with view_server(identified) as base:
        meta = get(base + "/api/meta")
        assert meta["total"] == 12 and meta["facets"]["reason"] == {"selected": 8, "student_correct": 4}
        assert meta["facets"]["decision"] == {"accept": 0, "reject": 0, "none": 12}
        assert get(base + "/api/candidates?reason=selected")["total"] == 8
        blue = get(base + "/api/candidates?answer=Blue")  # answers are matched normalised
        assert blue["total"] == 2 and {r["pseudo_answer"] for r in blue["rows"]} == {"blue"}
        assert (
            get(base + "/api/candidates?q=COLOUR")["total"] == 12 and get(base + "/api/candidates?q=xyz")["total"] == 0
        )
        pages = [get(base + f"/api/candidates?limit=5&offset={o}")["rows"] for o in (0, 5, 10)]
        assert [len(p) for p in pages] == [5, 5, 2]
        assert [r["qa_id"] for p in pages for r in p] == [c.qa_id for c in cands]
        row = pages[0][0]
        for key in ("question", "pseudo_answer", "teacher_answer", "student_answer", "reason", "gap_score"):
            assert key in row
        with urllib.request.urlopen(f"{base}/api/thumb/{row['image_id']}", timeout=30) as res:
            assert res.headers["Content-Type"] in ("image/png", "image/jpeg") and len(res.read()) > 50
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/api/thumb/not-an-image-of-this-run", timeout=30)
        assert err.value.code == 404
        html = urllib.request.urlopen(base + "/", timeout=30).read().decode()
        assert "<title>mpa view</title>" in html and "https://" not in html and "http://" not in html


def test_decisions_are_saved_with_who_and_refused_while_the_run_is_busy(identified: Path) -> None:  # noqa: F811
    sel = [c.qa_id for c in candidates(identified) if c.selected]
    with view_server(identified, "--reviewer", "ann") as base:
        status, body = post(base + "/api/decisions", {"qa_ids": sel[:2], "decision": "reject"})
        assert status == 200 and body["saved"] == 2 and {r["decision"] for r in body["rows"]} == {"reject"}
        assert get(base + "/api/candidates?decision=reject")["total"] == 2
        assert post(base + "/api/decisions", {"qa_ids": ["nope"], "decision": "reject"})[0] == 400
        assert post(base + "/api/decisions", {"qa_ids": sel[:1], "decision": "maybe"})[0] == 422
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:  # concurrent clicks: every one saved, one line each
            codes = list(pool.map(lambda q: post(base + "/api/decisions", {"qa_ids": [q], "decision": "accept"})[0],
                                  sel[2:] * 3))  # fmt: skip
        assert codes == [200] * len(sel[2:]) * 3
        assert post(base + "/api/decisions", {"qa_ids": sel[2:], "decision": "clear"})[0] == 200
        with hold_run_dir(identified, "mpa run (this test)"):  # another process changes the run
            status, body = post(base + "/api/decisions", {"qa_ids": sel[2:3], "decision": "reject"})
        assert status == 409 and "being changed by another mpa process" in body["detail"]
        assert "mpa run (this test)" in body["detail"]
    log = list(iter_jsonl(identified / "review" / "decisions.jsonl"))
    assert [(r["qa_id"], r["decision"], r["who"]) for r in log[:2]] == [(q, "reject", "ann") for q in sel[:2]]
    assert len(log) == 2 + 4 * len(sel[2:])  # append-only: every accept and clear is kept
    assert {q: d.decision for q, d in current_decisions(identified).items()} == dict.fromkeys(sel[:2], "reject")


def test_view_errors_are_one_line(identified: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    from mpa.cli import main

    assert main(["view", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "candidates.jsonl not found: run identify first" in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["view", str(identified), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--port {port}: cannot listen on 127.0.0.1:{port}" in err


@pytest.mark.models
def test_reviewing_in_chromium_changes_what_level_trains_on(quiet_run: tuple[Path, Any], tmp_path: Path) -> None:
    import shutil

    sync_playwright, chromium = _browser()
    run = shutil.copytree(quiet_run[0], tmp_path / "run")
    before = json.loads((run / "level" / "data_summary.json").read_text())
    rejected: list[str] = []
    accepted: list[str] = []
    with view_server(run, "--reviewer", "playwright") as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base + "/")
            page.wait_for_selector("body[data-ready='1']")
            total = len(candidates(run))
            assert page.get_by_test_id("range").inner_text().endswith(f"of {total}")
            page.get_by_test_id("filter-reason").select_option("selected")
            page.wait_for_function("() => document.querySelectorAll('[data-testid=card]').length > 0 && "
                                   "[...document.querySelectorAll('[data-testid=reason]')]"
                                   ".every(e => e.textContent === 'selected')")  # fmt: skip
            n_selected = sum(c.selected for c in candidates(run))
            assert page.get_by_test_id("range").inner_text().endswith(f"of {n_selected}")
            cards = page.get_by_test_id("card")
            for i in range(2):
                card = cards.nth(i)
                rejected.append(card.get_attribute("data-qa") or "")
                card.get_by_test_id("reject").click()
                page.wait_for_selector(f"[data-qa='{rejected[-1]}'] [data-testid=decision]")
            assert page.locator(".card.reject").count() == 2
            page.wait_for_function("() => document.getElementById('counts').textContent.includes('2 rejected')")
            shown = "() => [...document.images].slice(0, 6).every(i => i.complete && i.naturalWidth > 0)"
            assert page.evaluate(shown)  # thumbnails load (lazily, in view)
            # accept a whole page of candidates the strategy left out: they join the gap set
            reasons = [c.reason for c in candidates(run) if not c.selected and c.reason != "failed"]
            other = max(set(reasons), key=reasons.count)
            page.get_by_test_id("filter-reason").select_option(other)
            page.wait_for_function(f"() => [...document.querySelectorAll('[data-testid=reason]')]"
                                   f".every(e => e.textContent === '{other}')")  # fmt: skip
            accepted = [c.get_attribute("data-qa") or "" for c in page.get_by_test_id("card").all()]
            page.on("dialog", lambda dialog: dialog.accept())  # "accept the N samples on this page?"
            page.get_by_test_id("accept-page").click()
            page.wait_for_function(f"() => document.querySelectorAll('.card.accept').length === {len(accepted)}")
            page.screenshot(path=str(tmp_path / "view.png"), full_page=False)
        finally:
            browser.close()
    decisions = {q: d.decision for q, d in current_decisions(run).items()}
    assert decisions == {**dict.fromkeys(rejected, "reject"), **dict.fromkeys(accepted, "accept")} and accepted
    assert all(d.who == "playwright" for d in current_decisions(run).values())
    # the next `mpa level` re-levels (the decisions changed its data; no --force): without the two rejected
    # samples, with the accepted ones
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mpa.cli", "level", "--run-dir", str(run), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = json.loads((run / "level" / "data_summary.json").read_text())
    assert set(rejected) <= set(before["train_ids"]) | set(before["val_ids"])  # they were used before review
    assert not set(rejected) & (set(after["train_ids"]) | set(after["val_ids"]))
    assert after["review"] == {"removed": 2, "accepted": len(accepted)}
    assert set(accepted) <= set(after["train_ids"]) | set(after["val_ids"])  # accepted: in the gap set (or held out)
    level = json.loads((run / "level" / "manifest.json").read_text())
    added = sum(q not in after["val_ids"] for q in accepted)
    removed = sum(q not in before["val_ids"] for q in rejected)
    assert level["settings"]["review"] and level["counts"]["gap"] == before["counts"]["gap"] + added - removed
    proc = subprocess.run([sys.executable, "-m", "mpa.cli", "report", str(run)], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0 and "2 rejected (2 of them selected)" in (run / "report.md").read_text()
