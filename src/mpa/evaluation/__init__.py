"""Evaluation: benchmark loaders, their answering prompts, the metric registry, and evaluating one model.

    from mpa.evaluation import evaluate_model, load_benchmark
    samples = load_benchmark("chartqa", Path("data/ChartQA Dataset"), limit=100)
    metrics = evaluate_model(model_cfg, "chartqa", samples, Path("runs/eval/chartqa-student"))

- `benchmarks/`: the registry `BENCHMARKS` (name → "module:SPEC") and one module per family of release formats.
- `prompts.py`: the answering prompts (`EVAL_PROMPTS`), one id per text; the short-answer one is `mpa.prompts`'.
- `metrics.py`: the metric registry `METRICS` (name → scoring function from `mpa.metrics`) and `aggregate`.
- `run.py`: `evaluate_model`, the one entry point of `mpa evaluate --model` and of the evaluate stage.

Adding a benchmark is one loader module defining a `BenchmarkSpec` and one line in `BENCHMARKS`.
"""

from mpa.evaluation.benchmarks import (
    BENCHMARKS,
    BenchmarkError,
    BenchmarkSpec,
    EvalSample,
    get_benchmark,
    load_benchmark,
)
from mpa.evaluation.metrics import METRICS, aggregate, check_metric, score
from mpa.evaluation.prompts import EVAL_PROMPTS, render_eval_prompt
from mpa.evaluation.run import evaluate_model, with_current_prompt_id

__all__ = [
    "BENCHMARKS",
    "EVAL_PROMPTS",
    "METRICS",
    "BenchmarkError",
    "BenchmarkSpec",
    "EvalSample",
    "aggregate",
    "check_metric",
    "evaluate_model",
    "get_benchmark",
    "load_benchmark",
    "render_eval_prompt",
    "score",
    "with_current_prompt_id",
]
