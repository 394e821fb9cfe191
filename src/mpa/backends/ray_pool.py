"""The Ray engine: a pool of Ray actors, each holding one ordinary backend (an HF model on its GPU, or an OpenAI
client for its node's server), behind the same `Backend` protocol — so stages, resume, counts and reports do not
change, and records equal those of the local engine (our backends' outputs do not depend on batching).

Why actors and not a `ray.data` pipeline: a Ray Data actor pool lives for one dataset execution, so a stage that
writes its records chunk by chunk (to lose at most one chunk to a crash) would reload the model for every chunk.
These actors are created once per stage and model, and every chunk's batches are spread over them.

Use: `engine: {name: ray, ray_address: auto, num_actors: 8}` or `mpa run --engine ray`. GPUs: with
`num_gpus_per_actor` unset, each actor of an in-process backend (hf, vllm) reserves one GPU when the cluster has
GPUs; on a cluster without GPUs a model whose weights exceed LARGE_MODEL_BYTES is refused rather than silently run
on CPUs (set `num_gpus_per_actor: 0` to ask for that explicitly). OpenAI-client actors never reserve a GPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mpa.backends.base import GenRequest, GenResult
from mpa.backends.registry import create_backend
from mpa.config import EngineConfig, ModelConfig, model_config
from mpa.errors import ConfigError, MPAError

log = logging.getLogger(__name__)
LARGE_MODEL_BYTES = 2 * 1024**3  # ~1B parameters in bf16: slower than useful on CPUs
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def weight_bytes(model: str) -> int | None:
    """Size of a local checkpoint's weight files; None for a hub id or server name (not on this disk)."""
    folder = Path(model)
    if not folder.is_dir():
        return None
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def gpus_per_actor(cfg: ModelConfig, engine: EngineConfig, cluster_gpus: float) -> float:
    """The GPUs each actor reserves: the configured number, else 1 for an in-process model on a cluster with
    GPUs; refuses to put a large in-process model on CPUs unless `num_gpus_per_actor: 0` says so."""
    if engine.num_gpus_per_actor is not None:
        return engine.num_gpus_per_actor
    if not cfg.in_process:
        return 0.0
    if cluster_gpus > 0:
        return 1.0
    size = weight_bytes(cfg.model)
    if size is None or size > LARGE_MODEL_BYTES:
        what = f"{size / 1024**3:.1f} GiB of weights" if size is not None else "a model whose size is unknown here"
        raise ConfigError(
            f"engine ray: the cluster has no GPUs, and {cfg.model} ({what}) would run on CPUs; connect to a cluster "
            "with GPUs, or set engine.num_gpus_per_actor=0 to run it on CPUs anyway"
        )
    return 0.0


class _Worker:
    """One backend inside a Ray actor (the class is wrapped with `ray.remote` when the pool starts)."""

    def __init__(self, cfg: dict[str, Any], threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.backend = create_backend(model_config(**cfg))

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        return self.backend.generate(requests)

    def close(self) -> None:
        self.backend.close()


def _connect(engine: EngineConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    if engine.ray_address:
        ray.init(address=engine.ray_address, log_to_driver=False)
    else:  # a local instance sized for the pool
        ray.init(num_cpus=max(1, round(engine.num_actors * engine.num_cpus_per_actor)), include_dashboard=False,
                 log_to_driver=False)  # fmt: skip


class RayBackend:
    """`engine.num_actors` actors, each with `create_backend(cfg)`; a `generate` call is split into batches of
    `cfg.batch_size` that are spread over the actors and gathered back in request order."""

    name = "ray"

    def __init__(self, cfg: ModelConfig, engine: EngineConfig) -> None:
        try:
            import ray
        except ImportError:
            raise MPAError("engine ray needs Ray: pip install 'mpa[ray]' (ray[data])") from None
        _connect(engine)
        gpus = gpus_per_actor(cfg, engine, float(ray.cluster_resources().get("GPU", 0.0)))
        worker = ray.remote(num_cpus=engine.num_cpus_per_actor, num_gpus=gpus)(_Worker)
        self.cfg = cfg
        threads = max(1, int(engine.num_cpus_per_actor))
        self._actors = [worker.remote(cfg.model_dump(), threads) for _ in range(engine.num_actors)]
        log.info("ray: %d actors for %s, %g GPU(s) each", len(self._actors), cfg.model, gpus)

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        import ray
        from ray.exceptions import RayError

        size = self.cfg.batch_size
        batches = [requests[i : i + size] for i in range(0, len(requests), size)]
        # Round robin: batches are of similar cost, and each actor queues its calls in order.
        refs = [self._actors[i % len(self._actors)].generate.remote(batch) for i, batch in enumerate(batches)]
        results: list[GenResult] = []
        for batch, ref in zip(batches, refs, strict=True):
            try:
                results.extend(ray.get(ref))
            except RayError as err:  # a dead actor or node: the batch is recorded failed (retried on resume)
                message = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500]
                results.extend(GenResult(key=r.key, error=message) for r in batch)
        return results

    def close(self) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
