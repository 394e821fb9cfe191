"""annotate + identify stage throughput on large photos, with image loading overlapped with generation or not.

Real pools hold camera-sized JPEGs, whose decoding costs as much as a tiny model's generation. The stages decode
the next chunk in a background thread while the backend generates (`mpa.stages.common.prefetched`); this script
runs the two stages through `run_pipeline` on N synthetic 1600x1200 JPEGs with the demo teacher and student, with
prefetching on and off, checks the records are identical, and prints stage seconds. Writes JSON.

    python speed/stage_throughput.py [--images 256] [--size 1600 1200] [--device cpu|cuda] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_photos(folder: Path, n: int, size: tuple[int, int]) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    for i in range(n):
        small = np.roll(base, i * 7, axis=1) ^ np.uint8(i % 251)  # distinct content, photo-like JPEG size
        Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(folder / f"photo_{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, nargs=2, default=[1600, 1200])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/stage_throughput.json"))
    args = parser.parse_args()

    from mpa.config import build_config
    from mpa.demo.run import MODELS_DIR
    from mpa.pipeline import run_pipeline
    from mpa.stages import common

    tmp = Path(tempfile.mkdtemp(prefix="mpa_stage_bench_"))
    make_photos(tmp / "photos", args.images, tuple(args.size))
    rows, outputs = [], {}
    for prefetch in (False, True, False, True):  # alternate: the machine's noise hits both alike
        common.PREFETCH = prefetch
        run = tmp / f"run_{len(rows)}"
        tree = {
            "run_dir": str(run), "images": {"path": str(tmp / "photos")},
            "teacher": {"model": str(MODELS_DIR / "teacher"), "batch_size": 32, "device": args.device},
            "student": {"model": str(MODELS_DIR / "student"), "batch_size": 32, "device": args.device},
            "annotate": {"prompt_file": str(MODELS_DIR / "annotate_prompt.txt"), "max_new_tokens": 80},
        }  # fmt: skip
        t0 = time.perf_counter()
        run_pipeline(build_config(tree), ["annotate", "identify"])
        wall = time.perf_counter() - t0
        timings = json.loads((run / "timings.json").read_text())
        outputs.setdefault(prefetch, []).append((run / "identify/candidates.jsonl").read_text())
        rows.append({"prefetch": prefetch, "images": args.images, "annotate_s": timings["annotate"],
                     "identify_s": timings["identify"], "wall_s": round(wall, 1)})  # fmt: skip
    same = len({text for texts in outputs.values() for text in texts}) == 1
    print(f"annotate + identify on {args.images} JPEGs of {args.size[0]}x{args.size[1]}, device {args.device}")
    print(f"{'prefetch':>8} {'annotate s':>11} {'identify s':>11} {'wall s':>7}")
    for r in rows:
        print(f"{r['prefetch']!s:>8} {r['annotate_s']:>11} {r['identify_s']:>11} {r['wall_s']:>7}")
    print(f"identical candidates with and without prefetching: {same}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "identical": same}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
