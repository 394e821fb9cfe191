"""Parity Leveler (PL): fine-tune the student on its knowledge gaps, with guards against forgetting.

Training data (all label-free, from identify/candidates.jsonl):
  gap set        the selected candidates, optionally balanced by answer type / answer and capped per answer;
  retention mix  teacher-consistent QAs the student already answers right (`retention_ratio` per gap sample);
  validation     `val_fraction` of ALL teacher-consistent QAs (gap and retention alike), held out from training,
                 used for label-free validation loss (early stopping, best checkpoint) and accuracy.
The student is trained with exactly the prompt it is asked with at identify and evaluation, token for token
(TRL `SFTTrainer` with `backends.hf_collator.ChatCollator`: the HF backend's own prompt, loss on the answer and
its end-of-turn only). Full fine-tuning freezes the vision tower and/or projector by one rule for every family
(`backends.hf_parts`); LoRA goes on every linear layer of the language model by default.
Outputs in RUN_DIR/level/: adapter/ (LoRA) or model/ (full), merged/ on request, trainer/ checkpoints,
data_summary.json, metrics.json, manifest.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from mpa import distributed
from mpa.config import LANGUAGE_MODEL_LINEAR, ConfigError, LevelConfig, ModelConfig, MPAConfig
from mpa.errors import MPAError, RunError
from mpa.metrics import match_answers, normalize_vqa_answer
from mpa.prompts import ANSWER_PROMPT_ID, render_answer_prompt
from mpa.rundir import RunDir, atomic_write_json, atomic_write_text, fingerprint, iter_jsonl
from mpa.stages.common import model_identity, progress

log = logging.getLogger(__name__)
STAGE = "level"


def stage_settings(cfg: MPAConfig, upstream_fp: str) -> dict[str, Any]:
    return {
        "identify": upstream_fp,
        "student": model_identity(cfg.student),
        "level": cfg.level.model_dump(),
        "answer_prompt": ANSWER_PROMPT_ID,
        "seed": cfg.seed,
    }


def _unit(seed: int, key: str) -> float:
    """A stable pseudo-random number in [0, 1) per key: membership does not depend on the set's size or order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") / 2**64


def balance(rows: list[dict[str, Any]], lvl: LevelConfig, rng: random.Random) -> list[dict[str, Any]]:
    """Cap samples per answer, then oversample smaller groups (answer type or answer) to the largest group."""
    if lvl.max_per_answer is not None:
        by_answer: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_answer[normalize_vqa_answer(row["pseudo_answer"])].append(row)
        rows = [
            r
            for group in by_answer.values()
            for r in (group if len(group) <= lvl.max_per_answer else rng.sample(group, lvl.max_per_answer))
        ]
    if lvl.balance == "none" or not rows:
        return rows
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        key = row["answer_type"] if lvl.balance == "answer_type" else normalize_vqa_answer(row["pseudo_answer"])
        groups[key].append(row)
    target = max(len(g) for g in groups.values())
    out = []
    for key in sorted(groups):
        group = groups[key]
        out.extend(group + rng.choices(group, k=target - len(group)))
    return out


