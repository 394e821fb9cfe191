"""OpenAI-compatible backend: retries, Retry-After, failures, `n` fallback, concurrency, usage and API keys against
a fault-injecting server of ours; then `mpa` annotate + identify through a real `transformers serve`, which must
give the same texts as the in-process HF backend on the same model, with usage and no API key in the run dir."""

from __future__ import annotations

import base64
import io
import json
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mpa.backends import GenRequest, GenResult, load_backend, openai_api
from mpa.backends.base import sample_seed
from mpa.backends.openai_api import OpenAIBackend, parse_retry_after, retry_delay_s
from mpa.cli import build_parser, main, resolve_config
from mpa.config import ConfigError, build_config, model_config
from mpa.pipeline import check_inputs
from mpa.rundir import iter_jsonl
from mpa.stages.common import model_identity
from mpa.stages.usage import record_usage, usage_summary
from tests.fault_server import FaultServer
from tests.serving import DEMO_MODELS, transformers_serve

KEY_ENV = "MPA_TEST_API_KEY"
SECRET = "sk-test-Zq8vX3kP0secret"


def _backend(server: FaultServer, **kw: Any) -> OpenAIBackend:
    cfg = model_config(model="served-model", backend="openai", base_url=server.url, **{"timeout_s": 5.0, **kw})
    backend = load_backend(cfg)
    assert isinstance(backend, OpenAIBackend)
    return backend


