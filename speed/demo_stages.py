"""End-to-end `mpa demo` time per stage (annotate, identify, level, evaluate), from a fresh run directory.

Runs the real command in a subprocess, then reads RUN_DIR/timings.json (seconds per stage, written by the
pipeline) and the headline numbers from RUN_DIR/summary.json. Prints a table and writes JSON.

    python speed/demo_stages.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the CI-sized demo")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/demo_stages.json"))
    args = parser.parse_args()
    run = Path(tempfile.mkdtemp(prefix="mpa_demo_bench_")) / "demo"
    cmd = [sys.executable, "-m", "mpa.cli", "demo", "--run-dir", str(run), "-q", *(["--quick"] if args.quick else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"mpa demo failed:\n{proc.stderr[-3000:]}")
    timings = json.loads((run / "timings.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    stages = {k: v for k, v in timings.items() if k != "total"}
    row = {"quick": args.quick, "wall_s": round(wall, 1), "stages_s": stages,
           "stages_total_s": round(sum(stages.values()), 1), "benchmarks": summary.get("benchmarks")}  # fmt: skip
    print(f"mpa demo{' --quick' if args.quick else ''}: {wall:.1f} s wall (includes process start and imports)")
    for name, secs in stages.items():
        print(f"  {name:<10} {secs:>7.1f} s")
    print(f"  {'stages':<10} {row['stages_total_s']:>7.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2))
    print(f"wrote {args.out}")
    shutil.rmtree(run.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
