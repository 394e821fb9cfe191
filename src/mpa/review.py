"""Human review of the gap set: accept / reject decisions on candidates, kept append-only, honoured by `level`.

RUN_DIR/review/decisions.jsonl holds one line per decision — `{"qa_id", "decision", "who", "at"}` — and is only
ever appended to; the latest line for a qa_id is its decision, `clear` withdraws one. `mpa view` writes it (through
`record_decisions`), each write holding the run directory's lock, so it never writes while `mpa run` changes the
run. What a decision does to the data `level` trains on (`apply_review`):
  reject  the pseudo-QA is wrong or unwanted: it leaves the gap set, the retention mix and the validation set;
  accept  a candidate the strategy did not select joins the gap set (reason `accepted`); on a selected one it only
          records that a person checked it.
The decisions are part of level's fingerprint (`review_digest`), so changing them re-levels; a run nobody reviewed
has the fingerprint it always had. Decisions belong to the run directory they are in (a round of a multi-round run
under rounds/<r>/ has its own).
"""

from __future__ import annotations

import getpass
import hashlib
import socket
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from mpa.errors import MPAError
from mpa.records import CandidateRecord, _Record
from mpa.rundir import JsonlWriter, hold_run_dir, iter_jsonl, read_records

DECISIONS_FILE = Path("review") / "decisions.jsonl"
Verdict = Literal["accept", "reject", "clear"]


class ReviewRecord(_Record):
    """review/decisions.jsonl — one reviewer decision (key: `qa_id`; the latest line wins)."""

    qa_id: str
    decision: Verdict
    who: str
    at: str  # ISO 8601, UTC


def default_reviewer() -> str:
    """user@host: who made a decision when the reviewer gave no name."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def current_decisions(root: Path | str) -> dict[str, ReviewRecord]:
    """The standing decision per qa_id (cleared ones left out), in the order they were first made."""
    out: dict[str, ReviewRecord] = {}
    for rec in read_records(Path(root) / DECISIONS_FILE, ReviewRecord):
        if rec.decision == "clear":
            out.pop(rec.qa_id, None)
        else:
            out[rec.qa_id] = rec
    return out


def record_decisions(
    root: Path | str,
    qa_ids: Sequence[str],
    decision: Verdict,
    who: str,
    known: Iterable[str] | None = None,
    wait_s: float = 1.0,
) -> list[ReviewRecord]:
    """Append one decision per qa_id, holding the run directory's lock for the write (`RunBusyError` while another
    mpa process changes the run). With `known`, a qa_id that is not a candidate of the run is refused, naming it."""
    if known is not None:
        unknown = sorted(set(qa_ids) - set(known))
        if unknown:
            raise MPAError(f"no candidate {unknown[0]!r} in {root} (identify/candidates.jsonl); nothing was written")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    records = [ReviewRecord(qa_id=q, decision=decision, who=who, at=now) for q in qa_ids]
    with (
        hold_run_dir(root, f"mpa view: saving {len(records)} decision(s)", wait_s=wait_s),
        JsonlWriter(Path(root) / DECISIONS_FILE) as writer,
    ):
        writer.write_many(r.model_dump() for r in records)
    return records


def review_digest(decisions: dict[str, ReviewRecord]) -> str | None:
    """A short hash of the standing decisions (who and when left out: only what changes the data); None if none."""
    if not decisions:
        return None
    blob = "\n".join(f"{q}\t{decisions[q].decision}" for q in sorted(decisions))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def apply_review(cands: Sequence[CandidateRecord], decisions: dict[str, ReviewRecord]) -> list[CandidateRecord]:
    """The candidates as level sees them after review: rejected ones removed, accepted unselected ones selected."""
    out = []
    for c in cands:
        verdict = decisions[c.qa_id].decision if c.qa_id in decisions else None
        if verdict == "reject":
            continue
        if verdict == "accept" and not c.selected and c.reason != "failed" and c.pseudo_answer:
            c = c.model_copy(update={"selected": True, "reason": "accepted"})
        out.append(c)
    return out


def review_summary(root: Path | str) -> dict[str, Any] | None:
    """Counts for the report, summary.json and the dataset card: accepted / rejected, how many of each change the
    selected set, decisions per reviewer, the latest decision's time; None when nobody reviewed the run."""
    path = Path(root) / DECISIONS_FILE
    if not path.exists():
        return None
    decisions = current_decisions(root)
    cands = read_records(Path(root) / "identify" / "candidates.jsonl", CandidateRecord)
    selected = {c.qa_id for c in cands if c.selected}
    verdicts = Counter(r.decision for r in decisions.values())
    return {
        "accepted": verdicts["accept"],
        "rejected": verdicts["reject"],
        "rejected_from_selected": sum(r.decision == "reject" and q in selected for q, r in decisions.items()),
        "added_to_selected": sum(r.decision == "accept" and q not in selected for q, r in decisions.items()),
        "reviewers": dict(Counter(r.who for r in decisions.values())),
        "decisions_logged": sum(1 for _ in iter_jsonl(path)),
        "last_at": max((r.at for r in decisions.values()), default=None),
    }


def review_line(review: dict[str, Any] | None) -> str:
    """One sentence on a run's review (`review_summary`), for the report and the dataset card."""
    if not review:
        return "none (the strategy's selection as is)"
    who = ", ".join(f"{k} ({v})" for k, v in review["reviewers"].items())
    return (f"{review['rejected']} rejected ({review['rejected_from_selected']} of them selected), "
            f"{review['accepted']} accepted ({review['added_to_selected']} added to the selection) by {who}; "
            f"last decision {review['last_at']}; level trains on the reviewed set")  # fmt: skip


def reviewed_selection(root: Path | str) -> list[CandidateRecord]:
    """The set `level` trains on as its gap set, before balancing: identify's selection after review (what
    `mpa export` and `mpa publish` hand on)."""
    cands = read_records(Path(root) / "identify" / "candidates.jsonl", CandidateRecord)
    return [c for c in apply_review(list(cands), current_decisions(root)) if c.selected]
