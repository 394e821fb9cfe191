"""Helpers every stage uses: model identity for fingerprints, chunking, checked results (bars: mpa.progress)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from mpa.backends import GenRequest, GenResult
from mpa.config import EngineConfig, ModelConfig
from mpa.errors import RunError

T = TypeVar("T")
U = TypeVar("U")
PREFETCH = True  # load the next chunk while generating (speed/stage_throughput.py turns it off to compare)


def _file_digest(path: Path, edge_bytes: int = 1 << 16) -> str:
    """Name, size and the first/last bytes: cheap, and changes whenever weights are re-saved differently."""
    h = hashlib.sha256(f"{path.name}:{path.stat().st_size}".encode())
    with path.open("rb") as handle:
        h.update(handle.read(edge_bytes))
        if path.stat().st_size > edge_bytes:
            handle.seek(-edge_bytes, 2)
            h.update(handle.read(edge_bytes))
    return h.hexdigest()[:16]


def folder_identity(folder: Path) -> str:
    """A fingerprint of a local checkpoint folder (config + weight files)."""
    parts = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.suffix in {".json", ".safetensors", ".bin", ".model", ".jinja"}):
            parts.append(_file_digest(path))
    return hashlib.sha256("".join(parts).encode()).hexdigest()[:16]


def model_identity(cfg: ModelConfig) -> dict[str, Any]:
    """What about a model changes its outputs (not batch size or device)."""
    ident = cfg.identity()  # the backend's say: a served model adds its server and how images travel
    if Path(cfg.model).is_dir():  # a local folder (also a server's model name that is a path): hash its weights
        ident["weights"] = folder_identity(Path(cfg.model))
    elif Path(cfg.model).is_file():  # a one-file model (a scripted model's script)
        ident["weights"] = _file_digest(Path(cfg.model))
    if cfg.adapter:
        ident["adapter"] = cfg.adapter
        if Path(cfg.adapter).is_dir():
            ident["adapter_weights"] = folder_identity(Path(cfg.adapter))
    return ident


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def checked(requests: list[GenRequest], results: list[GenResult]) -> list[GenResult]:
    """Results matched to requests by key; a batch in which every request failed stops the stage (resumable)."""
    by_key = {r.key: r for r in results}
    if len(by_key) != len(requests) or any(q.key not in by_key for q in requests):
        raise RunError("backend returned results that do not match the requests' keys")
    ordered = [by_key[q.key] for q in requests]
    if len(ordered) >= 4 and all(r.error for r in ordered):
        raise RunError(
            f"every request of a batch of {len(ordered)} failed, e.g. {ordered[0].error}; fix the cause and rerun "
            "the same command to resume"
        )
    return ordered


def chunk_size(base: int, engine: EngineConfig, model: ModelConfig) -> int:
    """Items per write step: `base`, or enough that every worker always has work queued within a chunk (a server's
    concurrency, vLLM's batch, two batches per Ray actor), so continuous batching never drains mid-chunk."""
    from mpa.backends import requests_in_flight

    in_flight = requests_in_flight(model)
    if engine.name == "ray":
        return max(base, 2 * engine.num_actors * max(model.batch_size, in_flight))
    return max(base, 2 * in_flight)


def prefetched(chunks: Iterable[T], load: Callable[[T], U]) -> Iterator[tuple[T, U]]:
    """`(chunk, load(chunk))` in order, loading the next chunk in a background thread while the caller works on
    this one: image reading and decoding (Pillow releases the GIL) overlap generation. At most two chunks are
    held at once."""
    if not PREFETCH:
        yield from ((chunk, load(chunk)) for chunk in chunks)
        return
    it = iter(chunks)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mpa-prefetch") as pool:
        try:
            chunk = next(it)
        except StopIteration:
            return
        future = pool.submit(load, chunk)
        for upcoming in it:
            upcoming_future = pool.submit(load, upcoming)
            yield chunk, future.result()
            chunk, future = upcoming, upcoming_future
        yield chunk, future.result()
