"""Parity Leveler: data selection guards, training prompt = inference prompt, LoRA/full training and outputs."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from mpa.config import LevelConfig, build_config
from mpa.errors import MPAError
from mpa.pipeline import run_pipeline
from mpa.records import CandidateRecord
from mpa.stages.level import balance, split_data
from tests.test_pipeline import make_tree


def _cand(
    i: int, answer: str, atype: str, *, selected: bool, agrees: bool = True, correct: bool = False
) -> CandidateRecord:
    return CandidateRecord(
        qa_id=f"q{i}",
        image_id=f"i{i}",
        image_path="x.png",
        question=f"q{i}?",
        pseudo_answer=answer,
        answer_type=atype,
        teacher_answer=answer if agrees else "other",
        student_answer=answer if correct else "no",
        teacher_agrees=agrees,
        teacher_consistency=float(agrees),
        student_correct=correct,
        selected=selected,
        reason="selected" if selected else "student_correct" if agrees else "teacher_inconsistent",
    )


def test_balance_by_answer_type_oversamples_small_groups() -> None:
    rows = [_cand(i, "red", "other", selected=True) for i in range(6)] + [_cand(9, "yes", "yes/no", selected=True)]
    out = balance(rows, LevelConfig(balance="answer_type"), random.Random(0))
    types = [r.answer_type for r in out]
    assert types.count("other") == 6 and types.count("yes/no") == 6


def test_max_per_answer_caps_dominant_answers() -> None:
    rows = [_cand(i, "Yes", "yes/no", selected=True) for i in range(10)]
    rows += [_cand(20 + i, "blue", "other", selected=True) for i in range(3)]
    out = balance(rows, LevelConfig(max_per_answer=4), random.Random(0))
    assert sum(r.pseudo_answer == "Yes" for r in out) == 4 and len(out) == 7


def test_split_is_disjoint_seeded_and_label_free() -> None:
    cands = [_cand(i, "red", "other", selected=True) for i in range(100)]
    cands += [_cand(100 + i, "blue", "other", selected=False, correct=True) for i in range(100)]
    cands += [_cand(300 + i, "x", "other", selected=False, agrees=False) for i in range(50)]
    lvl = LevelConfig(retention_ratio=0.5, val_fraction=0.2)
    data = split_data(cands, lvl, seed=0)
    val = {r.qa_id for r in data["val"]}
    train = {r.qa_id for r in data["train"]}
    assert not val & train
    assert all(r.teacher_agrees for r in data["val"])  # held out from ALL teacher-consistent QAs
    assert {r.selected for r in data["val"]} == {True, False}  # gap and retention alike
    assert 25 <= len(val) <= 55
    assert len(data["retention"]) == round(0.5 * len(data["gap"]))
    assert all(r.student_correct and not r.selected for r in data["retention"])
    assert split_data(cands, lvl, seed=0) == data
    assert split_data(cands, lvl, seed=1)["val"] != data["val"]


def test_training_prompt_equals_inference_prompt(tiny_llava_dir: Path, color_images: Path) -> None:
    """The tokens TRL trains on, up to the answer, are exactly what the HF backend feeds `generate`."""
    from PIL import Image
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from mpa.backends.hf import load_processor
    from mpa.config import model_config
    from mpa.prompts import render_answer_prompt

    processor = load_processor(model_config(model=str(tiny_llava_dir)))
    image = Image.open(sorted(color_images.glob("*.png"))[0]).convert("RGB")
    prompt = render_answer_prompt("What colour is the image?")
    collator = DataCollatorForVisionLanguageModeling(processor=processor, completion_only_loss=True)
    batch = collator(
        [{"images": [image], "prompt": [{"role": "user", "content": prompt}],
          "completion": [{"role": "assistant", "content": "red"}]}]
    )  # fmt: skip
    ids = batch["input_ids"][0]
    answer_start = int((batch["labels"][0] != -100).nonzero()[0])
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    infer = processor.apply_chat_template(
        [conv], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
        processor_kwargs={"images": [[image]], "padding": True},
    )  # fmt: skip
    assert ids[:answer_start].tolist() == infer["input_ids"][0].tolist()
    assert processor.tokenizer.decode(ids[answer_start:]).startswith("red")


@pytest.fixture
def level_tree(tmp_path: Path, tiny_teacher_dir: Path, tiny_student_dir: Path, color_images: Path) -> dict[str, Any]:
    return make_tree(tmp_path / "run", tiny_teacher_dir, tiny_student_dir, color_images)


def _first_image_inputs(model_dir: Path, color_images: Path) -> dict[str, Any]:
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    image = Image.open(sorted(color_images.glob("*.png"))[0]).convert("RGB")
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    return processor.apply_chat_template(
        [conv], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
        processor_kwargs={"images": [[image]]},
    )  # fmt: skip


def test_lora_adapter_reloads_and_merges_identically(level_tree: dict[str, Any], color_images: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    level_tree["level"].update({"merge": True, "val_fraction": 0.25, "early_stopping_patience": 2, "eval_steps": 2})
    manifest = run_pipeline(build_config(level_tree))["level"]
    run = Path(level_tree["run_dir"])
    assert manifest["counts"]["val"] > 0 and manifest["best_checkpoint"] is not None
    history = json.loads((run / "level/metrics.json").read_text())["log_history"]
    assert any("eval_loss" in h for h in history)  # label-free validation loss is tracked
    assert manifest["val_accuracy_before"] is not None and manifest["val_accuracy_after"] is not None
    student = level_tree["student"]["model"]
    inputs = _first_image_inputs(Path(student), color_images)
    base = AutoModelForImageTextToText.from_pretrained(student).eval()
    with torch.no_grad():
        logits_base = base(**inputs).logits
    adapted = PeftModel.from_pretrained(base, run / "level/adapter").eval()
    merged = AutoModelForImageTextToText.from_pretrained(run / "level/merged").eval()
    with torch.no_grad():
        logits_adapted = adapted(**inputs).logits
        logits_merged = merged(**inputs).logits
    assert not torch.allclose(logits_base, logits_adapted, atol=1e-4)  # training changed the model
    torch.testing.assert_close(logits_adapted, logits_merged, atol=1e-4, rtol=1e-4)


def test_full_finetune_keeps_a_frozen_vision_tower(level_tree: dict[str, Any]) -> None:
    from safetensors.torch import load_file

    level_tree["level"].update({"method": "full", "epochs": 1, "freeze_vision": True})
    run_pipeline(build_config(level_tree))
    run = Path(level_tree["run_dir"])
    before = load_file(Path(level_tree["student"]["model"]) / "model.safetensors")
    after = load_file(run / "level/model/model.safetensors")
    vision = [k for k in before if "vision_tower" in k]
    text = [k for k in before if "language_model" in k and k in after]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert any(not torch.equal(before[k], after[k]) for k in text)


def test_leveled_student_learns_the_gap(level_tree: dict[str, Any]) -> None:
    """After full FT on the gap set the student gives the teacher's answers to most questions it failed."""
    from mpa.backends import GenRequest, load_backend
    from mpa.config import model_config
    from mpa.images import ImageSource, load_image
    from mpa.parsing import parse_short_answer
    from mpa.prompts import render_answer_prompt
    from mpa.rundir import iter_jsonl

    level_tree["level"].update({"method": "full", "epochs": 40, "learning_rate": 0.003, "freeze_vision": False})
    manifests = run_pipeline(build_config(level_tree))
    parity = list(iter_jsonl(Path(level_tree["run_dir"]) / "identify/parity.jsonl"))
    backend = load_backend(model_config(**manifests["level"]["student_after"]))
    reqs = [
        GenRequest(key=p["qa_id"], prompt=render_answer_prompt(p["question"]),
                   image=load_image(ImageSource(p["image_path"], Path(p["image_path"]))).image)
        for p in parity
    ]  # fmt: skip
    answers = [parse_short_answer(r.texts[0]) for r in backend.generate(reqs)]
    hits = sum(a.lower() == p["pseudo_answer"].lower() for a, p in zip(answers, parity, strict=True))
    assert parity and all(not p["student_correct"] for p in parity)  # before: none of these
    assert hits >= 0.75 * len(parity), answers


