"""Config loading: defaults, overrides, unknown keys and wrong types are one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpa.cli import main
from mpa.config import ConfigError, build_config, dump_config, load_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
BASE = {"run_dir": "runs/x", "images": {"path": "imgs"}, "teacher": {"model": "T"}, "student": {"model": "S"}}


def test_defaults_are_filled_in() -> None:
    cfg = build_config(BASE)
    assert cfg.annotate.task == "generic" and cfg.identify.matcher == "exact" and cfg.level.method == "lora"
    assert cfg.teacher.dtype == "auto" and cfg.seed == 0


def test_dotted_overrides_are_parsed_as_yaml() -> None:
    cfg = build_config(BASE, ["level.epochs=2.5", "level.merge=true", "export.formats=[llava]", "seed=7"])
    assert cfg.level.epochs == 2.5 and cfg.level.merge is True and cfg.export.formats == ["llava"] and cfg.seed == 7


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("level.epoch=2", "unknown key 'level.epoch'"),
        ("level.epochs=abc", "'level.epochs'"),
        ("identify.matcher=fuzzy", "'identify.matcher'"),
        ("teacher.batch_size=0", "'teacher.batch_size'"),
        ("colour=red", "unknown key 'colour'"),
    ],
)
def test_bad_values_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=r"^config: ") as err:
        build_config(BASE, [override])
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_sections_are_named() -> None:
    with pytest.raises(ConfigError, match="missing required key 'teacher'"):
        build_config({"run_dir": "x", "images": {"path": "i"}, "student": {"model": "S"}})


def test_yaml_roundtrip(tmp_path: Path) -> None:
    cfg = build_config(BASE, ["annotate.task=chartqa"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_unreadable_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("run_dir: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every shipped config parses, names its launch command, and `mpa validate` prints a plan."""
    assert f"mpa run configs/{path.name}" in path.read_text().split("run_dir:")[0]
    cfg = load_config(path)
    assert cfg.teacher.model == "Qwen/Qwen2-VL-7B-Instruct" and cfg.student.model == "Qwen/Qwen2-VL-2B-Instruct"
    assert cfg.annotate.task.endswith("-paper") and cfg.annotate.pairs_per_image == 1
    assert cfg.identify.matcher == "compat" and cfg.identify.strategy == "parity"
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a.png")
    rc = main(["validate", str(path), "--set", f"images.path={tmp_path / 'imgs'}", "--run-dir", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "# stage plan" in out and "annotate  run" in out and "level     run" in out
    assert not (tmp_path / "r").exists()  # validate writes nothing


def test_validate_refuses_missing_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["validate", "--run-dir", str(tmp_path / "r"), "--images", str(tmp_path / "none"),
               "--teacher", "T", "--student", "S"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("mpa: error: images.path:") and err.count("\n") == 1
    (tmp_path / "imgs").mkdir()
    rc = main(["validate", "--run-dir", str(tmp_path / "r"), "--images", str(tmp_path / "imgs"),
               "--teacher", str(tmp_path / "no_model"), "--student", "S"])  # fmt: skip
    assert rc == 2 and "teacher.model:" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------- per-backend model configs


def _tree(**teacher: object) -> dict[str, object]:
    return {"run_dir": "r", "images": {"path": "i"}, "teacher": {"model": "t", **teacher}, "student": {"model": "s"}}


def test_model_config_is_chosen_by_backend() -> None:
    from mpa.config import HFModelConfig, OpenAIModelConfig, ScriptedModelConfig, VLLMModelConfig

    assert type(build_config(_tree()).teacher) is HFModelConfig  # no backend: hf
    assert type(build_config(_tree(backend="vllm")).teacher) is VLLMModelConfig
    assert type(build_config(_tree(backend="scripted")).teacher) is ScriptedModelConfig
    served = build_config(_tree(backend="openai", base_url="http://h:1/v1", concurrency=8)).teacher
    assert type(served) is OpenAIModelConfig and served.requests_in_flight() == 8
    assert not hasattr(build_config(_tree()).teacher, "concurrency")  # an hf model carries no server options


def test_another_backends_option_is_an_error_naming_that_backend() -> None:
    with pytest.raises(ConfigError, match=r"'concurrency' is an option of backend openai, not hf"):
        build_config(_tree(concurrency=8))
    with pytest.raises(ConfigError, match=r"'gpu_memory_utilization' is an option of backend vllm, not openai"):
        build_config(_tree(backend="openai", base_url="http://h:1/v1", gpu_memory_utilization=0.5))
    with pytest.raises(ConfigError, match=r"teacher.*unknown backend; choose one of hf, vllm, openai, scripted"):
        build_config(_tree(backend="tgi"))


def test_a_run_directory_config_from_the_flat_model_config_still_loads() -> None:
    """config.yaml written before the per-backend configs spells every backend's option out at its default."""
    flat = {"backend": "hf", "base_url": None, "api_key_env": None, "concurrency": 32, "timeout_s": 120.0,
            "max_retries": 5, "supports_n": None, "image_format": "auto", "jpeg_quality": 95,
            "sampling_params": "vllm", "gpu_memory_utilization": 0.9}  # fmt: skip
    cfg = build_config(_tree(**flat))
    assert cfg.teacher.backend == "hf" and cfg.teacher.identity() == build_config(_tree()).teacher.identity()
