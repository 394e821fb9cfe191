"""report.html: one self-contained page (inline CSS, plots and thumbnails as base64 PNG; no script, no network).

Everything read from the run directory — model outputs above all — goes through `html.escape` (see mpa.report).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from mpa import __version__
from mpa.counts import LevelCounts
from mpa.report import plots
from mpa.report.md import COST_HEADER, ROUNDS_HEADER, cost_rows, gap_histogram, pct, rounds_rows
from mpa.report.model import EXAMPLES, BenchmarkChanges, RunReport, spread
from mpa.review import review_line

THUMB_PX = 96
SECTIONS = {"benchmarks": "Benchmarks", "funnel": "Parity funnel", "training": "Training", "gallery": "Gallery",
            "changes": "Gained and lost", "cost": "Time and cost", "config": "Config and versions"}  # fmt: skip
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2733;background:#f4f6f9;margin:0}
main{max-width:1120px;margin:0 auto;padding:24px}
header h1{margin:0;font-size:24px} header .path{color:#5b6b7d;font-family:ui-monospace,monospace;margin:4px 0 10px}
nav a{margin-right:14px;color:#2a6f97;text-decoration:none;font-size:13px}
section{background:#fff;border:1px solid #dde3ea;border-radius:10px;padding:16px 20px;margin:16px 0}
h2{margin:0 0 10px;font-size:18px} h3{font-size:15px;margin:16px 0 8px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border-bottom:1px solid #e6eaef;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f3f7;font-weight:600} td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.sub td:first-child{padding-left:26px;color:#4a5866}
.missing{background:#fff6e0;border-left:4px solid #e9b949;padding:8px 12px;border-radius:4px;color:#6b5200}
.note{color:#5b6b7d;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.kpi{flex:1 1 200px;background:#f7fafc;border:1px solid #e1e7ee;border-radius:8px;padding:10px 14px}
.kpi b{display:block;font-size:22px;color:#1f6f64} .kpi span{color:#5b6b7d;font-size:12px}
.plots{display:flex;flex-wrap:wrap;gap:8px 28px;align-items:flex-start} .plots img{max-width:100%;height:auto}
.stages span{display:inline-block;margin-right:8px;padding:2px 8px;border-radius:10px;font-size:12px}
.s-complete{background:#daf1e6;color:#1b6b48} .s-other{background:#fdecc8;color:#7a5300}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:12px}
.card{display:flex;gap:10px;border:1px solid #e1e7ee;border-radius:8px;padding:10px;margin:0;background:#fbfcfd}
.thumb{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;border-radius:4px;background:#eee;
flex:none} .noimg{display:flex;align-items:center;justify-content:center;font-size:11px;color:#777;text-align:center}
.card dl{margin:4px 0 0;display:grid;grid-template-columns:auto 1fr;gap:1px 8px;font-size:12px}
.card dt{color:#6b7a89} .card dd{margin:0;word-break:break-word} .q{font-weight:600;font-size:13px}
.ok{color:#1b7a4b} .bad{color:#b23b2e} .na{color:#8a96a3;font-style:italic}
.badge{display:inline-block;margin-top:6px;font-size:11px;padding:1px 7px;border-radius:8px;background:#e9eef4}
pre{background:#f6f8fa;border:1px solid #e1e7ee;border-radius:6px;padding:10px;overflow:auto;font-size:12px}
"""


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def short(value: Any, limit: int = 160) -> str:
    """Escaped, whitespace collapsed, cut at `limit` characters (model outputs can run on for hundreds)."""
    text = " ".join(str(value).split())
    return e(text if len(text) <= limit else text[: limit - 1] + "…")


