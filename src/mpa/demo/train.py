"""Train the demo world's teacher and student from scratch (tiny LLaVAs; TRL `SFTTrainer`; fixed seeds).

    mpa demo train-models [--out DIR]        # ~20 min on 2 CPU cores; writes DIR/teacher and DIR/student

Teacher (L labels): a shape-only phase first (tiny VLMs learn one visual skill at a time, and shape is the
slowest), then colour, then a mix of colour, shape, balanced yes/no and *writing* question/answer pairs — how it
annotates. Student (smaller): only the natural yes/no QAs of L, so it never learns colour or shape names and
answers yes/no from the wording — a real gap, which MPA must find and close without reading a label of the pool.

The second teacher of `mpa demo --study` (models/teacher_b) is the teacher of `python -m mpa.demo.train --out DIR
--seed 1` (same recipe, another seed: 0.873 on a 1,500-question test subset, shape 0.968; 15 min on 2 cores).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import TrainerCallback

from mpa.demo import world
from mpa.prompts import render_answer_prompt

log = logging.getLogger(__name__)
Row = dict[str, Any]


@dataclass(frozen=True)
class ModelSize:
    vision_hidden: int
    vision_layers: int
    text_hidden: int
    text_layers: int


# Small enough to learn fast on 2 cores (~1M parameters learned shape in ~1,000 steps in the prototype; a 2.8M
# teacher learned far slower per step); the student is smaller still.
TEACHER = ModelSize(vision_hidden=96, vision_layers=2, text_hidden=160, text_layers=3)
STUDENT = ModelSize(vision_hidden=64, vision_layers=2, text_hidden=128, text_layers=2)
IMAGE_SIZE, PATCH = 64, 8  # easy-VQA native 64 px: 64 image tokens (at 32 px shape was not learned in 300 steps)
BF16 = False  # bf16 autocast measured no faster end to end for these models (95 vs 88 samples/s); keep fp32


def _row(image: Image.Image, prompt: str, answer: str) -> Row:
    return {"images": [image], "prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": answer}]}  # fmt: skip


class Curriculum(torch.utils.data.IterableDataset):
    """An endless stream of rows; `phase(step)` gives the task weights for the batch a row falls in."""

    def __init__(self, tasks: dict[str, Callable[[random.Random], Row]], phase: Callable[[int], dict[str, float]],
                 batch_size: int, seed: int) -> None:  # fmt: skip
        self.tasks, self.phase, self.batch_size, self.seed = tasks, phase, batch_size, seed

    def __iter__(self) -> Iterator[Row]:
        rng = random.Random(self.seed)
        i = 0
        while True:
            weights = self.phase(i // self.batch_size)
            names = [n for n in weights if weights[n] > 0]
            task = rng.choices(names, [weights[n] for n in names])[0]
            yield self.tasks[task](rng)
            i += 1


class DemoData:
    """Images and labels of L, loaded once (2,000 images of 64×64 fit in ~25 MB)."""

    def __init__(self) -> None:
        qas, paths = world.load_split("train")
        labelled, _ = world.split_train(sorted(paths))
        keep = set(labelled)
        self.qas = [qa for qa in qas if qa.image_id in keep]
        self.images = {i: Image.open(paths[i]).convert("RGB") for i in labelled}
        attrs = world.attributes(self.qas)
        self.attrs = {i: a for i, a in attrs.items() if i in keep}
        self.by_type: dict[str, list[world.QA]] = {"yes/no": [], "shape": [], "color": []}
        for qa in self.qas:
            self.by_type[world.question_type(qa.answer)].append(qa)
        self.ids = sorted(self.attrs)

    def answer_row(self, qa: world.QA) -> Row:
        return _row(self.images[qa.image_id], render_answer_prompt(qa.question), qa.answer)

    def natural(self, kind: str) -> Callable[[random.Random], Row]:
        return lambda rng: self.answer_row(rng.choice(self.by_type[kind]))

    def what(self, kind: str) -> Callable[[random.Random], Row]:
        def make(rng: random.Random) -> Row:
            while (qa := world.what_question(i := rng.choice(self.ids), self.attrs[i], kind, rng)) is None:
                pass
            return self.answer_row(qa)

        return make

    def balanced_yes_no(self, rng: random.Random) -> Row:
        i = rng.choice(self.ids)
        return self.answer_row(world.balanced_yes_no(i, self.attrs[i], rng))

    def write(self, rng: random.Random) -> Row:
        """k in 1..3 pairs of different types, answers right: the text the teacher learns to write."""
        i = rng.choice(self.ids)
        k = rng.randint(1, 3)
        kinds = rng.sample(["yes/no", "color", "shape"], k)
        qas = []
        for kind in kinds:
            qa = world.balanced_yes_no(i, self.attrs[i], rng) if kind == "yes/no" else None
            qa = qa or world.what_question(i, self.attrs[i], kind, rng) or world.balanced_yes_no(i, self.attrs[i], rng)
            qas.append(qa)
        return _row(self.images[i], world.WRITE_PROMPT.format(k=k), world.write_target(qas))


def build(out: Path, size: ModelSize, seed: int) -> Path:
    from mpa.testing.tiny import build_tiny_llava

    return build_tiny_llava(
        out, corpus=world.corpus(), image_size=IMAGE_SIZE, patch_size=PATCH, vision_hidden=size.vision_hidden,
        vision_layers=size.vision_layers, text_hidden=size.text_hidden, text_layers=size.text_layers,
        mlp_ratio=3, vocab_size=420, seed=seed,
    )  # fmt: skip


def train(model_dir: Path, data: torch.utils.data.IterableDataset, *, steps: int, lr: float, batch_size: int,
          seed: int, warmup: int = 20, eval_every: int = 0) -> list[dict[str, Any]]:  # fmt: skip
    """Full fine-tuning with TRL on a row stream (cosine decay to 10%); saves the model back to `model_dir`."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    args = SFTConfig(
        output_dir=str(model_dir / "_trainer"), max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=lr, lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1},
        warmup_steps=warmup, weight_decay=0.01, adam_beta2=0.98, max_grad_norm=1.0,
        completion_only_loss=True, max_length=None, use_cpu=True, bf16=BF16, activation_checkpointing=False,
        save_strategy="no", report_to="none", logging_steps=50, disable_tqdm=True, dataloader_num_workers=0,
        seed=seed, data_seed=seed,
    )  # fmt: skip
    import datasets

    stream = datasets.IterableDataset.from_generator(data.__iter__)
    callbacks = [_ProgressEval(model_dir, eval_every)] if eval_every else []
    trainer = SFTTrainer(model=model, args=args, train_dataset=stream, processing_class=processor, callbacks=callbacks)
    trainer.train()
    model.config.use_cache = True
    model.save_pretrained(model_dir)
    return [h for h in trainer.state.log_history if "loss" in h]


