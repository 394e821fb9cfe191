"""A `level` killed at any point and rerun gives the uninterrupted result: the same weights, the same validation
losses and the same summary, for the shipped recipes with validation, early stopping and best-checkpoint restore
(the demo's full fine-tuning, the configs' LoRA). The kill is simulated in-process: an exception no code catches
(like SIGKILL) raised before the first checkpoint, between checkpoints, while a checkpoint is being written, and
after training, before the leveled student is saved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from mpa.config import build_config
from mpa.pipeline import run_pipeline
from tests.test_pipeline import make_tree

# Tiny runs tuned so that validation loss turns up before `max_steps`: early stopping ends training, the patience
# counter is non-zero at the last checkpoints, and the best checkpoint is not the last one.
RECIPES: dict[str, dict[str, Any]] = {
    "full": {"method": "full", "freeze_vision": False, "learning_rate": 0.15, "batch_size": 4,
             "weight_decay": 0.01, "warmup_ratio": 0.02},  # the demo's recipe
    "lora": {"method": "lora", "lora_dropout": 0.05, "learning_rate": 0.1, "batch_size": 2, "grad_accum": 2},
}  # fmt: skip
COMMON = {"val_fraction": 0.3, "early_stopping_patience": 2, "eval_steps": 2, "max_steps": 60}
KILLS = ["before_first_checkpoint", "between_checkpoints", "during_save", "after_training"]


class Killed(BaseException):
    """Stands for SIGKILL: no `except Exception` in the Trainer or in mpa stops it."""


@pytest.fixture(scope="module")
def identified(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_dir: Path, tiny_student_dir: Path,
               color_images: Path) -> dict[str, Any]:  # fmt: skip
    """The config tree of a run directory with annotate and identify done, copied for every level run below."""
    run = tmp_path_factory.mktemp("level_resume") / "identified"
    tree = make_tree(run, tiny_teacher_dir, tiny_student_dir, color_images)
    run_pipeline(build_config(tree), ["annotate", "identify"])
    return tree


@pytest.fixture(scope="module")
def references(identified: dict[str, Any]) -> dict[str, Path]:
    return {}  # recipe -> its uninterrupted run, made on first use


def _level(identified: dict[str, Any], run: Path, recipe: str) -> dict[str, Any]:
    if not run.exists():
        shutil.copytree(identified["run_dir"], run)
    tree = {**identified, "run_dir": str(run), "level": {**identified["level"], **COMMON, **RECIPES[recipe]}}
    return run_pipeline(build_config(tree), ["level"])["level"]


def _reference(references: dict[str, Path], identified: dict[str, Any], recipe: str) -> Path:
    if recipe not in references:
        run = Path(identified["run_dir"]).parent / f"ref_{recipe}"
        _level(identified, run, recipe)
        references[recipe] = run
    return references[recipe]


def _history(run: Path) -> list[dict[str, Any]]:
    return json.loads((run / "level/metrics.json").read_text())["log_history"]


def _logged(run: Path) -> list[dict[str, Any]]:
    """The log as the report reads it: without timings (never the same twice), TRL's `num_tokens` (a count it keeps
    in memory only, restarted by a resume) and the end of training's line (its `train_loss` averages the steps of
    one `train()` call: after a resume, the resumed steps only)."""
    skip = ("_runtime", "_per_second", "num_tokens")
    return [{k: v for k, v in h.items() if not k.endswith(skip)} for h in _history(run) if "train_runtime" not in h]


def _evals(run: Path) -> list[tuple[int, float]]:
    return [(h["step"], h["eval_loss"]) for h in _history(run) if "eval_loss" in h]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = [run / "level/model/model.safetensors", run / "level/adapter/adapter_model.safetensors"]
    return load_file(str(next(f for f in files if f.exists())))


def _kill_at(kill: str, stop: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next level run die at `kill` (`stop`: the step where the uninterrupted run stopped early)."""
    from transformers import TrainerCallback, TrainerState

    from mpa.backends import hf_train

    if kill == "during_save":  # checkpoint-(stop - 2): weights and optimizer written, trainer_state.json torn
        save_to_json = TrainerState.save_to_json

        def torn(self: TrainerState, json_path: str) -> None:
            if self.global_step == stop - 2:
                Path(json_path).write_text('{"best_global_step": ')
                raise Killed(json_path)
            save_to_json(self, json_path)

        monkeypatch.setattr(TrainerState, "save_to_json", torn)
        return

    class Kill(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # step 1: nothing saved yet; stop - 1: resumes from checkpoint-(stop - 2), one evaluation past the best
            if kill != "after_training" and state.global_step == (1 if kill == "before_first_checkpoint" else stop - 1):
                raise Killed(kill)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if kill == "after_training":  # every checkpoint written; the best one not restored, nothing saved
                raise Killed(kill)

    original = hf_train._trainer

    def killing_trainer(*args: Any, **kwargs: Any) -> Any:
        trainer = original(*args, **kwargs)
        trainer.add_callback(Kill())
        return trainer

    monkeypatch.setattr(hf_train, "_trainer", killing_trainer)


@pytest.mark.parametrize("kill", KILLS)
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_killed_level_reruns_to_the_uninterrupted_result(
    recipe: str, kill: str, identified: dict[str, Any], references: dict[str, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    ref = _reference(references, identified, recipe)
    evals = _evals(ref)
    best, stop = min(evals, key=lambda e: e[1])[0], evals[-1][0]
    # The run must exercise what a resume has to restore: early stopping fired, with its patience counter
    # non-zero at checkpoint-(stop - 2), and a best checkpoint that is not the last.
    assert best < stop - 2 and stop < COMMON["max_steps"], f"retune RECIPES[{recipe!r}]: {evals}"

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _kill_at(kill, stop, patch)
        with pytest.raises(Killed):
            _level(identified, run, recipe)
    assert not (run / "level/manifest.json").exists()
    manifest = _level(identified, run, recipe)

    assert manifest["resumed"] is (kill != "before_first_checkpoint")
    want = json.loads((ref / "level/manifest.json").read_text())
    for key in ("counts", "best_checkpoint", "val_accuracy_before", "val_accuracy_after"):
        assert manifest[key] == want[key], key
    assert _logged(run) == _logged(ref)  # the same losses at the same steps, and the same stopping step
    got_summary = json.loads((run / "summary.json").read_text())["level"]
    want_summary = json.loads((ref / "summary.json").read_text())["level"]
    assert {**got_summary, "output": None} == {**want_summary, "output": None}
    got, ref_weights = _weights(run), _weights(ref)
    assert got.keys() == ref_weights.keys()
    for name, tensor in ref_weights.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, msg=name)