def test_empty_selection_is_a_clear_error(level_tree: dict[str, Any]) -> None:
    # The teacher as its own student: it agrees with itself everywhere, so there is no gap to train on.
    level_tree["student"]["model"] = level_tree["teacher"]["model"]
    with pytest.raises(MPAError, match="nothing to train on"):
        run_pipeline(build_config(level_tree))


def test_idefics3_student_with_default_lora_targets(
    tmp_path: Path, tiny_teacher_dir: Path, tiny_idefics3_dir: Path, color_images: Path
) -> None:
    """Another architecture (SmolVLM's): the default LoRA targets hit its language model and never its SigLIP."""
    tree = make_tree(tmp_path / "run", tiny_teacher_dir, tiny_idefics3_dir, color_images)
    run_pipeline(build_config(tree))
    adapter_cfg = json.loads((tmp_path / "run/level/adapter/adapter_config.json").read_text())
    from safetensors.torch import load_file

    keys = list(load_file(tmp_path / "run/level/adapter/adapter_model.safetensors"))
    assert keys and all("text_model" in k for k in keys), keys[:3]
    assert adapter_cfg["r"] == 16


def test_level_resumes_from_its_last_checkpoint(level_tree: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import TrainerCallback

    from mpa.backends import hf_train

    class Crash(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 5:
                raise KeyboardInterrupt("simulated crash")

    original = hf_train._trainer

    def crashing_trainer(*args: Any, **kwargs: Any) -> Any:
        trainer = original(*args, **kwargs)
        trainer.add_callback(Crash())
        return trainer

    level_tree["level"].update({"max_steps": 8, "eval_steps": 2})
    cfg = build_config(level_tree)
    run_pipeline(cfg, ["annotate", "identify"])
    monkeypatch.setattr(hf_train, "_trainer", crashing_trainer)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, ["level"])
    run = Path(level_tree["run_dir"])
    assert sorted(p.name for p in (run / "level/trainer").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    steps_run: list[int] = []

    class Count(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            steps_run.append(state.global_step)

    def counting_trainer(*args: Any, **kwargs: Any) -> Any:
        trainer = original(*args, **kwargs)
        trainer.add_callback(Count())
        return trainer

    monkeypatch.setattr(hf_train, "_trainer", counting_trainer)
    manifest = run_pipeline(cfg, ["level"])["level"]
    assert manifest["resumed"] is True
    assert steps_run == [5, 6, 7, 8]  # continued from checkpoint-4, did not start over
    steps = [h["step"] for h in json.loads((run / "level/metrics.json").read_text())["log_history"] if "loss" in h]
    assert steps == list(range(1, 9))  # one continuous training log


def test_best_checkpoint_is_restored(level_tree: dict[str, Any]) -> None:
    """`_restore_best` loads the best checkpoint's weights into the trained model (the Trainer's own reload
    silently misses renamed VLM keys in transformers 5)."""
    from types import SimpleNamespace

    from transformers import AutoModelForImageTextToText

    from mpa.backends.hf_train import _restore_best

    level_tree["level"].update({"method": "full", "max_steps": 4, "eval_steps": 2, "val_fraction": 0.3})
    run_pipeline(build_config(level_tree))
    ckpts = Path(level_tree["run_dir"]) / "level/trainer"
    model = AutoModelForImageTextToText.from_pretrained(ckpts / "checkpoint-4")
    early = AutoModelForImageTextToText.from_pretrained(ckpts / "checkpoint-2").state_dict()
    assert any(not torch.equal(v, early[k]) for k, v in model.state_dict().items())
    state = SimpleNamespace(best_model_checkpoint=str(ckpts / "checkpoint-2"), global_step=4, best_metric=0.1)
    _restore_best(SimpleNamespace(state=state, model=model), "full")
    assert all(torch.equal(v, early[k]) for k, v in model.state_dict().items())
