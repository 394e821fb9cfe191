"""Annotate throughput of the HF backend at several batch sizes (images/s), with an output-equality check.

Builds a tiny LLaVA teacher (as in tests) unless --model is given, then times `HFBackend.generate` on the same
images and prompt at each batch size; prints a table and writes JSON. Outputs must be identical across batch
sizes (greedy decoding with left padding).

    python benchmarks/annotate_throughput.py [--model DIR] [--images N] [--batch-sizes 1 16] [--out FILE]
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
    parser.add_argument("--model", type=Path)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/annotate_throughput.json"))
    args = parser.parse_args()

    import torch
    from PIL import Image

    from mpa.backends import GenRequest, load_backend
    from mpa.config import ModelConfig
    from mpa.prompts import get_annotate_prompt, render_annotate_prompt
    from mpa.tiny import build_tiny_llava, make_color_images, train_tiny_teacher

    tmp = Path(tempfile.mkdtemp(prefix="mpa_bench_"))
    labels = make_color_images(tmp / "images", args.images)
    model = args.model
    if model is None:
        model = build_tiny_llava(tmp / "teacher", seed=0)
        train_tiny_teacher(model, labels[:20], steps=200)
    images = [Image.open(p).convert("RGB") for p, _ in labels]
    prompt = render_annotate_prompt(get_annotate_prompt("generic"), 3)
    requests = [
        GenRequest(key=str(i), prompt=prompt, image=im, max_new_tokens=args.max_new_tokens)
        for i, im in enumerate(images)
    ]
    rows, reference = [], None
    for bs in args.batch_sizes:
        backend = load_backend(ModelConfig(model=str(model), batch_size=bs, device=args.device))
        backend.generate(requests[: min(bs, 4)])  # warm-up
        t0 = time.perf_counter()
        results = backend.generate(requests)
        elapsed = time.perf_counter() - t0
        texts = [r.texts for r in results]
        reference = reference or texts
        rows.append({
            "batch_size": bs, "images": len(requests), "seconds": round(elapsed, 3),
            "images_per_s": round(len(requests) / elapsed, 1), "same_outputs_as_first": texts == reference,
        })  # fmt: skip
        backend.close()
    base = rows[0]["images_per_s"]
    print(f"annotate throughput — torch {torch.__version__}, threads {torch.get_num_threads()}, model {model}")
    print(f"{'batch':>6} {'images/s':>10} {'speed-up':>9} {'same outputs':>13}")
    for row in rows:
        print(f"{row['batch_size']:>6} {row['images_per_s']:>10} {row['images_per_s'] / base:>8.1f}x "
              f"{row['same_outputs_as_first']!s:>13}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
