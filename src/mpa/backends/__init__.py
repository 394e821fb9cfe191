"""Generation backends behind one protocol, looked up in a plain registry with lazy imports."""

from __future__ import annotations

import importlib

from mpa.backends.base import Backend, GenRequest, GenResult
from mpa.config import EngineConfig, ModelConfig

REGISTRY: dict[str, str] = {
    "hf": "mpa.backends.hf:HFBackend",
    "openai": "mpa.backends.openai_api:OpenAIBackend",
    "vllm": "mpa.backends.vllm_offline:VLLMBackend",
}


def load_backend(cfg: ModelConfig, engine: EngineConfig | None = None) -> Backend:
    """Instantiate the backend named by `cfg.backend` (heavy imports happen only here); with the Ray engine, a
    pool of Ray actors that each hold one such backend."""
    if engine is not None and engine.name == "ray":
        from mpa.backends.ray_pool import RayBackend

        return RayBackend(cfg, engine)
    if cfg.backend not in REGISTRY:
        raise ValueError(f"unknown backend '{cfg.backend}'; choose one of {sorted(REGISTRY)}")
    module_name, cls_name = REGISTRY[cfg.backend].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(cfg)


__all__ = ["REGISTRY", "Backend", "GenRequest", "GenResult", "load_backend"]
