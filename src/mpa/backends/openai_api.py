"""OpenAI-compatible backend: any `/v1/chat/completions` server (`vllm serve`, SGLang, TGI, `transformers serve`,
hosted APIs), through the maintained `openai` client.

    teacher: {backend: openai, model: Qwen/Qwen2-VL-72B-Instruct, base_url: http://gpu-box:8000/v1}

- One user message per request: the image (a base64 data URL, fitted to the pixel budget first) and then the text,
  the order HFBackend renders, so a served model sees the same prompt tokens as the in-process one (tests compare
  the two through `transformers serve`). Replies are stripped, as HFBackend's are.
- Images travel as PNG (lossless) when they have few colours (charts, screenshots, rendered scenes) and as JPEG
  (`jpeg_quality`, default 95) when they are photos: a 12 Mpx photo is ~1.4 MB of PNG and ~80 ms to encode, a few
  ms as JPEG. Each image is encoded in the worker thread that sends it, never on the main thread, so encoding
  overlaps the requests in flight.
- `concurrency` requests in flight (threads; default 32), so a continuous-batching server batches them.
- Every decoding parameter is sent: temperature, top_p, max_tokens, seed, and top_k and repetition_penalty in the
  server's dialect (`sampling_params`: vLLM / SGLang read them as request fields; `transformers serve` rejects
  unknown fields and reads `frequency_penalty` + 1 as the repetition penalty). Without them `vllm serve` applies
  the model's generation_config (Qwen2-VL: top_k=1), and every "sampled" answer comes back identical.
- A PEFT `adapter` cannot be applied by a client: a config that names one is refused (serve the merged model, or
  a vLLM LoRA module, under its own model name instead).
- Retries are ours (the client's `max_retries` is 0): HTTP 408/409/429/5xx, timeouts and dropped connections are
  retried with exponential backoff, never sooner than the server's `Retry-After`, and stretched by a random 0-25 %.
  The client's own loop sleeps exactly `Retry-After` with no jitter, so requests throttled together would all
  come back at the same instant. A request that still fails gets `GenResult.error`; the rest of the batch goes on.
- `n` samples are asked for with `n`; a server that returns fewer choices (`transformers serve` ignores `n`) or
  rejects `n` gets the missing samples as separate requests seeded by `sample_seed`, and `n` is not sent again.
- `stop` is never sent (`transformers serve` answers HTTP 500 for VLMs): `max_tokens` and the model's own
  end-of-turn token end a reply.
- The API key is read from the environment variable named by `api_key_env`; the config (saved in the run
  directory) holds only that name, and the key is masked in error messages.
- Sampling is the server's: `transformers serve` samples at temperature > 0 only if the model's
  generation_config.json has `do_sample: true`, and honours `seed` only for one request at a time (concurrency 1).
  Greedy outputs match HFBackend; sampled ones do not (HFBackend has its own batch-invariant sampler).
"""

from __future__ import annotations

import base64
import email.utils
import io
import logging
import math
import os
import random
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import openai
from PIL import Image

from mpa.backends.base import GenRequest, GenResult, sample_seed
from mpa.config import OpenAIModelConfig
from mpa.errors import ConfigError
from mpa.pixels import fit_pixel_budget

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 429}  # and every 5xx
INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
MAX_RETRY_AFTER_S = 120.0  # a server asking for a longer wait is not retried (e.g. a daily quota)
NO_KEY = "EMPTY"  # what local servers (vLLM, transformers serve) accept
PHOTO_COLOURS = 4096  # an image with more distinct colours than this is sent as JPEG under image_format "auto"


@dataclass
class Usage:
    """Totals over the backend's lifetime."""

    requests: int = 0  # GenRequests answered, failed ones included
    failed: int = 0
    calls: int = 0  # HTTP calls made (n fallbacks and retries add to it)
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class _Call:
    """One HTTP call: `count` samples of request `index`, starting at sample `first`."""

    index: int
    first: int
    count: int


@dataclass
class _Reply:
    texts: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    attempts: int = 1
    n_rejected: bool = False  # HTTP 400/422 to a call that asked for n > 1


def is_photo(image: Image.Image) -> bool:
    """More than PHOTO_COLOURS distinct colours: a photo (JPEG costs it little); fewer: a chart, screenshot or
    rendered scene, whose sharp edges JPEG would blur."""
    return image.getcolors(maxcolors=PHOTO_COLOURS) is None


