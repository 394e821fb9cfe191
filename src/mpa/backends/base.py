"""The backend protocols: generation (a batch of requests in, results in the same order, matched by key) and
training (the level stage fine-tunes a student through it).

Backends own batching, padding, devices and retries. Stages build `GenRequest`s and never branch on the backend.
Every decoding parameter a request carries is applied as given by every backend: no backend falls back on a
checkpoint's or a server's own defaults (Qwen2-VL's generation_config has repetition_penalty 1.05 and top_k 1).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from mpa.records import CandidateRecord


@dataclass(frozen=True)
class GenRequest:
    """One prompt about one image. `key` identifies the request; results are matched by it, never by text."""

    key: str
    prompt: str
    image: Image.Image | None = None
    n: int = 1  # number of samples (greedy decoding returns one)
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    repetition_penalty: float = 1.0  # 1.0 = off; every backend applies exactly this (never a checkpoint default)
    max_new_tokens: int = 64
    seed: int = 0

    def decoding(self) -> dict[str, float | int]:
        """The decoding parameters, as recorded in stage manifests."""
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "repetition_penalty": self.repetition_penalty, "max_new_tokens": self.max_new_tokens}  # fmt: skip


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
        """Free the model and its device memory, or the connections (safe to call twice)."""
        ...


def sample_seed(seed: int, key: str, sample: int) -> int:
    """A per-(request, sample) seed, so a sample does not depend on batch composition or resume point."""
    digest = hashlib.sha256(f"{seed}\x00{key}\x00{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class Training(Protocol):
    """What a backend that can fine-tune its model's weights provides to the level stage (its config class names
    it in `training`). Rows are identify's candidates; the student is taught
    to answer each question with its pseudo-answer, asked exactly as it is asked at identify and evaluation."""

    history: list[dict[str, Any]]  # the training log: losses and validation losses by step

    def fit(self, train: list[CandidateRecord], val: list[CandidateRecord]) -> str | None:
        """Train (validating on `val`, if any), going on from the last complete checkpoint as if never
        interrupted; leaves the best weights in the model. Returns the checkpoint it resumed from, or None."""
        ...

    def save(self, out_dir: Path, merged_dir: Path | None = None) -> None:
        """Write the trained weights (an adapter, or the whole model) and the processor to `out_dir`; with
        `merged_dir`, also the base model with the adapter merged in. Every process of a distributed run calls it."""
        ...

    def close(self) -> None:
        """Free the model and its device memory (safe to call twice)."""
        ...
