"""`level` under `torchrun` with 2 CPU processes (gloo): training completes, loss falls, only rank 0 writes the
run directory, and a killed multi-process run resumes from its last checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mpa.config import build_config
from mpa.pipeline import run_pipeline
from tests.test_crash_resume import ENV, _kill_when
from tests.test_pipeline import make_tree

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561"]


@pytest.fixture
def cfg_path(tmp_path: Path, tiny_teacher_dir: Path, tiny_student_dir: Path, color_images: Path) -> Path:
    tree = make_tree(tmp_path / "run", tiny_teacher_dir, tiny_student_dir, color_images,
                     level={"max_steps": 12, "eval_steps": 3, "batch_size": 2, "val_fraction": 0.0,
                            "learning_rate": 0.003})  # fmt: skip
    run_pipeline(build_config(tree), ["annotate", "identify"])
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _level(cfg: Path) -> list[str]:
    return [*TORCHRUN, "-m", "mpa.cli", "level", str(cfg), "-q"]


def _losses(run: Path) -> list[float]:
    return [h["loss"] for h in json.loads((run / "level/metrics.json").read_text())["log_history"] if "loss" in h]


def test_level_under_torchrun_two_processes(cfg_path: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.run(_level(cfg_path), capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    manifest = json.loads((run / "level/manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["resumed"] is False
    assert (run / "level/adapter/adapter_model.safetensors").is_file()
    losses = _losses(run)
    assert len(losses) >= 3 and losses[-1] < losses[0]  # it learned
    steps = sorted(
        int(p.parent.name.split("-")[1]) for p in (run / "level/trainer").glob("checkpoint-*/trainer_state.json")
    )
    assert steps[-1] == 12
    # Only rank 0 wrote: no stray temp files from a second writer, one started/manifest pair.
    assert not list(run.rglob("*.tmp")) and len(list(run.rglob("level/manifest.json"))) == 1


def test_killed_torchrun_level_resumes_from_its_checkpoint(cfg_path: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    tree: dict[str, Any] = yaml.safe_load(cfg_path.read_text())
    tree["level"].update({"max_steps": 30, "eval_steps": 3})
    cfg_path.write_text(yaml.safe_dump(tree))
    ckpts = run / "level/trainer"
    # torchrun and its two workers are killed by PID (the workers run in sessions of their own)
    assert _kill_when(
        _level(cfg_path), tmp_path / "kill.log", lambda: any(ckpts.glob("checkpoint-*/trainer_state.json"))
    )
    assert not (run / "level/manifest.json").exists()
    proc = subprocess.run(_level(cfg_path), capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    manifest = json.loads((run / "level/manifest.json").read_text())
    assert manifest["resumed"] is True and manifest["world_size"] == 2
    steps = [h["step"] for h in json.loads((run / "level/metrics.json").read_text())["log_history"] if "loss" in h]
    assert steps[-1] == 30 and steps == sorted(set(steps))


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero3"])
def test_shipped_accelerate_configs_load(name: str) -> None:
    """The documented launch configs parse with Accelerate's own loader (they need GPUs to run: not done here)."""
    from accelerate.commands.config.config_args import ClusterConfig

    path = Path(__file__).parents[1] / "configs/accelerate" / f"{name}.yaml"
    cfg = ClusterConfig.from_yaml_file(str(path))
    assert cfg.distributed_type.value == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero3": "DEEPSPEED"}[name]
    assert f"--config_file configs/accelerate/{name}.yaml -m mpa.cli level" in path.read_text()
    if name == "fsdp":
        assert cfg.fsdp_config["fsdp_use_orig_params"] is True  # frozen vision tower + trainable params
    if name == "deepspeed_zero3":
        assert cfg.deepspeed_config["zero_stage"] == 3 and cfg.deepspeed_config["zero3_save_16bit_model"] is True