def image_data_url(image: Image.Image, fmt: str = "png", quality: int = 95) -> str:
    """A `data:` URL of the image: PNG is lossless (outputs match HFBackend); JPEG is smaller and far faster to
    encode for photos. `fmt="auto"` picks JPEG for photos, PNG otherwise."""
    if fmt == "auto":
        fmt = "jpeg" if is_photo(image) else "png"
    buf = io.BytesIO()
    if fmt == "jpeg":
        image.convert("RGB").save(buf, format="JPEG", quality=quality)
    else:
        image.save(buf, format="PNG")
    return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date); None if absent/garbled."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            try:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def retry_delay_s(attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
    """Backoff before retry `attempt` + 1: 0.5 s, 1 s, 2 s, ... (at most 8 s), never below `Retry-After`, times a
    random 1.00-1.25 so requests that failed together come back spread out."""
    backoff = min(INITIAL_BACKOFF_S * 2.0**attempt, MAX_BACKOFF_S)
    return max(backoff, retry_after_s or 0.0) * (1.0 + 0.25 * rng.random())


def _n_samples(request: GenRequest) -> int:
    return request.n if request.temperature > 0 else 1  # greedy decoding gives one answer, as in HFBackend


class OpenAIBackend:
    """A model behind an OpenAI-compatible chat-completions endpoint."""

    name = "openai"

    def __init__(self, cfg: OpenAIModelConfig) -> None:
        if not cfg.base_url:
            raise ConfigError(f"model {cfg.model}: backend 'openai' needs base_url (e.g. http://127.0.0.1:8000/v1)")
        if cfg.adapter:
            raise ConfigError(
                f"model {cfg.model}: backend 'openai' cannot apply the adapter {cfg.adapter} (a client sends "
                "requests; the server holds the weights); serve the merged model or a LoRA module under its own "
                "name and set model to that name, or use backend hf or vllm"
            )
        key = NO_KEY
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env, "")
            if not key:
                raise ConfigError(f"api_key_env: the environment variable {cfg.api_key_env} is not set or empty")
        self.cfg = cfg
        self._key = key
        self.client = openai.OpenAI(base_url=cfg.base_url, api_key=key, timeout=cfg.timeout_s, max_retries=0)
        self.supports_n = cfg.supports_n  # None until a reply with n > 1 tells
        self.usage = Usage()
        self._rng = random.Random()

    def close(self) -> None:
        """Close the HTTP connections (safe to call twice)."""
        self.client.close()

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        results = [GenResult(key=r.key) for r in requests]
        samples: list[dict[int, str]] = [{} for _ in requests]
        pool = ThreadPoolExecutor(max_workers=self.cfg.concurrency, thread_name_prefix="mpa-openai")
        pending: dict[Future[_Reply], _Call] = {}

        urls: dict[int, str | None] = {}  # each image encoded once, by the first worker thread that sends it

        def submit(call: _Call) -> None:
            pending[pool.submit(self._encode_and_call, requests[call.index], call, urls)] = call

        try:
            for i, request in enumerate(requests):
                for call in self._plan(i, _n_samples(request)):
                    submit(call)
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    call = pending.pop(future)
                    for follow_up in self._absorb(call, future.result(), results[call.index], samples[call.index]):
                        submit(follow_up)
        finally:  # on Ctrl-C, drop the queued calls instead of sending them all first
            pool.shutdown(wait=False, cancel_futures=True)
        for request, result, got in zip(requests, results, samples, strict=True):
            result.texts = [got[s] for s in range(_n_samples(request))] if result.error is None else []
            self.usage.requests += 1
            self.usage.failed += result.error is not None
            self.usage.prompt_tokens += result.prompt_tokens
            self.usage.completion_tokens += result.completion_tokens
        return results

    def _plan(self, index: int, n: int) -> list[_Call]:
        if n > 1 and self.supports_n is not False:
            return [_Call(index, 0, n)]
        return [_Call(index, s, 1) for s in range(n)]

    def _absorb(self, call: _Call, reply: _Reply, result: GenResult, samples: dict[int, str]) -> list[_Call]:
        """Fold one reply into its request's result; returns the calls still needed (samples a server left out)."""
        self.usage.calls += reply.attempts
        self.usage.retries += reply.attempts - 1
        singles = [_Call(call.index, s, 1) for s in range(call.first + len(reply.texts), call.first + call.count)]
        if reply.error is not None:
            if reply.n_rejected and self.cfg.supports_n is None:  # (calls in flight may come back after the first)
                if self.supports_n is not False:
                    log.warning("%s rejected n=%d (%s); asking for samples one by one", self.cfg.base_url,
                                call.count, reply.error)  # fmt: skip
                self.supports_n = False
                return singles
            result.error = result.error or reply.error
            return []
        result.prompt_tokens += reply.prompt_tokens
        result.completion_tokens += reply.completion_tokens
        for j, text in enumerate(reply.texts[: call.count]):
            samples[call.first + j] = text
        if not reply.texts:
            result.error = result.error or "the server returned no choices"
            return []
        if call.count > 1 and singles:
            if self.supports_n is not False:
                log.warning("%s returned %d of n=%d choices; asking for samples one by one from now on",
                            self.cfg.base_url, len(reply.texts), call.count)  # fmt: skip
            self.supports_n = False
            return singles
        if call.count > 1 and self.supports_n is None:
            self.supports_n = True
        return []

    def _encode_and_call(self, request: GenRequest, call: _Call, urls: dict[int, str | None]) -> _Reply:
        """Runs in a worker thread: encode the request's image (once) and make the call."""
        if call.index not in urls:
            if request.image is None:
                urls[call.index] = None
            else:
                try:
                    image = fit_pixel_budget(request.image, self.cfg.max_pixels, self.cfg.min_pixels)
                    urls[call.index] = image_data_url(image, self.cfg.image_format, self.cfg.jpeg_quality)
                except (OSError, ValueError) as err:  # an image PIL cannot encode fails its own request only
                    return _Reply(error=f"image encoding: {type(err).__name__}: {err}"[:500], attempts=0)
        return self._call(request, urls[call.index], call.first, call.count)

    def _params(self, request: GenRequest, url: str | None, first: int, count: int) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": url}}] if url else []
        content.append({"type": "text", "text": request.prompt})
        params: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            # Per-sample seed, so a sample does not depend on how it was requested; 31 bits suit every server.
            "seed": sample_seed(request.seed, request.key, first) & 0x7FFFFFFF,
        }
        params["top_p"] = request.top_p
        if self.cfg.sampling_params == "vllm":  # not in OpenAI's schema: vLLM and SGLang read them from the body
            params["extra_body"] = {"top_k": request.top_k if request.top_k > 0 else -1,
                                    "repetition_penalty": request.repetition_penalty}  # fmt: skip
        elif self.cfg.sampling_params == "transformers":  # `transformers serve`: penalty = 1 + frequency_penalty
            params["frequency_penalty"] = request.repetition_penalty - 1.0
        if count > 1:
            params["n"] = count
        return params

    def _call(self, request: GenRequest, url: str | None, first: int, count: int) -> _Reply:
        """One chat completion with retries; never raises."""
        params = self._params(request, url, first, count)
        error = ""
        for attempt in range(self.cfg.max_retries + 1):
            retry_after: float | None = None
            try:
                response = self.client.chat.completions.create(**params)
            except openai.APIStatusError as err:
                error = f"HTTP {err.status_code}: {err.message}"
                if err.status_code in (400, 422) and self.cfg.sampling_params == "vllm":
                    error += " (a server that rejects top_k / repetition_penalty: set sampling_params to 'transformers'"
                    error += " for `transformers serve`, or 'none')"
                if count > 1 and err.status_code in (400, 422):
                    return _Reply(error=self._redact(error), attempts=attempt + 1, n_rejected=True)
                retry = err.status_code in RETRY_STATUS or err.status_code >= 500
                retry_after = parse_retry_after(err.response.headers)
            except openai.APITimeoutError:
                error, retry = f"timed out after {self.cfg.timeout_s:g} s", True
            except openai.APIConnectionError as err:  # refused, reset, closed without a response
                error, retry = f"connection error: {type(err.__cause__).__name__}: {err.__cause__ or err}", True
            except Exception as err:  # e.g. a body that is not a chat completion
                error, retry = f"{type(err).__name__}: {err}", False
            else:
                return self._reply(response, attempt + 1)
            if not retry or attempt == self.cfg.max_retries:
                break
            if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
                error += f" (the server asks to retry after {retry_after:.0f} s; not waiting that long)"
                break
            delay = retry_delay_s(attempt, retry_after, self._rng)
            log.info("%s (attempt %d of %d); retrying in %.1f s", error[:200], attempt + 1,
                     self.cfg.max_retries + 1, delay)  # fmt: skip
            time.sleep(delay)
        return _Reply(error=self._redact(error)[:500], attempts=attempt + 1)

    @staticmethod
    def _reply(response: Any, attempts: int) -> _Reply:
        choices = sorted(response.choices or [], key=lambda c: c.index)
        usage = response.usage
        return _Reply(
            texts=[(c.message.content or "").strip() for c in choices],
            prompt_tokens=(usage.prompt_tokens or 0) if usage else 0,
            completion_tokens=(usage.completion_tokens or 0) if usage else 0,
            attempts=attempts,
        )

    def _redact(self, text: str) -> str:
        """Error texts go into the run directory: never with the key in them (some APIs echo it)."""
        return text.replace(self._key, "***") if self._key != NO_KEY and len(self._key) >= 4 else text
