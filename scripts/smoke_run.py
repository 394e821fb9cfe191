"""Smoke run of the whole MPA pipeline on tiny real models, fully offline (about a minute on 2 CPU cores).

Builds a tiny LLaVA teacher (briefly trained to name colours and write Question/Answer pairs), a smaller
random-init student, and 20 coloured images, then runs `mpa run` on them exactly as a user would.

    python scripts/smoke_run.py [RUN_DIR]      # default runs/smoke
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    from mpa.cli import main as mpa_main
    from mpa.testing.tiny import build_tiny_llava, make_color_images, train_tiny_teacher

    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/smoke")
    models = root / "models"
    t0 = time.perf_counter()
    if not (models / "teacher" / "config.json").exists():
        print("building tiny models and images ...", flush=True)
        labels = make_color_images(root / "images", 20)
        build_tiny_llava(models / "teacher", seed=0)
        train_tiny_teacher(models / "teacher", labels, steps=200)
        build_tiny_llava(models / "student", vision_hidden=16, text_hidden=32, text_layers=1, seed=1)
    rc = mpa_main([
        "run", "--run-dir", str(root / "run"), "--images", str(root / "images"),
        "--teacher", str(models / "teacher"), "--student", str(models / "student"),
        "--set", "annotate.max_new_tokens=32", "--set", "level.method=full", "--set", "level.epochs=40",
        "--set", "level.learning_rate=0.003", "--set", "level.freeze_vision=false", "--set", "level.val_fraction=0",
    ])  # fmt: skip
    print(f"smoke run finished in {time.perf_counter() - t0:.1f} s (rc={rc}); artifacts in {root / 'run'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
