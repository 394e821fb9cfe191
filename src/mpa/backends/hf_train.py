"""Training for students whose weights are a Hugging Face checkpoint (backends hf and vllm load one; a served
student, backend openai, names the checkpoint its server holds): TRL's `SFTTrainer` with `ChatCollator`, the
HF backend's own prompt token for token, loss on the answer and its end-of-turn only. Full fine-tuning freezes
the vision tower and/or projector by one rule for every family (`hf_parts.freeze`); LoRA goes on every linear
layer of the language model by default (`hf_parts.lora_targets`).

A killed run goes on from its last complete checkpoint to the uninterrupted result: the same weights, validation
losses and training log (tests/test_level_resume.py), for full fine-tuning and LoRA, with early stopping and the
best checkpoint restored. The level stage reaches this only through `mpa.backends.load_training`.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from mpa import distributed
from mpa.config import LANGUAGE_MODEL_LINEAR, LevelConfig, ModelConfig, MPAConfig
from mpa.errors import MPAError
from mpa.progress import progress
from mpa.prompts import render_answer_prompt
from mpa.records import CandidateRecord

log = logging.getLogger(__name__)


class HFTraining:
    """Fine-tunes `cfg.student` by `cfg.level` with checkpoints in `trainer_dir` (see `Training`)."""

    def __init__(self, cfg: MPAConfig, trainer_dir: Path) -> None:
        self.cfg = cfg
        self.trainer_dir = trainer_dir
        self.history: list[dict[str, Any]] = []
        self.trainer: Any = None
        self.processor: Any = None

    def fit(self, train: list[CandidateRecord], val: list[CandidateRecord]) -> str | None:
        cfg = self.cfg
        model, self.processor = _load_student(cfg.student, cfg.level)
        val_ds = _dataset(val, cfg.student) if val else None
        self.trainer = _trainer(cfg, self.trainer_dir, _dataset(train, cfg.student), val_ds, model, self.processor)
        if distributed.is_main():
            last_complete_checkpoint(self.trainer_dir)  # removes a checkpoint torn by a crash
        distributed.barrier()
        resume = last_complete_checkpoint(self.trainer_dir)
        _train(self.trainer, resume, cfg.level.method)
        _restore_best(self.trainer, cfg.level.method)
        self.history = self.trainer.state.log_history
        return resume

    def save(self, out_dir: Path, merged_dir: Path | None = None) -> None:
        trainer = self.trainer
        trainer.model.config.use_cache = True  # the trainer turns the KV cache off; a saved model should generate fast
        # Every process calls save_model: under FSDP / ZeRO-3 it gathers the sharded weights; only rank 0 writes.
        trainer.save_model(str(out_dir))
        if not distributed.is_main():
            return
        (out_dir / "training_args.bin").unlink(missing_ok=True)  # the Trainer's pickle; settings are in the manifest
        self.processor.save_pretrained(out_dir)
        if merged_dir is not None:
            merged = trainer.model.merge_and_unload()
            merged.save_pretrained(merged_dir)
            self.processor.save_pretrained(merged_dir)
            del merged

    def close(self) -> None:
        """The trained model leaves the device (before validation loads the saved one)."""
        self.trainer = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _dataset(rows: list[CandidateRecord], student: ModelConfig):  # -> datasets.Dataset
    """Prompt/completion rows whose images are decoded on access exactly as at identify and evaluation time
    (EXIF rotation, alpha on white, pixel budget), so the student trains on what it is later shown."""
    import datasets

    data = {
        "images": [[r.image_path] for r in rows],
        "prompt": [render_answer_prompt(r.question) for r in rows],
        "completion": [r.pseudo_answer for r in rows],
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


def _trainer(
    cfg: MPAConfig, trainer_dir: Path, train_ds: Any, val_ds: Any, model: Any, processor: Any
):  # -> SFTTrainer
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
        output_dir=str(trainer_dir),
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
