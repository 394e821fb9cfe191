"""`speed/gpu_check.py --tiny`: the GPU check's whole code path on CPU (tiny Qwen2-VL-shaped models, 8 charts).

Slow (about a minute on 2 cores): `pytest -m slow tests/test_gpu_check.py`. The real thing runs on a GPU machine
(`bash speed/gpu.sh`); this keeps it working between those runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_tiny_runs_every_part(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "speed/gpu_check.py"), "--tiny", "--out", str(tmp_path / "out"),
         "--work", str(tmp_path / "work")],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    data = json.loads((tmp_path / "out/gpu_check.json").read_text())
    rows = data["rows"]
    assert not [r for r in rows if r["what"] in ("FAILED", "skipped")], rows
    parts = {r["part"] for r in rows}
    assert parts == {"build", "annotate", "generate", "prepare", "identify", "level_lora", "evaluate", "level_full"}
    by = {(r["part"], r["model"], r["what"].split(",")[0]): r for r in rows}
    n = data["settings"]["images"]

    annotate = by[("annotate", "teacher", "real stage")]
    assert annotate["items"] == n
    # No EOS in the generation config: every request writes exactly max_new_tokens tokens.
    assert annotate["completion_tokens_counted"] == annotate["generated_tokens"] == n * 16
    for model in ("teacher", "student"):  # the scripted annotate run gave k = 2 parseable pairs per image
        assert by[("identify", model, "real stage")]["items"] == 2 * n
    assert by[("identify", "both", "stage wall (2 loads + answers)")]["notes"].startswith(f"selected {2 * n}")
    compare = [r for r in rows if r["part"] == "generate"]
    assert [r["requests"] for r in compare] == [4, 4, 4] and all(r["rate"] > 0 for r in compare)
    for method in ("lora", "full"):
        level = by[(f"level_{method}", "student", "real stage")]
        assert level["train_samples_per_s"] > 0 and level["items"] == 2 * n
    assert {r["model"] for r in rows if r["part"] == "evaluate"} == {"student", "student+LoRA", "both"}
    md = (tmp_path / "out/gpu_check.md").read_text()
    assert md.count("\n| ") == len(rows) + 1  # header + one line per row
    assert "| level_full | student |" in md
