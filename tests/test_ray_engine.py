"""The Ray engine on a local Ray instance (2 CPUs, 2 actors, tiny real models): the same records as the local
engine, through the same stages, resume and counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpa.config import build_config
from mpa.pipeline import run_pipeline
from mpa.rundir import iter_jsonl
from tests.test_pipeline import make_tree

ray = pytest.importorskip("ray", reason="the ray extra is part of mpa[dev]; install it to test the Ray engine")


@pytest.fixture(scope="module", autouse=True)
def _ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_engine_gives_the_local_engines_records(
    tmp_path: Path, tiny_teacher_dir: Path, tiny_student_dir: Path, color_images: Path
) -> None:
    sampled = {"temperature": 1.0, "samples_per_image": 2}
    local = make_tree(tmp_path / "local", tiny_teacher_dir, tiny_student_dir, color_images, annotate=sampled)
    local["teacher"]["batch_size"] = 3  # several batches per chunk, spread over the actors
    remote = {**local, "run_dir": str(tmp_path / "ray"), "engine": {"name": "ray", "num_actors": 2}}
    run_pipeline(build_config(local), ["annotate", "identify"])
    manifests = run_pipeline(build_config(remote), ["annotate", "identify"])
    for rel in ["annotate/annotations.jsonl", "identify/teacher_answers.jsonl", "identify/student_answers.jsonl"]:
        key = "key" if "annotations" in rel else "qa_id"
        got = sorted(iter_jsonl(tmp_path / "ray" / rel), key=lambda r: r[key])
        want = sorted(iter_jsonl(tmp_path / "local" / rel), key=lambda r: r[key])
        assert got and got == want, rel
    for rel in ["annotate/qa.jsonl", "identify/candidates.jsonl", "identify/parity.jsonl"]:
        assert (tmp_path / "ray" / rel).read_text() == (tmp_path / "local" / rel).read_text(), rel
    assert manifests["identify"]["counts"]["parseable"] > 0
    # The engine does not change outputs, so it is not in the fingerprint: the local run's stages are complete.
    again = run_pipeline(build_config({**local, "engine": {"name": "ray"}}), ["annotate", "identify"])
    assert again["annotate"]["fingerprint"] == manifests["annotate"]["fingerprint"]


def test_gpu_actors_by_default_and_no_large_model_on_cpus(tmp_path: Path, tiny_llava_dir: Path) -> None:
    from mpa.backends.ray_pool import gpus_per_actor
    from mpa.config import ConfigError, EngineConfig, model_config

    engine = EngineConfig(name="ray")
    tiny = model_config(model=str(tiny_llava_dir))
    assert gpus_per_actor(tiny, engine, cluster_gpus=8) == 1.0  # a GPU per model copy when there are GPUs
    assert gpus_per_actor(tiny, engine, cluster_gpus=0) == 0.0  # a tiny model may run on CPUs
    served = model_config(model="m", backend="openai", base_url="http://127.0.0.1:1/v1")
    assert gpus_per_actor(served, engine, cluster_gpus=8) == 0.0  # a client holds no weights
    big = tmp_path / "big"
    big.mkdir()
    with (big / "model.safetensors").open("wb") as handle:
        handle.truncate(3 * 1024**3)  # sparse: 3 GiB of "weights" without using the disk
    with pytest.raises(ConfigError, match=r"no GPUs.*num_gpus_per_actor=0"):
        gpus_per_actor(model_config(model=str(big)), engine, cluster_gpus=0)
    with pytest.raises(ConfigError, match="size is unknown"):
        gpus_per_actor(model_config(model="Qwen/Qwen2-VL-7B-Instruct"), engine, cluster_gpus=0)
    explicit = EngineConfig(name="ray", num_gpus_per_actor=0)
    assert gpus_per_actor(model_config(model=str(big)), explicit, cluster_gpus=0) == 0.0  # asked for explicitly
