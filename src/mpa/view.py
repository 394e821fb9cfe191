"""`mpa view RUN_DIR`: a local web page to browse a run's candidates and accept or reject them before leveling.

    mpa view runs/charts                       # http://127.0.0.1:8765, as user@host
    mpa view runs/charts --port 9000 --reviewer ann

Every candidate of identify/candidates.jsonl with its thumbnail, question, pseudo-answer, teacher and student
answers, reason and gap score; filters by reason, question (answer) type, pseudo-answer and review decision, a
question search, pages of 50. Accept / reject / clear — one sample, or the page shown — append to
RUN_DIR/review/decisions.jsonl with who and when
(`mpa.review`), each write holding the run directory's lock: while `mpa run` changes the run the page shows the
refusal and nothing is written. `mpa level` then trains on the reviewed set.

Served by FastAPI + uvicorn (the `serve` extra, already in our stack for `transformers serve`); the page is one
static HTML file with plain JavaScript (`view.html`, nothing fetched from the network). It binds to 127.0.0.1
unless told otherwise. The candidates are indexed in memory once (and again when the file changes): filtering
100,000 of them is a list scan of a few milliseconds; thumbnails are made on request, cached, and lazy-loaded by
the browser (`speed/view_latency.py` measures both).
"""

from __future__ import annotations

import functools
import io
import logging
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mpa.errors import MPAError, RunBusyError
from mpa.metrics import normalize_vqa_answer
from mpa.records import CandidateRecord
from mpa.review import ReviewRecord, Verdict, current_decisions, default_reviewer, record_decisions
from mpa.rundir import read_records

log = logging.getLogger(__name__)
PAGE_SIZE = 50
THUMB_PX = 160
TOP_ANSWERS = 200


class Decisions(BaseModel):
    """POST /api/decisions: one decision for some candidates."""

    qa_ids: list[str]
    decision: Verdict


@dataclass
class Query:
    reason: str = ""
    answer_type: str = ""
    answer: str = ""  # normalised pseudo-answer
    decision: str = ""  # accept | reject | none
    q: str = ""  # substring of the question, case-insensitive
    offset: int = 0
    limit: int = PAGE_SIZE


class CandidateIndex:
    """The run's candidates and decisions in memory; re-read when candidates.jsonl or decisions.jsonl change.
    uvicorn answers requests from a thread pool: `lock` serialises reading, re-indexing and writing decisions."""

    def __init__(self, root: Path) -> None:
        self.lock = threading.RLock()
        self.root = root
        self.path = root / "identify" / "candidates.jsonl"
        if not self.path.exists():
            raise MPAError(f"{self.path} not found: run identify first (`mpa identify --run-dir {root}`)")
        self._stamp: tuple[float, float] | None = None
        self.rows: list[CandidateRecord] = []
        self.decisions: dict[str, ReviewRecord] = {}
        self.refresh()

    def _stamps(self) -> tuple[float, float]:
        decisions = self.root / "review" / "decisions.jsonl"
        return self.path.stat().st_mtime, decisions.stat().st_mtime if decisions.exists() else 0.0

    def refresh(self) -> None:
        with self.lock:
            self._refresh()

    def _refresh(self) -> None:
        stamp = self._stamps()
        if stamp == self._stamp:
            return
        if self._stamp is None or stamp[0] != self._stamp[0]:
            self.rows = list(read_records(self.path, CandidateRecord))
            self.questions = [r.question.lower() for r in self.rows]
            self.answers = [normalize_vqa_answer(r.pseudo_answer) for r in self.rows]
            self.ids = {r.qa_id for r in self.rows}
            self.images = {r.image_id: r.image_path for r in self.rows}
        self.decisions = current_decisions(self.root)
        self._stamp = stamp

    def facets(self) -> dict[str, Any]:
        with self.lock:
            self._refresh()
            return self._facets()

    def _facets(self) -> dict[str, Any]:
        verdicts = Counter(d.decision for d in self.decisions.values())
        return {
            "reason": dict(Counter(r.reason for r in self.rows).most_common()),
            "answer_type": dict(Counter(r.answer_type for r in self.rows).most_common()),
            "answer": dict(Counter(self.answers).most_common(TOP_ANSWERS)),
            "decision": {
                "accept": verdicts["accept"],
                "reject": verdicts["reject"],
                "none": len(self.rows) - len(self.decisions),
            },
        }

    def query(self, q: Query) -> dict[str, Any]:
        with self.lock:
            self._refresh()
            return self._query(q)

    def _query(self, q: Query) -> dict[str, Any]:
        text = q.q.strip().lower()
        answer = normalize_vqa_answer(q.answer) if q.answer else ""
        hits = [
            i
            for i, r in enumerate(self.rows)
            if (not q.reason or r.reason == q.reason)
            and (not q.answer_type or r.answer_type == q.answer_type)
            and (not answer or self.answers[i] == answer)
            and (not text or text in self.questions[i])
            and (not q.decision or self._verdict(r.qa_id) == q.decision)
        ]
        page = hits[q.offset : q.offset + max(1, min(q.limit, 500))]
        return {"total": len(hits), "offset": q.offset, "rows": [self.row(self.rows[i]) for i in page]}

    def _verdict(self, qa_id: str) -> str:
        d = self.decisions.get(qa_id)
        return d.decision if d else "none"

    def row(self, r: CandidateRecord) -> dict[str, Any]:
        d = self.decisions.get(r.qa_id)
        return {
            "qa_id": r.qa_id, "image_id": r.image_id, "question": r.question, "pseudo_answer": r.pseudo_answer,
            "answer_type": r.answer_type, "teacher_answer": r.teacher_answer, "student_answer": r.student_answer,
            "reason": r.reason, "selected": r.selected, "gap_score": r.gap_score,
            "decision": d.decision if d else None, "who": d.who if d else None, "at": d.at if d else None,
        }  # fmt: skip


