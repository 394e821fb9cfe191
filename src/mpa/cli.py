"""The `mpa` command: each subcommand maps to a plain function; the only place that sets up logging.

mpa run CONFIG.yaml                               whole pipeline from a YAML config
mpa run --teacher T --student S --images DIR --task chartqa --run-dir runs/x
mpa run --teacher-backend openai --teacher-base-url http://127.0.0.1:8000/v1 --teacher SERVED_NAME ...
mpa annotate | identify | level [CONFIG] --run-dir DIR ...   one stage
mpa validate CONFIG                               resolved config + stage plan, nothing run
mpa export --run-dir DIR --format llava           the selected set for other fine-tuning tools
mpa report RUN_DIR                                report.html / report.md / summary.json of a run
mpa publish RUN_DIR --out DIR [--push-to-hub ID]  Hub-ready dataset + model folders with cards
mpa view RUN_DIR                                  browse, filter, accept / reject candidates in a browser
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from mpa import __version__, strategies
from mpa.backends import REGISTRY as BACKENDS
from mpa.config import ConfigError, MPAConfig, build_config, dump_config, read_yaml, set_dotted
from mpa.contract import PIPELINE
from mpa.contract import STAGES as CONTRACT
from mpa.counts import IdentifyCounts
from mpa.errors import MPAError, RunError

log = logging.getLogger("mpa")

# CLI flag -> dotted config key (flags override the YAML).
FLAG_KEYS = {
    "run_dir": "run_dir",
    "seed": "seed",
    "images": "images.path",
    "teacher": "teacher.model",
    "student": "student.model",
    "teacher_adapter": "teacher.adapter",
    "student_adapter": "student.adapter",
    "teacher_backend": "teacher.backend",
    "student_backend": "student.backend",
    "teacher_base_url": "teacher.base_url",
    "student_base_url": "student.base_url",
    "teacher_api_key_env": "teacher.api_key_env",
    "student_api_key_env": "student.api_key_env",
    "engine": "engine.name",
    "ray_address": "engine.ray_address",
    "ray_actors": "engine.num_actors",
    "task": "annotate.task",
    "prompt_file": "annotate.prompt_file",
    "matcher": "identify.matcher",
    "strategy": "identify.strategy",
    "method": "level.method",
    "rounds": "rounds.count",
    "allow_contamination": "contamination.allow",
    "device": None,  # applies to both models
}


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", type=Path, help="YAML config (default: RUN_DIR/config.yaml if it exists)")
    p.add_argument("--run-dir", help="run directory (all artifacts go here)")
    p.add_argument("--images", help="folder, .txt/.jsonl list, or saved HF dataset of unlabeled images")
    p.add_argument("--teacher", help="teacher model: hub id or local folder")
    p.add_argument("--student", help="student model: hub id or local folder")
    p.add_argument("--teacher-adapter", help="PEFT adapter for the teacher")
    p.add_argument("--student-adapter", help="PEFT adapter for the student")
    for role in ("teacher", "student"):
        p.add_argument(f"--{role}-backend", choices=sorted(BACKENDS),
                       help=f"{role}: hf = load in-process (default), openai = an OpenAI-compatible API")  # fmt: skip
        p.add_argument(f"--{role}-base-url", help=f"{role} server endpoint, e.g. http://127.0.0.1:8000/v1")
        p.add_argument(f"--{role}-api-key-env", metavar="VAR",
                       help=f"NAME of the environment variable holding the {role} server's API key")  # fmt: skip
    p.add_argument("--engine", choices=["local", "ray"], help="where generation runs (default local)")
    p.add_argument("--ray-address", help="engine ray: 'auto' or ray://HOST:10001 (default: a local Ray instance)")
    p.add_argument("--ray-actors", type=int, help="engine ray: number of actors, e.g. one per GPU (default 2)")
    p.add_argument("--task", help="annotation preset: textvqa, stvqa, chartqa, okvqa, generic, *-paper")
    p.add_argument("--prompt-file", help="your own annotation prompt ({k} = number of QA pairs)")
    p.add_argument("--matcher", choices=["compat", "exact", "anls", "relaxed"], help="answer matcher for PI")
    p.add_argument("--strategy", choices=list(strategies.REGISTRY),
                   help="which pseudo-QAs to train on (parity = teacher right, student wrong)")  # fmt: skip
    p.add_argument("--method", choices=["lora", "full"], help="fine-tuning method for PL")
    p.add_argument("--rounds", type=int, help="rounds of identify → level, each from the last leveled student "
                   "(default 1; stops early when label-free validation accuracy stops improving)")  # fmt: skip
    p.add_argument("--allow-contamination", action="store_true", default=None,
                   help="keep pool images that copy benchmark images (default: left out)")  # fmt: skip
    p.add_argument("--device", help="device for both models: auto, cpu, cuda, cuda:1")
    p.add_argument("--seed", type=int, help="seed for sampling, selection and training (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set level.epochs=2 (repeatable)")  # fmt: skip


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="redo stages whose settings changed (and the ones after)")
    p.add_argument("--retry-failed", action="store_true",
                   help="retry the failed requests of finished stages (and redo the stages built on them)")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars; only warnings, errors and the result")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (mpa) and tracebacks on errors")


def _add_log_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings, errors and the result")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (mpa) and tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpa",
        description="Model Parity Aligner: improve a small VLM (student) with a large one (teacher) and unlabeled "
        "images — annotate (PA) → identify (PI) → level (PL).",
    )
    parser.add_argument("--version", action="version", version=f"mpa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="run the whole pipeline (resumes; skips finished stages)")
    _add_config_flags(p)
    _add_run_flags(p)
    p.add_argument("--stages", default=",".join(PIPELINE),
                   help=f"comma-separated subset of {','.join(PIPELINE)} (default: all; evaluate runs the "
                   "benchmarks listed under evaluate.benchmarks)")  # fmt: skip
    for stage in PIPELINE:  # one subcommand per stage of the contract
        p = sub.add_parser(stage, help=CONTRACT[stage].help)
        _add_config_flags(p)
        _add_run_flags(p)
        if stage == "evaluate":
            _add_evaluate_flags(p)
    p = sub.add_parser("demo", help="the whole method on the bundled easy-VQA demo world, offline (CPU)")
    p.add_argument("action", nargs="?", choices=["run", "train-models"], default="run",
                   help="run (default) the demo, or train-models: retrain the bundled teacher and student")  # fmt: skip
    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="where the demo run goes")
    p.add_argument("--quick", action="store_true", help="a subset, under 2 minutes (what CI runs)")
    p.add_argument("--ablation", action="store_true", help="also level on random / all / unguarded selections")
    p.add_argument("--study", action="store_true",
                   help="beyond the paper: rounds, 2 teachers, graded gaps, contamination (~20 min)")  # fmt: skip
    p.add_argument("--models", type=Path, help="teacher/ and student/ folders (default: the bundled ones)")
    p.add_argument("--out", type=Path, help="train-models: output folder (default: the package's demo/models)")
    p.add_argument("--force", action="store_true", help="redo stages whose settings changed")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars; only warnings, errors and the result")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (mpa) and tracebacks on errors")
    p = sub.add_parser("validate", help="print the resolved config and the stage plan; run nothing")
    _add_config_flags(p)
    p = sub.add_parser("export", help="export the selected set (after review) for another fine-tuning tool")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--format", choices=["llava", "sharegpt", "llamafactory", "swift", "trl"], default="llava",
                   help="llava, sharegpt: one JSON file; llamafactory, swift, trl: a folder with images")  # fmt: skip
    p.add_argument("--out", type=Path, help="output file or folder (default: RUN_DIR/identify/export/...)")
    p = sub.add_parser("publish", help="Hub-ready dataset and model folders with cards (optionally pushed)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (identify finished at least)")
    p.add_argument("--out", type=Path, required=True, help="writes OUT/dataset and OUT/model")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="upload both as REPO_ID (dataset repo and model repo)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create private repos")
    p.add_argument("--base-model", metavar="HUB_ID",
                   help="the Hub checkpoint the student is (when the run used a local folder)")  # fmt: skip
    p.add_argument("--no-candidates", action="store_true", help="only the selected set, not every candidate")
    _add_log_flags(p)
    p = sub.add_parser("view", help="a local page to browse candidates and accept / reject them before leveling")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (identify finished)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--reviewer", help="name recorded with each decision (default: user@host)")
    _add_log_flags(p)
    p = sub.add_parser("report", help="write RUN_DIR/report.html, report.md and summary.json from a run's files")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (finished or not)")
    return parser


def _add_evaluate_flags(p: argparse.ArgumentParser) -> None:
    """`mpa evaluate` runs the evaluate stage of a run (CONFIG / --run-dir); with --model it scores that one model
    on --benchmark instead, through the same `evaluate_model` the stage uses, outside any run directory."""
    from mpa.evaluation import BENCHMARKS, METRICS  # the registries name the choices

    p.add_argument("--model", help="score this one model (hub id or local folder) instead of a run's models")
    p.add_argument("--adapter", help="PEFT adapter folder applied on top of --model")
    p.add_argument("--benchmark", help=f"with --model: one of {', '.join(BENCHMARKS)}")
    p.add_argument("--data-dir", help="the benchmark's release folder (not needed for easyvqa)")
    p.add_argument("--split", help="a split of the benchmark (e.g. test_human for chartqa)")
    p.add_argument("--limit", type=int, help="first N questions only")
    p.add_argument("--metric", help=f"override the official metric ({', '.join(METRICS)})")
    p.add_argument("--out", type=Path, help="output folder (default: runs/eval/BENCHMARK-MODEL)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, help="default 32 (128 for the OCR probe)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.model is None:
        return cmd_run(args, ["evaluate"])
    if args.benchmark is None:
        raise ConfigError("--model needs --benchmark (or leave out --model to run the evaluate stage of a run)")
    from mpa.config import model_config
    from mpa.evaluation import BENCHMARKS, METRICS, BenchmarkError, evaluate_model, get_benchmark, load_benchmark

    if args.benchmark not in BENCHMARKS:
        raise ConfigError(f"--benchmark: unknown '{args.benchmark}'; choose from {', '.join(sorted(BENCHMARKS))}")
    if args.metric and args.metric not in METRICS:
        raise ConfigError(f"--metric: unknown '{args.metric}'; choose from {', '.join(sorted(METRICS))}")
    try:
        model = model_config(model=args.model, adapter=args.adapter, batch_size=args.batch_size,
                            device=args.device or "auto")  # fmt: skip
        samples = load_benchmark(args.benchmark, Path(args.data_dir) if args.data_dir else None,
                                 split=args.split, limit=args.limit)  # fmt: skip
    except (BenchmarkError, ValueError) as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    name = Path(args.model).name + (f"+{Path(args.adapter).name}" if args.adapter else "")
    out = args.out or Path("runs/eval") / f"{args.benchmark}-{name}"
    ocr = (args.metric or get_benchmark(args.benchmark).metric) == "ocr"
    max_new_tokens = args.max_new_tokens or (128 if ocr else 32)
    metrics = evaluate_model(model, args.benchmark, samples, out, metric=args.metric, max_new_tokens=max_new_tokens)
    print(json.dumps({k: metrics[k] for k in ("benchmark", "metric", "n", "overall", "compat")}))
    for name, group in (("split", metrics["per_split"]), ("type", metrics["per_question_type"])):
        for key, value in group.items():
            print(f"  {name} {key}: {_pct(value['score'])} (n={value['n']})")
    print(f"predictions: {out / 'predictions.jsonl'}\nmetrics: {out / 'metrics.json'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.action == "train-models":
        from mpa.demo.run import MODELS_DIR
        from mpa.demo.train import train_models

        print(json.dumps(train_models(args.out or MODELS_DIR, quick=args.quick), indent=2))
        return 0
    from mpa.demo.run import MODELS_DIR, demo_tree, run_ablation
    from mpa.rounds import run_rounds

    models = args.models
    if models is not None and not (models / "teacher" / "config.json").exists():
        raise ConfigError(f"--models {models}: expected {models}/teacher and {models}/student model folders")
    tree = demo_tree(args.run_dir, quick=args.quick, models_dir=models)
    manifests = run_rounds(build_config(tree, source="demo.yaml"), force=args.force)
    _print_summary(manifests)
    summary = json.loads((args.run_dir / "summary.json").read_text())
    print("seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in summary["timings_s"].items()))
    if args.ablation:
        rows = run_ablation(tree, force=args.force)
        print("ablation (easy-VQA test, VQA accuracy of the leveled student):")
        for name, row in rows.items():
            print(f"  {name:<28} after {_pct(row.get('student_after')):>7}  gap closed {_pct(row.get('gap_closed')):>7}"
                  f"  selected {row.get('selected')}  trained on {row.get('trained_on')}")  # fmt: skip
    if args.study:
        from mpa.demo.study import format_study, run_study

        print(format_study(run_study(tree, models or MODELS_DIR, force=args.force)))
        print(f"study: {args.run_dir / 'study.json'}")
    _print_report(args.run_dir)
    return 0


def resolve_config(args: argparse.Namespace) -> MPAConfig:
    """YAML (or RUN_DIR/config.yaml), then flags, then --set overrides."""
    tree: dict[str, Any] = {}
    source = "command line"
    if args.config is not None:
        tree, source = read_yaml(args.config), str(args.config)
    elif args.run_dir and (Path(args.run_dir) / "config.yaml").exists():
        path = Path(args.run_dir) / "config.yaml"
        tree, source = read_yaml(path), str(path)
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if flag == "device":
            set_dotted(tree, "teacher.device", value)
            set_dotted(tree, "student.device", value)
        else:
            set_dotted(tree, key, value)  # type: ignore[arg-type]
    if "run_dir" not in tree:
        raise ConfigError(f"{source}: no run directory; pass --run-dir DIR or set run_dir in the YAML")
    return build_config(tree, args.overrides, source=source)


def _setup_logging(args: argparse.Namespace) -> None:
    """-q: warnings and errors only, no progress bar anywhere (ours, the trainer's, Hugging Face's); -v: mpa's
    debug log. Off a terminal, Hugging Face's redrawn bars are off too (ours print a plain line every 30 s)."""
    from mpa.progress import set_progress

    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")  # fmt: skip
    if verbose:
        logging.getLogger("mpa").setLevel(logging.DEBUG)
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    set_progress(not quiet)
    if quiet or not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # model loading ("Loading weights") bars
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def cmd_validate(args: argparse.Namespace) -> int:
    from mpa.pipeline import check_inputs, plan
    from mpa.rundir import RunDir

    cfg = resolve_config(args)
    check_inputs(cfg)
    print(dump_config(cfg), end="")
    print("# stage plan")
    for row in plan(cfg, RunDir(cfg.run_dir)):
        print(f"#   {row['stage']:9s} {row['action']:7s} {row['detail']}")
    return 0


