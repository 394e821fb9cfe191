"""annotate + identify with the local engine vs the Ray engine (a local Ray instance), same records.

On one machine the Ray engine only adds overhead (actor start-up, model loading per actor, pickling images to the
actors); it pays when actors sit on other GPUs or nodes. This script states that overhead: it runs both engines
on the same easy-VQA pool with the demo teacher and student, checks the candidates are identical, and prints stage
seconds. Writes JSON.

    python speed/ray_vs_local.py [--images 512] [--actors 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/ray_vs_local.json"))
    args = parser.parse_args()

    import easy_vqa
    import ray
    import torch

    from mpa.config import build_config
    from mpa.demo.run import MODELS_DIR
    from mpa.pipeline import run_pipeline

    tmp = Path(tempfile.mkdtemp(prefix="mpa_ray_bench_"))
    paths = easy_vqa.get_train_image_paths()
    listing = tmp / "pool.txt"
    listing.write_text("".join(f"{paths[i]}\n" for i in sorted(paths)[: args.images]))
    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    rows, texts = [], []
    for engine in ("local", "ray"):
        run = tmp / engine
        tree = {
            "run_dir": str(run), "images": {"path": str(listing)},
            "teacher": {"model": str(MODELS_DIR / "teacher"), "batch_size": 32},
            "student": {"model": str(MODELS_DIR / "student"), "batch_size": 32},
            "annotate": {"prompt_file": str(MODELS_DIR / "annotate_prompt.txt"), "max_new_tokens": 80},
            "engine": {"name": engine, "num_actors": args.actors, "num_cpus_per_actor": 1},
        }  # fmt: skip
        if engine == "local":
            torch.set_num_threads(os.cpu_count() or 2)
        t0 = time.perf_counter()
        run_pipeline(build_config(tree), ["annotate", "identify"])
        wall = time.perf_counter() - t0
        timings = json.loads((run / "timings.json").read_text())
        texts.append((run / "identify/candidates.jsonl").read_text())
        rows.append({"engine": engine, "actors": args.actors if engine == "ray" else 1, "images": args.images,
                     "annotate_s": timings["annotate"], "identify_s": timings["identify"],
                     "wall_s": round(wall, 1)})  # fmt: skip
    ray.shutdown()
    print(f"annotate + identify, {args.images} easy-VQA images, demo models, {os.cpu_count()} CPUs")
    print(f"{'engine':<7} {'actors':>6} {'annotate s':>11} {'identify s':>11} {'wall s':>7}")
    for r in rows:
        print(f"{r['engine']:<7} {r['actors']:>6} {r['annotate_s']:>11} {r['identify_s']:>11} {r['wall_s']:>7}")
    print(f"identical candidates: {texts[0] == texts[1]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "identical": texts[0] == texts[1]}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