@functools.lru_cache(maxsize=4096)
def thumbnail(path: str, px: int = THUMB_PX) -> tuple[bytes, str]:
    """A small JPEG (PNG for images with few colours, which JPEG smears) of an image, cached by path."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((px, px))
        buf = io.BytesIO()
        few_colours = im.getcolors(256) is not None
        im.save(buf, "PNG" if few_colours else "JPEG", quality=85)
    return buf.getvalue(), "image/png" if few_colours else "image/jpeg"


def create_app(root: Path | str, reviewer: str | None = None) -> Any:
    """The FastAPI app of `mpa view` (tests and `speed/` drive it in-process or through uvicorn)."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, Response

    root = Path(root)
    index = CandidateIndex(root)
    who = reviewer or default_reviewer()
    page = resources.files("mpa").joinpath("view.html").read_text(encoding="utf-8")
    app = FastAPI(title="mpa view", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        return page

    @app.get("/api/meta")
    def meta() -> dict[str, Any]:
        facets = index.facets()
        return {"run_dir": str(root), "reviewer": who, "total": sum(facets["reason"].values()), "facets": facets,
                "page_size": PAGE_SIZE}  # fmt: skip

    @app.get("/api/candidates")
    def candidates(reason: str = "", answer_type: str = "", answer: str = "", decision: str = "", q: str = "",
                   offset: int = 0, limit: int = PAGE_SIZE) -> dict[str, Any]:  # fmt: skip
        return index.query(Query(reason, answer_type, answer, decision, q, max(0, offset), limit))

    @app.get("/api/thumb/{image_id}")
    def thumb(image_id: str) -> Response:
        path = index.images.get(image_id)  # only the run's own images are served
        if path is None:
            raise HTTPException(404, f"no image {image_id} in this run")
        try:
            data, media = thumbnail(path)
        except OSError as err:
            raise HTTPException(404, f"{path}: {err}") from None
        return Response(data, media_type=media, headers={"Cache-Control": "max-age=86400"})

    @app.post("/api/decisions")
    def decide(body: Decisions) -> dict[str, Any]:
        with index.lock:  # one write at a time (the run-directory lock is per process, not per thread)
            try:
                saved = record_decisions(root, body.qa_ids, body.decision, who, known=index.ids)
            except RunBusyError as err:
                raise HTTPException(409, str(err)) from None
            except MPAError as err:
                raise HTTPException(400, str(err)) from None
            index.refresh()
            wanted = set(body.qa_ids)
            rows = [index.row(r) for r in index.rows if r.qa_id in wanted]
        log.info("view: %s %d candidate(s) as %s", body.decision, len(saved), who)
        return {"saved": len(saved), "rows": rows}

    return app


def serve(root: Path | str, host: str = "127.0.0.1", port: int = 8765, reviewer: str | None = None) -> None:
    """Run the page until Ctrl-C."""
    import uvicorn

    app = create_app(root, reviewer)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:  # one line, not a traceback
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise MPAError(
                f"--port {port}: cannot listen on {host}:{port} ({err.strerror}); pass another --port"
            ) from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("view: listening on %s: anyone who can reach this machine can change the review", host)
    print(f"mpa view: http://{host}:{port}  ({root}; Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