def cmd_run(args: argparse.Namespace, stages: list[str]) -> int:
    from mpa.rounds import run_rounds

    cfg = resolve_config(args)
    unknown = [s for s in stages if s not in CONTRACT]
    if unknown:
        raise ConfigError(f"--stages: unknown stage(s) {unknown}; choose from {', '.join(PIPELINE)}")
    try:
        manifests = run_rounds(cfg, stages, force=args.force, retry_failed=args.retry_failed)
    except RunError:  # e.g. nothing selected: the report of what did finish says why; then exit 1
        _print_report(Path(cfg.run_dir))
        raise
    _print_summary(manifests)
    _print_rounds(Path(cfg.run_dir))
    _print_report(Path(cfg.run_dir))
    return 0


def _print_rounds(run_dir: Path) -> None:
    """The per-round table of a multi-round run (the summary above is the last round's)."""
    path = run_dir / "rounds.json"
    if not path.exists():
        return
    table = json.loads(path.read_text())
    print("rounds (label-free val accuracy before → after; benchmark scores of the leveled student):")
    for r in table["rounds"]:
        scores = ", ".join(f"{k} {_pct(v)}" for k, v in r["benchmarks"].items())
        print(f"  round {r['round']}: selected {r['selected']}, val {_pct(r['val_accuracy_before'])} → "
              f"{_pct(r['val_accuracy_after'])}  {scores}")  # fmt: skip
    stopped = f" (stopped: {table['stopped']})" if table.get("stopped") else ""
    print(f"result: round {table['final_round']}: {table['final_student']}{stopped}")


