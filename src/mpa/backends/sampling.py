"""Batch-invariant seeded sampling for HF `generate`.

`generate(do_sample=True)` draws from one global RNG, so a row's sample depends on which other rows share its
batch, the batch size and where a resumed run restarted. Instead we sample with the Gumbel-max trick: adding
Gumbel noise to the temperature-scaled (and top-p filtered) logits and taking the argmax is an exact draw from
the softmax distribution (Gumbel 1954; Maddison et al., 2014). Each row has its own seeded generator, advanced
once per step, so its samples depend only on its own seed. Greedy decoding then performs the sampling.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

_EPS = 1e-10


class SeededGumbelSampler(LogitsProcessor):
    """Turn greedy decoding into per-row seeded sampling at `temperature` with top-k (0 = off) and nucleus `top_p`
    filtering, applied in the order vLLM and HF apply them (temperature, top-k, top-p)."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float = 1.0, top_k: int = 0) -> None:
        if temperature <= 0:
            raise ValueError("temperature must be > 0 for sampling")
        self.seeds = seeds
        self.temperature = temperature
        self.top_k = TopKLogitsWarper(top_k) if top_k > 0 else None
        self.top_p = TopPLogitsWarper(top_p) if top_p < 1.0 else None
        self._generators: list[torch.Generator] | None = None

    def _rngs(self, device: torch.device) -> list[torch.Generator]:
        if self._generators is None:
            self._generators = [torch.Generator(device=device).manual_seed(s) for s in self.seeds]
        return self._generators

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float() / self.temperature
        if self.top_k is not None:
            scores = self.top_k(input_ids, scores)
        if self.top_p is not None:
            scores = self.top_p(input_ids, scores)
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g, device=scores.device) for g in self._rngs(scores.device)])
        gumbel = -torch.log(-torch.log(uniform.clamp(_EPS, 1.0 - _EPS)))
        return scores + gumbel
