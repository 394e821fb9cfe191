"""Peak RSS of `mpa run` (annotate → identify → level) against the size of the unlabeled pool.

Memory must not grow with the pool: images are decoded chunk by chunk, records are streamed to and from JSONL.
Builds a tiny trained LLaVA teacher and a random student (as in the tests), writes pools of distinct synthetic
images (default 1,000 and 10,000), runs each in a fresh `mpa` process and reports its peak RSS (ru_maxrss) and
wall time. Prints a table and writes JSON.

    python speed/memory_vs_pool.py [--pools 1000 10000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Runs `mpa` in this process and prints its own peak RSS (KiB on Linux) on exit.
CHILD = """
import resource, sys
from mpa.cli import main
code = main(sys.argv[1:])
print("PEAK_RSS_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def run_pool(n: int, tmp: Path, teacher: Path, student: Path) -> dict[str, float]:
    from mpa.testing.tiny import make_color_images

    images = tmp / f"pool_{n}"
    if not images.exists():
        make_color_images(images, n, size=32, seed=n)
    tree = {
        "run_dir": str(tmp / f"run_{n}"),
        "images": {"path": str(images)},
        "teacher": {"model": str(teacher), "batch_size": 64},
        "student": {"model": str(student), "batch_size": 64},
        "annotate": {"max_new_tokens": 24},
        "level": {"max_steps": 10, "batch_size": 8, "val_fraction": 0.0},
    }
    cfg = tmp / f"cfg_{n}.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, "run", str(cfg), "-q"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"mpa run failed for {n} images:\n{proc.stderr[-3000:]}")
    peak = next(int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KIB"))
    timings = json.loads((tmp / f"run_{n}" / "timings.json").read_text())
    return {"images": n, "peak_rss_mib": round(peak / 1024, 1), "wall_s": round(wall, 1), **timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/memory_vs_pool.json"))
    args = parser.parse_args()
    from mpa.testing.tiny import build_tiny_llava, make_color_images, train_tiny_teacher

    tmp = Path(tempfile.mkdtemp(prefix="mpa_mem_"))
    labels = make_color_images(tmp / "teacher_images", 20, seed=0)
    teacher = build_tiny_llava(tmp / "teacher", seed=0)
    train_tiny_teacher(teacher, labels, steps=200, seed=0)
    student = build_tiny_llava(tmp / "student", vision_hidden=16, text_hidden=32, text_layers=1, seed=1)
    rows = [run_pool(n, tmp, teacher, student) for n in args.pools]
    base = rows[0]["peak_rss_mib"]
    print(f"{'images':>7} {'peak RSS MiB':>13} {'vs first':>9} {'wall s':>7}  stage seconds")
    for r in rows:
        stages = ", ".join(f"{k} {r[k]}" for k in ("annotate", "identify", "level") if k in r)
        print(f"{r['images']:>7} {r['peak_rss_mib']:>13} {r['peak_rss_mib'] / base:>8.2f}x {r['wall_s']:>7}  {stages}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
