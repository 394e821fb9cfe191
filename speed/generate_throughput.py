"""Annotate and identify throughput: our HF backend vs a plain per-image `model.generate` loop.

Same model, same images, same prompts, greedy decoding; the outputs of every configuration are checked equal to
the plain loop's. Annotate = the demo teacher writing QA pairs with the demo prompt (images/s); identify = the demo
teacher and student answering easy-VQA questions with the short-answer prompt (questions/s). Prints a table and
writes JSON.

    python speed/generate_throughput.py                           # demo models, CPU, batch 1 / 8 / 32
    python speed/generate_throughput.py --device cuda --images 512 --questions 2048        # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def plain_loop(
    model_dir: str, prompts: list[str], images: list[Any], max_new_tokens: int, device: str
) -> tuple[list[str], float]:
    """What a hand-written script does: one image at a time, processor defaults, `model.generate`. Returns the
    texts and the generation seconds (model loading excluded)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    dev = torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype).to(dev).eval()
    texts = []
    t0 = time.perf_counter()
    for prompt, image in zip(prompts, images, strict=True):
        conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        inputs = processor.apply_chat_template(
            conv, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
            processor_kwargs={"images": [image]},
        ).to(dev)  # fmt: skip
        if inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        texts.append(processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return texts, time.perf_counter() - t0


def ours(model_dir: str, prompts: list[str], images: list[Any], max_new_tokens: int, device: str,
         batch_size: int) -> tuple[list[str], float]:  # fmt: skip
    from mpa.backends import GenRequest, load_backend
    from mpa.config import model_config

    backend = load_backend(model_config(model=model_dir, batch_size=batch_size, device=device))
    reqs = [GenRequest(key=str(i), prompt=p, image=im, max_new_tokens=max_new_tokens)
            for i, (p, im) in enumerate(zip(prompts, images, strict=True))]  # fmt: skip
    t0 = time.perf_counter()
    results = backend.generate(reqs)
    seconds = time.perf_counter() - t0
    backend.close()
    return [r.texts[0] if r.texts else f"<error {r.error}>" for r in results], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128, help="images for the annotate benchmark")
    parser.add_argument("--questions", type=int, default=256, help="questions for the identify benchmark")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", type=Path, help="teacher/ and student/ folders (default: the bundled demo ones)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/generate_throughput.json"))
    args = parser.parse_args()

    import easy_vqa
    import torch

    from mpa.demo.run import MODELS_DIR
    from mpa.images import ImageSource, load_image
    from mpa.prompts import load_prompt_file, render_annotate_prompt, render_answer_prompt

    models = args.models or MODELS_DIR
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    paths = easy_vqa.get_train_image_paths()
    texts, _, image_ids = easy_vqa.get_train_questions()

    def image(i: Any) -> Any:
        return load_image(ImageSource(str(paths[i]), Path(paths[i]))).image

    ann_images = [image(i) for i in sorted(paths)[: args.images]]
    ann_prompt = render_annotate_prompt(load_prompt_file(models / "annotate_prompt.txt"), 3)
    q_images = [image(i) for i in image_ids[: args.questions]]
    q_prompts = [render_answer_prompt(q) for q in texts[: args.questions]]
    jobs = [
        ("annotate", "teacher", [ann_prompt] * len(ann_images), ann_images, 80, "images/s"),
        ("identify", "teacher", q_prompts, q_images, 16, "questions/s"),
        ("identify", "student", q_prompts, q_images, 16, "questions/s"),
    ]
    rows: list[dict[str, Any]] = []
    for stage, role, prompts, images, max_new, unit in jobs:
        model_dir = str(models / role)
        ours(model_dir, prompts[:4], images[:4], max_new, args.device, 4)  # warm-up (allocator, kernels)
        ref, base_s = plain_loop(model_dir, prompts, images, max_new, args.device)
        base = len(prompts) / base_s
        rows.append({"stage": stage, "model": role, "config": "plain per-image loop", "items": len(prompts),
                     "seconds": round(base_s, 2), "rate": round(base, 1), "unit": unit, "speedup": 1.0,
                     "same_outputs": True})  # fmt: skip
        for bs in args.batch_sizes:
            got, secs = ours(model_dir, prompts, images, max_new, args.device, bs)
            rate = len(prompts) / secs
            rows.append({"stage": stage, "model": role, "config": f"mpa HF backend, batch {bs}", "items": len(prompts),
                         "seconds": round(secs, 2), "rate": round(rate, 1), "unit": unit,
                         "speedup": round(rate / base, 2), "same_outputs": got == ref,
                         "differing": sum(a != b for a, b in zip(got, ref, strict=True))})  # fmt: skip
    print(f"generate throughput — torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"{'stage':<9} {'model':<8} {'config':<28} {'items':>6} {'rate':>9} {'unit':<12} {'speed-up':>8} same")
    for r in rows:
        print(f"{r['stage']:<9} {r['model']:<8} {r['config']:<28} {r['items']:>6} {r['rate']:>9} {r['unit']:<12} "
              f"{r['speedup']:>7.1f}x {r['same_outputs']}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": args.device, "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