def split_data(cands: list[dict[str, Any]], lvl: LevelConfig, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Gap (balanced), retention and validation sets, disjoint; every choice seeded."""
    rng = random.Random(seed)
    val = [
        c
        for c in cands
        if c["teacher_agrees"] and c["reason"] != "failed" and _unit(seed, c["qa_id"]) < lvl.val_fraction
    ]
    val_ids = {c["qa_id"] for c in val}
    gap = [c for c in cands if c["selected"] and c["qa_id"] not in val_ids]
    gap_balanced = balance(gap, lvl, rng)
    pool = [
        c
        for c in cands
        if c["teacher_agrees"] and c["student_correct"] and not c["selected"] and c["qa_id"] not in val_ids
    ]
    n_ret = min(len(pool), round(lvl.retention_ratio * len(gap_balanced)))
    retention = rng.sample(pool, n_ret)
    train = gap_balanced + retention
    rng.shuffle(train)
    return {"gap": gap, "train": train, "retention": retention, "val": val}


def _dataset(rows: list[dict[str, Any]], student: ModelConfig):  # -> datasets.Dataset
    """Prompt/completion rows whose images are decoded on access exactly as at identify and evaluation time
    (EXIF rotation, alpha on white, pixel budget), so the student trains on what it is later shown."""
    import datasets

    data = {
        "images": [[r["image_path"]] for r in rows],
        "prompt": [render_answer_prompt(r["question"]) for r in rows],
        "completion": [r["pseudo_answer"] for r in rows],
    }

    def decode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        batch["images"] = [[_train_image(path, student) for path in paths] for paths in batch["images"]]
        return batch

    return datasets.Dataset.from_dict(data).with_transform(decode)


def _train_image(path: str, student: ModelConfig) -> Any:
    from mpa.images import ImageSource, load_image
    from mpa.pixels import fit_pixel_budget

    loaded = load_image(ImageSource(path, Path(path)))
    if loaded.image is None:
        raise MPAError(f"level: training image {path} can no longer be read ({loaded.error}); restore it and rerun")
    return fit_pixel_budget(loaded.image, student.max_pixels, student.min_pixels)


def _load_student(student: ModelConfig, lvl: LevelConfig):  # -> (model, processor)
    import torch
    from transformers import AutoModelForImageTextToText

    from mpa.backends.hf import load_processor, resolve_device
    from mpa.backends.hf_parts import freeze

    processor = load_processor(student)
    device = resolve_device(student.device)
    dtype = torch.bfloat16 if _use_bf16(lvl, device) else torch.float32
    extra = {"attn_implementation": student.attn_implementation} if student.attn_implementation else {}
    model = AutoModelForImageTextToText.from_pretrained(
        student.model, revision=student.revision, dtype=dtype, trust_remote_code=student.trust_remote_code, **extra
    )
    if lvl.method == "full":
        trainable = freeze(model, vision_tower=lvl.freeze_vision, projector=lvl.freeze_projector)
        log.info("level: trainable parameters per part %s", trainable)
    return model, processor


def _use_bf16(lvl: LevelConfig, device: Any) -> bool:
    import torch

    if lvl.bf16 == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return lvl.bf16 == "true"


def _trainer(cfg: MPAConfig, sdir: Path, train_ds: Any, val_ds: Any, model: Any, processor: Any):  # -> SFTTrainer
    from peft import LoraConfig
    from transformers import EarlyStoppingCallback, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from mpa.backends.hf import resolve_device
    from mpa.backends.hf_collator import ChatCollator
    from mpa.backends.hf_parts import lora_targets

    lvl = cfg.level
    device = resolve_device(cfg.student.device)
    steps_per_epoch = max(1, -(-len(train_ds) // (lvl.batch_size * lvl.grad_accum)))
    total = lvl.max_steps if lvl.max_steps > 0 else max(1, round(steps_per_epoch * lvl.epochs))
    eval_steps = lvl.eval_steps or max(1, total // 10)
    has_val = val_ds is not None
    args = SFTConfig(
        output_dir=str(sdir / "trainer"),
        num_train_epochs=lvl.epochs,
        max_steps=lvl.max_steps,
        learning_rate=lvl.learning_rate,
        per_device_train_batch_size=lvl.batch_size,
        per_device_eval_batch_size=lvl.batch_size,
        gradient_accumulation_steps=lvl.grad_accum,
        warmup_steps=lvl.warmup_ratio,
        weight_decay=lvl.weight_decay,
        lr_scheduler_type=lvl.lr_scheduler,
        # Logging at every checkpoint step: a resumed run averages its first logged loss from the checkpoint on, so
        # only then are its logged losses (the report's training curve) the uninterrupted run's.
        logging_steps=math.gcd(eval_steps, max(1, min(10, total // 20))),
        eval_strategy="steps" if has_val else "no",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        # Early stopping's patience counter lives in its callback: without this a resumed run restarts it at 0
        # and trains past the step where the uninterrupted run stopped.
        restore_callback_states_from_checkpoint=True,
        load_best_model_at_end=False,  # the Trainer's reload misses renamed VLM keys; `_restore_best` does it
        metric_for_best_model="eval_loss" if has_val else None,
        greater_is_better=False if has_val else None,
        max_length=None,  # never truncate: it would cut image tokens
        dataset_kwargs={"skip_prepare_dataset": True},  # rows are rendered by ChatCollator, batch by batch
        remove_unused_columns=False,
        report_to="none",
        use_cpu=device.type == "cpu",
        bf16=_use_bf16(lvl, device),
        activation_checkpointing=lvl.gradient_checkpointing,
        dataloader_num_workers=0,
        seed=cfg.seed,
        data_seed=cfg.seed,
        disable_tqdm=True,  # our own bar (`_step_bar`): rate + ETA, line mode off a terminal, off with -q
    )
    peft_config = None
    if lvl.method == "lora":
        targets = lvl.lora_target_modules
        peft_config = LoraConfig(
            r=lvl.lora_r,
            lora_alpha=lvl.lora_alpha,
            lora_dropout=lvl.lora_dropout,
            target_modules=lora_targets(model) if targets == LANGUAGE_MODEL_LINEAR else targets,
            task_type="CAUSAL_LM",
        )
    callbacks = [EarlyStoppingCallback(lvl.early_stopping_patience)] if has_val and lvl.early_stopping_patience else []
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=processor,
        data_collator=ChatCollator(processor, model.generation_config.eos_token_id),
        peft_config=peft_config,
        callbacks=[*callbacks, _step_bar()],
    )
    trainer.remove_callback(PrinterCallback)  # it print()s every log dict; the bar shows the losses instead
    return trainer


def _step_bar():  # -> TrainerCallback
    """Training steps on the same progress bar as every other stage, with the latest loss and validation loss
    (one bar, on the main process, when several train)."""
    from transformers import TrainerCallback

    class StepBar(TrainerCallback):
        bar: Any = None
        shown: dict[str, str] = {}  # noqa: RUF012 (one instance per training)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                self.bar = progress(total=state.max_steps, desc="level (train)", unit="step")
                self.bar.update(state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            logs = logs or {}
            log.debug("level: step %s %s", state.global_step, logs)
            latest = {k: f"{logs[k]:.4g}" for k in ("loss", "eval_loss") if isinstance(logs.get(k), float | int)}
            if latest and self.bar is not None:
                self.shown = {**self.shown, **latest}
                self.bar.set_postfix(self.shown, refresh=False)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.close()

    return StepBar()


def _val_accuracy(cfg: MPAConfig, student: ModelConfig, val: list[dict[str, Any]], out: Path) -> float | None:
    """Share of held-out teacher-consistent QAs the model answers like the pseudo-answer (label-free). Each answer
    is written to `out` (val_predictions.jsonl: the report shows them as "student after")."""
    if not val:
        return None
    from mpa.backends import GenRequest, load_backend
    from mpa.images import ImageSource, load_image
    from mpa.parsing import parse_short_answer

    backend = load_backend(student)
    try:
        images = {r["image_id"]: load_image(ImageSource(r["image_path"], Path(r["image_path"]))).image for r in val}
        requests = [
            GenRequest(key=r["qa_id"], prompt=render_answer_prompt(r["question"]), image=images[r["image_id"]],
                       max_new_tokens=cfg.identify.max_new_tokens, repetition_penalty=cfg.identify.repetition_penalty)
            for r in val
        ]  # fmt: skip
        results = backend.generate(requests)
    finally:
        backend.close()
    ident = cfg.identify
    answers = [parse_short_answer(res.texts[0]) if res.texts else "" for res in results]
    hits = [
        match_answers(answer, r["pseudo_answer"], ident.matcher,
                      anls_threshold=ident.anls_threshold, relaxed_tolerance=ident.relaxed_tolerance)
        for r, answer in zip(val, answers, strict=True)
    ]  # fmt: skip
    rows = [{"qa_id": r["qa_id"], "answer": a, "correct": h, "error": res.error}
            for r, a, h, res in zip(val, answers, hits, results, strict=True)]  # fmt: skip
    atomic_write_text(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return sum(hits) / len(hits)


def _restore_best(trainer: Any, method: str) -> None:
    """Load the checkpoint with the lowest label-free validation loss into the trained model (if not the last)."""
    best = trainer.state.best_model_checkpoint
    if not best or Path(best).name == f"checkpoint-{trainer.state.global_step}":
        return
    log.info("level: restoring the best checkpoint %s (validation loss %.4f)", best, trainer.state.best_metric)
    _load_weights(trainer.model, best, method)


def _load_weights(model: Any, checkpoint: str, method: str) -> None:
    """Load a checkpoint's trained weights (the adapter, or the whole model) into `model`. The Trainer's own loader
    reads a full checkpoint's tensors by their on-disk names with strict=False: transformers 5 saves VLMs under
    their original key names (`language_model.model.*`, not `model.language_model.*`), so it silently loads none."""
    if method == "lora":
        from peft import load_peft_weights, set_peft_model_state_dict

        set_peft_model_state_dict(model, load_peft_weights(checkpoint))
    else:  # the model's own class (also for remote code); from_pretrained maps the saved names to the runtime ones
        model.load_state_dict(type(model).from_pretrained(checkpoint, dtype=model.dtype).state_dict())


def _train(trainer: Any, resume: str | None, method: str) -> None:
    """Train, or go on from the checkpoint `resume` exactly as if never interrupted."""
    from transformers import TrainerState

    sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled  # these restore their own weight files
    if resume and not sharded:
        state = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json"))
        if state.stateful_callbacks.get("TrainerControl", {}).get("args", {}).get("should_training_stop"):
            # Training had ended (max_steps or early stopping) when this checkpoint was saved; `train()` would clear
            # that flag and take more steps, so take the final state and weights as they are.
            trainer.state = state
            _load_weights(trainer.model, resume, method)
            return
        if method == "full":
            _load_weights(trainer.model, resume, method)  # the Trainer's resume would leave the base weights
            # ...and would then warn that every key is missing; it still restores optimizer, schedule, RNG, state.
            trainer._load_from_checkpoint = lambda *args, **kwargs: None
    trainer.train(resume_from_checkpoint=resume)


def last_complete_checkpoint(trainer_dir: Path) -> str | None:
    """The newest checkpoint the Trainer finished saving, or None. Checkpoints are not written atomically and
    `trainer_state.json` is written last, so a folder without a readable one is a save cut short by a crash: it is
    removed, and training resumes from the previous checkpoint."""
    found = [p for p in trainer_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    for ckpt in sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        try:
            json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
            return str(ckpt)
        except (OSError, ValueError):
            log.warning("level: %s was cut short by a crash (no complete trainer_state.json); removing it", ckpt)
            shutil.rmtree(ckpt, ignore_errors=True)
    return None


def trained_student(cfg: MPAConfig, sdir: Path) -> ModelConfig:
    """The leveled student as a model config (base + adapter, or the fully fine-tuned folder), on a backend that
    loads those weights: a served student (backend openai) is validated in-process, never through a server that
    holds only the base model."""
    from mpa.backends import for_trained_weights

    if cfg.level.method == "lora":
        trained = cfg.student.model_copy(update={"adapter": str(sdir / "adapter")})
    else:
        trained = cfg.student.model_copy(update={"model": str(sdir / "model"), "adapter": None, "revision": None})
    return for_trained_weights(trained)


def run(cfg: MPAConfig, rd: RunDir, *, force: bool = False) -> dict[str, Any]:
    """Fine-tune the student on the selected set (resuming from the last checkpoint); returns the manifest."""
    upstream = rd.require("identify")
    if cfg.student.adapter:
        raise ConfigError(
            "student.adapter: level trains a new adapter on the base student and cannot stack it on another; "
            "merge the adapter into the model first (peft merge_and_unload + save_pretrained) and pass that folder"
        )
    settings = stage_settings(cfg, upstream["fingerprint"])
    fp = fingerprint(settings)
    # Under torchrun every process trains; only the main one writes the run directory (the others wait for it).
    proceed = rd.begin(STAGE, fp, settings, force=force) if distributed.is_main() else True
    distributed.barrier()
    if not proceed or (not distributed.is_main() and rd.is_complete(STAGE, fp)):
        log.info("level: already complete with these settings, skipped")
        return rd.require(STAGE)
    sdir = rd.stage_dir(STAGE)
    cands = list(iter_jsonl(rd.stage_dir("identify") / "candidates.jsonl"))
    data = split_data(cands, cfg.level, cfg.seed)
    counts = {name: len(rows) for name, rows in data.items()}
    if distributed.is_main():
        val_ids = [r["qa_id"] for r in data["val"]]
        atomic_write_json(sdir / "data_summary.json", {"counts": counts, "val_ids": val_ids})
    if not data["train"]:
        raise RunError(
            f"level: nothing to train on in {rd.stage_dir('identify')} (selected={counts['gap']}): the student already "
            "matches the teacher on every pseudo-QA, or annotation gave no usable pairs; see identify/manifest.json"
        )
    model, processor = _load_student(cfg.student, cfg.level)
    val_ds = _dataset(data["val"], cfg.student) if data["val"] else None
    trainer = _trainer(cfg, sdir, _dataset(data["train"], cfg.student), val_ds, model, processor)
    if distributed.is_main():
        last_complete_checkpoint(sdir / "trainer")  # removes a checkpoint torn by a crash
    distributed.barrier()
    resume = last_complete_checkpoint(sdir / "trainer")
    _train(trainer, resume, cfg.level.method)
    _restore_best(trainer, cfg.level.method)
    out_dir = sdir / ("adapter" if cfg.level.method == "lora" else "model")
    trainer.model.config.use_cache = True  # the trainer turns the KV cache off; a saved model should generate fast
    # Every process calls save_model: under FSDP / ZeRO-3 it gathers the sharded weights; only rank 0 writes.
    trainer.save_model(str(out_dir))
    if not distributed.is_main():
        distributed.barrier()  # the main process validates and writes the manifest
        return rd.require(STAGE)
    (out_dir / "training_args.bin").unlink(missing_ok=True)  # the Trainer's pickle; settings are in the manifest
    processor.save_pretrained(out_dir)
    outputs: dict[str, Any] = {"counts": counts, "output": str(out_dir), "resumed": resume is not None,
                               "resumed_from": Path(resume).name if resume else None}  # fmt: skip
    merged_model = None
    if cfg.level.method == "lora" and cfg.level.merge:
        merged_model = trainer.model.merge_and_unload()
        merged_model.save_pretrained(sdir / "merged")
        processor.save_pretrained(sdir / "merged")
        outputs["merged"] = str(sdir / "merged")
    history = trainer.state.log_history
    del trainer, model, merged_model
    _free_memory()  # the trained model leaves the device before validation loads the saved one
    after = trained_student(cfg, sdir)
    val_before = sum(r["student_correct"] for r in data["val"]) / len(data["val"]) if data["val"] else None
    metrics = {
        "log_history": history,
        "best_checkpoint": _best(history),
        "val_accuracy_before": val_before,
        "val_accuracy_after": _val_accuracy(cfg, after, data["val"], sdir / "val_predictions.jsonl"),
    }
    atomic_write_json(sdir / "metrics.json", metrics)
    outputs.update({k: v for k, v in metrics.items() if k != "log_history"})
    outputs["student_after"] = after.model_dump()
    outputs["world_size"] = distributed.world_size()
    manifest = rd.finish(STAGE, fp, settings, outputs)
    distributed.barrier()
    return manifest


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _best(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    evals = [h for h in history if "eval_loss" in h]
    if not evals:
        return None
    best = min(evals, key=lambda h: h["eval_loss"])
    return {"step": best.get("step"), "eval_loss": best["eval_loss"]}
