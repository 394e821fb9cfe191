"""One contract, every backend: hf (in process), openai (a real `transformers serve`), vllm (where it imports).

- The same requests give the same greedy outputs and token counts on the demo models.
- An adapter is applied (hf, vllm) or refused with a clear error (openai): never ignored.
- The student after leveling is the leveled model whatever the student's backend: the evaluate stage and the
  label-free validation answer like base + adapter, not like the base model a server still serves.
- close() frees the model (memory lifecycle: models loaded and closed in sequence do not pile up).
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mpa.backends import Backend, GenRequest, load_backend
from mpa.config import ConfigError, ModelConfig, build_config, model_config
from mpa.evaluation.benchmarks import load_benchmark
from mpa.pipeline import run_pipeline
from mpa.prompts import render_answer_prompt
from mpa.rundir import iter_jsonl
from tests.serving import DEMO_MODELS, transformers_serve

pytestmark = pytest.mark.models  # every test here loads, serves or trains a demo model

easy_vqa = pytest.importorskip("easy_vqa")
BACKENDS = ["hf", "openai", "vllm"]


def _vllm_available() -> bool:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def served() -> Iterator[Callable[[str], str]]:
    """`served(role)`: the base URL of `transformers serve` on the demo teacher or student (started once)."""
    with transformers_serve(DEMO_MODELS / "teacher") as teacher, transformers_serve(DEMO_MODELS / "student") as student:
        yield {"teacher": teacher, "student": student}.__getitem__


def backend_config(backend: str, role: str, served: Callable[[str], str], **extra: Any) -> ModelConfig:
    if backend == "vllm" and not _vllm_available():
        pytest.skip("vLLM needs its package and a CUDA GPU")
    path = str(DEMO_MODELS / role)
    if backend == "openai":
        # the served model is the demo folder; transformers serve takes repetition_penalty as frequency_penalty
        return model_config(
            model=path, backend="openai", base_url=served(role), sampling_params="transformers", **extra
        )
    return model_config(model=path, backend=backend, device="cpu" if backend == "hf" else "auto", **extra)


def demo_requests(n: int = 12) -> list[GenRequest]:
    texts, _, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    images = [Image.open(paths[image_ids[i]]).convert("RGB") for i in range(n)]
    return [
        GenRequest(key=f"q{i}", prompt=render_answer_prompt(texts[i]), image=images[i], max_new_tokens=6)
        for i in range(n)
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_requests_same_outputs(backend: str, served: Callable[[str], str]) -> None:
    requests = demo_requests()
    reference = load_backend(model_config(model=str(DEMO_MODELS / "teacher"), device="cpu")).generate(requests)
    under_test = load_backend(backend_config(backend, "teacher", served))
    try:
        got = under_test.generate(requests)
    finally:
        under_test.close()
    assert [r.key for r in got] == [r.key for r in requests] and all(r.error is None for r in got)
    assert [r.texts for r in got] == [r.texts for r in reference]
    assert [r.prompt_tokens for r in got] == [r.prompt_tokens for r in reference]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_adapter_is_applied_or_refused(backend: str, served: Callable[[str], str], tmp_path: Path) -> None:
    """A LoRA adapter whose weights change every answer: in-process backends must answer differently from the
    base model; a client must refuse to run rather than silently query the base model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(DEMO_MODELS / "student")
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["o_proj", "down_proj"], init_lora_weights=False))
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 1.0)  # far from the base model
    lora.save_pretrained(tmp_path / "adapter")
    if backend == "openai":
        with pytest.raises(ConfigError, match="cannot apply the adapter"):
            load_backend(backend_config(backend, "student", served, adapter=str(tmp_path / "adapter")))
        return
    requests = demo_requests(6)
    plain = load_backend(backend_config(backend, "student", served))
    adapted = load_backend(backend_config(backend, "student", served, adapter=str(tmp_path / "adapter")))
    try:
        assert [r.texts for r in adapted.generate(requests)] != [r.texts for r in plain.generate(requests)]
    finally:
        plain.close()
        adapted.close()


@pytest.mark.parametrize("student_backend", BACKENDS)
def test_leveled_student_is_the_leveled_model_in_every_backend(
    student_backend: str, served: Callable[[str], str], tmp_path: Path
) -> None:
    student = backend_config(student_backend, "student", served).model_dump(exclude_defaults=True)
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(sorted(easy_vqa.get_train_image_paths().values())[:24]))
    tree = {
        "run_dir": str(tmp_path / "run"),
        "images": {"path": str(pool)},
        "teacher": {"model": str(DEMO_MODELS / "teacher"), "device": "cpu"},
        "student": student,
        "annotate": {"prompt_file": str(DEMO_MODELS / "annotate_prompt.txt"), "max_new_tokens": 80,
                     "max_answer_words": 3},
        "level": {"method": "lora", "max_steps": 12, "batch_size": 8, "learning_rate": 5e-3, "val_fraction": 0.2,
                  "early_stopping_patience": None},
        "evaluate": {"benchmarks": [{"name": "easyvqa", "limit": 40}], "models": ["student_before", "student_after"]},
    }  # fmt: skip
    manifests = run_pipeline(build_config(tree), ["annotate", "identify", "level", "evaluate"])
    run = Path(tree["run_dir"])
    adapter = manifests["level"]["student_after"]["adapter"]
    assert adapter and Path(adapter).is_dir()
    # What base + adapter answers, asked directly in process: the reference for "the leveled model".
    leveled = load_backend(model_config(model=str(DEMO_MODELS / "student"), adapter=adapter, device="cpu"))
    before = {r["qid"]: r["raw"] for r in iter_jsonl(run / "evaluate/student_before/easyvqa/predictions.jsonl")}
    after = {r["qid"]: r for r in iter_jsonl(run / "evaluate/student_after/easyvqa/predictions.jsonl")}
    samples = {s.qid: s for s in load_benchmark("easyvqa", None, split=None, limit=40)}
    requests = [
        GenRequest(key=qid, prompt=rec["prompt"], image=Image.open(samples[qid].image_path).convert("RGB"),
                   max_new_tokens=32)
        for qid, rec in after.items()
    ]  # fmt: skip
    expected = {r.key: r.texts[0] for r in leveled.generate(requests)}
    leveled.close()
    assert {q: r["raw"] for q, r in after.items()} == expected
    assert sum(after[q]["raw"] != before[q] for q in after) >= 1, "leveling changed no answer: the test proves nothing"
    # The label-free validation after leveling is the leveled model's too.
    val = list(iter_jsonl(run / "level/val_predictions.jsonl"))
    assert val and manifests["level"]["val_accuracy_after"] == sum(r["correct"] for r in val) / len(val)


def test_close_frees_each_model_before_the_next_loads() -> None:
    """Teacher then student in one process (as identify and evaluate load them): once closed, a model is gone
    (no reference left; on CUDA its cached blocks go back), so the next one does not pile up on top of it."""
    refs: list[weakref.ref[Any]] = []
    for role in ("teacher", "student", "teacher"):
        backend: Backend = load_backend(model_config(model=str(DEMO_MODELS / role), device="cpu"))
        refs.append(weakref.ref(backend.model))  # type: ignore[attr-defined]
        backend.generate(demo_requests(2))
        backend.close()
        backend.close()  # safe twice
        del backend
        gc.collect()
        assert refs[-1]() is None, f"the {role} model is still alive after close()"