def _req(prompt: str, **kw: Any) -> GenRequest:
    return GenRequest(key=kw.pop("key", prompt), prompt=prompt, max_new_tokens=8, **kw)


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff 0.05 s, 0.1 s, 0.2 s, ... instead of 0.5 s, 1 s, 2 s: the same logic, faster tests."""
    monkeypatch.setattr(openai_api, "INITIAL_BACKOFF_S", 0.05)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the backend asks for between retries (it still waits them): what a test checks instead of the
    wall clock, which a busy machine stretches."""
    import sys

    asked: list[float] = []
    real = time.sleep

    def sleep(seconds: float) -> None:
        if sys._getframe(1).f_globals.get("__name__") == "mpa.backends.openai_api":
            asked.append(seconds)
        real(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    return asked


def test_transient_faults_are_retried_until_success(server: FaultServer, backoffs: list[float]) -> None:
    server.faults = {"a": ["500", "drop", "slow"], "b": ["429:0", "500"], "c": []}
    backend = _backend(server, timeout_s=0.4, max_retries=4)
    server.slow_s = 1.2
    results = backend.generate([_req("a"), _req("b"), _req("c")])
    assert [r.error for r in results] == [None, None, None]
    assert [r.texts[0].split("|")[0] for r in results] == ["a", "b", "c"]  # in order, matched by key
    assert [len(server.attempts(p)) for p in "abc"] == [4, 3, 1]
    assert backend.usage.retries == 5 and backend.usage.calls == 8
    assert len(backoffs) == 5 and sum(backoffs) < 3  # short exponential backoffs, one per retry


def test_retry_after_is_honoured(server: FaultServer, backoffs: list[float]) -> None:
    server.faults = {"x": ["429:1"]}
    (res,) = _backend(server).generate([_req("x")])
    first, second = server.attempts("x")
    assert res.error is None
    assert second.at - first.at >= 1.0 and 1.0 <= backoffs[0] <= 1.25  # Retry-After, plus at most 25 % jitter


def test_a_failing_request_is_recorded_and_the_batch_goes_on(server: FaultServer) -> None:
    server.faults = {"always500": ["500"] * 10, "bad": ["400", "400"]}
    backend = _backend(server, max_retries=2)
    results = backend.generate([_req("ok1"), _req("always500"), _req("bad"), _req("ok2")])
    assert results[0].error is None and results[3].error is None
    assert results[1].texts == [] and "HTTP 500" in (results[1].error or "")
    assert len(server.attempts("always500")) == 3  # 1 + max_retries
    assert "HTTP 400" in (results[2].error or "") and len(server.attempts("bad")) == 1  # a client error: no retry
    assert backend.usage.failed == 2 and backend.usage.requests == 4


def test_retry_after_beyond_the_limit_is_not_waited_for(server: FaultServer, backoffs: list[float]) -> None:
    server.faults = {"x": ["429:3600"]}
    (res,) = _backend(server).generate([_req("x")])
    assert "HTTP 429" in (res.error or "") and "3600" in (res.error or "")
    assert backoffs == [] and len(server.attempts("x")) == 1


def test_n_falls_back_to_seeded_single_requests(server: FaultServer) -> None:
    server.max_choices = 1  # like `transformers serve`, which ignores n
    backend = _backend(server)
    assert backend.supports_n is None
    (res,) = backend.generate([_req("s", n=3, temperature=0.8, seed=5)])
    assert res.error is None and len(res.texts) == 3
    seeds = [int(t.split("|")[2]) for t in res.texts]
    assert seeds == [sample_seed(5, "s", i) & 0x7FFFFFFF for i in range(3)]  # distinct, per sample
    assert backend.supports_n is False
    assert [s.body.get("n") for s in server.attempts("s")] == [3, None, None]
    # Detected once: the next batch asks for single samples straight away, and gets the same samples.
    (again,) = backend.generate([_req("s", n=3, temperature=0.8, seed=5)])
    assert again.texts == res.texts
    assert [s.body.get("n") for s in server.attempts("s")[3:]] == [None, None, None]


def test_n_is_sent_when_the_server_supports_it(server: FaultServer) -> None:
    backend = _backend(server)
    (res,) = backend.generate([_req("s", n=3, temperature=0.8)])
    assert len(res.texts) == 3 and len(server.attempts("s")) == 1 and backend.supports_n is True
    (greedy,) = backend.generate([_req("g", n=3)])  # greedy decoding gives one answer, as HFBackend does
    assert len(greedy.texts) == 1 and "n" not in server.attempts("g")[0].body


def test_n_rejected_by_the_server_falls_back(server: FaultServer) -> None:
    server.faults = {"s1": ["400"], "s2": ["400"]}  # both calls are in flight when the first 400 comes back
    backend = _backend(server)
    results = backend.generate([_req("s1", n=2, temperature=1.0), _req("s2", n=2, temperature=1.0)])
    assert all(r.error is None and len(r.texts) == 2 for r in results) and backend.supports_n is False


@pytest.mark.parametrize("concurrency", [1, 6])
def test_requests_run_concurrently_up_to_the_limit(server: FaultServer, concurrency: int) -> None:
    server.delay_s = 0.1  # long enough for requests to overlap when the backend lets them
    backend = _backend(server, concurrency=concurrency)
    results = backend.generate([_req(f"q{i}") for i in range(12)])
    assert all(r.error is None for r in results)
    assert server.max_in_flight == concurrency  # counted by the server: no wall-clock bound


def test_usage_is_filled_in_and_summed(server: FaultServer) -> None:
    server.faults = {"three word prompt": ["500"]}
    backend = _backend(server)
    results = backend.generate([_req("three word prompt"), _req("two words", n=2, temperature=1.0)])
    assert [(r.prompt_tokens, r.completion_tokens) for r in results] == [(3, 1), (2, 2)]
    backend.generate([_req("one")])
    u = backend.usage
    assert (u.requests, u.failed, u.prompt_tokens, u.completion_tokens) == (3, 0, 3 + 2 + 1, 1 + 2 + 1)


def test_request_shape_image_first_no_stop(server: FaultServer) -> None:
    backend = _backend(server, max_pixels=50 * 25)
    image = Image.new("RGB", (400, 200), (200, 10, 10))
    backend.generate([
        _req("look", image=image, temperature=0.5, top_p=0.9, top_k=20, repetition_penalty=1.05, seed=3),
        _req("greedy"),
    ])  # fmt: skip
    body = server.attempts("look")[0].body
    assert body["model"] == "served-model" and body["max_tokens"] == 8 and "stop" not in body
    assert body["temperature"] == 0.5 and body["top_p"] == 0.9 and isinstance(body["seed"], int)
    # Every decoding parameter is sent, so a server never falls back on the model's generation_config.
    assert body["top_k"] == 20 and body["repetition_penalty"] == 1.05
    image_part, text_part = body["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "look"}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.width * sent.height <= 50 * 25 and abs(sent.width / sent.height - 2) < 0.1  # budget, aspect kept
    greedy = server.attempts("greedy")[0].body
    assert (
        greedy["temperature"] == 0 and greedy["top_p"] == 1.0 and greedy["messages"][0]["content"][0]["type"] == "text"
    )
    assert greedy["top_k"] == -1 and greedy["repetition_penalty"] == 1.0  # off, explicitly


def test_sampling_params_in_each_server_dialect(server: FaultServer) -> None:
    _backend(server, sampling_params="none").generate([_req("plain", top_k=5, repetition_penalty=1.05)])
    body = server.attempts("plain")[0].body
    assert "top_k" not in body and "repetition_penalty" not in body and "frequency_penalty" not in body
    _backend(server, sampling_params="transformers").generate([_req("hf", top_k=5, repetition_penalty=1.05)])
    body = server.attempts("hf")[0].body
    assert "top_k" not in body and body["frequency_penalty"] == pytest.approx(0.05)


def test_jpeg_images(server: FaultServer) -> None:
    _backend(server, image_format="jpeg").generate([_req("j", image=Image.new("RGBA", (8, 8)))])
    assert server.attempts("j")[0].body["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/jpeg")


def test_auto_format_sends_photos_as_jpeg_and_flat_images_as_png(server: FaultServer) -> None:
    import numpy as np

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8))
    chart = Image.new("RGB", (96, 96), (255, 255, 255))
    _backend(server).generate([_req("photo", image=photo), _req("chart", image=chart)])
    url = lambda name: server.attempts(name)[0].body["messages"][0]["content"][0]["image_url"]["url"]  # noqa: E731
    assert url("photo").startswith("data:image/jpeg") and url("chart").startswith("data:image/png")


