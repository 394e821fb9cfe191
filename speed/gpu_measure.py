"""Instrumentation of `speed/gpu_check.py`: timed backends and model loads, a Trainer step timer, the
bandwidth bound of decoding, and the report (rows -> table, JSON, markdown). None of it changes what a stage does.
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

HBM_BYTES_PER_S = 4.3e12  # H200 device-to-device copy, measured (GPU_MACHINE.md)


def cuda() -> Any:
    import torch

    return torch.cuda if torch.cuda.is_available() else None


def new_stats() -> dict[str, float]:
    keys = ("load_s", "gen_s", "requests", "prompt_tokens", "completion_tokens", "nominal_tokens", "peak_gib")
    return dict.fromkeys(keys, 0.0)


class Timed:
    """A backend wrapper that adds up seconds in `generate`, requests and tokens, and the peak GPU memory while it
    was loaded (instrumentation only)."""

    def __init__(self, inner: Any, stats: dict[str, float]) -> None:
        self.inner, self.stats, self.name = inner, stats, inner.name

    def generate(self, requests: list[Any]) -> list[Any]:
        t0 = time.perf_counter()
        results = self.inner.generate(requests)
        s = self.stats
        s["gen_s"] += time.perf_counter() - t0
        s["requests"] += len(requests)
        s["prompt_tokens"] += sum(r.prompt_tokens for r in results)
        s["completion_tokens"] += sum(r.completion_tokens for r in results)
        s["nominal_tokens"] += sum(q.max_new_tokens * (q.n if q.temperature > 0 else 1) for q in requests)
        return results

    def close(self) -> None:
        if cuda():
            self.stats["peak_gib"] = max(self.stats["peak_gib"], cuda().max_memory_allocated() / 2**30)
        self.inner.close()


@contextlib.contextmanager
def timed_loads(module: Any, stats: dict[str, dict[str, float]], label: Callable[[Any], str]) -> Iterator[None]:
    """Wrap `module.load_backend` (a stage's own model loading) so each backend it loads is timed; a no-op if the
    stage no longer has that attribute (then only the stage's wall time is reported)."""
    original = getattr(module, "load_backend", None)
    if original is None:
        yield
        return

    def load(cfg: Any, engine: Any = None) -> Timed:
        if cuda():  # this model's peak: from its loading to its closing
            cuda().reset_peak_memory_stats()
        t0 = time.perf_counter()
        backend = original(cfg, engine)
        st = stats.setdefault(label(cfg), new_stats())
        st["load_s"] += time.perf_counter() - t0
        return Timed(backend, st)

    module.load_backend = load
    try:
        yield
    finally:
        module.load_backend = original


class Report:
    """Rows of results; JSON + markdown rewritten after every part; the table printed at the end."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out, self.meta, self.rows, self.t0 = out, meta, [], time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def add(self, part: str, model: str, what: str, **fields: Any) -> None:
        self.rows.append({"part": part, "model": model, "what": what, **fields})

    def lines(self) -> list[str]:
        head = ["part", "model", "what", "items", "s", "items/s", "gen tok/s", "train samples/s", "peak GiB", "notes"]
        keys = ["part", "model", "what", "items", "seconds", "rate", "tokens_per_s", "train_samples_per_s",
                "peak_gib", "notes"]  # fmt: skip
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [r.get(k) for k in keys]
            out.append("| " + " | ".join("" if c is None else f"{c:g}" if isinstance(c, float) else str(c)
                                         for c in cells) + " |")  # fmt: skip
        return out

    def write(self) -> None:
        data = {**self.meta, "wall_s": round(self.elapsed(), 1), "rows": self.rows}
        (self.out / "gpu_check.json").write_text(json.dumps(data, indent=2, default=str))
        m = self.meta
        title = (f"GPU check on {m['device']} ({m['shape']} shapes: teacher {m['teacher']}, student {m['student']}; "
                 f"{m['images']} images; torch {m['torch']}, transformers {m['transformers']}, trl {m['trl']}); "
                 f"wall {data['wall_s']} s")  # fmt: skip
        (self.out / "gpu_check.md").write_text(title + "\n\n" + "\n".join(self.lines()) + "\n")

    def part(self, name: str, fn: Callable[[], None], budget_s: float, expected_s: float) -> None:
        """Run one part: skip it if it would overrun the budget, record its errors, reset/read peak memory."""
        if self.elapsed() + expected_s > budget_s:
            self.add(name, "", "skipped", notes=f"time budget: {self.elapsed():.0f} s + ~{expected_s} s > {budget_s}")
        else:
            gc.collect()
            if cuda():
                cuda().empty_cache()
                cuda().reset_peak_memory_stats()
            n, t0 = len(self.rows), time.perf_counter()
            try:
                fn()
            except Exception as err:
                traceback.print_exc()
                self.add(name, "", "FAILED", notes=f"{type(err).__name__}: {err}"[:300])
            peak = round(cuda().max_memory_allocated() / 2**30, 2) if cuda() else None
            for r in self.rows[n:]:
                r.setdefault("peak_gib", peak)
            print(f"[{self.elapsed():6.1f} s] {name} done in {time.perf_counter() - t0:.1f} s", flush=True)
        self.write()


def gen_row(rep: Report, part: str, model: str, what: str, st: dict[str, float], unit: str, items: float,
            seconds: float, **extra: Any) -> None:  # fmt: skip
    tokens = st["nominal_tokens"] or st["completion_tokens"]
    rep.add(part, model, what, items=int(items), unit=unit, seconds=round(seconds, 2),
            rate=round(items / seconds, 2) if seconds else None,
            tokens_per_s=round(tokens / st["gen_s"], 1) if st["gen_s"] else None,
            gen_s=round(st["gen_s"], 2), load_s=round(st["load_s"], 2), requests=int(st["requests"]),
            prompt_tokens=int(st["prompt_tokens"]), completion_tokens_counted=int(st["completion_tokens"]),
            generated_tokens=int(tokens), **({"peak_gib": round(st["peak_gib"], 2)} if st["peak_gib"] else {}),
            **extra)  # fmt: skip


def peak_of(stats: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"peak_gib": the largest per-model peak} (empty when nothing was measured: the part's own peak is used)."""
    peaks = [st["peak_gib"] for st in stats.values() if st.get("peak_gib")]
    return {"peak_gib": round(max(peaks), 2)} if peaks else {}


def roofline(info: dict[str, int], n: int, batch: int, steps: int, ctx: float, seconds: float) -> float | None:
    """Share of the HBM-bandwidth bound: decode reads the LM weights + the KV cache once per step; measured time
    includes prefill and the vision tower, so this is a lower bound on decode's bandwidth use."""
    if not cuda() or not seconds:
        return None
    per_step = [info["decode_weight_bytes"] + min(batch, n - i) * info["kv_bytes_per_token"] * ctx
                for i in range(0, n, batch)]  # fmt: skip
    return round(sum(per_step) * steps / HBM_BYTES_PER_S / seconds, 3)


class StepTimer(TrainerCallback):
    """Trainer callback (instrumentation): the time of every optimizer step's end and of every checkpoint save."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.saves: list[float] = []
        self.per_step = 1

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.ends, self.saves = [], []
        self.per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if cuda():
            cuda().synchronize()
        self.ends.append(time.perf_counter())

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.saves.append(time.perf_counter())

    def samples_per_s(self) -> float | None:
        skip = 2 if len(self.ends) > 4 else 1  # the first steps compile kernels and fill the allocator
        if len(self.ends) <= skip:
            return None
        return round(self.per_step * (len(self.ends) - 1 - skip) / (self.ends[-1] - self.ends[skip]), 2)
