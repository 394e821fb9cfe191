"""Session fixtures: tiny offline VLMs of real HF architectures, built once per test run.

Fixtures are lazy: a run that never asks for `tiny_teacher_dir` never trains it (~10-15 s on 2 cores).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

# Tests must never reach the Hub; set before anything imports transformers.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

TEACHER_STEPS = 200
N_COLOR_IMAGES = 20


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    """Two cores on the dev box; more threads only oversubscribe them."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mpa.testing.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"), seed=0)


@pytest.fixture(scope="session")
def tiny_idefics3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mpa.testing.tiny import build_tiny_idefics3

    return build_tiny_idefics3(tmp_path_factory.mktemp("tiny_idefics3"), seed=0)


@pytest.fixture(scope="session")
def color_image_labels(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    """(path, colour) of the PNGs in `color_images`, in file-name order."""
    from mpa.testing.tiny import make_color_images

    return make_color_images(tmp_path_factory.mktemp("color_images"), N_COLOR_IMAGES, seed=0)


@pytest.fixture(scope="session")
def color_images(color_image_labels: list[tuple[Path, str]]) -> Path:
    """Folder of near-solid colour PNGs (names `img_0000_red.png`, ...)."""
    return color_image_labels[0][0].parent


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory: pytest.TempPathFactory, color_image_labels: list[tuple[Path, str]]) -> Path:
    """Tiny LLaVA fine-tuned to name the colour and to write `Question: ... Answer: <colour>`."""
    from mpa.testing.tiny import build_tiny_llava, train_tiny_teacher

    model_dir = build_tiny_llava(tmp_path_factory.mktemp("tiny_teacher"), seed=0)
    train_tiny_teacher(model_dir, color_image_labels, steps=TEACHER_STEPS, seed=0)
    return model_dir


@pytest.fixture(scope="session")
def tiny_student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A different, smaller random-init LLaVA with the same tokenizer (same default corpus)."""
    from mpa.testing.tiny import build_tiny_llava

    return build_tiny_llava(
        tmp_path_factory.mktemp("tiny_student"), vision_hidden=16, text_hidden=32, text_layers=1, seed=1
    )


@pytest.fixture(scope="session")
def quiet_run(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_teacher_dir: Path,
    tiny_student_dir: Path,
    color_images: Path,
    color_image_labels: list[tuple[Path, str]],
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The whole method with evaluation on a colour benchmark, run as `mpa run CONFIG --quiet` (once per test run:
    the report and publish tests read it; tests that change a run copy it first)."""
    import json
    import subprocess
    import sys

    import yaml

    from tests.test_pipeline import make_tree

    root = tmp_path_factory.mktemp("report_run")
    bench = root / "colours.jsonl"
    rows = [{"image": str(p), "question": "What colour is the image?", "answers": [c], "question_type": "colour"}
            for p, c in color_image_labels]  # fmt: skip
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tree: dict[str, Any] = make_tree(root / "run", tiny_teacher_dir, tiny_student_dir, color_images)
    tree["level"].update({"epochs": 3, "val_fraction": 0.25})
    tree["evaluate"] = {"benchmarks": [{"name": "jsonl", "data_dir": str(bench)}]}
    tree["contamination"] = {"check": False}  # the benchmark is the pool itself: the guard would drop it all
    cfg = root / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mpa.cli", "run", str(cfg), "--quiet"], capture_output=True,
                          text=True, env=env, timeout=600)  # fmt: skip
    return root / "run", proc


# Fixtures that build, train, load or serve a model: a test using any of them (directly or as a parameter naming
# the fixture) is a tiny-model test, marker `models`.
MODEL_FIXTURES = frozenset(
    {"tiny_llava_dir", "tiny_idefics3_dir", "tiny_teacher_dir", "tiny_student_dir", "family_dir", "parrot_dir",
     "served_teacher", "served", "quick_demo", "quiet_run"}
)  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs a model `models`, so that the fast suite (`-m "not models"`) stays fast. Tests
    that reach a model another way (the bundled demo models loaded by path) carry the mark themselves; the guard
    below fails any unmarked test that loads a model anyway."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        used = set(getattr(item, "fixturenames", ())) | {v for v in params.values() if isinstance(v, str)}
        if MODEL_FIXTURES & used or item.get_closest_marker("families"):
            item.add_marker(pytest.mark.models)


@pytest.fixture(autouse=True)
def _no_model_outside_the_models_marker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test without the `models` (or `slow`) mark that loads model weights fails with a line saying how to
    mark it, so the fast suite cannot slowly grow model runs again."""
    if request.node.get_closest_marker("models") or request.node.get_closest_marker("slow"):
        return
    try:
        from transformers import PreTrainedModel
    except ImportError:
        return

    def refuse(cls: type, *args: object, **kwargs: object) -> None:
        raise AssertionError(
            f"{request.node.nodeid} loads a model ({cls.__name__}) but is not marked `models`: add "
            "`pytestmark = pytest.mark.models` (or use a model fixture listed in tests/conftest.py MODEL_FIXTURES)"
        )

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(refuse))
