"""Questions/s of identify-style requests through `transformers serve` and the OpenAI backend, by concurrency.

Starts `transformers serve` pinned to a model folder (by default a tiny trained LLaVA teacher, built as in the
tests) on a free loopback port, sends N short-answer questions about N images (greedy, as PI's answers) at each
concurrency, and, for reference, runs the same requests through the in-process HF backend. Prints a table, writes
JSON, and stops the server by its PID. `transformers serve` runs VLM requests one at a time, so concurrency
mostly overlaps HTTP/encoding with generation; a continuous-batching server (vLLM, SGLang) is where it pays.

    python speed/serve_throughput.py [--model DIR] [--questions 64] [--concurrency 1 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def start_server(model: Path, log_path: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    """`transformers serve MODEL` on a free port with `threads` torch/OpenMP threads; returns the process and its
    base URL once /health answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; sys.exit(main())"
    cmd = [
        sys.executable,
        "-c",
        code,
        "serve",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    with log_path.open("w") as log:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"transformers serve did not start; see {log_path}") from None
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model folder (default: a tiny trained LLaVA teacher)")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--server-threads", type=int, default=1,
                        help="OMP_NUM_THREADS of the server (1: spinning OpenMP threads on a busy 2-core machine "
                        "made each request ~25x slower)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("runs/bench/serve_throughput.json"))
    args = parser.parse_args()

    from PIL import Image

    from mpa.backends import GenRequest, load_backend
    from mpa.config import ModelConfig, model_config
    from mpa.prompts import render_answer_prompt
    from mpa.testing.tiny import build_tiny_llava, make_color_images, train_tiny_teacher

    tmp = Path(tempfile.mkdtemp(prefix="mpa_serve_bench_"))
    labels = make_color_images(tmp / "images", args.questions)
    model = args.model
    if model is None:
        model = build_tiny_llava(tmp / "teacher", seed=0)
        train_tiny_teacher(model, labels[:20], steps=200)
    requests = [
        GenRequest(key=str(i), prompt=render_answer_prompt("What colour is the image?"),
                   image=Image.open(p).convert("RGB"), max_new_tokens=args.max_new_tokens)
        for i, (p, _) in enumerate(labels)
    ]  # fmt: skip
    rows, reference = [], None

    def measure(label: str, cfg: ModelConfig) -> None:
        nonlocal reference
        backend = load_backend(cfg)
        backend.generate(requests[:2])  # warm-up (the server loads the model on its first request)
        t0 = time.perf_counter()
        results = backend.generate(requests)
        elapsed = time.perf_counter() - t0
        backend.close()
        errors = [r.error for r in results if r.error is not None]
        if errors:  # a throughput of failed requests is not a throughput
            raise SystemExit(f"{label}: {len(errors)} of {len(results)} requests failed; first: {errors[0]}")
        texts = [r.texts for r in results]
        reference = reference or texts
        rows.append({
            "backend": label, "questions": len(requests), "seconds": round(elapsed, 3),
            "questions_per_s": round(len(requests) / elapsed, 1), "failed": sum(r.error is not None for r in results),
            "completion_tokens": sum(r.completion_tokens for r in results), "same_outputs_as_first": texts == reference,
            "load_avg_1min": round(os.getloadavg()[0], 2),  # other work on the machine skews these numbers
        })  # fmt: skip

    model = model.resolve()  # the server is pinned to this folder, and requests name it the same way
    proc, url = start_server(model, tmp / "serve.log", args.server_threads)
    try:
        for c in args.concurrency:
            measure(
                f"openai c={c}",
                model_config(
                    model=str(model), backend="openai", base_url=url, concurrency=c, sampling_params="transformers"
                ),
            )
            rows[-1]["server_threads"] = args.server_threads
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    measure("hf batch=16", model_config(model=str(model), batch_size=16, device="cpu"))

    print(f"identify-style requests, {len(requests)} questions, max_new_tokens {args.max_new_tokens}, model {model}, "
          f"server threads {args.server_threads}")  # fmt: skip
    print(f"{'backend':<14} {'questions/s':>12} {'seconds':>8} {'failed':>7} {'same outputs':>13} {'load':>5}")
    for row in rows:
        print(f"{row['backend']:<14} {row['questions_per_s']:>12} {row['seconds']:>8} {row['failed']:>7} "
              f"{row['same_outputs_as_first']!s:>13} {row['load_avg_1min']:>5}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
