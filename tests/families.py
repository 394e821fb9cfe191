"""Helpers for the architecture matrix (tests/test_families.py): tiny checkpoints of every family, built once per
test session, and a "parrot" teacher per family: a tiny random model taught a few fixed replies, so that the real
stages (annotate → identify → level → evaluate) have parseable pseudo-QAs to work on with any architecture.

The parrot is trained with mpa's own training collator (`ChatCollator`), i.e. on the exact prompts the HF backend
later sends; its replies come back only if training and inference prompts agree.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from mpa.testing.families import FAMILIES

CHAT_FAMILIES = sorted(set(FAMILIES) - {"paligemma"})  # PaliGemma ships no chat template: refused (tested apart)
ANNOTATE_PROMPT = "Write one question and its answer about the image."
QUESTION = "What colour is the image?"
PSEUDO_REPLY = f"Question: {QUESTION} Answer: red"


def parrot_rows(images: list[Image.Image]) -> list[dict[str, object]]:
    """Every prompt a pipeline run sends the teacher (annotate, identify, evaluate), each with its fixed reply."""
    from mpa.evaluation import get_benchmark, render_eval_prompt
    from mpa.prompts import render_answer_prompt

    prompts = {ANNOTATE_PROMPT: PSEUDO_REPLY, render_answer_prompt(QUESTION): "red"}
    prompts[render_eval_prompt(get_benchmark("jsonl").prompt_id, QUESTION)] = "red"
    return [{"images": [image], "prompt": p, "completion": c} for image in images for p, c in prompts.items()]


def teach_fixed_replies(
    model_dir: Path, rows: list[dict[str, object]], max_steps: int = 400, lr: float = 1e-2, target_loss: float = 1e-2
) -> None:
    """Overfit the model in `model_dir` (in place) on `rows` with AdamW (full fine-tuning, plain torch loop) until
    the loss is below `target_loss`: some families (Qwen3.5's linear attention) sit on a plateau for 100+ steps
    where one prompt's reply is not yet told apart from another's, so a fixed step count is not enough."""
    import torch
    from transformers import AutoModelForImageTextToText

    from mpa.backends.hf import load_processor
    from mpa.backends.hf_collator import ChatCollator
    from mpa.config import model_config

    torch.manual_seed(0)
    processor = load_processor(model_config(model=str(model_dir)))
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    collator = ChatCollator(processor, model.generation_config.eos_token_id)
    batch = collator(rows)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(max_steps):
        loss = model(**batch).loss
        if loss.item() < target_loss:
            break
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    else:
        raise AssertionError(f"{model_dir}: no parrot after {max_steps} steps (loss {loss.item():.3f})")
    model.eval()
    model.save_pretrained(model_dir)
