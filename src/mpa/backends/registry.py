"""The backend registry: `name → "module:Class"` (from each backend's config class, `mpa.config.BACKEND_CONFIGS`),
imported lazily so torch / openai / vllm load only when used.

Its own module so that both `mpa.backends.load_backend` and the Ray engine's actors (`mpa.backends.ray_pool`,
each holding one ordinary backend) can build a backend without the package and the pool importing each other.
"""

from __future__ import annotations

from pathlib import Path

from mpa.backends.base import Backend, Training
from mpa.config import BACKEND_CONFIGS, ConfigError, ModelConfig, MPAConfig
from mpa.lazy import import_ref

REGISTRY: dict[str, str] = {name: c.implementation for name, c in BACKEND_CONFIGS.items()}


def create_backend(cfg: ModelConfig) -> Backend:
    """Instantiate the backend named by `cfg.backend` in this process (heavy imports happen only here)."""
    if cfg.backend not in REGISTRY:
        raise ValueError(f"unknown backend '{cfg.backend}'; choose one of {sorted(REGISTRY)}")
    return import_ref(REGISTRY[cfg.backend])(cfg)  # type: ignore[no-any-return]


def create_training(cfg: ModelConfig, run: MPAConfig, trainer_dir: Path) -> Training:
    """The `Training` of `cfg`'s backend, fine-tuning `cfg` by `run.level` with checkpoints in `trainer_dir`."""
    if type(cfg).training is None:
        raise ConfigError(
            f"student.backend: a {cfg.backend} model has no weights to fine-tune, so level cannot train it; run "
            "annotate/identify/evaluate only (--stages), or use a student with weights (hf, vllm, openai)"
        )
    return import_ref(type(cfg).training)(run, trainer_dir)  # type: ignore[no-any-return]
