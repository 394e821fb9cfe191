"""In-process vLLM backend (`backend: vllm`): `vllm.LLM.chat` on this node's GPUs, for users who prefer no server.

vLLM is imported lazily and is not installed on our CI machines (it ships CUDA wheels pinned to other torch /
transformers versions), so this backend is exercised only where vLLM imports (tests/test_backend_vllm.py). The
tested, recommended route to vLLM is `vllm serve` + `backend: openai`.

Built on vLLM's documented offline API: `LLM(model=..., seed=...)`, `LLM.chat(conversations, sampling_params)`
with OpenAI-style `image_url` content parts, `SamplingParams(n, temperature, top_p, max_tokens, seed)`. vLLM
batches internally (continuous batching), so a whole chunk of requests goes in one call.
"""

from __future__ import annotations

import logging
from typing import Any

from mpa.backends.base import GenRequest, GenResult, fit_pixel_budget, sample_seed
from mpa.backends.openai_api import image_data_url
from mpa.config import ModelConfig
from mpa.errors import MPAError

log = logging.getLogger(__name__)


class VLLMBackend:
    name = "vllm"

    def __init__(self, cfg: ModelConfig) -> None:
        try:
            from vllm import LLM
        except ImportError:
            raise MPAError("backend vllm needs vLLM on a CUDA machine (pip install vllm); or run `vllm serve` and "
                           "use backend openai") from None  # fmt: skip
        self.cfg = cfg
        dtype = {"auto": "auto", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}[cfg.dtype]
        kwargs: dict[str, Any] = {"limit_mm_per_prompt": {"image": 1}}
        budget = {k: v for k, v in (("min_pixels", cfg.min_pixels), ("max_pixels", cfg.max_pixels)) if v is not None}
        if budget:
            kwargs["mm_processor_kwargs"] = budget
        self.llm = LLM(model=cfg.model, revision=cfg.revision, dtype=dtype, trust_remote_code=cfg.trust_remote_code,
                       seed=0, **kwargs)  # fmt: skip

    def close(self) -> None:
        self.llm = None  # type: ignore[assignment]

    def _conversation(self, request: GenRequest) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        if request.image is not None:
            url = image_data_url(fit_pixel_budget(request.image, self.cfg.max_pixels))
            content.append({"type": "image_url", "image_url": {"url": url}})
        content.append({"type": "text", "text": request.prompt})
        return [{"role": "user", "content": content}]

    def _params(self, request: GenRequest) -> Any:
        from vllm import SamplingParams

        greedy = request.temperature <= 0
        return SamplingParams(
            n=1 if greedy else request.n,
            temperature=0.0 if greedy else request.temperature,
            top_p=1.0 if greedy else request.top_p,
            max_tokens=request.max_new_tokens,
            seed=None if greedy else sample_seed(request.seed, request.key, 0),  # per request: batch-invariant
        )

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        if not requests:
            return []
        try:
            outputs = self.llm.chat([self._conversation(r) for r in requests],
                                    sampling_params=[self._params(r) for r in requests], use_tqdm=False)  # fmt: skip
        except Exception as err:  # one bad request fails the call: retry one by one so only it is recorded
            if len(requests) == 1:
                return [GenResult(key=requests[0].key, error=f"{type(err).__name__}: {err}"[:500])]
            log.warning("vllm: batch of %d failed (%s); retrying one by one", len(requests), type(err).__name__)
            return [res for r in requests for res in self.generate([r])]
        results = []
        for request, out in zip(requests, outputs, strict=True):
            texts = [c.text.strip() for c in out.outputs]
            results.append(GenResult(
                key=request.key, texts=texts, prompt_tokens=len(out.prompt_token_ids or []),
                completion_tokens=sum(len(c.token_ids) for c in out.outputs),
            ))  # fmt: skip
        return results
