"""The parts of a vision-language model, named one way for every family: vision tower, projector, language model.

One rule decides what full fine-tuning freezes and where LoRA goes, whatever the family:
  vision tower   the image encoder: `vision_tower` (LLaVA, LLaVA-NeXT/OneVision, Gemma 3, InternVL, Mistral 3,
                 PaliGemma), `vision_model` (Idefics3 / SmolVLM), `visual` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5)
  projector      what maps image features into the language model: `multi_modal_projector`, `connector`
                 (Idefics3), `visual.merger` and `visual.deepstack_merger_list` (Qwen: inside `visual`, yet not part
                 of the encoder), `image_newline` (LLaVA-NeXT / OneVision)
  language model everything else (decoder layers, embeddings, `lm_head`).
`freeze_vision` freezes the vision tower; `freeze_projector` the projector; the default LoRA targets are every
`nn.Linear` of the language model except `lm_head`, so hybrid-attention decoders (Qwen3.5's `linear_attn.in_proj_*`
/ `out_proj`) are covered as well as the usual q/k/v/o and MLP projections. Tests check each family's parameters
land in the part this module says (tests/test_families.py).
"""

from __future__ import annotations

import re
from typing import Literal

Part = Literal["vision_tower", "projector", "language_model"]

_PROJECTOR = re.compile(
    r"(^|\.)(multi_modal_projector|mm_projector|connector|image_newline)(\.|$)"
    r"|(^|\.)visual\.(merger|deepstack_merger_list)(\.|$)"
)
_VISION_TOWER = re.compile(r"(^|\.)(vision_tower|vision_model|visual|image_encoder)(\.|$)")
_NOT_LANGUAGE = r"(^|\.)(vision_tower|vision_model|visual|image_encoder|multi_modal_projector|mm_projector|connector)\."


def part_of(name: str) -> Part:
    """Which part a parameter or module (by its qualified name) belongs to."""
    if _PROJECTOR.search(name):
        return "projector"
    if _VISION_TOWER.search(name):
        return "vision_tower"
    return "language_model"


def freeze(model: object, *, vision_tower: bool, projector: bool) -> dict[str, int]:
    """Turn off gradients for the chosen parts; returns the number of trainable parameters per part after."""
    frozen = {"vision_tower": vision_tower, "projector": projector, "language_model": False}
    trainable = {"vision_tower": 0, "projector": 0, "language_model": 0}
    for name, param in model.named_parameters():  # type: ignore[attr-defined]
        part = part_of(name)
        if frozen[part]:
            param.requires_grad_(False)
        if param.requires_grad:
            trainable[part] += param.numel()
    return trainable


def lora_targets(model: object) -> str:
    """A PEFT `target_modules` regex (full match) for every `nn.Linear` of the language model, `lm_head` excluded:
    the leaf names found in the language model, outside every vision-tower / projector prefix. A regex, not a list
    of thousands of names, keeps adapter_config.json portable (PEFT and vLLM read the same file)."""
    import torch

    leaves = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()  # type: ignore[attr-defined]
            if isinstance(module, torch.nn.Linear) and part_of(name) == "language_model"
        }
        - {"lm_head"}
    )
    if not leaves:
        raise ValueError("the model has no linear layer outside its vision tower and projector")
    return rf"^(?!.*{_NOT_LANGUAGE}).*\.({'|'.join(map(re.escape, leaves))})$"