class _ProgressEval(TrainerCallback):
    """Log a quick test-subset accuracy every `every` steps (the live model, no checkpoint written)."""

    def __init__(self, model_dir: Path, every: int) -> None:
        self.model_dir, self.every = model_dir, every

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.global_step % self.every == 0 and model is not None:
            was_training = model.training
            model.config.use_cache = True
            scores = quick_eval(self.model_dir, n=400, model=model)
            model.config.use_cache = False
            model.train(was_training)
            log.info("step %d: %s", state.global_step, scores)
            print(f"[eval] step {state.global_step}: {scores}", flush=True)


def quick_eval(model_dir: Path, n: int = 1500, seed: int = 0, model: Any = None) -> dict[str, float]:
    """VQA accuracy on a fixed random subset of easy-VQA test, overall and per question type."""
    from mpa.backends import GenRequest, load_backend
    from mpa.backends.hf import HFBackend
    from mpa.config import model_config
    from mpa.metrics import vqa_accuracy
    from mpa.parsing import parse_short_answer

    qas, paths = world.load_split("test")
    subset = random.Random(seed).sample(qas, min(n, len(qas)))
    images = {qa.image_id: Image.open(paths[qa.image_id]).convert("RGB") for qa in subset}
    cfg = model_config(model=str(model_dir), batch_size=64)
    backend = HFBackend.from_loaded(cfg, model.eval()) if model is not None else load_backend(cfg)
    reqs = [GenRequest(key=str(k), prompt=render_answer_prompt(qa.question), image=images[qa.image_id],
                       max_new_tokens=4) for k, qa in enumerate(subset)]  # fmt: skip
    scores: dict[str, list[float]] = {"all": [], "yes/no": [], "shape": [], "color": []}
    for qa, res in zip(subset, backend.generate(reqs), strict=True):
        s = vqa_accuracy(parse_short_answer(res.texts[0] if res.texts else ""), [qa.answer])
        scores["all"].append(s)
        scores[world.question_type(qa.answer)].append(s)
    return {k: round(sum(v) / len(v), 4) for k, v in scores.items() if v}


