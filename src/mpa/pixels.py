"""The pixel budget: how many pixels of an image a model is shown, applied the same way by every backend.

Two places apply a budget, and both use this module:
  1. every backend (hf, openai, vllm) and training fit each image into [min_pixels, max_pixels] with
     `fit_pixel_budget` before anything else sees it, so a served model and an in-process one get the same pixels
     (a server's own processor defaults then leave the image as it is, up to its patch rounding);
  2. processors that resize to a pixel budget themselves (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5: `smart_resize`
     to multiples of patch x merge) are also given the budget (`apply_processor_budget`; vLLM gets the same values
     as `mm_processor_kwargs`), so their rounding never leaves it. In transformers 5 these image processors take
     the budget as `size={"shortest_edge": min_pixels, "longest_edge": max_pixels}` (pixel counts, not sides);
     they have no `min_pixels` / `max_pixels` attributes. Processors that resize to a fixed size (SigLIP, CLIP,
     Idefics3 tiles, Gemma 3, InternVL) get only step 1.
The paper's Qwen2-VL setting is max_pixels = 512 * 28 * 28.
"""

from __future__ import annotations

import math
from typing import Any

from PIL import Image


def pixel_budget_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The size (aspect kept) of a `width` x `height` image scaled down to at most `max_pixels` pixels."""
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def fit_pixel_budget(image: Image.Image, max_pixels: int | None, min_pixels: int | None = None) -> Image.Image:
    """Scale (aspect kept, bicubic) so the image has at most `max_pixels` and at least `min_pixels` pixels; an
    image already inside the budget is returned as it is."""
    area = image.width * image.height
    if max_pixels is not None and area > max_pixels:
        return image.resize(pixel_budget_size(image.width, image.height, max_pixels), Image.Resampling.BICUBIC)
    if min_pixels is not None and area < min_pixels:
        scale = math.sqrt(min_pixels / area)
        size = (math.ceil(image.width * scale), math.ceil(image.height * scale))
        return image.resize(size, Image.Resampling.BICUBIC)
    return image


def takes_pixel_budget(image_processor: Any) -> bool:
    """True for image processors that resize to a pixel-count budget (the Qwen-VL `smart_resize` family): they
    carry a temporal patch size and a merge size, and a `size` with `shortest_edge` / `longest_edge` pixel counts."""
    size = getattr(image_processor, "size", None)
    if size is None or not all(hasattr(image_processor, a) for a in ("merge_size", "temporal_patch_size")):
        return False
    try:
        return bool(size["shortest_edge"]) and bool(size["longest_edge"])
    except (KeyError, TypeError):
        return False


def processor_budget(min_pixels: int | None, max_pixels: int | None) -> dict[str, int]:
    """The budget as processor keyword arguments (vLLM `mm_processor_kwargs` for the Qwen-VL family)."""
    return {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}


def apply_processor_budget(processor: Any, min_pixels: int | None, max_pixels: int | None) -> bool:
    """Give a pixel-budget image processor the budget (in place); returns whether the processor takes one."""
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None or not takes_pixel_budget(image_processor):
        return False
    size = image_processor.size
    budget = {
        "shortest_edge": min_pixels if min_pixels is not None else size["shortest_edge"],
        "longest_edge": max_pixels if max_pixels is not None else size["longest_edge"],
    }
    budget["shortest_edge"] = min(budget["shortest_edge"], budget["longest_edge"])
    image_processor.size = budget if isinstance(size, dict) else type(size)(**budget)
    return True
