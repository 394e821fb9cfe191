"""The generation backend protocol: a batch of requests in, results in the same order, matched by key.

Backends own batching, padding, devices and retries. Stages build `GenRequest`s and never branch on the backend.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image


@dataclass(frozen=True)
class GenRequest:
    """One prompt about one image. `key` identifies the request; results are matched by it, never by text."""

    key: str
    prompt: str
    image: Image.Image | None = None
    n: int = 1  # number of samples (greedy decoding returns one)
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0


@dataclass
class GenResult:
    """The outputs for one request: `texts` holds `n` samples, or is empty with `error` set."""

    key: str
    texts: list[str] = field(default_factory=list)
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Backend(Protocol):
    """What every generation backend provides."""

    name: str

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Results for `requests`, in the same order; a failed request gets `error`, never an exception."""
        ...

    def close(self) -> None:
        """Free the model / connections."""
        ...


def sample_seed(seed: int, key: str, sample: int) -> int:
    """A per-(request, sample) seed, so a sample does not depend on batch composition or resume point."""
    digest = hashlib.sha256(f"{seed}\x00{key}\x00{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def pixel_budget_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The size (aspect kept) of a `width` x `height` image scaled down to at most `max_pixels` pixels."""
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def fit_pixel_budget(image: Image.Image, max_pixels: int | None) -> Image.Image:
    """Downscale (aspect kept) so the image has at most `max_pixels` pixels. Every backend uses this one function,
    so the same config shows every backend the same pixels."""
    if max_pixels is None or image.width * image.height <= max_pixels:
        return image
    return image.resize(pixel_budget_size(image.width, image.height, max_pixels), Image.Resampling.BICUBIC)
