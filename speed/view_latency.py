"""`mpa view` on a large run: response times of the review page's API over 100,000 candidates.

Builds a synthetic run directory (identify/candidates.jsonl with N candidates over 2,000 small PNGs, reasons and
answers drawn like a real run's), starts the real `mpa view` server (uvicorn, its own process group, ended by
pid), and times each request the page makes: start-up (index build), /api/meta (facets), a page of 50 with no
filter, each filter, a search, a deep page, a decision (append + re-index), a new and a cached thumbnail. Prints a
table (median of 5 per request) and writes JSON.

    python speed/view_latency.py [--candidates 100000] [--out runs/bench/view_latency.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def build_run(root: Path, n: int, n_images: int = 2000) -> list[str]:
    """A run directory with identify/candidates.jsonl only (what `mpa view` reads); returns the qa_ids."""
    from PIL import Image

    rng = random.Random(0)
    images = root / "images"
    images.mkdir(parents=True)
    paths = []
    for i in range(n_images):
        path = images / f"{i:05d}.png"
        Image.new("RGB", (64, 64), (rng.randrange(256), rng.randrange(256), rng.randrange(256))).save(path)
        paths.append(path)
    answers = ["red", "blue", "green", "yes", "no", "circle", "triangle", "rectangle", "3", "12"]
    reasons = ["selected"] * 4 + ["student_correct"] * 3 + ["teacher_disagrees"] * 2 + ["teacher_inconsistent"]
    lines, ids = [], []
    for i in range(n):
        img = i % n_images
        answer = rng.choice(answers)
        reason = rng.choice(reasons)
        qa_id = f"{img:020d}/0/{i // n_images}"
        ids.append(qa_id)
        lines.append(json.dumps({
            "qa_id": qa_id, "image_id": f"{img:020d}", "image_path": str(paths[img]),
            "question": f"What is the {rng.choice(['colour', 'shape', 'count'])} of object {i}?",
            "pseudo_answer": answer, "answer_type": "yes/no" if answer in ("yes", "no") else "other",
            "teacher_answer": answer, "student_answer": rng.choice(answers),
            "teacher_agrees": reason != "teacher_disagrees", "teacher_consistency": 1.0,
            "student_correct": reason == "student_correct",
            "selected": reason == "selected", "reason": reason, "gap_score": 1.0 if reason == "selected" else 0.0,
        }))  # fmt: skip
    (root / "identify").mkdir()
    (root / "identify" / "candidates.jsonl").write_text("\n".join(lines) + "\n")
    return ids


def timed(fn: object, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/view_latency.json"))
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="mpa_view_bench_"))
    ids = build_run(root, args.candidates)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mpa.cli", "view", str(root), "--port", str(port)],
                            stdout=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        while True:
            try:
                urllib.request.urlopen(base + "/api/meta", timeout=60).read()
                break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit("mpa view exited") from None
                time.sleep(0.05)
        startup = time.perf_counter() - t0

        def get(path: str) -> bytes:
            with urllib.request.urlopen(base + path, timeout=60) as res:
                return res.read()

        def post() -> None:
            body = json.dumps({"qa_ids": [random.choice(ids)], "decision": "reject"}).encode()
            req = urllib.request.Request(
                base + "/api/decisions", data=body, headers={"Content-Type": "application/json"}
            )
            urllib.request.urlopen(req, timeout=60).read()

        thumb_ids = iter(range(100, 2000))
        rows = {
            "start-up (read + index, until the first answer)": startup,
            "/api/meta (facets)": timed(lambda: get("/api/meta")),
            "page 1, no filter": timed(lambda: get("/api/candidates")),
            "filter reason=selected": timed(lambda: get("/api/candidates?reason=selected")),
            "filter answer=blue + type": timed(lambda: get("/api/candidates?answer=blue&answer_type=other")),
            "search 'shape'": timed(lambda: get("/api/candidates?q=shape")),
            "deep page (offset 90,000)": timed(lambda: get("/api/candidates?offset=90000")),
            "decision (append + re-index decisions)": timed(post),
            "filter decision=reject": timed(lambda: get("/api/candidates?decision=reject")),
            "thumbnail, first time": timed(lambda: get(f"/api/thumb/{next(thumb_ids):020d}")),
            "thumbnail, cached": timed(lambda: get(f"/api/thumb/{1:020d}")),
        }
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    print(f"mpa view over {args.candidates:,} candidates (median of 5 requests; start-up once):")
    for name, seconds in rows.items():
        print(f"  {name:<45} {1000 * seconds:9.1f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"candidates": args.candidates, "seconds": rows}, indent=2) + "\n")
    print(f"→ {args.out}")


if __name__ == "__main__":
    main()
