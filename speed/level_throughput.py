"""Training throughput (samples/s) and peak memory of `level` on the demo student, fp32 vs bf16.

Writes an identify stage by hand from easy-VQA training questions (all "selected", with their true answers), then
runs the real `level` stage (TRL SFTTrainer, demo.yaml's level settings, a fixed number of steps) in a fresh
process per configuration and reports samples/s, wall time, peak RSS (and peak CUDA memory on a GPU). Prints a
table and writes JSON.

    python speed/level_throughput.py [--steps 40] [--device cpu|cuda] [--out FILE]
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
from typing import Any

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_identify(run: Path, n: int) -> None:
    """A finished identify stage whose candidates are n easy-VQA training questions (all selected)."""
    import easy_vqa

    from mpa.parsing import answer_type
    from mpa.rundir import RunDir, atomic_write_text

    texts, answers, image_ids = easy_vqa.get_train_questions()
    paths = easy_vqa.get_train_image_paths()
    rows = [
        {"qa_id": f"q{i}", "image_id": str(image_ids[i]), "image_path": str(paths[image_ids[i]]),
         "question": texts[i], "pseudo_answer": answers[i], "answer_type": answer_type(answers[i]),
         "teacher_answer": answers[i], "student_answer": "", "teacher_agrees": True, "teacher_consistency": 1.0,
         "student_correct": False, "selected": True, "reason": "selected"}
        for i in range(n)
    ]  # fmt: skip
    rd = RunDir(run)
    settings = {"benchmark": f"easy-vqa train questions 0..{n}"}
    rd.begin("identify", "bench", settings)
    atomic_write_text(run / "identify/candidates.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    rd.finish("identify", "bench", settings, {"counts": {"selected": n}})


def child(cfg_path: str) -> None:
    import resource

    from mpa.config import load_config
    from mpa.rundir import RunDir
    from mpa.stages import level

    cfg = load_config(Path(cfg_path))
    t0 = time.perf_counter()
    level.run(cfg, RunDir(cfg.run_dir))
    wall = time.perf_counter() - t0
    history = json.loads((Path(cfg.run_dir) / "level/metrics.json").read_text())["log_history"]
    final = next(h for h in reversed(history) if "train_samples_per_second" in h)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out: dict[str, Any] = {"samples_per_s": float(final["train_samples_per_second"]), "wall_s": round(wall, 1),
                           "peak_rss_mib": round(peak_rss, 1)}  # fmt: skip
    import torch

    if torch.cuda.is_available():
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print("RESULT " + json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/level_throughput.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    from mpa.demo.run import DEMO_DIR, MODELS_DIR

    demo_level = yaml.safe_load((DEMO_DIR / "demo.yaml").read_text())["level"]
    tmp = Path(tempfile.mkdtemp(prefix="mpa_level_bench_"))
    rows = []
    for name in args.configs:
        run = tmp / name
        n = args.steps * demo_level["batch_size"]
        write_identify(run, n)
        bf16 = "true" if name == "bf16" else "false"
        level = {**demo_level, "max_steps": args.steps, "val_fraction": 0.0, "retention_ratio": 0.0,
                 "early_stopping_patience": None, "eval_steps": args.steps, "bf16": bf16}  # fmt: skip
        tree = {"run_dir": str(run), "images": {"path": str(tmp)}, "level": level,
                "teacher": {"model": str(MODELS_DIR / "teacher")},
                "student": {"model": str(MODELS_DIR / "student"), "device": args.device}}  # fmt: skip
        cfg = tmp / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump(tree))
        proc = subprocess.run([sys.executable, __file__, "--child", str(cfg)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"level failed for {name}:\n{proc.stderr[-3000:]}")
        result = json.loads(next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")))
        rows.append({"config": name, "steps": args.steps, "samples": n, **result})
    print(f"level throughput — demo student, {args.steps} steps of {demo_level['batch_size']}, device {args.device}")
    print(f"{'config':<7} {'samples/s':>10} {'wall s':>8} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['config']:<7} {r['samples_per_s']:>10} {r['wall_s']:>8} {r['peak_rss_mib']:>13}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
