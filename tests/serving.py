"""A real OpenAI-compatible server for tests: `transformers serve` on one local model folder, on a free loopback
port, started and ended by PID (never by pattern). Also the bundled demo models' folder."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

# The bundled demo teacher (trained on easy-VQA; writes parseable QA pairs) and student: nothing to train here.
DEMO_MODELS = Path(str(resources.files("mpa.demo"))) / "models"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def transformers_serve(model_dir: Path) -> Iterator[str]:
    """`transformers serve MODEL_DIR` on 127.0.0.1; yields the base URL (…/v1)."""
    pytest.importorskip("fastapi", reason="`transformers serve` needs the [serve] extra (fastapi, uvicorn)")
    pytest.importorskip("uvicorn", reason="`transformers serve` needs the [serve] extra (fastapi, uvicorn)")
    port = free_port()
    code = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; sys.exit(main())"
    cmd = [sys.executable, "-c", code, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
           "--device", "cpu"]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        # One OpenMP thread: two spin against other work on a 2-core machine (measured 25 ms -> 700 ms a request).
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        pytest.fail(f"transformers serve did not start:\n{log.read().decode()[-3000:]}")
                    time.sleep(0.2)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            proc.terminate()  # by PID: only the server this helper started
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