def test_an_adapter_is_refused_never_ignored(server: FaultServer) -> None:
    from mpa.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot apply the adapter"):
        _backend(server, adapter="runs/x/level/adapter")


def test_api_key_comes_from_the_named_env_var_and_is_masked(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _backend(server).generate([_req("nokey")])
    assert server.attempts("nokey")[0].headers["authorization"] == "Bearer EMPTY"
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.faults = {"denied": ["401"]}
    backend = _backend(server, api_key_env=KEY_ENV)
    ok, denied = backend.generate([_req("withkey"), _req("denied")])
    assert server.attempts("withkey")[0].headers["authorization"] == f"Bearer {SECRET}"
    assert ok.error is None and "HTTP 401" in (denied.error or "") and SECRET not in (denied.error or "")
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigError, match=KEY_ENV):
        _backend(server, api_key_env=KEY_ENV)


def test_unreachable_server_fails_every_request_without_raising() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    cfg = model_config(model="m", backend="openai", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
    results = load_backend(cfg).generate([_req("a"), _req("b")])
    assert all(r.texts == [] and "connection error" in (r.error or "") for r in results)


def test_retry_helpers() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "soon"}) is None and parse_retry_after({}) is None
    in_3s = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3))
    assert 1.5 < (parse_retry_after({"retry-after": in_3s}) or 0) <= 3.0
    rng = random.Random(0)
    delays = [retry_delay_s(a, None, rng) for a in range(12)]  # up to the cap
    for attempt, delay in enumerate(delays):
        base = min(openai_api.INITIAL_BACKOFF_S * 2**attempt, openai_api.MAX_BACKOFF_S)
        assert base <= delay <= 1.25 * base
    assert delays[-1] <= 1.25 * openai_api.MAX_BACKOFF_S
    assert len({round(retry_delay_s(0, 1.0, rng), 6) for _ in range(5)}) == 5  # jittered, never below Retry-After
    assert all(retry_delay_s(0, 1.0, rng) >= 1.0 for _ in range(20))


def test_stage_usage_sums_every_call_and_prices_it(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    record_usage(path, "teacher", [GenResult("a", ["x"], None, 1000, 10), GenResult("b", error="boom")])
    record_usage(path, "teacher", [GenResult("c", ["y"], None, 1000, 990)])  # e.g. after a resume
    record_usage(path, "student", [GenResult("d", ["z"], None, 5, 1)])
    priced = model_config(model="m", cost_per_1k_prompt_tokens=0.5, cost_per_1k_completion_tokens=2.0)
    out = usage_summary(path, {"teacher": priced, "student": model_config(model="s")})
    assert out["teacher"] == {"requests": 3, "failed": 1, "prompt_tokens": 2000, "completion_tokens": 1000,
                              "cost_usd": 3.0}  # fmt: skip
    assert out["student"] == {"requests": 1, "failed": 0, "prompt_tokens": 5, "completion_tokens": 1, "cost_usd": None}


# --- config and CLI ---------------------------------------------------------------------------------------------

BASE = {"run_dir": "runs/x", "images": {"path": "imgs"}, "teacher": {"model": "T"}, "student": {"model": "S"}}


def test_openai_backend_needs_base_url() -> None:
    with pytest.raises(ConfigError, match=r"missing required key 'teacher\.base_url'"):
        build_config(BASE, ["teacher.backend=openai"])
    cfg = build_config(BASE, ["teacher.backend=openai", "teacher.base_url=http://h:1/v1"])
    assert cfg.teacher.concurrency == 32 and cfg.teacher.supports_n is None and cfg.teacher.api_key_env is None


def test_a_pasted_key_is_refused_without_being_echoed() -> None:
    with pytest.raises(ConfigError, match="NAME of an environment variable") as err:
        build_config(BASE, ["teacher.backend=openai", "teacher.base_url=http://h/v1", f"teacher.api_key_env={SECRET}"])
    assert SECRET not in str(err.value)


def test_cli_flags_and_identity(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["run", "--run-dir", str(tmp_path / "r"), "--images", str(tmp_path), "--teacher", "org/big-vlm",
         "--student", "S", "--teacher-backend", "openai", "--teacher-base-url", "http://h:8000/v1",
         "--teacher-api-key-env", KEY_ENV]
    )  # fmt: skip
    cfg = resolve_config(args)
    teacher, student = cfg.teacher, cfg.student
    assert (teacher.backend, teacher.base_url, teacher.api_key_env) == ("openai", "http://h:8000/v1", KEY_ENV)
    assert student.backend == "hf"
    ident = model_identity(teacher)
    assert ident["base_url"] == "http://h:8000/v1" and "weights" not in ident and KEY_ENV not in json.dumps(ident)
    assert "base_url" not in model_identity(student)  # hf fingerprints (and resumable runs) are unchanged
    # A served name that looks like a path is not checked for a local model folder.
    check_inputs(cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"model": "/models/big"})}))


