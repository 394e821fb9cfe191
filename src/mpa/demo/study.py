"""`mpa demo --study`: what goes beyond the paper, measured on the demo world.

    mpa demo --study      # ~20 min on 2 CPU cores (the demo, then 11 min); prints the table, writes study.json

Variants (every one label-free; the pool's hidden labels are read only here, to score pseudo-labels):
  1 round          the demo itself (parity, one teacher, retention guard)
  2 / 3 rounds     the demo run continued: each round re-asks the leveled student and levels it again
  two teachers     the bundled teacher plus teacher_b (another seed), consensus `all`
  graded           two teachers, `strategy: graded` (gap score = teacher agreement share − student agreement ≥ 0.5)
Also: the contamination scan of the pool against easy-VQA test; pseudo-label precision of the teacher-consistent
and selected sets; and whether label-free validation gain tracks the benchmark gain across all variants (Pearson
correlation over every leveling step).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

from mpa.config import build_config
from mpa.counts import IdentifyCounts
from mpa.demo import world
from mpa.demo.run import seed_variant
from mpa.rounds import ROUNDS_FILE, run_rounds
from mpa.rundir import RunDir, atomic_write_json, iter_jsonl, read_json

ROUNDS = 3
VARIANTS: dict[str, dict[str, Any]] = {
    "two teachers (all)": {"teachers": [{"model": "@models/teacher_b", "batch_size": 64}],
                           "identify": {"consensus": "all"}},
    "graded (two teachers)": {"teachers": [{"model": "@models/teacher_b", "batch_size": 64}],
                              "identify": {"strategy": "graded", "min_gap_score": 0.5}},
}  # fmt: skip


def _resolve_models(tree: dict[str, Any], models_dir: Path) -> dict[str, Any]:
    text = json.dumps(tree).replace('"@models/', json.dumps(str(models_dir) + "/")[:-1])
    return json.loads(text)  # type: ignore[no-any-return]


def pool_labels() -> dict[str, dict[str, str]]:
    """Attributes of every pool image by path (hidden from the pipeline; the study's precision only)."""
    qas, paths = world.load_split("train")
    attrs = world.attributes(qas)
    return {str(Path(paths[i]).resolve()): a for i, a in attrs.items()}


def precision(run_dir: Path, labels: dict[str, dict[str, str]]) -> dict[str, float | None]:
    """Share of pseudo-answers that are right, among teacher-consistent and among selected candidates."""
    out: dict[str, float | None] = {}
    cands = list(iter_jsonl(run_dir / "identify" / "candidates.jsonl"))
    for name, keep in (("teacher_consistent", lambda c: c["teacher_agrees"]), ("selected", lambda c: c["selected"])):
        judged = [
            world.true_answer(c["question"], labels.get(str(Path(c["image_path"]).resolve()), {})) == c["pseudo_answer"]
            for c in cands
            if keep(c)
        ]
        out[name] = round(sum(judged) / len(judged), 4) if judged else None
    return out


def _row(run_dir: Path, labels: dict[str, dict[str, str]], before: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scores of one leveled student (easy-VQA test), its label-free validation, and its data's precision.
    `before`: the row of the student it started from (a later round), else the run's own student_before."""
    bench = read_json(run_dir / "evaluate" / "summary.json")["easyvqa_test"]
    level = RunDir(run_dir).require("level")
    ident = IdentifyCounts.read(RunDir(run_dir).require("identify"))
    types = {t: v.get("student_after") for t, v in bench["per_question_type"].items()}
    start = before["after"] if before else bench["student_before"]
    return {
        "after": bench["student_after"], "per_type": types, "bench_gain": round(bench["student_after"] - start, 4),
        "val_before": level["val_accuracy_before"], "val_after": level["val_accuracy_after"],
        "val_gain": round(level["val_accuracy_after"] - level["val_accuracy_before"], 4),
        "selected": ident.selected, "teacher_consistent": ident.teacher_consistent,
        "teacher_agreement": ident.teacher_agreement, "precision": precision(run_dir, labels),
    }  # fmt: skip


def _round_name(r: int) -> str:
    return f"{r} round" + ("s" if r > 1 else "")


def pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sx, sy = math.sqrt(sum((x - mx) ** 2 for x in xs)), math.sqrt(sum((y - my) ** 2 for y in ys))
    return round(sxy / (sx * sy), 3) if sx and sy else None


def run_study(tree: dict[str, Any], models_dir: Path, force: bool = False) -> dict[str, Any]:
    """The main demo run continued for ROUNDS rounds (no early stop, so every round is measured), then the
    teacher variants; returns (and writes to RUN_DIR/study.json) the table."""
    main = Path(tree["run_dir"])
    labels = pool_labels()
    rounds_tree = copy.deepcopy(tree)
    rounds_tree["rounds"] = {"count": ROUNDS, "stop_early": False}
    run_rounds(build_config(rounds_tree, source="demo.yaml (study)"), force=force)
    table = read_json(main / ROUNDS_FILE)
    bench = read_json(main / "evaluate" / "summary.json")["easyvqa_test"]
    rows: dict[str, dict[str, Any]] = {}
    for entry in table["rounds"]:
        r = entry["round"]
        previous = rows[_round_name(r - 1)] if r > 1 else None
        rows[_round_name(r)] = _row(Path(entry["run_dir"]), labels, previous)
    for name, overrides in VARIANTS.items():
        vdir = main / "study" / "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")
        seed_variant(main, vdir)
        vtree = copy.deepcopy(tree)
        for section, values in _resolve_models(overrides, models_dir).items():
            if isinstance(values, dict):
                vtree.setdefault(section, {}).update(values)
            else:
                vtree[section] = values
        vtree["run_dir"] = str(vdir)
        run_rounds(build_config(vtree, source=f"demo.yaml ({name})"), force=force)
        rows[name] = _row(vdir, labels)
    for row in rows.values():
        gap = bench["teacher"] - bench["student_before"]
        row["gap_closed"] = round((row["after"] - bench["student_before"]) / gap, 4) if gap > 0 else None
    steps = list(rows.values())
    screen = main / "contamination" / "manifest.json"
    contamination = read_json(screen)["counts"] if screen.exists() else None
    # the label-free stop rule on the rounds: the last round before the first that did not gain (round 1 at least)
    gains = [rows[k]["val_gain"] for k in rows if "round" in k]
    stop_at = next((i for i, g in enumerate(gains, start=1) if g <= 0), len(gains) + 1) - 1 or 1
    study = {
        "teacher": bench["teacher"], "student_before": bench["student_before"],
        "teacher_per_type": {t: v.get("teacher") for t, v in bench["per_question_type"].items()},
        "student_before_per_type": {t: v.get("student_before") for t, v in bench["per_question_type"].items()},
        "rows": rows, "contamination": contamination, "label_free_stop_round": stop_at,
        "correlation_val_gain_vs_bench_gain": pearson([s["val_gain"] for s in steps], [s["bench_gain"] for s in steps]),
    }  # fmt: skip
    atomic_write_json(main / "study.json", study)
    return study


def format_study(study: dict[str, Any]) -> str:
    """The study as a Markdown table (what the README shows)."""

    def pct(x: Any) -> str:
        return "–" if x is None else f"{x:.3f}"

    lines = [f"teacher {pct(study['teacher'])}, student before {pct(study['student_before'])} "
             f"(yes/no {pct(study['student_before_per_type'].get('yes/no'))})", "",
             "| variant | after | gap closed | colour | shape | yes/no | selected | precision TC / selected "
             "| val gain | bench gain |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in study["rows"].items():
        p = r["precision"]
        lines.append(f"| {name} | {pct(r['after'])} | {pct(r['gap_closed'])} | {pct(r['per_type'].get('color'))} | "
                     f"{pct(r['per_type'].get('shape'))} | {pct(r['per_type'].get('yes/no'))} | {r['selected']} | "
                     f"{pct(p['teacher_consistent'])} / {pct(p['selected'])} | {r['val_gain']:+.3f} | "
                     f"{r['bench_gain']:+.3f} |")  # fmt: skip
    c = study["contamination"] or {}
    lines += [
        "",
        f"contamination: {c.get('flagged')} of {c.get('pool')} pool images are near-duplicates of easy-VQA test "
        f"images ({c.get('references')} references; excluded: {c.get('excluded')})",
        f"label-free stop rule picks round {study['label_free_stop_round']}; correlation of label-free validation "
        f"gain with benchmark gain over all steps: {study['correlation_val_gain_vs_bench_gain']}",
    ]
    return "\n".join(lines)
