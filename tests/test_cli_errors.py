"""Bad configs and CLI input: each is one line on stderr naming the key or path and the fix, exit code 2, and
nothing written to the run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mpa.cli import main


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()} if root.exists() else {}


@pytest.fixture
def base(tmp_path: Path, tiny_llava_dir: Path, color_images: Path) -> dict[str, Any]:
    return {
        "run_dir": str(tmp_path / "run"),
        "images": {"path": str(color_images)},
        "teacher": {"model": str(tiny_llava_dir)},
        "student": {"model": str(tiny_llava_dir)},
    }


def _other_version(run: Path) -> None:
    (run / "annotate").mkdir(parents=True)
    (run / "annotate/started.json").write_text(json.dumps({"schema_version": 99, "fingerprint": "x"}))


CASES: list[tuple[str, dict[str, Any], list[str], list[str]]] = [
    # (id, changes to the config tree, extra CLI args, words the message must contain)
    ("unknown-key", {"teacher": {"modle": "x"}}, [], ["teacher.modle"]),
    ("unknown-section", {"levle": {"epochs": 1}}, [], ["levle"]),
    ("wrong-type", {"level": {"epochs": "many"}}, [], ["level.epochs"]),
    ("out-of-range", {"annotate": {"pairs_per_image": 0}}, [], ["annotate.pairs_per_image"]),
    ("bad-choice", {"identify": {"matcher": "fuzzy"}}, [], ["identify.matcher", "compat"]),
    ("missing-model", {"teacher": {"model": "/no/such/model"}}, [], ["teacher.model", "/no/such/model"]),
    ("missing-images", {"images": {"path": "/no/such/images"}}, [], ["images.path", "/no/such/images"]),
    ("empty-images", {"images": {"path": "EMPTY"}}, [], ["images.path", "no images found"]),
    ("missing-prompt-file", {"annotate": {"prompt_file": "/no/prompt.txt"}}, [], ["annotate.prompt_file"]),
    ("unknown-task", {"annotate": {"task": "poetry"}}, [], ["annotate.task", "poetry"]),
    ("bad-set", {}, ["--set", "level.epochs"], ["--set level.epochs", "section.key=value"]),
    ("set-unknown-key", {}, ["--set", "level.epoch=2"], ["level.epoch"]),
    ("other-version", {}, [], ["another mpa version", "--force"]),
]


@pytest.mark.parametrize(("changes", "args", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(
    base: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, Any],
    args: list[str],
    words: list[str],
) -> None:
    tree = json.loads(json.dumps(base))
    for section, values in changes.items():
        if isinstance(tree.get(section), dict):
            tree[section].update(values)
        else:
            tree[section] = values
    if tree["images"]["path"] == "EMPTY":
        (tmp_path / "empty").mkdir()
        tree["images"]["path"] = str(tmp_path / "empty")
    run = Path(tree["run_dir"])
    if "another mpa version" in words:
        _other_version(run)
    before = _snapshot(run)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    capsys.readouterr()
    assert main(["run", str(cfg), *args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("mpa: error: "), err
    for word in words:
        assert word in err[0], (word, err[0])
    assert _snapshot(run) == before  # nothing written (or changed)


def test_missing_and_broken_config_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("teacher: {model: [unclosed\n")
    assert main(["run", str(broken)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.yaml" in err[0]
    assert main(["run", "--teacher", "x"]) == 2  # no config, no run dir: says what is missing
    assert "mpa: error:" in capsys.readouterr().err


def test_a_missing_package_is_one_line_naming_what_to_install(
    base: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What transformers raises for a Qwen2-VL processor without torchvision (its message starts with a newline)
    becomes one line, exit 2, before any stage writes."""
    import mpa.backends.hf as hf

    def no_torchvision(*args: Any, **kwargs: Any) -> Any:
        raise ImportError("\nQwen2VLVideoProcessor requires the Torchvision library but it was not found in your "
                          "environment. Check out the instructions on the\ninstallation page")  # fmt: skip

    monkeypatch.setattr(hf, "load_processor", no_torchvision)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(base))
    for command in ("validate", "run"):
        assert main([command, str(cfg)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "requires the Torchvision library" in err[0], err
        assert "pip install torchvision" in err[0] and "teacher.model" in err[0]
    assert _snapshot(tmp_path / "run") == {}


def test_an_import_error_in_mpa_itself_suggests_no_package() -> None:
    """A broken mpa install (one of its modules fails to import) is not a package to pip install."""
    from mpa.backends import missing_package

    own = ImportError("cannot import name 'progress' from 'mpa.stages.common'", name="mpa.stages.common")
    assert missing_package(own) == "cannot import name 'progress' from 'mpa.stages.common'"
    other = ImportError("No module named 'peft'", name="peft")
    assert missing_package(other).endswith("(install it: pip install peft)")
