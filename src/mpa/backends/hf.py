"""Hugging Face backend: batched `generate` on any `AutoModelForImageTextToText` checkpoint.

Left padding makes batched output equal one-by-one output; rows are sorted by prompt length so batches hold
similar lengths; CUDA + bf16 is chosen when present, CPU fp32 otherwise. Sampling is seeded per request
(`sampling.py`), so outputs do not depend on batch size or on where a run resumed.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig, LogitsProcessorList

from mpa.backends.base import GenRequest, GenResult, sample_seed
from mpa.backends.hf_collator import conversation
from mpa.backends.sampling import SeededGumbelSampler
from mpa.config import ModelConfig
from mpa.errors import ConfigError
from mpa.pixels import apply_processor_budget, fit_pixel_budget

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def load_processor(cfg: ModelConfig, model_path: str | None = None):  # -> transformers.ProcessorMixin
    """The model's processor with left padding and, where the image processor resizes to a pixel budget
    (Qwen-VL family), `min_pixels` / `max_pixels` (see `mpa.pixels`). A processor without a chat template is
    refused: mpa talks to every model through its chat template, in training and in inference alike."""
    kwargs: dict[str, object] = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    processor = AutoProcessor.from_pretrained(model_path or cfg.model, **kwargs)
    if not getattr(processor, "chat_template", None):
        raise ConfigError(
            f"model {cfg.model}: its processor has no chat template ({type(processor).__name__}; PaliGemma ships "
            "none), and mpa prompts every model through one; add a chat_template.jinja to the checkpoint folder "
            "or use an instruction-tuned checkpoint"
        )
    apply_processor_budget(processor, cfg.min_pixels, cfg.max_pixels)
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor


@dataclass
class _Row:
    index: int  # request index
    sample: int
    prompt_len: int


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


class HFBackend:
    """A local HF model; one instance holds one model on one device."""

    name = "hf"

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self.processor = load_processor(cfg)
        extra = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
        model = AutoModelForImageTextToText.from_pretrained(
            cfg.model, revision=cfg.revision, dtype=self.dtype, trust_remote_code=cfg.trust_remote_code, **extra
        )
        if cfg.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, cfg.adapter)
        self.model = model.to(self.device).eval()
        self.batch_size = cfg.batch_size

    @classmethod
    def from_loaded(cls, cfg: ModelConfig, model: torch.nn.Module) -> HFBackend:
        """Wrap a model already in memory (e.g. mid-training) with the processor saved in `cfg.model`."""
        backend = cls.__new__(cls)
        backend.cfg, backend.model, backend.batch_size = cfg, model, cfg.batch_size
        backend.device = next(model.parameters()).device
        backend.dtype = next(model.parameters()).dtype
        backend.processor = load_processor(cfg)
        return backend

    def close(self) -> None:
        """Free the model and its device memory (safe to call twice): the last reference goes, the garbage
        collector runs (PEFT wrappers hold reference cycles), and CUDA's cached blocks are returned."""
        self.model = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _prompt_len(self, request: GenRequest) -> int:
        return len(self.processor.tokenizer(request.prompt, add_special_tokens=False)["input_ids"])

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        results = [GenResult(key=r.key) for r in requests]
        rows = [
            _Row(i, s, self._prompt_len(r))
            for i, r in enumerate(requests)
            for s in range(r.n if r.temperature > 0 else 1)
        ]
        # Group identical decoding settings, then sort by length so batches pad little.
        rows.sort(key=lambda w: (self._settings(requests[w.index]), w.prompt_len, w.index, w.sample))
        texts: dict[tuple[int, int], str] = {}
        start = 0
        while start < len(rows):
            settings = self._settings(requests[rows[start].index])
            end = start
            while (
                end < len(rows)
                and end - start < self.batch_size
                and self._settings(requests[rows[end].index]) == settings
            ):
                end += 1
            self._run_rows(requests, rows[start:end], texts, results)
            start = end
        for i, request in enumerate(requests):
            if results[i].error is None:
                n = request.n if request.temperature > 0 else 1
                results[i].texts = [texts[(i, s)] for s in range(n)]
        return results

    @staticmethod
    def _settings(r: GenRequest) -> tuple[float, float, int, float, int, bool]:
        return (r.temperature, r.top_p, r.top_k, r.repetition_penalty, r.max_new_tokens, r.image is not None)

    def _run_rows(
        self, requests: list[GenRequest], rows: list[_Row], texts: dict[tuple[int, int], str], results: list[GenResult]
    ) -> None:
        """Generate for `rows`; on OOM halve the batch; a row that still fails gets an error, others go on.

        Survived: out of memory, and the RuntimeError / ValueError a processor or model raises on one unusable
        input (an image whose tokens do not fit, a prompt too long): halving isolates that request. A programming
        error (TypeError, AttributeError, KeyError, ...) is not a property of one input and propagates, so a bug
        is never mistaken for flaky generation."""
        try:
            outputs = self._generate_batch(requests, rows)
        except (RuntimeError, ValueError) as err:  # torch.OutOfMemoryError is a RuntimeError
            if len(rows) > 1:
                if _is_oom(err) and self.device.type == "cuda":
                    torch.cuda.empty_cache()
                mid = len(rows) // 2
                log.warning("batch of %d failed (%s); retrying in halves", len(rows), type(err).__name__)
                self._run_rows(requests, rows[:mid], texts, results)
                self._run_rows(requests, rows[mid:], texts, results)
                return
            results[rows[0].index].error = f"{type(err).__name__}: {err}"[:500]
            return
        for row, (text, n_prompt, n_new) in zip(rows, outputs, strict=True):
            texts[(row.index, row.sample)] = text
            res = results[row.index]
            if row.sample == 0:
                res.prompt_tokens += n_prompt
            res.completion_tokens += n_new

    def _generation_config(self, request: GenRequest) -> GenerationConfig:
        """Exactly the request's decoding: only the special-token ids come from the checkpoint, never its sampling
        defaults (Qwen2-VL ships repetition_penalty 1.05 and top_k 1). Sampling itself is done by
        `SeededGumbelSampler` on top of greedy search."""
        own = self.model.generation_config
        return GenerationConfig(
            eos_token_id=own.eos_token_id,
            pad_token_id=own.pad_token_id if own.pad_token_id is not None else self.processor.tokenizer.pad_token_id,
            bos_token_id=own.bos_token_id,
            do_sample=False,
            num_beams=1,
            max_new_tokens=request.max_new_tokens,
            repetition_penalty=request.repetition_penalty,
        )

    @torch.inference_mode()
    def prompt_inputs(self, batch: list[GenRequest]):  # -> transformers.BatchFeature
        """The model inputs `generate` gets for `batch` (left padded): the chat template's generation prompt with
        each image fitted to the pixel budget. Training renders its prompts through the same call
        (`hf_collator.ChatCollator.prompts`); tests compare the two token for token."""
        convs = [conversation(r.prompt, r.image is not None) for r in batch]
        processor_kwargs: dict[str, object] = {"padding": True}
        if batch[0].image is not None:
            processor_kwargs["images"] = [
                [fit_pixel_budget(r.image, self.cfg.max_pixels, self.cfg.min_pixels)]  # type: ignore[arg-type]
                for r in batch
            ]
        return self.processor.apply_chat_template(
            convs,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs=processor_kwargs,
        )

    def _generate_batch(self, requests: list[GenRequest], rows: list[_Row]) -> list[tuple[str, int, int]]:
        batch = [requests[row.index] for row in rows]
        inputs = self.prompt_inputs(batch).to(self.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        first = batch[0]
        gen_cfg = self._generation_config(first)
        processors = LogitsProcessorList()
        if first.temperature > 0:
            seeds = [sample_seed(r.seed, r.key, row.sample) for r, row in zip(batch, rows, strict=True)]
            processors.append(SeededGumbelSampler(seeds, first.temperature, first.top_p, first.top_k))
        out = self.model.generate(**inputs, generation_config=gen_cfg, logits_processor=processors)
        prompt_len = inputs["input_ids"].shape[1]
        new_tokens = out[:, prompt_len:]
        decoded = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        pad_id = self.processor.tokenizer.pad_token_id
        eos = gen_cfg.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        counts = []
        for row_tokens in new_tokens.tolist():
            n = 0
            for tok in row_tokens:
                n += 1
                if tok in eos_ids or tok == pad_id:
                    break
            counts.append(n)
        prompt_counts = inputs["attention_mask"].sum(dim=1).tolist()
        return [(t.strip(), int(p), c) for t, p, c in zip(decoded, prompt_counts, counts, strict=True)]
