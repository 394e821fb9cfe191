"""The backend registry: `name → "module:Class"` (from each backend's config class, `mpa.config.BACKEND_CONFIGS`),
imported lazily so torch / openai / vllm load only when used.

Its own module so that both `mpa.backends.load_backend` and the Ray engine's actors (`mpa.backends.ray_pool`,
each holding one ordinary backend) can build a backend without the package and the pool importing each other.
"""

from __future__ import annotations

import importlib

from mpa.backends.base import Backend
from mpa.config import BACKEND_CONFIGS, ModelConfig

REGISTRY: dict[str, str] = {name: c.implementation for name, c in BACKEND_CONFIGS.items()}


def create_backend(cfg: ModelConfig) -> Backend:
    """Instantiate the backend named by `cfg.backend` in this process (heavy imports happen only here)."""
    if cfg.backend not in REGISTRY:
        raise ValueError(f"unknown backend '{cfg.backend}'; choose one of {sorted(REGISTRY)}")
    module_name, cls_name = REGISTRY[cfg.backend].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(cfg)
