"""Kill real `mpa run` processes with SIGKILL in annotate, identify and level, resume each time, and compare the
final run directory with an uninterrupted run of the same config: zero lost, zero duplicated records, the same
parity set, training resumed from its last checkpoint to the same weights. Also: a write that fails (file-size
limit, like a full disk) stops the run cleanly, and the next run completes it."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mpa.rundir import iter_jsonl
from mpa.testing.tiny import make_color_images
from tests.test_pipeline import make_tree

N_IMAGES = 96  # two annotate chunks of 64 images
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _config(tmp: Path, name: str, teacher: Path, student: Path, images: Path) -> Path:
    tree = make_tree(
        tmp / name, teacher, student, images,
        annotate={"temperature": 1.0, "samples_per_image": 2, "max_new_tokens": 24},
        level={"max_steps": 24, "eval_steps": 4, "batch_size": 4, "val_fraction": 0.0},
    )  # fmt: skip
    tree["teacher"]["batch_size"] = 2  # slow enough to be killed between writes
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _cmd(cfg: Path) -> list[str]:
    return [sys.executable, "-m", "mpa.cli", "run", str(cfg), "--stages", "annotate,identify,level", "-q"]


def _lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        return 0


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL `proc` and every process it started (by PID: torchrun puts its workers in sessions of their own, so
    neither a process group nor a name pattern would be right; a pattern could end other people's runs)."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    proc.send_signal(signal.SIGKILL)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.send_signal(signal.SIGKILL)
    proc.wait()
    psutil.wait_procs(children, timeout=30)


def _kill_when(cmd: list[str], log: Path, condition: Callable[[], bool], timeout: float = 300) -> bool:
    """Start `cmd`, SIGKILL it and its child processes as soon as `condition()` holds; False if it finished
    first."""
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=ENV)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if condition():
                _kill_tree(proc)
                return True
            if proc.poll() is not None:
                return False
            time.sleep(0.005)
        raise AssertionError(f"no kill point within {timeout} s; log: {log}")
    finally:
        if proc.poll() is None:
            _kill_tree(proc)


def _run(cfg: Path, log: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(_cmd(cfg), capture_output=True, text=True, env=ENV, timeout=600, **kw)
    log.write_text(proc.stdout + proc.stderr)
    return proc


def _keyed(path: Path, key: str) -> list[dict[str, Any]]:
    return sorted(iter_jsonl(path), key=lambda r: r[key])


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("crash_images")
    make_color_images(folder, N_IMAGES, seed=3)
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_dir: Path, tiny_student_dir: Path,
              images: Path) -> Path:  # fmt: skip
    tmp = tmp_path_factory.mktemp("crash_ref")
    proc = _run(_config(tmp, "ref", tiny_teacher_dir, tiny_student_dir, images), tmp / "ref.log")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "ref"


def _assert_same_as_reference(run: Path, ref: Path) -> None:
    keyed = [("annotate/images.jsonl", "source"), ("annotate/annotations.jsonl", "key"),
             ("identify/teacher_answers.jsonl", "qa_id"), ("identify/student_answers.jsonl", "qa_id")]  # fmt: skip
    for rel, key in keyed:
        got, want = _keyed(run / rel, key), _keyed(ref / rel, key)
        dupes = [k for k, n in Counter(r[key] for r in got).items() if n > 1]
        assert not dupes, f"{rel}: duplicated records {dupes[:5]}"
        assert [r[key] for r in got] == [r[key] for r in want], f"{rel}: lost or extra records"
        assert got == want, f"{rel}: records differ from the uninterrupted run"
    for rel in ["annotate/qa.jsonl", "identify/candidates.jsonl", "identify/parity.jsonl"]:
        assert (run / rel).read_text() == (ref / rel).read_text(), rel
    for stage in ["annotate", "identify"]:
        got = json.loads((run / stage / "manifest.json").read_text())["counts"]
        assert got == json.loads((ref / stage / "manifest.json").read_text())["counts"]


def _adapter(run: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(run / "level/adapter/adapter_model.safetensors"))


def test_sigkill_in_every_stage_resumes_to_the_uninterrupted_result(
    reference: Path, tmp_path: Path, tiny_teacher_dir: Path, tiny_student_dir: Path, images: Path
) -> None:
    import torch

    cfg = _config(tmp_path, "crash", tiny_teacher_dir, tiny_student_dir, images)
    run, log = tmp_path / "crash", tmp_path / "crash.log"
    ann, ta = run / "annotate/annotations.jsonl", run / "identify/teacher_answers.jsonl"
    ckpts = run / "level/trainer"

    # 1. annotate: killed after the first chunk's records were written, while the second chunk is generating.
    assert _kill_when(_cmd(cfg), log, lambda: _lines(ann) >= 64)
    assert not (run / "annotate/manifest.json").exists()
    written = _lines(ann)
    assert 64 <= written < 2 * N_IMAGES
    # 2. identify: killed once teacher answers are on disk.
    assert _kill_when(_cmd(cfg), log, lambda: _lines(ta) >= 1)
    assert (run / "annotate/manifest.json").exists() and not (run / "identify/manifest.json").exists()
    # 3. level: killed once a checkpoint is complete (torn checkpoints: `test_torn_level_checkpoint_is_skipped`).
    assert _kill_when(_cmd(cfg), log, lambda: any(ckpts.glob("checkpoint-*/trainer_state.json")))
    assert (run / "identify/manifest.json").exists() and not (run / "level/manifest.json").exists()
    # 4. the final run completes everything.
    proc = _run(cfg, tmp_path / "final.log")
    assert proc.returncode == 0, proc.stderr[-3000:]

    _assert_same_as_reference(run, reference)
    level = json.loads((run / "level/manifest.json").read_text())
    assert level["resumed"] is True and level["resumed_from"].startswith("checkpoint-")
    assert level["counts"] == json.loads((reference / "level/manifest.json").read_text())["counts"]
    got, want = _adapter(run), _adapter(reference)
    assert got.keys() == want.keys()
    for name in want:  # resumed training (restored optimizer, scheduler, RNG and data order) = uninterrupted
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)


def test_torn_level_checkpoint_is_skipped(tmp_path: Path) -> None:
    from mpa.backends.hf_train import last_complete_checkpoint

    for step, complete in [(4, True), (8, True), (12, False)]:
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        (ckpt / "adapter_model.safetensors").write_bytes(b"x")
        if complete:
            (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (tmp_path / "checkpoint-8" / "trainer_state.json").write_text('{"global_st')  # torn while writing
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]
    assert last_complete_checkpoint(tmp_path / "none") is None


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_failing_writes_stop_cleanly_and_the_run_resumes(
    reference: Path, tmp_path: Path, tiny_teacher_dir: Path, tiny_student_dir: Path, images: Path
) -> None:
    cfg = _config(tmp_path, "full", tiny_teacher_dir, tiny_student_dir, images)
    run = tmp_path / "full"
    proc = _run(cfg, tmp_path / "limited.log", preexec_fn=_limit_file_size(20_000))
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mpa: error:")]
    assert len(errors) == 1 and "File too large" in errors[0] and "rerun" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (run / "annotate/manifest.json").exists()
    assert _lines(run / "annotate/annotations.jsonl") > 0  # some work was kept
    proc = _run(cfg, tmp_path / "resumed.log")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_as_reference(run, reference)