def train_teacher(out: Path, data: DemoData, *, shape_steps: int, mix_steps: int, seed: int = 0) -> dict[str, Any]:
    t0 = time.perf_counter()
    build(out, TEACHER, seed)
    tasks = {"shape": data.what("shape"), "color": data.what("color"), "yes/no": data.balanced_yes_no,
             "yes/no natural": data.natural("yes/no"), "write": data.write}  # fmt: skip

    # Shape alone first, then colour joins, then yes/no and writing. Writing targets are long, so they get a small
    # weight: the loss is averaged over tokens and would otherwise drown the one-word answers.
    def phase(step: int) -> dict[str, float]:
        if step < shape_steps:
            return {"shape": 1.0}
        if step < shape_steps * 3 // 2:
            return {"shape": 0.5, "color": 0.5}
        return {"shape": 0.25, "color": 0.15, "yes/no": 0.1, "yes/no natural": 0.3, "write": 0.2}

    log_history = train(out, Curriculum(tasks, phase, 32, seed), steps=shape_steps + mix_steps, lr=1e-3,
                        batch_size=32, seed=seed, eval_every=500)  # fmt: skip
    return {"train_s": round(time.perf_counter() - t0, 1), "loss": log_history[-1]["loss"], **quick_eval(out)}


def train_student(out: Path, data: DemoData, *, steps: int, seed: int = 0) -> dict[str, Any]:
    """Only L's natural yes/no questions: the student never learns colour or shape names and answers yes/no from
    the wording (~0.83 on easy-VQA's yes/no) — the gap MPA has to find."""
    t0 = time.perf_counter()
    build(out, STUDENT, seed + 1)
    tasks = {"yes/no": data.natural("yes/no")}
    log_history = train(out, Curriculum(tasks, lambda step: {"yes/no": 1.0}, 32, seed), steps=steps, lr=1e-3,
                        batch_size=32, seed=seed)  # fmt: skip
    return {"train_s": round(time.perf_counter() - t0, 1), "loss": log_history[-1]["loss"], **quick_eval(out)}


def train_models(out: Path, *, seed: int = 0, quick: bool = False) -> dict[str, Any]:
    """Train both demo models into OUT/teacher and OUT/student; returns their quick-eval numbers and timings."""
    import json

    torch.manual_seed(seed)
    data = DemoData()
    scale = 0.1 if quick else 1.0
    report = {
        "teacher": train_teacher(out / "teacher", data, shape_steps=int(800 * scale),
                                 mix_steps=int(2700 * scale), seed=seed),
        "student": train_student(out / "student", data, steps=int(600 * scale), seed=seed),
    }  # fmt: skip
    for name in ("teacher", "student"):
        _strip_trainer_files(out / name)
    # The prompt the teacher learned to annotate with; demo.yaml points annotate.prompt_file at it.
    (out / "annotate_prompt.txt").write_text(world.WRITE_PROMPT + "\n", encoding="utf-8")
    (out / "train_report.json").write_text(json.dumps(report, indent=2))
    return report


def _strip_trainer_files(model_dir: Path) -> None:
    import shutil

    shutil.rmtree(model_dir / "_trainer", ignore_errors=True)


if __name__ == "__main__":
    import argparse
    import json

    logging.basicConfig(level=logging.INFO)
    parser = argparse.ArgumentParser(description="train the demo teacher and student")
    parser.add_argument("--out", type=Path, default=Path("runs/demo_models"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    a = parser.parse_args()
    print(json.dumps(train_models(a.out, seed=a.seed, quick=a.quick), indent=2))
