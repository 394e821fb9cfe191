"""A scripted model: no weights, replies from rules about near-solid colour images. For fast stage tests.

Every stage talks to it through the same `Backend` protocol as to a real model, so annotate → identify → evaluate,
the run directory, resume, exit codes and the report run in milliseconds (the idea of lm-eval's
`models/dummy.py` and nanochat's `tests/test_engine.py` mock model). The tiny real checkpoints stay behind the
`models` test marker for what only a real model can show.

`model:` names a JSON script file:

    {"knows": ["red", "green"],        # colours it names right; any other colour gets `otherwise`
     "otherwise": "brown",
     "question": "What colour is the image?"}

An outage is not part of the model (a rerun after it must resume, not see "other weights"), so failures come from
the environment: `MPA_SCRIPTED_FAIL` = comma-separated request keys to fail, or `*` for every request.

Replies: a prompt whose first line is a question (ends with "?") is answered with the image's colour (the palette
colour nearest its mean pixel, `PALETTE`) if known, else `otherwise`; any other prompt is an
annotate prompt, answered with one pseudo-QA about the colour — as a JSON list if the prompt mentions JSON, else as
`Question: ... Answer: ...` lines. Outputs never depend on batching, sampling or seeds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageStat

from mpa.backends.base import GenRequest, GenResult
from mpa.config import ScriptedModelConfig
from mpa.errors import ConfigError

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 50, 220),
    "yellow": (235, 220, 40),
    "orange": (245, 140, 20),
    "purple": (130, 40, 170),
    "black": (20, 20, 20),
    "white": (235, 235, 235),
}  # also the colours `mpa.testing.tiny.make_color_images` paints


@dataclass(frozen=True)
class Script:
    """What a scripted model knows and how it fails."""

    knows: tuple[str, ...] = tuple(PALETTE)
    otherwise: str = "brown"
    question: str = "What colour is the image?"

    @classmethod
    def read(cls, path: Path) -> Script:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise ConfigError(
                f"model {path}: not a scripted-model file ({err}); see mpa/backends/scripted.py"
            ) from None

    def write(self, path: Path) -> Path:
        data = {"knows": list(self.knows), "otherwise": self.otherwise, "question": self.question}
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return path


def colour_of(image: Image.Image) -> str:
    """The palette colour nearest the image's mean pixel."""
    mean = ImageStat.Stat(image.convert("RGB")).mean
    return min(PALETTE, key=lambda name: sum((a - b) ** 2 for a, b in zip(PALETTE[name], mean, strict=True)))


class ScriptedBackend:
    """The `Backend` protocol answered by a `Script` (see the module docstring)."""

    name = "scripted"

    def __init__(self, cfg: ScriptedModelConfig) -> None:
        if cfg.adapter:  # the backend contract: an adapter is applied or refused, never ignored
            raise ConfigError(f"backend scripted has no weights to apply the adapter {cfg.adapter} to")
        self.script = Script.read(Path(cfg.model))
        self.fail = {key for key in os.environ.get("MPA_SCRIPTED_FAIL", "").split(",") if key}
        self.calls: list[int] = []  # batch sizes seen, for tests

    def reply(self, request: GenRequest) -> str:
        colour = colour_of(request.image) if request.image is not None else "none"
        if request.prompt.splitlines()[0].rstrip().endswith("?"):
            return colour if colour in self.script.knows else self.script.otherwise
        question = self.script.question
        if "json" in request.prompt.lower():
            return json.dumps([{"question": question, "answer": colour}])
        return f"Question: {question}\nAnswer: {colour}"

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        self.calls.append(len(requests))
        results = []
        for request in requests:
            if "*" in self.fail or request.key in self.fail:
                results.append(GenResult(key=request.key, error="scripted failure"))
                continue
            text = self.reply(request)
            n = request.n if request.temperature > 0 else 1
            results.append(GenResult(key=request.key, texts=[text] * n, prompt_tokens=len(request.prompt.split()),
                                     completion_tokens=n * len(text.split())))  # fmt: skip
        return results

    def close(self) -> None:
        pass
