"""One shape for every stage's bookkeeping: what went in, what came out, and what was skipped or failed, by reason.

Derived from each stage's detailed counts when its manifest is written (`RunDir.finish` stores it as `io`), and
collected into RUN_DIR/summary.json, so "where did my 100,000 images go?" has one answer per stage.
"""

from __future__ import annotations

from typing import Any


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: int(v) for k, v in counts.items() if v}


def stage_io(stage: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """`{"in": {...}, "out": {...}, "skipped": {reason: n}, "failed": {reason: n}}` for a stage's manifest."""
    c = manifest.get("counts") or {}
    if stage == "annotate":
        status = c.get("generation_status", {})
        skipped = {
            "image duplicate": c.get("images_duplicate", 0),
            **{f"image {reason}": n for reason, n in c.get("skip_reasons", {}).items()},
            **{f"generation {s}": n for s, n in status.items() if s not in ("ok", "failed")},
            **{f"pair {reason}": n for reason, n in c.get("pairs_rejected", {}).items()},
        }
        return {
            "in": {"images": c.get("images", 0)},
            "out": {"images_annotated": c.get("images_ok", 0), "qa_pairs": c.get("qa_pairs", 0)},
            "skipped": _nonzero(skipped),
            "failed": _nonzero({"generation failed": status.get("failed", 0)}),
        }
    if stage == "identify":
        reasons = c.get("reasons", {})
        return {
            "in": {"qa_pairs": c.get("parseable", 0)},
            "out": {"selected": c.get("selected", 0)},
            "skipped": _nonzero({r: n for r, n in reasons.items() if r not in ("selected", "failed")}),
            "failed": _nonzero({"answer failed": reasons.get("failed", 0)}),
        }
    if stage == "level":
        return {
            "in": {"gap_samples": c.get("gap", 0), "retention_samples": c.get("retention", 0)},
            "out": {"train_rows": c.get("train", 0), "val_rows": c.get("val", 0)},
            "skipped": {},
            "failed": {},
        }
    if "metrics" not in manifest:  # the evaluate stage's own manifest, over its units
        return {"in": {"units": c.get("units", 0)}, "out": {"units_run": c.get("units_run", 0)}, "skipped": {},
                "failed": {}}  # fmt: skip
    metrics = manifest.get("metrics") or {}  # an evaluate unit
    return {
        "in": {"questions": metrics.get("n", 0)},
        "out": {"scored": metrics.get("n", 0) - metrics.get("failed", 0)},
        "skipped": {},
        "failed": _nonzero({"generation failed": metrics.get("failed", 0)}),
    }
