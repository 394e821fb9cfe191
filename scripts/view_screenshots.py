"""The README's screenshots of `mpa view`: serve a run, open it in headless Chromium (Playwright driving the system
Chromium), and save the page as it opens and after filtering to the selected set and rejecting two samples.
It writes decisions into RUN_DIR (use a copy of a run you care about).

    python scripts/view_screenshots.py runs/demo docs/
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def main() -> None:
    run, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "mpa.cli", "view", str(run), "--port", str(port),
                             "--reviewer", "ann"], start_new_session=True)  # fmt: skip
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/api/meta", timeout=5).read()
                break
            except OSError:
                time.sleep(0.1)
        with sync_playwright() as p:
            chromium = shutil.which("chromium") or "/usr/bin/chromium"
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.goto(base + "/")
            page.wait_for_selector("body[data-ready='1']")
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "view.png"))
            page.get_by_test_id("filter-reason").select_option("selected")
            page.get_by_test_id("filter-type").select_option("other")
            page.wait_for_timeout(500)
            cards = page.get_by_test_id("card")
            for i in range(2):
                cards.nth(i).get_by_test_id("reject").click()
                page.wait_for_timeout(300)
            page.screenshot(path=str(out / "view_filtered.png"))
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    print(f"{out / 'view.png'}\n{out / 'view_filtered.png'}")


if __name__ == "__main__":
    main()
