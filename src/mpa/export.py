"""Export a selected set for other fine-tuning frameworks.

- `llava`: the LLaVA-1.5 instruction JSON (a list of {"id", "image", "conversations": [{"from": "human"|"gpt",
  "value"}]}), read by LLaVA's scripts and Qwen2-VL-Finetune;
- `sharegpt`: LLaMA-Factory's multimodal ShareGPT/OpenAI layout ({"messages": [{"role", "content"}], "images"}),
  also accepted by ms-swift.
The prompt is the same short-answer prompt the student is asked with in identify and evaluate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mpa.prompts import render_answer_prompt
from mpa.records import CandidateRecord
from mpa.rundir import atomic_write_json

FORMATS = ("llava", "sharegpt")


def to_llava(samples: Sequence[CandidateRecord]) -> list[dict[str, object]]:
    return [
        {
            "id": s.qa_id,
            "image": s.image_path,
            "conversations": [
                {"from": "human", "value": "<image>\n" + render_answer_prompt(s.question)},
                {"from": "gpt", "value": s.pseudo_answer},
            ],
        }
        for s in samples
    ]


def to_sharegpt(samples: Sequence[CandidateRecord]) -> list[dict[str, object]]:
    return [
        {
            "messages": [
                {"role": "user", "content": "<image>" + render_answer_prompt(s.question)},
                {"role": "assistant", "content": s.pseudo_answer},
            ],
            "images": [s.image_path],
        }
        for s in samples
    ]


def write_exports(samples: Sequence[CandidateRecord], out_dir: Path, formats: Sequence[str]) -> dict[str, str]:
    """Write each requested format to `out_dir/parity_<format>.json`; returns format -> path."""
    writers = {"llava": to_llava, "sharegpt": to_sharegpt}
    paths = {}
    for fmt in formats:
        if fmt not in writers:
            raise ValueError(f"unknown export format '{fmt}'; choose from {', '.join(FORMATS)}")
        path = out_dir / f"parity_{fmt}.json"
        atomic_write_json(path, writers[fmt](samples))
        paths[fmt] = str(path)
    return paths