def _print_report(run_dir: Path) -> None:
    """The report of a finished `mpa run` / `mpa demo`; a failure here never fails the run (rerun `mpa report`)."""
    from mpa import distributed
    from mpa.report import write_report

    if not distributed.is_main():
        return
    try:
        paths = write_report(run_dir)
    except Exception as err:  # the run itself succeeded; say so and how to retry
        log.warning("the report could not be written (%s: %s); rerun `mpa report %s`", type(err).__name__, err,
                    run_dir)  # fmt: skip
        print(f"summary: {run_dir / 'summary.json'}")
        return
    print(f"summary: {paths['summary']}\nreport: {paths['html']} (and {paths['md'].name})")


def cmd_report(args: argparse.Namespace) -> int:
    from mpa.report import write_report

    paths = write_report(args.run_dir)
    print(f"report: {paths['html']}\nmarkdown: {paths['md']}\nsummary: {paths['summary']}")
    return 0


def _print_summary(manifests: dict[str, dict[str, Any]]) -> None:
    if manifests.get("evaluate", {}).get("summary"):
        print(format_table(manifests["evaluate"]["summary"]))
    if "identify" in manifests:
        c = IdentifyCounts.read(manifests["identify"])
        print(
            f"parity funnel: images {c.images} → generations {c.annotated} → QA pairs {c.parseable} → "
            f"teacher-consistent {c.teacher_consistent} → student fails {c.student_fails} → selected {c.selected}"
        )
    if "level" in manifests:
        m = manifests["level"]
        print(f"leveled student: {m['output']}  (label-free val accuracy {_pct(m.get('val_accuracy_before'))} → "
              f"{_pct(m.get('val_accuracy_after'))})")  # fmt: skip


