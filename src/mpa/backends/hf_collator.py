"""Training batches whose prompts are, token for token, the prompts the HF backend generates from.

The student is trained to answer exactly what it is later asked. TRL's VLM collator renders the whole conversation
and takes the prompt as the common prefix of that and of the generation prompt; chat templates that render an
assistant turn differently from the generation prompt break this (LLaVA-OneVision writes `assistant \\n` in a
conversation but prompts with `assistant\\n`; the labels then start with ` \\n`). Here instead:

  prompt      = `processor.apply_chat_template(conversation, add_generation_prompt=True, images=...)`: the same call,
                conversation (`conversation()`), images (pixel budget) and processor (left padding, budget) as
                `HFBackend`, so image tokens are expanded by the model's own processor;
  completion  = what the template writes between the generation prompt and a reply (SmolVLM's " " after
                "Assistant:", Qwen3.5's empty think block) + the answer + the template's end of turn (up to and
                including the end-of-turn token), tokenized on its own, as the model produces it after the prompt
                (`reply_frame()`; when a template's conversation does not extend its generation prompt, as with
                LLaVA-OneVision, the prompt wins and nothing comes before the answer);
  labels      = the completion tokens only (-100 elsewhere);
then rows are flushed left (no left padding: positions start at 0, as for a single generation prompt).
"""

from __future__ import annotations

from typing import Any

import torch

PROBE = "mpa-probe-reply"


def conversation(prompt: str, has_image: bool) -> list[dict[str, Any]]:
    """The one user turn every backend sends: the image first, then the text."""
    content: list[dict[str, str]] = [{"type": "image"}] if has_image else []
    content.append({"type": "text", "text": prompt})
    return [{"role": "user", "content": content}]


def _eos_strings(processor: Any, model_eos: int | list[int] | None) -> list[str]:
    tokenizer = processor.tokenizer
    ids = model_eos if isinstance(model_eos, list) else [model_eos] if model_eos is not None else []
    names = [tokenizer.convert_ids_to_tokens(i) for i in ids]
    if tokenizer.eos_token:
        names.append(tokenizer.eos_token)
    return [n for n in names if n]


def reply_frame(processor: Any, model_eos: int | list[int] | None = None) -> tuple[str, str]:
    """(before, after): what the chat template writes between the generation prompt and an assistant reply, and
    after the reply up to and including the first end-of-turn token (the model stops there; the tokenizer's EOS
    when the template writes nothing after a reply)."""
    user = conversation("?", has_image=False)
    turn = [*user, {"role": "assistant", "content": [{"type": "text", "text": PROBE}]}]
    full = processor.apply_chat_template(turn, tokenize=False)
    prompt = processor.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    start = full.rindex(PROBE)
    before = full[len(prompt) : start] if full.startswith(prompt) else ""
    after = full[start + len(PROBE) :]
    ends = [(after.find(e), e) for e in _eos_strings(processor, model_eos) if e in after]
    if ends:
        position, token = min(ends)
        return before, after[: position + len(token)]
    return before, after if after.strip() else (processor.tokenizer.eos_token or "")


def _flush_left(mask: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Move each row's unmasked tokens to the left and drop all-padding columns (cf. TRL's `flush_left`)."""
    order = torch.argsort((mask == 0).to(torch.int8), dim=1, stable=True)
    width = int(mask.sum(dim=1).max())
    return tuple(torch.gather(t, 1, order)[:, :width] for t in (mask, *tensors))


class ChatCollator:
    """Rows {"images": [PIL] or [], "prompt": str, "completion": str} → model inputs with `labels`."""

    def __init__(self, processor: Any, model_eos: int | list[int] | None = None) -> None:
        self.processor = processor
        self.before, self.after = reply_frame(processor, model_eos)

    def prompts(self, examples: list[dict[str, Any]]) -> Any:  # -> BatchFeature
        """The generation prompts, exactly as `HFBackend` builds them (left padded)."""
        kwargs: dict[str, Any] = {"padding": True}
        if any(e["images"] for e in examples):
            kwargs["images"] = [e["images"] for e in examples]
        convs = [conversation(e["prompt"], bool(e["images"])) for e in examples]
        return self.processor.apply_chat_template(convs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                                  return_tensors="pt", processor_kwargs=kwargs)  # fmt: skip

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = dict(self.prompts(examples))
        tokenizer = self.processor.tokenizer
        texts = [self.before + e["completion"] + self.after for e in examples]
        completions = tokenizer(texts, add_special_tokens=False,
                                padding=True, padding_side="right", return_tensors="pt")  # fmt: skip
        prompt_mask = batch.pop("attention_mask")
        input_ids = torch.cat((batch.pop("input_ids"), completions["input_ids"]), dim=1)
        mask = torch.cat((prompt_mask, completions["attention_mask"]), dim=1)
        completion_mask = torch.cat((torch.zeros_like(prompt_mask), completions["attention_mask"]), dim=1)
        # Per-token type ids (Gemma 3's image tokens, Qwen's multimodal types): completion tokens are text (0).
        typed = [k for k in ("token_type_ids", "mm_token_type_ids") if k in batch]
        extra = [torch.cat((batch.pop(k), torch.zeros_like(completions["input_ids"])), dim=1) for k in typed]
        mask, input_ids, completion_mask, *extra = _flush_left(mask, input_ids, completion_mask, *extra)
        labels = input_ids.masked_fill(completion_mask == 0, -100)
        types = dict(zip(typed, extra, strict=True))
        return {**batch, "input_ids": input_ids, "attention_mask": mask, "labels": labels, **types}