def _table(
    header: list[str], rows: list[list[Any]], num_from: int = 1, sub: list[bool] | None = None, text_from: int = 99
) -> str:
    """An HTML table; cells are escaped here (pass raw values); columns num_from..text_from-1 are right-aligned."""

    def cls(i: int) -> str:
        return "num" if num_from <= i < text_from else ""

    head = "".join(f'<th class="{cls(i)}">{e(h)}</th>' for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        tr = ' class="sub"' if sub and sub[r] else ""
        tds = "".join(f'<td class="{cls(i)}">{short(c)}</td>' for i, c in enumerate(row))
        body.append(f"<tr{tr}>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _missing(report: RunReport, section: str) -> str:
    text = report.missing.get(section)
    return f'<p class="missing">Missing — {e(text)}.</p>' if text else ""


def _img(src: str, alt: str, cls: str) -> str:
    return f'<img class="{cls}" src="{e(src)}" alt="{e(alt)}">'


def thumbnail(path: str) -> str | None:
    """A small PNG data URI of an image file, or None when it cannot be read any more."""
    from PIL import Image

    try:
        with Image.open(Path(path)) as im:
            im = im.convert("RGB")
            im.thumbnail((2 * THUMB_PX, 2 * THUMB_PX))
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
    except (OSError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _headline(report: RunReport) -> str:
    s, kpis = report.summary, []
    for label, row in s["benchmarks"].items():
        kpis.append((f"{pct(row['student_before'])} → {pct(row['student_after'])}",
                     f"student on {label} (teacher {pct(row['teacher'])})"))  # fmt: skip
        if row.get("gap_closed") is not None:
            kpis.append((pct(row["gap_closed"]), f"of the teacher–student gap closed on {label}"))
    p = s["parity"]
    if p:
        kpis.append((f"{p['selected']:,}", f"gap samples selected of {p['parseable']:,} pseudo-QAs on "
                                           f"{p['images']:,} unlabeled images"))  # fmt: skip
    total_s = s["timings_s"].get("total", 0)
    kpis.append((f"{total_s / 60:.1f} min" if total_s >= 120 else f"{total_s:.0f} s", "wall time of the stages"))
    cards = "".join(f'<div class="kpi"><b>{e(v)}</b><span>{e(t)}</span></div>' for v, t in kpis)
    stages = "".join(f'<span class="{"s-complete" if v == "complete" else "s-other"}">{e(k)}: {e(v)}</span>'
                     for k, v in report.status.items())  # fmt: skip
    return f'<section id="headline"><div class="stages">{stages}</div><div class="cards" style="margin-top:10px">' \
           f"{cards}</div></section>"  # fmt: skip


def _benchmarks(report: RunReport) -> str:
    out = [_missing(report, "benchmarks")]
    rows, sub, charts = [], [], []
    for label, row in report.summary["benchmarks"].items():
        rows.append([label, row["metric"], *(pct(row[r]) for r in plots.COLORS), pct(row["gap_closed"])])
        sub.append(False)
        for qtype, scores in row.get("per_question_type", {}).items():
            rows.append([qtype, "", *(pct(scores.get(r)) for r in plots.COLORS), ""])
            sub.append(True)
        charts.append(_img(plots.benchmark_chart(label, row), f"scores on {label}", "plot"))
    if rows:
        header = ["benchmark / question type", "metric", "teacher", "student before", "student after", "gap closed"]
        out += [f'<div class="plots">{_table(header, rows, num_from=2, sub=sub)}{"".join(charts)}</div>']
        out.append('<p class="note">Gap closed = (after − before) / (teacher − before).</p>')
    return "".join(out)


def _funnel(report: RunReport) -> str:
    out = [_missing(report, "funnel")]
    if report.funnel:
        rows = [[f.label, f"{f.count:,}", ", ".join(f"{k}: {v:,}" for k, v in f.dropped.items()) or "—"]
                for f in report.funnel]  # fmt: skip
        table = _table(["step", "count", "dropped before this step"], rows, num_from=1, text_from=2)
        chart = _img(plots.funnel_chart(report.funnel), "parity funnel", "plot")
        out.append(f'<div class="plots">{chart}{table}</div>')
        if report.strategy and report.strategy != "parity":
            out.append(f'<p class="note">Selection strategy: {e(report.strategy)} (not the parity rule).</p>')
        if report.summary.get("review"):
            line = review_line(report.summary["review"])
            out.append(f'<p class="note" id="review">Review (<code>mpa view</code>): {e(line)}.</p>')
    return "".join(out)


def _training(report: RunReport) -> str:
    out = [_missing(report, "training")]
    lv = report.summary["level"]
    if lv:
        c = LevelCounts.read(lv)
        rows = [[c.gap, c.retention, c.train, c.val,
                 f"{pct(lv.get('val_accuracy_before'))} → {pct(lv.get('val_accuracy_after'))}"]]  # fmt: skip
        out.append(_table(["gap samples", "retention samples", "trained on", "validation (held out)",
                           "label-free validation accuracy"], rows, num_from=0))  # fmt: skip
    cv = report.curves
    if cv and (cv.train or cv.val):
        out.append(f'<div class="plots">{_img(plots.training_chart(cv), "training curves", "plot")}</div>')
        out.append(f'<p class="note">From <code>{e(cv.source)}</code>.</p>')
    elif lv:
        out.append('<p class="missing">Missing — no training log in level/metrics.json.</p>')
    return "".join(out)


def _card(row: dict[str, Any]) -> str:
    src = thumbnail(row["image_path"])
    img = _img(src, row["image_id"], "thumb") if src else '<div class="thumb noimg">image not found</div>'
    teacher_cls = "ok" if row["teacher_agrees"] else "bad"
    student_cls = "ok" if row["student_correct"] else "bad"
    return (
        f'<figure class="card">{img}<figcaption><div class="q">{short(row["question"])}</div><dl>'
        f"<dt>pseudo-answer</dt><dd>{short(row['pseudo_answer'], 80)}</dd>"
        f'<dt>teacher</dt><dd class="{teacher_cls}">{short(row["teacher_answer"], 80)}</dd>'
        f'<dt>student before</dt><dd class="{student_cls}">{short(row["student_answer"], 80)}</dd>'
        f"<dt>student after</dt>{_after(row.get('after'))}</dl>"
        f'<span class="badge">{e(row["reason"])}</span></figcaption></figure>'
    )


def _after(after: dict[str, Any] | None) -> str:
    if after is None:
        return '<dd class="na">—</dd>'
    return f'<dd class="{"ok" if after["correct"] else "bad"}">{short(after["answer"], 80)}</dd>'


def _beyond(report: RunReport) -> str:
    """Rounds, teachers, gap-score histogram and the contamination guard (flagged pool images beside the benchmark
    images they copy), where the run has them."""
    s, out = report.summary, []
    if s.get("rounds"):
        r = s["rounds"]
        out.append("<h3>Rounds</h3>" + _table(ROUNDS_HEADER, [[str(c) for c in row] for row in rounds_rows(r)]))
        stop = f"; stopped: {r['stopped']}" if r.get("stopped") else ""
        out.append(f'<p class="note">Result: round {r["final_round"]} ({e(r["final_student"])}){e(stop)}.</p>')
    agreement = (s.get("parity") or {}).get("teacher_agreement", {})
    if len(agreement) > 1:
        out.append("<h3>Teachers</h3>" + _table(["teacher", "agrees with the pseudo-answer"],
                                                [[k, pct(v)] for k, v in agreement.items()]))  # fmt: skip
    hist = gap_histogram(s.get("parity") or {})
    if len(hist) > 1:
        top = max(n for _, n in hist)
        bars = "".join(f'<tr><td>{e(k)}</td><td><span style="display:inline-block;height:12px;background:#4c78a8;'
                       f'width:{max(1, round(240 * n / top))}px"></span> {n:,}</td></tr>' for k, n in hist)  # fmt: skip
        out.append("<h3>Gap scores (teacher agreement share − student agreement)</h3>"
                   f"<table><tr><th>gap score</th><th>candidates</th></tr>{bars}</table>")  # fmt: skip
    c = s.get("contamination")
    if c:
        out.append(
            f"<h3>Contamination guard</h3><p>{c['flagged']} of {c['pool']:,} pool images are near-duplicates "
            f"of one of {c['references']:,} benchmark images; {c['excluded']} left out before annotation.</p>"
        )
        cards = []
        for f in c["flagged_images"][:24]:
            pair = "".join(_img(src, alt, "thumb") if (src := thumbnail(path)) else
                           '<div class="thumb noimg">image not found</div>'
                           for path, alt in ((f["path"] or "", "pool"), (f["reference"], "benchmark")))  # fmt: skip
            cards.append(f'<div class="card">{pair}<dl><dt>pool</dt><dd>{short(f["source"], 80)}</dd><dt>copies'
                         f'</dt><dd>{short(f["benchmark"] + ": " + f["reference"], 80)}</dd><dt>{e(f["rule"])}</dt>'
                         f'<dd>{e(f["score"])}</dd></dl></div>')  # fmt: skip
        if cards:
            out.append(f'<div class="gallery">{"".join(cards)}</div>')
    return "".join(out)


def _gallery(report: RunReport) -> str:
    out = [_missing(report, "gallery")]
    if report.selected or report.rejected:
        lv = report.summary["level"]
        why = "the level stage has not finished"
        if lv:
            acc = f"{pct(lv.get('val_accuracy_before'))} → {pct(lv.get('val_accuracy_after'))}"
            why = ("the leveled student answers only the held-out validation pseudo-QAs, shown first (label-free "
                   f"validation accuracy {acc}); the others were trained on or not teacher-consistent")  # fmt: skip
        out.append('<p class="note">Green: the answer matches the pseudo-answer. “Student after” is shown where '
                   f"recorded, — elsewhere: {e(why)}.</p>")  # fmt: skip
    for title, rows in (("Selected: the student's knowledge gaps", report.selected),
                        ("Rejected (by reason)", report.rejected)):  # fmt: skip
        if rows:
            out.append(f'<h3>{e(title)}</h3><div class="gallery">{"".join(_card(r) for r in rows)}</div>')
    return "".join(out)


def _changes(report: RunReport) -> str:
    out = [_missing(report, "changes")]
    for c in report.changes:
        out.append(_bench_changes(c))
    return "".join(out)


def _bench_changes(c: BenchmarkChanges) -> str:
    rows = [[t, g, lo, f"{g - lo:+d}"] for t, (g, lo) in c.by_type.items()]
    out = [f"<h3>{e(c.label)}: {len(c.gained):,} gained, {len(c.lost):,} lost of {c.n:,} questions</h3>",
           _table(["question type", "gained", "lost", "net"], rows)]  # fmt: skip
    for title, items in (("Now right", c.gained), ("Regressions: answers it lost", c.lost)):
        if items:
            shown = spread(items, lambda x: x.question_type, EXAMPLES)
            ex = [[x.question_type, x.question, ", ".join(x.answers[:3]), x.before, x.after,
                   x.teacher if x.teacher is not None else "—"] for x in shown]  # fmt: skip
            header = ["type", "question", "answers", "before", "after", "teacher"]
            out.append(f"<h3>{e(title)} ({len(shown)} of {len(items):,}, by question type)</h3>")
            out.append(_table(header, ex, 9))
    return "".join(out)


def _cost(report: RunReport) -> str:
    note = "" if report.summary.get("usage") else '<p class="note">No token counts recorded by this run.</p>'
    rows = [[str(c).strip("*") for c in row] for row in cost_rows(report.summary)]
    return _table(COST_HEADER, rows, num_from=2) + note


def _config(report: RunReport) -> str:
    where = "recorded by the run" if report.environment_recorded else "not recorded by this run; the report machine's"
    out = [f"<h3>Versions ({e(where)})</h3>", _table(list(report.environment), [list(report.environment.values())], 9)]
    if report.config_text is None:
        out.append('<p class="missing">Missing — no config.yaml in this run directory.</p>')
    else:
        out.append(f"<details><summary>config.yaml (resolved)</summary><pre>{e(report.config_text)}</pre></details>")
    return "".join(out)


def render_html(report: RunReport) -> str:
    bodies = {
        "benchmarks": _benchmarks(report), "funnel": _funnel(report),
        "training": _training(report) + _beyond(report), "gallery": _gallery(report), "changes": _changes(report),
        "cost": _cost(report), "config": _config(report),
    }  # fmt: skip
    nav = "".join(f'<a href="#{k}">{e(v)}</a>' for k, v in SECTIONS.items())
    sections = "".join(f'<section id="{k}"><h2>{e(SECTIONS[k])}</h2>{v}</section>' for k, v in bodies.items())
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>MPA report — {e(report.root.name)}'
        f'</title><meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
        f'<body><main><header><h1>MPA report</h1><div class="path">{e(report.root)}</div><nav>{nav}</nav></header>'
        f"{_headline(report)}{sections}"
        f'<p class="note">Generated by mpa {e(__version__)} from the files in this run directory.</p>'
        "</main></body></html>\n"
    )