def format_table(summary: dict[str, Any]) -> str:
    """The before / after / teacher table of an evaluate summary."""
    lines = [f"{'benchmark':<18} {'metric':<17} {'teacher':>8} {'before':>8} {'after':>8} {'gap closed':>10}"]
    for name, row in summary.items():
        lines.append(
            f"{name:<18} {row['metric']:<17} {_pct(row['teacher']):>8} {_pct(row['student_before']):>8} "
            f"{_pct(row['student_after']):>8} {_pct(row['gap_closed']):>10}"
        )
        for qtype, scores in row.get("per_question_type", {}).items():
            lines.append(
                f"  {qtype:<33} {_pct(scores.get('teacher')):>8} {_pct(scores.get('student_before')):>8} "
                f"{_pct(scores.get('student_after')):>8}"
            )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def cmd_publish(args: argparse.Namespace) -> int:
    from mpa.publish import describe, publish, push

    if args.private and not args.push_to_hub:
        raise ConfigError("--private applies to --push-to-hub REPO_ID; add it or leave --private out")
    published = publish(args.run_dir, args.out, candidates=not args.no_candidates, base_model=args.base_model,
                        repo_id=args.push_to_hub)  # fmt: skip
    print(describe(published))
    if args.push_to_hub:
        for url in push(published, args.push_to_hub, args.private):
            print(f"pushed: {url}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mpa.export import export_path, write_export
    from mpa.review import reviewed_selection
    from mpa.rundir import RunDir

    rd = RunDir(args.run_dir)
    rd.require("identify")
    samples = reviewed_selection(rd.root)
    path = write_export(samples, args.format, args.out or export_path(rd.stage_dir("identify") / "export", args.format))
    print(f"{len(samples)} samples → {path}")
    return 0


# Disk full, file too large, quota, read-only or permission denied: the run stops and is resumable.
RESOURCE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if args.command == "validate":
            return cmd_validate(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "publish":
            return cmd_publish(args)
        if args.command == "view":
            from mpa.view import serve

            serve(args.run_dir, args.host, args.port, args.reviewer)
            return 0
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "demo":
            return cmd_demo(args)
        stages = args.stages.split(",") if args.command == "run" else [args.command]
        return cmd_run(args, stages)
    except ImportError as err:  # an optional package a model or backend needs (torchvision, num2words, vllm, ...)
        if getattr(args, "verbose", False):
            raise
        from mpa.backends import missing_package

        print(f"mpa: error: {missing_package(err)}", file=sys.stderr)
        return 2
    except (MPAError, OSError) as err:
        if getattr(args, "verbose", False):
            raise
        # transformers' messages may start with a newline: the first line that says something
        message = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        hint = " (-v shows the traceback)" if isinstance(err, OSError) else ""
        resources = isinstance(err, OSError) and err.errno in RESOURCE_ERRNOS
        if resources:
            hint = "; free disk space or fix permissions, then rerun the same command to resume (finished work is kept)"
        print(f"mpa: error: {message}{hint}", file=sys.stderr)
        return 1 if resources or isinstance(err, RunError) else 2
    except KeyboardInterrupt:
        print("mpa: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