# --- a real `transformers serve` ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served_teacher() -> Iterator[str]:
    """`transformers serve` pinned to the demo teacher on a free loopback port; yields its base URL."""
    with transformers_serve(DEMO_MODELS / "teacher") as url:
        yield url


def _answers(path: Path, key: str) -> dict[str, Any]:
    return {r[key]: r["raw"] for r in iter_jsonl(path)}


def test_served_teacher_matches_in_process_teacher(
    served_teacher: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    easy_vqa = pytest.importorskip("easy_vqa")
    images = tmp_path / "images.txt"
    images.write_text("".join(f"{path}\n" for _, path in sorted(easy_vqa.get_train_image_paths().items())[:6]))
    common = ["--images", str(images), "--teacher", str(DEMO_MODELS / "teacher"), "--student",
              str(DEMO_MODELS / "student"), "--prompt-file", str(DEMO_MODELS / "annotate_prompt.txt"),
              "--stages", "annotate,identify", "--set", "annotate.max_new_tokens=80", "--device", "cpu",
              "-q"]  # fmt: skip
    assert main(["run", "--run-dir", str(tmp_path / "hf"), *common]) == 0
    monkeypatch.setenv(KEY_ENV, SECRET)
    served = ["--teacher-backend", "openai", "--teacher-base-url", served_teacher, "--teacher-api-key-env", KEY_ENV,
              "--set", "teacher.sampling_params=transformers"]  # fmt: skip
    assert main(["run", "--run-dir", str(tmp_path / "api"), *common, *served]) == 0
    capsys.readouterr()
    hf, api = tmp_path / "hf", tmp_path / "api"
    for rel, key in [("annotate/annotations.jsonl", "key"), ("identify/teacher_answers.jsonl", "qa_id"),
                     ("identify/student_answers.jsonl", "qa_id")]:  # fmt: skip
        expected = _answers(hf / rel, key)
        assert len(expected) >= 6 and _answers(api / rel, key) == expected, rel
    n_qa = json.loads((api / "annotate/manifest.json").read_text())["counts"]["qa_pairs"]
    assert n_qa >= 6 and len(_answers(api / "identify/teacher_answers.jsonl", "qa_id")) == n_qa
    # Usage: recorded per stage and model; the server counts the same tokens as the in-process backend.
    usage = {}
    for run in (hf, api):
        usage[run.name] = {
            s: json.loads((run / s / "manifest.json").read_text())["usage"] for s in ("annotate", "identify")
        }
    assert usage["api"] == usage["hf"]
    # The manifest records the decoding, and what `transformers serve` could not be sent.
    decoding = json.loads((api / "annotate/manifest.json").read_text())["settings"]["decoding"]
    assert decoding["repetition_penalty"] == 1.0 and decoding["server_defaults"] == ["top_k"]
    annotate_usage = usage["api"]["annotate"]["teacher"]
    assert annotate_usage["requests"] == 6 and annotate_usage["prompt_tokens"] > 0 and annotate_usage["failed"] == 0
    assert usage["api"]["identify"]["teacher"]["requests"] > 0 and usage["api"]["identify"]["student"]["requests"] > 0
    # The key is in no file of the run dir; the config names the variable only.
    assert f"api_key_env: {KEY_ENV}" in (api / "config.yaml").read_text()
    for path in api.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
