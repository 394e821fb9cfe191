"""In-process vLLM backend (`backend: vllm`): `vllm.LLM.chat` on this node's GPUs, for users who prefer no server.

vLLM is imported lazily and is not installed on our CI machines (it ships CUDA wheels pinned to other torch
versions), so this backend is exercised only where vLLM imports (tests/test_backend_vllm.py). The tested route to
vLLM is `vllm serve` + `backend: openai`.

Built on vLLM's documented offline API:
- `LLM(model, seed, dtype, gpu_memory_utilization, generation_config="vllm", limit_mm_per_prompt, mm_processor_kwargs)`:
  `generation_config="vllm"` stops vLLM from taking sampling defaults from the checkpoint (Qwen2-VL's top_k=1,
  repetition_penalty=1.05); mpa sets every parameter itself, as the HF backend does.
- `LLM.chat(conversations, sampling_params, lora_request)` with the image given as a PIL image part
  (`{"type": "image_pil", ...}`), fitted to the same pixel budget as every backend, and the Qwen-VL processors
  given the same `min_pixels` / `max_pixels` as the HF processor (`mpa.pixels`).
- An `adapter` (the leveled LoRA student) is applied with `LLM(enable_lora=True, max_lora_rank=r)` and a
  `LoRARequest` on every call: never ignored.
- `close()` shuts the engine down and frees its GPU memory (`cleanup_dist_env_and_memory`), so the next model of
  a stage (teacher, then student) can load in the same process.
vLLM batches internally (continuous batching), so a whole chunk of requests goes in one call.
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path
from typing import Any

from mpa.backends.base import GenRequest, GenResult, sample_seed
from mpa.config import VLLMModelConfig
from mpa.errors import ConfigError, MPAError
from mpa.pixels import fit_pixel_budget, processor_budget, takes_pixel_budget

log = logging.getLogger(__name__)


def _adapter_rank(adapter: str) -> int:
    try:
        return int(json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))["r"])
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"adapter {adapter}: no readable PEFT adapter_config.json with a rank 'r' ({err})") from None


def _takes_pixel_budget(cfg: VLLMModelConfig) -> bool:
    from transformers import AutoImageProcessor

    image_processor = AutoImageProcessor.from_pretrained(cfg.model, revision=cfg.revision,
                                                         trust_remote_code=cfg.trust_remote_code)  # fmt: skip
    return takes_pixel_budget(image_processor)


class VLLMBackend:
    name = "vllm"

    def __init__(self, cfg: VLLMModelConfig) -> None:
        try:
            from vllm import LLM
        except ImportError:
            raise MPAError("backend vllm needs vLLM on a CUDA machine (pip install 'mpa[vllm]'); or run `vllm serve` "
                           "and use backend openai") from None  # fmt: skip
        self.cfg = cfg
        dtype = {"auto": "auto", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}[cfg.dtype]
        kwargs: dict[str, Any] = {"limit_mm_per_prompt": {"image": 1}, "generation_config": "vllm"}
        budget = processor_budget(cfg.min_pixels, cfg.max_pixels)
        if budget and _takes_pixel_budget(cfg):
            kwargs["mm_processor_kwargs"] = budget
        self.lora = None
        if cfg.adapter:
            from vllm.lora.request import LoRARequest

            kwargs.update(enable_lora=True, max_lora_rank=_adapter_rank(cfg.adapter), max_loras=1)
            self.lora = LoRARequest("mpa-adapter", 1, str(Path(cfg.adapter).resolve()))
        self.llm = LLM(model=cfg.model, revision=cfg.revision, dtype=dtype, trust_remote_code=cfg.trust_remote_code,
                       seed=0, gpu_memory_utilization=cfg.gpu_memory_utilization, **kwargs)  # fmt: skip

    def close(self) -> None:
        """Shut the engine down and free its GPU memory (safe to call twice)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if shutdown is not None:  # the V1 engine runs its core in a child process
            shutdown()
        del llm, engine, shutdown
        gc.collect()
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
        except ImportError:  # older vLLM
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return
        cleanup_dist_env_and_memory()

    def _conversation(self, request: GenRequest) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        if request.image is not None:
            image = fit_pixel_budget(request.image, self.cfg.max_pixels, self.cfg.min_pixels)
            content.append({"type": "image_pil", "image_pil": image})
        content.append({"type": "text", "text": request.prompt})
        return [{"role": "user", "content": content}]

    @staticmethod
    def _params(request: GenRequest) -> Any:
        from vllm import SamplingParams

        greedy = request.temperature <= 0
        return SamplingParams(
            n=1 if greedy else request.n,
            temperature=0.0 if greedy else request.temperature,
            top_p=1.0 if greedy else request.top_p,
            top_k=-1 if greedy or request.top_k <= 0 else request.top_k,
            repetition_penalty=request.repetition_penalty,
            max_tokens=request.max_new_tokens,
            seed=None if greedy else sample_seed(request.seed, request.key, 0),  # per request: batch-invariant
        )

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        if not requests:
            return []
        try:
            outputs = self.llm.chat([self._conversation(r) for r in requests],
                                    sampling_params=[self._params(r) for r in requests], lora_request=self.lora,
                                    use_tqdm=False)  # fmt: skip
        except (ValueError, RuntimeError) as err:  # one bad request fails the call: retry one by one
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
