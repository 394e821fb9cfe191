"""report.md: the report's tables as Markdown, for a terminal or a pull request (see mpa.report).

Model outputs are untrusted: every cell is HTML-escaped (Markdown renderers pass raw HTML through), pipes are
escaped and whitespace is collapsed so a cell stays a cell.
"""

from __future__ import annotations

import html
from typing import Any

from mpa.counts import LevelCounts
from mpa.report.model import EXAMPLES, USAGE_FIELDS, BenchmarkChanges, RunReport, add_usage, spread
from mpa.review import review_line

COST_HEADER = ["stage", "model", "seconds", "requests", "prompt tokens", "completion tokens", "cost (USD)"]
ROLE_NAMES = {"teacher": "teacher", "student_before": "student before", "student_after": "student after"}


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def cell(value: Any, limit: int = 80) -> str:
    text = " ".join(str(value).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return html.escape(text).replace("|", "\\|") or "∅"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def benchmark_rows(report: RunReport) -> list[list[Any]]:
    """benchmark / metric / teacher / before / after / gap closed, then one row per question type."""
    rows: list[list[Any]] = []
    for label, row in report.summary["benchmarks"].items():
        rows.append([f"**{cell(label)}**", cell(row["metric"]), pct(row["teacher"]), pct(row["student_before"]),
                     pct(row["student_after"]), pct(row["gap_closed"])])  # fmt: skip
        for qtype, scores in row.get("per_question_type", {}).items():
            rows.append([f"&nbsp;&nbsp;{cell(qtype)}", "", *(pct(scores.get(r)) for r in ROLE_NAMES), ""])
    return rows


def reasons(dropped: dict[str, int]) -> str:
    return ", ".join(f"{cell(k)} {v}" for k, v in dropped.items()) or "—"


def _changes(c: BenchmarkChanges) -> list[str]:
    out = [f"### {cell(c.label)}", "", f"{len(c.gained)} questions gained, {len(c.lost)} lost, of {c.n}.", ""]
    out += table(["question type", "gained", "lost", "net"],
                 [[cell(t), g, lo, f"{g - lo:+d}"] for t, (g, lo) in c.by_type.items()])  # fmt: skip
    for title, items in (("Gained", c.gained), ("Lost", c.lost)):
        if items:
            shown = spread(items, lambda x: x.question_type, EXAMPLES)
            out += ["", f"{title} ({len(shown)} of {len(items)}, by question type):", ""]
            rows = [[cell(x.question_type), cell(x.question), cell(", ".join(x.answers[:3])), cell(x.before),
                     cell(x.after), cell(x.teacher) if x.teacher is not None else "—"] for x in shown]  # fmt: skip
            out += table(["type", "question", "answers", "before", "after", "teacher"], rows)
    return [*out, ""]


def _gallery(report: RunReport) -> list[str]:
    out = []
    for title, rows in (("Selected (knowledge gaps)", report.selected), ("Rejected", report.rejected)):
        out += [f"**{title}**", ""]
        out += table(["question", "pseudo-answer", "teacher", "student (before)", "student (after)", "decision"],
                     [[cell(r["question"]), cell(r["pseudo_answer"]), cell(r["teacher_answer"]),
                       cell(r["student_answer"]), cell(r["after"]["answer"]) if r.get("after") else "—",
                       cell(r["reason"])] for r in rows])  # fmt: skip
        out.append("")
    return out


def _missing(report: RunReport, section: str) -> list[str]:
    return [f"_Missing — {cell(report.missing[section], 300)}._", ""] if section in report.missing else []


def render_markdown(report: RunReport) -> str:
    s = report.summary
    lines = [f"# MPA report — `{cell(report.root)}`", ""]
    lines += ["Stages: " + ", ".join(f"{k} **{v}**" for k, v in report.status.items()), ""]
    lines += ["## Benchmarks", "", *_missing(report, "benchmarks")]
    if s["benchmarks"]:
        header = ["benchmark", "metric", "teacher", "student before", "student after", "gap closed"]
        lines += [*table(header, benchmark_rows(report)), ""]
    lines += ["## Parity funnel", "", *_missing(report, "funnel")]
    if report.funnel:
        lines += table(["step", "count", "dropped before this step (reason: count)"],
                       [[f.label, f.count, reasons(f.dropped)] for f in report.funnel])  # fmt: skip
        lines += ["", f"Strategy: `{cell(report.strategy)}`." if report.strategy else "", ""]
        if s.get("review"):
            lines += [f"Review (`mpa view`, review/decisions.jsonl): {cell(review_line(s['review']), 400)}.", ""]
    lines += ["## Training", "", *_missing(report, "training")]
    lv = s["level"]
    if lv:
        counts = LevelCounts.read(lv)
        lines += table(["gap", "retention", "trained on", "validation", "label-free val accuracy"],
                       [[counts.gap, counts.retention, counts.train, counts.val,
                         f"{pct(lv.get('val_accuracy_before'))} → {pct(lv.get('val_accuracy_after'))}"]])  # fmt: skip
        lines.append("")
    if report.curves and report.curves.train:
        c = report.curves
        best = f"; best validation loss {c.best[1]:.4f} at step {c.best[0]}" if c.best else ""
        lines += [f"Training loss {c.train[0][1]:.4f} (step {c.train[0][0]}) → {c.train[-1][1]:.4f} "
                  f"(step {c.train[-1][0]}){best} (`{c.source}`).", ""]  # fmt: skip
    lines += beyond_markdown(s)
    lines += ["## Gallery", "", *_missing(report, "gallery")]
    if report.selected or report.rejected:
        lines += ["The leveled student's answer is recorded for the held-out validation pseudo-QAs only (shown "
                  "first); — elsewhere.", "", *_gallery(report)]  # fmt: skip
    lines += ["## What the student gained and lost", "", *_missing(report, "changes")]
    for c in report.changes:
        lines += _changes(c)
    lines += ["## Time and cost", ""]
    lines += table(COST_HEADER, cost_rows(s))
    lines += ["", "## Versions", ""]
    note = "" if report.environment_recorded else " (not recorded by this run: the report machine's)"
    lines += ["Versions" + note + ": " + ", ".join(f"{k} {cell(v)}" for k, v in report.environment.items()), ""]
    lines += ["The resolved configuration is in `config.yaml`; everything above is read from this run directory.", ""]
    return "\n".join(lines)


ROUNDS_HEADER = ["round", "selected", "trained on", "label-free val accuracy", "val gain", "benchmarks (after)"]


def rounds_rows(rounds: dict[str, Any]) -> list[list[Any]]:
    """One row per round of a multi-round run (RUN_DIR/rounds.json)."""
    rows = []
    for r in rounds["rounds"]:
        gain = r["val_gain"]
        scores = ", ".join(f"{k} {pct(v)}" for k, v in r["benchmarks"].items()) or "—"
        mark = " (result)" if r["round"] == rounds.get("final_round") else ""
        rows.append([f"{r['round']}{mark}", r["selected"], r["trained_on"],
                     f"{pct(r['val_accuracy_before'])} → {pct(r['val_accuracy_after'])}",
                     "—" if gain is None else f"{gain:+.4f}", scores])  # fmt: skip
    return rows


def gap_histogram(parity: dict[str, Any]) -> list[tuple[str, int]]:
    """(gap score, candidates) in score order (identify's counts)."""
    return sorted(parity.get("gap_scores", {}).items(), key=lambda kv: float(kv[0]))


def beyond_markdown(s: dict[str, Any]) -> list[str]:
    """Rounds, teachers, gap scores and the contamination guard, where the run has them."""
    lines: list[str] = []
    if s.get("rounds"):
        r = s["rounds"]
        lines += ["## Rounds", "", *table(ROUNDS_HEADER, rounds_rows(r)), ""]
        lines += [f"Result: round {r['final_round']} (`{cell(r['final_student'])}`)"
                  + (f"; stopped: {r['stopped']}" if r.get("stopped") else "") + ".", ""]  # fmt: skip
    agreement = (s.get("parity") or {}).get("teacher_agreement", {})
    if len(agreement) > 1:
        lines += ["## Teachers", "", *table(["teacher", "agrees with the pseudo-answer"],
                                            [[k, pct(v)] for k, v in agreement.items()]), ""]  # fmt: skip
    hist = gap_histogram(s.get("parity") or {})
    if len(hist) > 1:
        lines += ["## Gap scores", "", "Teacher agreement share minus student agreement, per candidate:", ""]
        lines += [*table(["gap score", "candidates"], [[k, f"{v:,}"] for k, v in hist]), ""]
    c = s.get("contamination")
    if c:
        lines += ["## Contamination guard", "",
                  f"{c['flagged']} of {c['pool']} pool images are near-duplicates of one of {c['references']:,} "
                  f"benchmark images; {c['excluded']} left out before annotation.", ""]  # fmt: skip
        if c["flagged_images"]:
            lines += table(["pool image", "benchmark image", "rule", "score"],
                           [[f["source"], f"{f['benchmark']}: {f['reference']}", f["rule"], f["score"]]
                            for f in c["flagged_images"][:50]])  # fmt: skip
            lines.append("")
    return lines


def cost_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """stage / model / seconds (timings.json) / requests / tokens / cost (manifest `usage`, where recorded)."""
    timings, usage = summary["timings_s"], summary.get("usage", {})
    rows, total = [], dict.fromkeys(USAGE_FIELDS)
    for stage in [k for k in timings if k != "total"] + [k for k in usage if k not in timings]:
        roles = usage.get(stage) or {"—": {}}
        for i, (role, u) in enumerate(roles.items()):
            total = add_usage(total, u)
            seconds = f"{timings[stage]:.1f}" if stage in timings and i == 0 else ""
            rows.append([stage if i == 0 else "", role, seconds, *_usage_cells(u)])
    rows.append(["**total**", "", f"{timings.get('total', 0):.1f}", *_usage_cells(total)])
    return rows


def _usage_cells(u: dict[str, Any]) -> list[str]:
    cells = [f"{u[k]:,}" if isinstance(u.get(k), int | float) else "—" for k in USAGE_FIELDS[:3]]
    cost = u.get("cost_usd")
    return [*cells, f"{cost:.4f}" if isinstance(cost, int | float) else "—"]
