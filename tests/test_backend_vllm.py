"""The in-process vLLM backend, run only where vLLM imports (a CUDA machine); CI has no vLLM and skips it.

It checks the same contract as the HF backend: results in request order, matched by key, greedy output equal to
the HF backend's on the same model, seeded samples reproducible."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installable on CPU machines; this runs where it imports")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("vLLM needs a GPU", allow_module_level=True)

from PIL import Image  # noqa: E402

from mpa.backends import GenRequest, load_backend  # noqa: E402
from mpa.config import model_config  # noqa: E402


def test_vllm_greedy_matches_hf_and_samples_are_seeded(tiny_llava_dir: Path, color_images: Path) -> None:
    images = [Image.open(p).convert("RGB") for p in sorted(color_images.glob("*.png"))[:4]]
    reqs = [GenRequest(key=f"r{i}", prompt="What colour is the image?", image=im, max_new_tokens=8)
            for i, im in enumerate(images)]  # fmt: skip
    vllm = load_backend(model_config(model=str(tiny_llava_dir), backend="vllm", dtype="float32"))
    got = vllm.generate(reqs)
    assert [r.key for r in got] == [r.key for r in reqs] and all(r.error is None for r in got)
    hf = load_backend(model_config(model=str(tiny_llava_dir), dtype="float32", device="cuda"))
    assert [r.texts for r in got] == [r.texts for r in hf.generate(reqs)]
    sampled = [GenRequest(key=r.key, prompt=r.prompt, image=r.image, n=3, temperature=1.0, max_new_tokens=8, seed=1)
               for r in reqs]  # fmt: skip
    first, again = vllm.generate(sampled), vllm.generate(sampled[::-1])[::-1]
    assert all(len(r.texts) == 3 for r in first) and [r.texts for r in first] == [r.texts for r in again]
