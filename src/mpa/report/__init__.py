"""`mpa report RUN_DIR`: what a run did, as RUN_DIR/report.html, RUN_DIR/report.md and RUN_DIR/summary.json.

A pure function of the run directory (see `mpa.report.model`, which reads it). The dependencies go one way:
`model` (data + reading) ← `md`, `plots` ← `html` ← this entry point, so no renderer ever imports the package.
`write_report(run_dir)` is the Python entry point.

    mpa report runs/demo
    python -c "from mpa.report import write_report; print(write_report('runs/demo'))"
"""

from __future__ import annotations

from pathlib import Path

from mpa.report.html import render_html
from mpa.report.md import render_markdown
from mpa.report.model import GALLERY_SIZE, RunReport, collect, current_environment, write_summary
from mpa.rundir import atomic_write_json, atomic_write_text

__all__ = ["GALLERY_SIZE", "RunReport", "collect", "current_environment", "write_report", "write_summary"]


def write_report(run_dir: Path | str) -> dict[str, Path]:
    """Write RUN_DIR/report.html, report.md and summary.json; returns their paths."""
    report = collect(run_dir)
    root = report.root
    atomic_write_json(root / "summary.json", report.summary)
    atomic_write_text(root / "report.md", render_markdown(report))
    atomic_write_text(root / "report.html", render_html(report))
    return {"html": root / "report.html", "md": root / "report.md", "summary": root / "summary.json"}
