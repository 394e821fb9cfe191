"""`mpa demo`: the whole method on the bundled demo world, through the same config, stages and run directory as
`mpa run`. The demo is `demo.yaml` with three machine-specific paths filled in; `--quick` shrinks the pool, the
benchmark and the training budget for CI; `--ablation` also levels the student on other selections.
"""

from __future__ import annotations

import copy
import logging
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mpa.config import MPAConfig, build_config
from mpa.counts import IdentifyCounts, LevelCounts
from mpa.demo import world
from mpa.pipeline import run_pipeline, write_summary
from mpa.rundir import RunDir, atomic_write_text

log = logging.getLogger(__name__)
DEMO_DIR = Path(str(resources.files("mpa.demo")))
MODELS_DIR = DEMO_DIR / "models"
QUICK = {"pool_images": 400, "test_questions": 1500, "epochs": 12, "learning_rate": 0.001}

# Ablation variants (overrides of the demo config): the paper's selections, and the forgetting guards on and off.
ABLATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "parity, no guards": {"level": {"retention_ratio": 0.0, "balance": "none"}},
    "parity + balance": {"level": {"retention_ratio": 0.0, "balance": "answer_type"}},
    "random (same size)": {"identify": {"strategy": "random"}, "level": {"retention_ratio": 0.0}},
    "all pseudo-QAs": {"identify": {"strategy": "all"}, "level": {"retention_ratio": 0.0}},
}


def write_pool(run_dir: Path, limit: int | None) -> Path:
    """The unlabeled pool as a list file: easy-VQA train images outside the teacher's labelled half."""
    import easy_vqa

    paths = {int(k): v for k, v in easy_vqa.get_train_image_paths().items()}
    _, pool = world.split_train(sorted(paths))
    pool = pool[:limit] if limit else pool
    out = run_dir / "inputs" / "pool.txt"
    atomic_write_text(out, "".join(f"{paths[i]}\n" for i in pool))
    return out


def demo_tree(run_dir: Path, *, quick: bool = False, models_dir: Path | None = None) -> dict[str, Any]:
    """demo.yaml with @pool, @models and @demo resolved (and the --quick budget applied)."""
    tree = yaml.safe_load((DEMO_DIR / "demo.yaml").read_text(encoding="utf-8"))
    pool = write_pool(run_dir, QUICK["pool_images"] if quick else None)
    subst = {"@pool": str(pool), "@models": str(models_dir or MODELS_DIR), "@demo": str(DEMO_DIR)}

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        if isinstance(node, str) and node.startswith("@"):
            head, _, rest = node.partition("/")
            return str(Path(subst[head]) / rest) if rest else subst[head]
        return node

    tree = resolve(tree)
    tree["run_dir"] = str(run_dir)
    if quick:
        tree["evaluate"]["benchmarks"][0]["limit"] = QUICK["test_questions"]
        tree["level"]["epochs"] = QUICK["epochs"]
        tree["level"]["learning_rate"] = QUICK["learning_rate"]
    return tree


def _merge(tree: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = copy.deepcopy(tree)
    for section, values in overrides.items():
        out.setdefault(section, {}).update(values)
    return out


def seed_variant(main: Path, variant: Path) -> None:
    """Reuse the main run's contamination scan, annotations, every model's answers and the teacher / student-before
    evaluations (same fingerprints: skipped; answers a variant does not use are ignored)."""
    if (variant / "annotate").exists():
        return
    for name in ("annotate", "contamination"):
        if (main / name).exists():
            shutil.copytree(main / name, variant / name)
    (variant / "identify").mkdir(parents=True)
    for path in (main / "identify").glob("*_answers.jsonl"):
        shutil.copy2(path, variant / "identify" / path.name)
    for role in ("teacher", "student_before"):
        if (main / "evaluate" / role).exists():
            shutil.copytree(main / "evaluate" / role, variant / "evaluate" / role)


def run_ablation(tree: dict[str, Any], force: bool = False) -> dict[str, dict[str, Any]]:
    """Level the student on each variant; returns benchmark rows by variant (the main run is 'parity + retention')."""
    main = Path(tree["run_dir"])
    rows = {"parity + retention (demo)": _bench_row(main)}
    for name, overrides in ABLATIONS.items():
        vdir = main / "ablation" / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
        seed_variant(main, vdir)
        cfg = build_config({**_merge(tree, overrides), "run_dir": str(vdir)})
        run_pipeline(cfg, ["annotate", "identify", "level", "evaluate"], force=force)
        rows[name] = _bench_row(vdir)
    return rows


def _bench_row(run_dir: Path) -> dict[str, Any]:
    summary = write_summary(RunDir(run_dir))
    row = dict(summary["benchmarks"].get("easyvqa_test", {}))
    row["selected"] = IdentifyCounts.model_validate(summary["parity"]).selected if summary["parity"] else None
    row["trained_on"] = LevelCounts.read(summary["level"]).train if summary["level"] else None
    return row


def demo_config(run_dir: Path, *, quick: bool = False, models_dir: Path | None = None) -> MPAConfig:
    return build_config(demo_tree(run_dir, quick=quick, models_dir=models_dir), source="demo.yaml")
