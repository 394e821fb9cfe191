"""Generation backends behind one protocol, looked up in a plain registry with lazy imports."""

from __future__ import annotations

from pathlib import Path

from mpa.backends.base import Backend, GenRequest, GenResult, Training
from mpa.backends.registry import REGISTRY, create_backend, create_training
from mpa.config import EngineConfig, HFModelConfig, ModelConfig, MPAConfig


def for_trained_weights(cfg: ModelConfig) -> ModelConfig:
    """`cfg` if its backend can load the leveled weights (a local folder, base + adapter); otherwise (a served
    student, `backend: openai`, whose server holds only the base weights) the same model in-process with the HF
    backend. Either way the model asked is the leveled one, never the base model the server still serves."""
    if cfg.in_process:
        return cfg
    return HFModelConfig(model=cfg.model, revision=cfg.revision, adapter=cfg.adapter, dtype=cfg.dtype,
                         min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels, trust_remote_code=cfg.trust_remote_code,
                         attn_implementation=cfg.attn_implementation)  # fmt: skip


def decoding_settings(cfg: ModelConfig, request: GenRequest) -> dict[str, object]:
    """The decoding a model is asked with, as stage manifests record it; names any parameter the server is left to
    choose (backend openai whose server cannot be sent it, see `OpenAIModelConfig.sampling_params`)."""
    settings: dict[str, object] = dict(request.decoding())
    if left := cfg.server_defaults():
        settings["server_defaults"] = left
    return settings


def requests_in_flight(cfg: ModelConfig) -> int:
    """How many requests a backend keeps in flight at once (0: it runs its batches one after another, so a larger
    call gains nothing); stages hand it at least twice this many per call, so a server's or vLLM's continuous
    batching is not starved at chunk boundaries."""
    return cfg.requests_in_flight()


def missing_package(err: ImportError) -> str:
    """One line naming what to install for an ImportError raised while loading a model or processor."""
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    for needle, package in (("torchvision", "torchvision"), ("num2words", "num2words"), ("vllm", "vllm")):
        if needle in text.lower():
            return f"{text} (install it: pip install {package})"
    name = getattr(err, "name", None)
    if not name or name.split(".")[0] == "mpa":  # mpa's own code failed to import: no package to install
        return text
    return f"{text} (install it: pip install {name})"


def _looks_local(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or Path(ref).exists()


def check_model(cfg: ModelConfig, role: str, load: bool = True) -> None:
    """Check before any stage starts what a run will need of a model: an in-process checkpoint (hf, vllm) given
    as a path must be a model folder, and (`load`) its processor must load — the chat template, and the packages
    its image processor needs (torchvision for Qwen-VL / SmolVLM / InternVL, num2words for SmolVLM). A scripted
    model's file must parse. A served model (backend openai) is the server's business."""
    from mpa.errors import ConfigError

    if cfg.backend == "scripted":
        from mpa.backends.scripted import Script

        try:
            Script.read(Path(cfg.model))
        except ConfigError as err:
            raise ConfigError(f"{role}.{err}") from None
        return
    if not cfg.in_process or not _looks_local(cfg.model):
        return
    if not (Path(cfg.model).expanduser() / "config.json").exists():
        raise ConfigError(
            f"{role}.model: {cfg.model} is not a model folder (no config.json); give a local checkpoint folder or a "
            "hub id"
        )
    if not load:
        return
    from mpa.backends.hf import load_processor

    try:
        load_processor(cfg)
    except ImportError as err:
        raise ConfigError(f"{role}.model {cfg.model}: {missing_package(err)}") from None
    except ConfigError as err:
        raise ConfigError(f"{role}.{err}") from None


def load_backend(cfg: ModelConfig, engine: EngineConfig | None = None) -> Backend:
    """Instantiate the backend named by `cfg.backend` (heavy imports happen only here); with the Ray engine, a
    pool of Ray actors that each hold one such backend."""
    if engine is not None and engine.name == "ray":
        from mpa.backends.ray_pool import RayBackend

        return RayBackend(cfg, engine)
    return create_backend(cfg)


def load_training(cfg: ModelConfig, run: MPAConfig, trainer_dir: Path) -> Training:
    """What fine-tunes the student `cfg` in the level stage (by `run.level`, checkpoints in `trainer_dir`); a
    config error for a backend with no weights to train (scripted)."""
    return create_training(cfg, run, trainer_dir)


__all__ = [
    "REGISTRY",
    "Backend",
    "GenRequest",
    "GenResult",
    "Training",
    "check_model",
    "decoding_settings",
    "for_trained_weights",
    "load_backend",
    "load_training",
    "missing_package",
    "requests_in_flight",
]
