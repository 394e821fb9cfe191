"""GPU check: mpa's real stages on Qwen2-VL-7B (teacher) / 2B (student)-shaped models, offline, in < 10 minutes.

What it measures, per part (peak GPU memory = torch.cuda.max_memory_allocated, reset at the start of each part):
  build      random-init both models in bf16 on the GPU and save_pretrained them (+ tokenizer, processor);
  annotate   the real annotate stage, teacher, N chart JPEGs: images/s, generated tokens/s;
  generate   the same annotate requests (first M images) through a plain per-image `model.generate` loop vs our HF
             backend at two batch sizes: images/s, tokens/s, identical outputs, share of the HBM-bandwidth bound;
  identify   the real identify stage (both models load from their folders, one at a time): questions/s, tokens/s;
  level      the real level stage (TRL SFTTrainer), LoRA and full fine-tuning: training samples/s (steady steps,
             from a timing callback), the end-of-training checkpoint save, stage wall time;
  evaluate   the real evaluate stage (student before / after LoRA) on a JSONL benchmark of the N charts.
Prints a table, writes ${OUT:-runs/bench}/gpu_check.json and gpu_check.md (a README-ready table); both are rewritten
after every part, so a run cut short still leaves its results. Parts that would overrun --budget-s are skipped.

    bash speed/gpu.sh                                         # on the GPU machine (wheels in .whl/, see gpu.sh)
    python speed/gpu_check.py --shape tiny                    # same code path on CPU: tiny dims, 8 images, fp32

What is synthetic (see gpu_fixtures.py): the weights (random; shapes = the public config.json of
Qwen/Qwen2-VL-{2B,7B}-Instruct), the tokenizer (a small BPE padded to Qwen2's vocabulary, Qwen's special tokens and
ChatML template; the processor is the real Qwen2VLProcessor), no EOS in the generation config (every output is
exactly max_new_tokens long), the images (drawn bar charts, 448x448 JPEG) and the upstream records: the timed
annotate run writes random text that no parser turns into QA pairs, so a second run directory is annotated by the
real annotate stage with `ScriptedTeacher` as its backend (k JSON QA pairs per image, the same record types and
files: images.jsonl, annotations.jsonl, qa.jsonl, usage.jsonl, manifest.json); identify runs on it with
`identify.strategy: all` (random answers never agree with a pseudo-answer, so `parity` would select nothing), and
level / evaluate run on identify's real output. level full runs in a third run directory holding copies of the
second one's annotate/ and identify/ folders.

Expected on one H200 (790 bf16 TFLOP/s, 4.3 TB/s; HF decoding ~30 ms/step, bound by the CPU launching kernels;
teacher 7B: 13 GFLOP/token, student 2B: 2.6 GFLOP/token, the vision tower 1.5 TFLOP per 448x448 image = 256
tokens; load = a model from the page cache to the GPU), ~5 min in all, cut at --budget-s 500 (then parts skip):
  build 30-60 s (init on the GPU; save 16.6 + 4.4 GB) | annotate ~35 s (load 15; prefill 256 x 8 TFLOP = 2 PFLOP
  ~5 s; 8 batches x 64 steps ~15 s) | generate ~40 s (plain loop 32 x 32 steps ~32 s; batched 2-5 s) | identify
  ~45 s (2 loads 20; 2 x 512 questions: 2.8 + 1.2 PFLOP ~10 s, 2 x 16 x 8 steps ~7 s, image preprocessing ~5 s) |
  level LoRA ~25 s (24 steps x 16 rows, ~55 TFLOP + ~0.3 s collation a step) | evaluate ~20 s | level full ~40 s
  (the same steps + an end-of-training checkpoint: weights 4.4 GB + AdamW states 6.3 GB, then the 4.4 GB model).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_fixtures import ScriptedTeacher, build_checkpoint, build_processor, build_tokenizer, make_charts
from gpu_measure import Report, StepTimer, Timed, cuda, gen_row, new_stats, peak_of, roofline, timed_loads

SHAPES: dict[str, dict[str, Any]] = {
    # teacher / student shapes; images; their side; generate batch; annotate, answer and comparison token counts;
    # comparison requests and batches; training batch and steps; seconds budget (parts that would overrun it skip)
    "full": {"teacher": "7b", "student": "2b", "images": 256, "side": 448, "batch": 32, "annotate_tokens": 64,
             "answer_tokens": 8, "compare_n": 32, "compare_tokens": 32, "compare_batches": [8, 32], "pairs": 2,
             "train_batch": 16, "train_steps": 24, "budget_s": 500.0, "min_pixels": 128 * 28 * 28,
             "max_pixels": 512 * 28 * 28},
    "tiny": {"teacher": "tiny-7b", "student": "tiny-2b", "images": 8, "side": 112, "batch": 4, "annotate_tokens": 16,
             "answer_tokens": 4, "compare_n": 4, "compare_tokens": 8, "compare_batches": [1, 4], "pairs": 2,
             "train_batch": 4, "train_steps": 3, "budget_s": math.inf, "min_pixels": None, "max_pixels": None},
}  # fmt: skip
# Seconds each part is allowed to need (full shape; generous versions of the estimates in the docstring).
EXPECTED_S = {"build": 90, "annotate": 45, "generate": 50, "prepare": 10, "identify": 80, "level_lora": 50,
              "evaluate": 40, "level_full": 90}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="full")
    parser.add_argument("--tiny", action="store_true", help="same as --shape tiny")
    parser.add_argument("--images", type=int, help="override the shape's image count")
    parser.add_argument("--budget-s", type=float, help="skip parts that would end after this many seconds")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "runs/bench"))
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temp dir, removed at the end)")
    args = parser.parse_args()
    p = dict(SHAPES["tiny" if args.tiny else args.shape])
    p["images"] = args.images or p["images"]
    budget = args.budget_s if args.budget_s is not None else p["budget_s"]
    p["budget_s"] = budget if math.isfinite(budget) else None  # (JSON has no infinity)

    import peft
    import torch
    import transformers
    import transformers.trainer as hf_trainer
    import trl

    from mpa import config as mpa_config
    from mpa.backends import GenRequest, load_backend
    from mpa.images import ImageSource, load_image
    from mpa.prompts import get_annotate_prompt, render_annotate_prompt
    from mpa.rundir import RunDir, read_json
    from mpa.stages import annotate, evaluate, identify, level

    on_gpu = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if on_gpu else ("cpu", torch.float32)
    if not on_gpu:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    shape = "tiny" if args.tiny else args.shape
    rep = Report(args.out, {
        "device": torch.cuda.get_device_name(0) if on_gpu else f"CPU ({platform.machine()})", "shape": shape,
        "teacher": p["teacher"], "student": p["student"], "images": p["images"], "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
        "peft": peft.__version__, "settings": p, "models": {},
    })  # fmt: skip
    work = args.work or Path(tempfile.mkdtemp(prefix="mpa_gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"gpu_check: {rep.meta['device']}, shape {shape}, work dir {work}, free disk "
          f"{shutil.disk_usage(work).free / 2**30:.0f} GiB", flush=True)  # fmt: skip
    tdir, sdir, charts = work / "teacher", work / "student", work / "bench"
    k, prompt = p["pairs"], get_annotate_prompt("chartqa")
    ann_text = render_annotate_prompt(prompt, k)
    info: dict[str, dict[str, int]] = rep.meta["models"]
    state: dict[str, Any] = {}

    def tree(run: Path, method: str = "lora") -> Any:
        def model(d: Path) -> dict[str, Any]:
            return {"model": str(d), "device": device, "dtype": "bfloat16" if on_gpu else "float32",
                    "batch_size": p["batch"], "min_pixels": p["min_pixels"], "max_pixels": p["max_pixels"]}  # fmt: skip

        def rp(section: str) -> dict[str, float]:  # Qwen2-VL-Instruct's 1.05, where this mpa has the setting
            fields = getattr(mpa_config, f"{section.capitalize()}Config").model_fields
            return {"repetition_penalty": 1.05} if "repetition_penalty" in fields else {}

        return mpa_config.build_config({
            "run_dir": str(run), "images": {"path": str(charts / "charts")},
            "teacher": model(tdir), "student": model(sdir),
            "annotate": {"task": "chartqa", "pairs_per_image": k, "max_new_tokens": p["annotate_tokens"],
                         **rp("annotate")},
            "identify": {"strategy": "all", "max_new_tokens": p["answer_tokens"], **rp("identify")},
            "level": {"method": method, "batch_size": p["train_batch"], "max_steps": p["train_steps"],
                      "eval_steps": p["train_steps"], "val_fraction": 0.0, "early_stopping_patience": None},
            "evaluate": {"benchmarks": [{"name": "jsonl", "data_dir": str(charts / "data.jsonl")}],
                         "models": ["student_before", "student_after"], "max_new_tokens": p["answer_tokens"],
                         **rp("evaluate")},
        })  # fmt: skip

    def role(cfg: Any) -> str:
        return ("teacher" if Path(cfg.model) == tdir else "student") + ("+LoRA" if cfg.adapter else "")

    def build() -> None:
        t0 = time.perf_counter()
        corpus = [ann_text, "What is the value of the tallest bar?\nAnswer the question using a single word or "
                  "phrase.", *(f"What is the value of bar {j}? {j * 7 % 100}" for j in range(1, 30))]  # fmt: skip
        processor = build_processor(build_tokenizer(corpus * 4))
        rows = make_charts(charts / "charts", p["images"], p["side"])
        (charts / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        rep.add("build", "", "tokenizer, processor, chart JPEGs", items=p["images"],
                seconds=round(time.perf_counter() - t0, 2), peak_gib=None)  # fmt: skip
        for name, d in (("teacher", tdir), ("student", sdir)):
            if cuda():
                cuda().reset_peak_memory_stats()
            t0 = time.perf_counter()
            info[name] = build_checkpoint(p[name], d, processor, device, dtype)
            gib = info[name]["bytes"] / 2**30
            rep.add(
                "build",
                name,
                f"random init {p[name]} + save_pretrained",
                seconds=round(time.perf_counter() - t0, 2),
                notes=f"{info[name]['params'] / 1e9:.2f} B params, {gib:.1f} GiB on disk",
                **peak_of({name: {"peak_gib": cuda().max_memory_allocated() / 2**30}} if cuda() else {}),
            )

    def annotate_part() -> None:
        t0 = time.perf_counter()
        cfg, st = tree(work / "run_a"), new_stats()
        state["teacher"] = backend = load_backend(cfg.teacher)
        st["load_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        manifest = annotate.run(cfg, RunDir(cfg.run_dir), backend=Timed(backend, st))
        gen_row(
            rep,
            "annotate",
            "teacher",
            f"real stage, {p['annotate_tokens']} new tokens/image, batch {p['batch']}",
            st,
            "images/s",
            manifest["counts"]["images_ok"],
            time.perf_counter() - t1,
            notes=f"load {st['load_s']:.1f} s (not in s); parse status {manifest['counts']['generation_status']}",
        )

    def generate_part() -> None:
        backend = state.pop("teacher", None) or load_backend(tree(work / "run_a").teacher)
        try:
            compare(backend)
        finally:
            backend.close()

    def compare(backend: Any) -> None:
        n, steps = p["compare_n"], p["compare_tokens"]
        paths = sorted((charts / "charts").iterdir())[:n]
        images = [load_image(ImageSource(str(x), x)).image for x in paths]
        model, proc = backend.model, backend.processor
        texts, ctx, t0 = [], 0, time.perf_counter()
        for image in images:  # what a hand-written script does: one image at a time, processor defaults
            conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ann_text}]}]
            inputs = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True,
                                              return_tensors="pt", processor_kwargs={"images": [image]})  # fmt: skip
            inputs = inputs.to(device)
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            ctx = inputs["input_ids"].shape[1] + steps / 2
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=steps, do_sample=False)
            texts.append(proc.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
        base = time.perf_counter() - t0
        plain = {**new_stats(), "gen_s": base, "requests": n, "nominal_tokens": n * steps}
        bw = roofline(info["teacher"], n, 1, steps, ctx, base)
        gen_row(rep, "generate", "teacher", f"plain model.generate loop, batch 1, {steps} tokens", plain, "images/s",
                n, base, speedup=1.0, hbm_bound_share=bw, notes=f"HBM-bound share {bw}" if bw else None)  # fmt: skip
        extra = {"repetition_penalty": 1.05} if "repetition_penalty" in GenRequest.__dataclass_fields__ else {}
        reqs = [GenRequest(key=f"c{i}", prompt=ann_text, image=im, max_new_tokens=steps, **extra)
                for i, im in enumerate(images)]  # fmt: skip
        for bs in p["compare_batches"]:
            backend.batch_size, st = bs, new_stats()
            got = [r.texts[0] if r.texts else "" for r in Timed(backend, st).generate(reqs)]
            same = sum(a == b for a, b in zip(got, texts, strict=True))
            bw = roofline(info["teacher"], n, bs, steps, ctx, st["gen_s"])
            gen_row(rep, "generate", "teacher", f"mpa HF backend, batch {bs}, {steps} tokens", st, "images/s", n,
                    st["gen_s"], speedup=round(base / st["gen_s"], 2), same_outputs=same, hbm_bound_share=bw,
                    notes=f"{base / st['gen_s']:.1f}x plain; {same}/{n} outputs equal"
                    + (f"; HBM-bound share {bw}" if bw else ""))  # fmt: skip

    def prepare() -> None:  # the second run directory: the real annotate stage, its teacher text scripted
        t0 = time.perf_counter()
        counts = annotate.run(tree(work / "run_b"), RunDir(work / "run_b"), backend=ScriptedTeacher(k))["counts"]
        rep.add("prepare", "scripted", "annotate stage, scripted teacher (setup, not a measurement)",
                items=counts["qa_pairs"], unit="QA pairs", seconds=round(time.perf_counter() - t0, 2),
                peak_gib=None)  # fmt: skip

    def identify_part() -> None:
        cfg, stats = tree(work / "run_b"), {}
        t0 = time.perf_counter()
        with timed_loads(identify, stats, role):
            manifest = identify.run(cfg, RunDir(cfg.run_dir))
        wall, n = time.perf_counter() - t0, manifest["counts"]["answered"]
        for name, st in stats.items():
            gen_row(rep, "identify", name, f"real stage, {p['answer_tokens']} new tokens/question", st,
                    "questions/s", n, st["gen_s"], notes=f"load {st['load_s']:.1f} s (not in s)")  # fmt: skip
        rep.add("identify", "both", "stage wall (2 loads + answers)", items=n, unit="questions", seconds=round(wall, 2),
                notes=f"selected {manifest['counts']['selected']} (strategy all)", **peak_of(stats))  # fmt: skip
        if shape != "tiny":  # free the disk (the teacher is not needed again)
            for f in tdir.glob("*.safetensors*"):
                f.unlink()

    def level_part(method: str) -> Callable[[], None]:
        def run() -> None:
            run_dir = work / f"run_{method}"
            if method == "full":  # its own run dir, upstream folders copied from run_b
                need = 4 * info["student"]["bytes"]  # checkpoint (weights + AdamW states) + the saved model
                if shutil.disk_usage(work).free < need:
                    raise RuntimeError(
                        f"{shutil.disk_usage(work).free / 2**30:.0f} GiB free, ~{need / 2**30:.0f} needed"
                    )
                for stage in ("annotate", "identify"):
                    shutil.copytree(work / "run_b" / stage, run_dir / stage, dirs_exist_ok=True)
            else:
                run_dir = work / "run_b"
            cfg, timer = tree(run_dir, method), StepTimer()
            hf_trainer.DEFAULT_CALLBACKS.append(timer)
            t0 = time.perf_counter()
            try:
                manifest = level.run(cfg, RunDir(run_dir))
            finally:
                hf_trainer.DEFAULT_CALLBACKS.remove(timer)
            wall = time.perf_counter() - t0
            hist = read_json(run_dir / "level/metrics.json")["log_history"]
            final = next((h for h in reversed(hist) if "train_samples_per_second" in h), {})
            save_s = round(timer.saves[-1] - timer.ends[-1], 1) if timer.saves and timer.ends else None
            rep.add(f"level_{method}", "student", f"real stage, {method}, batch {p['train_batch']}, "
                    f"{p['train_steps']} steps", items=manifest["counts"]["train"], unit="train rows",
                    seconds=round(wall, 2), train_samples_per_s=timer.samples_per_s(),
                    trainer_samples_per_s=final.get("train_samples_per_second"), checkpoint_save_s=save_s,
                    notes=f"stage wall incl. load + saves; final checkpoint save {save_s} s; Trainer's own rate "
                    f"{final.get('train_samples_per_second')}")  # fmt: skip
            if method == "full":
                shutil.rmtree(run_dir / "level" / "trainer", ignore_errors=True)

        return run

    def evaluate_part() -> None:
        cfg, stats = tree(work / "run_b"), {}
        t0 = time.perf_counter()
        with timed_loads(evaluate, stats, role):
            evaluate.run(cfg, RunDir(cfg.run_dir))
        for name, st in stats.items():
            gen_row(
                rep,
                "evaluate",
                name,
                f"real stage, jsonl benchmark, {p['answer_tokens']} new tokens",
                st,
                "questions/s",
                st["requests"],
                st["gen_s"],
                notes=f"load {st['load_s']:.1f} s (not in s)",
            )
        rep.add("evaluate", "both", "stage wall", seconds=round(time.perf_counter() - t0, 2), **peak_of(stats))

    parts: list[tuple[str, Callable[[], None]]] = [
        ("build", build), ("annotate", annotate_part), ("generate", generate_part), ("prepare", prepare),
        ("identify", identify_part),
        ("level_lora", level_part("lora")), ("evaluate", evaluate_part), ("level_full", level_part("full")),
    ]  # fmt: skip
    for name, fn in parts:
        rep.part(name, fn, budget, EXPECTED_S[name] if shape == "full" else 0)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    rep.write()
    print("\n" + (rep.out / "gpu_check.md").read_text())
    print(f"wrote {rep.out / 'gpu_check.json'} and {rep.out / 'gpu_check.md'}")
    if any(r["what"] == "FAILED" for r in rep.rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
