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
