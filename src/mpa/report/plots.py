"""The report's plots, drawn with matplotlib's Agg canvas (no pyplot, no global state) and returned as
base64 PNG data URIs, so report.html stays one self-contained file (see mpa.report)."""

from __future__ import annotations

import base64
import io
from typing import Any

from mpa.report.model import Curves, FunnelStep

COLORS = {"teacher": "#7a8ba6", "student_before": "#e8a87c", "student_after": "#2a9d8f"}
LABELS = {"teacher": "teacher", "student_before": "student before", "student_after": "student after"}


def _figure(width_in: float, height_in: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _style(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=9)


def benchmark_chart(label: str, row: dict[str, Any]) -> str:
    """Grouped bars: teacher / student before / student after, overall and per question type (in %)."""
    groups = [("all", {r: row.get(r) for r in COLORS})]
    groups += [(t, scores) for t, scores in row.get("per_question_type", {}).items()]
    fig = _figure(max(4.5, 1.3 * len(groups) + 2.0), 3.0)
    ax = fig.add_subplot()
    width = 0.26
    for i, role in enumerate(COLORS):
        xs = [g + (i - 1) * width for g in range(len(groups))]
        values = [scores.get(role) for _, scores in groups]
        heights = [100 * v if v is not None else 0 for v in values]
        bars = ax.bar(xs, heights, width, color=COLORS[role], label=LABELS[role])
        for bar, v in zip(bars, values, strict=True):
            text = "n/a" if v is None else f"{100 * v:.0f}"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 1), textcoords="offset points")  # fmt: skip
    ax.set_xticks(range(len(groups)), [g for g, _ in groups])
    ax.set_ylim(0, 112)
    ax.set_ylabel(f"{row.get('metric', 'score')} (%)", fontsize=9)
    ax.set_title(label, fontsize=10)
    ax.legend(fontsize=8, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    _style(ax)
    return _data_uri(fig)


def funnel_chart(steps: list[FunnelStep]) -> str:
    """Horizontal bars from images down to the selected set, each labelled with its count."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(4.6, 0.4 * len(steps) + 0.6)
    ax = fig.add_subplot()
    ys = list(range(len(steps)))[::-1]
    counts = [s.count for s in steps]
    colors = ["#9bb1cf" if i < 3 else "#5b7fb0" for i in range(len(steps))]  # annotate steps, identify steps
    if len(steps) > 3:
        colors[-1] = "#2a9d8f"  # the selected set
    ax.barh(ys, counts, color=colors, height=0.62)
    top = max(counts) if counts and max(counts) > 0 else 1
    for y, n in zip(ys, counts, strict=True):
        ax.text(n + top * 0.01, y, f"{n:,}", va="center", fontsize=8)
    ax.set_yticks(ys, [s.label for s in steps])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0, top * 1.12)
    _style(ax)
    return _data_uri(fig)


def training_chart(curves: Curves) -> str:
    """Training loss and label-free validation loss by step (log scale when the loss falls by 20× or more)."""
    fig = _figure(6.5, 3.0)
    ax = fig.add_subplot()
    if curves.train:
        ax.plot(*zip(*curves.train, strict=True), color="#5b7fb0", lw=1.5, label="training loss")
    if curves.val:
        ax.plot(*zip(*curves.val, strict=True), color="#e76f51", lw=1.5, marker="o", ms=3,
                label="validation loss (label-free)")  # fmt: skip
    if curves.best:
        ax.plot([curves.best[0]], [curves.best[1]], marker="*", ms=12, color="#e76f51", ls="none",
                label=f"best (step {curves.best[0]})")  # fmt: skip
    values = [v for _, v in curves.train + curves.val if v > 0]
    if values and max(values) / min(values) >= 20:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.set_xlabel("step", fontsize=9)
    ax.set_ylabel("loss", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    _style(ax)
    return _data_uri(fig)
