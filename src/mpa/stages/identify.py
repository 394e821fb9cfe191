"""Parity Identifier (PI): teacher and student answer every pseudo-question; keep the student's knowledge gaps.

A sample is in the parity set when the teacher agrees with its own pseudo-answer (filtering annotation noise) and
the student does not. The two models answer in turn, so only one is in memory at a time. Outputs in
RUN_DIR/identify/:
  teacher_answers.jsonl, student_answers.jsonl   answers to every pseudo-question (key: qa_id)
  candidates.jsonl   the decision on every pseudo-QA with its reason (written when the stage ends)
  parity.jsonl       the selected samples (a subset of candidates.jsonl)
  export/            the selected set as LLaVA-JSON and ShareGPT
  usage.jsonl        token counts of every generate call (summed per model into the manifest's `usage`)
  manifest.json      funnel counts and token usage, written last
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from mpa.backends import Backend, GenRequest, decoding_settings, load_backend
from mpa.config import IdentifyConfig, ModelConfig, MPAConfig
from mpa.counts import AnnotateCounts, IdentifyCounts
from mpa.export import write_exports
from mpa.images import ImageSource, LoadedImage, load_image
from mpa.metrics import match_answers
from mpa.parsing import parse_short_answer
from mpa.progress import progress
from mpa.prompts import ANSWER_PROMPT_ID, render_answer_prompt
from mpa.records import AnswerRecord, CandidateRecord, QARecord
from mpa.rundir import (
    JsonlWriter,
    RunDir,
    atomic_write_text,
    done_keys,
    fingerprint,
    latest_records,
    read_records,
    resume_decision,
)
from mpa.stages.common import checked, chunk_size, model_identity, prefetched
from mpa.stages.usage import USAGE_FILE, record_usage, usage_summary
from mpa.strategies import Selection, load_strategy

log = logging.getLogger(__name__)
STAGE = "identify"
CHUNK_QUESTIONS = 256


def stage_settings(cfg: MPAConfig, upstream_fp: str) -> dict[str, Any]:
    settings = {
        "annotate": upstream_fp,
        "teacher": model_identity(cfg.teacher),
        "student": model_identity(cfg.student),
        "identify": _identify_settings(cfg),
        "answer_prompt": ANSWER_PROMPT_ID,
        "seed": cfg.seed,
        "decoding": {
            role: decoding_settings(model, _requests(cfg, [_PROBE], {"": None}, sampled=False)[0])
            for role, model in (("teacher", cfg.teacher), ("student", cfg.student))
        },
    }
    if cfg.teachers:  # (absent with one teacher, so runs made before `teachers` existed still resume)
        settings["teachers"] = [model_identity(t) for t in cfg.teachers]
    return settings


def _identify_settings(cfg: MPAConfig) -> dict[str, Any]:
    """identify's options, without those that cannot change anything in this run (consensus with one teacher, the
    graded rule's settings under another strategy): runs made before they existed keep their fingerprint."""
    ident = cfg.identify.model_dump()
    if not cfg.teachers:
        ident.pop("consensus")
    if cfg.identify.strategy != "graded":
        ident.pop("min_gap_score")
        ident.pop("top_share")
    return ident


def teachers(cfg: MPAConfig) -> list[tuple[str, ModelConfig]]:
    """(role, model) of every teacher that answers at identify: the annotating teacher first, then `teachers`.
    Role r answers into identify/<r>_answers.jsonl."""
    return [("teacher", cfg.teacher), *((f"teacher{i}", t) for i, t in enumerate(cfg.teachers, start=2))]


# a request whose decoding the manifest records
_PROBE = QARecord(qa_id="", image_id="", image_path="", question="", pseudo_answer="", answer_type="other")


def _requests(cfg: MPAConfig, qas: list[QARecord], images: dict[str, Any], sampled: bool) -> list[GenRequest]:
    ident = cfg.identify
    return [
        GenRequest(
            key=qa.qa_id,
            prompt=render_answer_prompt(qa.question),
            image=images[qa.image_id],
            n=ident.self_consistency if sampled else 1,
            temperature=ident.self_consistency_temperature if sampled else 0.0,
            repetition_penalty=ident.repetition_penalty,
            max_new_tokens=ident.max_new_tokens,
            seed=cfg.seed,
        )
        for qa in qas
    ]


def answer_all(
    cfg: MPAConfig, model: ModelConfig, qas: list[QARecord], out: Path, *, role: str, backend: Backend | None
) -> None:
    """Answer every pseudo-question not yet answered in `out` (greedy; plus k samples for a self-consistent
    teacher). Failed answers are recorded with their error and retried when the stage resumes (or by
    `--retry-failed`)."""
    done = done_keys(out, "qa_id")
    pending = [qa for qa in qas if qa.qa_id not in done]
    if not pending:
        return
    own = backend is None
    sampled = role == "teacher" and cfg.identify.self_consistency > 1
    bar = progress(total=len(qas), desc=f"identify ({role})", unit="q")
    bar.update(len(qas) - len(pending))
    try:
        with JsonlWriter(out) as writer:
            step = chunk_size(CHUNK_QUESTIONS, cfg.engine, model)
            chunks = (pending[start : start + step] for start in range(0, len(pending), step))
            for chunk, images in prefetched(chunks, _load_images):
                missing = [qa for qa in chunk if images[qa.image_id].image is None]
                ok = [qa for qa in chunk if images[qa.image_id].image is not None]
                records = [AnswerRecord(qa_id=qa.qa_id, raw=[], answers=[], error=images[qa.image_id].error)
                           for qa in missing]  # fmt: skip
                if ok:
                    backend = backend or load_backend(model, cfg.engine)
                    records += _answer(cfg, backend, ok, images, sampled, out.parent / USAGE_FILE, role)
                writer.write_many(r.model_dump() for r in records)
                bar.update(len(chunk))
    finally:
        bar.close()
        if own and backend is not None:
            backend.close()


def _answer(
    cfg: MPAConfig,
    backend: Backend,
    qas: list[QARecord],
    images: dict[str, LoadedImage],
    sampled: bool,
    usage_path: Path,
    role: str,
) -> list[AnswerRecord]:
    pil = {k: v.image for k, v in images.items()}
    requests = _requests(cfg, qas, pil, sampled=False)
    greedy = checked(requests, backend.generate(requests))
    record_usage(usage_path, role, greedy)
    samples = None
    if sampled:
        sample_requests = _requests(cfg, qas, pil, sampled=True)
        samples = checked(sample_requests, backend.generate(sample_requests))
        record_usage(usage_path, role, samples)
    records = []
    for i, qa in enumerate(qas):
        raw = list(greedy[i].texts) + (list(samples[i].texts) if samples else [])
        error = greedy[i].error or (samples[i].error if samples else None)
        records.append(AnswerRecord(qa_id=qa.qa_id, raw=raw, answers=[parse_short_answer(t) for t in raw],
                                    error=error))  # fmt: skip
    return records


def _load_images(qas: list[QARecord]) -> dict[str, LoadedImage]:
    """Each image once per chunk; one that cannot be read any more gets an error, never a text-only answer."""
    images: dict[str, LoadedImage] = {}
    for qa in qas:
        if qa.image_id not in images:
            images[qa.image_id] = load_image(ImageSource(qa.image_path, Path(qa.image_path)))
    return images


def decide(
    qa: QARecord,
    teacher: AnswerRecord,
    student: AnswerRecord,
    ident: IdentifyConfig,
    others: list[AnswerRecord] | None = None,
) -> CandidateRecord:
    """Apply the matcher, the teachers' consensus and the strategy's per-candidate test to one pseudo-QA (its
    whole-set step, if any, runs once every candidate is decided). `others`: the answers of the other teachers."""

    def match(answer: str) -> bool:
        return match_answers(
            answer, qa.pseudo_answer, ident.matcher,
            anls_threshold=ident.anls_threshold, relaxed_tolerance=ident.relaxed_tolerance,
        )  # fmt: skip

    others = others or []
    failed = bool(teacher.error or student.error or any(o.error for o in others))
    t_answers = teacher.answers or [""]
    s_answer = (student.answers or [""])[0]
    teacher_match = match(t_answers[0])
    samples = t_answers[1:]
    share = sum(match(a) for a in samples) / len(samples) if samples else float(teacher_match)
    consistent = teacher_match and (not samples or share >= ident.self_consistency_min_share)
    votes = [consistent, *(match((o.answers or [""])[0]) for o in others)]
    if others:
        consistent = consensus(votes, ident.consensus)
    student_correct = match(s_answer)
    # teacher agreement: the mean of each teacher's (the annotating one's sample share when it samples)
    agreement = (share + sum(votes[1:])) / len(votes)
    if failed:
        selected, reason = False, "failed"
    else:
        selected, reason = load_strategy(ident.strategy).decide(teacher_match, consistent, student_correct)
    return CandidateRecord(
        qa_id=qa.qa_id,
        image_id=qa.image_id,
        image_path=qa.image_path,
        question=qa.question,
        pseudo_answer=qa.pseudo_answer,
        answer_type=qa.answer_type,
        teacher_answer=t_answers[0],
        student_answer=s_answer,
        teacher_agrees=consistent,
        teacher_consistency=share,
        student_correct=student_correct,
        selected=selected,
        reason=reason,  # type: ignore[arg-type]
        gap_score=round(agreement - float(student_correct), 4),
        teacher_votes=votes if others else None,
    )


def consensus(votes: list[bool], rule: str) -> bool:
    """all / majority (more than half) / any of the teachers' verdicts."""
    if rule == "all":
        return all(votes)
    if rule == "any":
        return any(votes)
    return sum(votes) * 2 > len(votes)


def run(
    cfg: MPAConfig, rd: RunDir, *, force: bool = False, teacher: Backend | None = None, student: Backend | None = None
) -> dict[str, Any]:
    """Answer with both models, decide every candidate, write the parity set; returns the manifest."""
    upstream = rd.require("annotate")
    settings = stage_settings(cfg, upstream["fingerprint"])
    fp = fingerprint(settings)
    reusable = _reusable_answers(rd, settings, answer_files(cfg)) if force else {}
    if not rd.begin(STAGE, fp, settings, force=force):
        log.info("identify: already complete with these settings, skipped")
        return rd.require(STAGE)
    sdir = rd.stage_dir(STAGE)
    for name, data in reusable.items():  # only the decision rule changed: the models' answers still hold
        (sdir / name).write_bytes(data)
    qas = list(read_records(rd.stage_dir("annotate") / "qa.jsonl", QARecord))
    roles = teachers(cfg)
    for role, model in roles:
        answer_all(cfg, model, qas, sdir / f"{role}_answers.jsonl", role=role,
                   backend=teacher if role == "teacher" else None)  # fmt: skip
    answer_all(cfg, cfg.student, qas, sdir / "student_answers.jsonl", role="student", backend=student)
    t_ans = [latest_records(sdir / f"{role}_answers.jsonl", "qa_id", AnswerRecord) for role, _ in roles]
    s_ans = latest_records(sdir / "student_answers.jsonl", "qa_id", AnswerRecord)
    cands = [decide(qa, t_ans[0][qa.qa_id], s_ans[qa.qa_id], cfg.identify, [a[qa.qa_id] for a in t_ans[1:]])
             for qa in qas]  # fmt: skip
    ident = cfg.identify
    selection = Selection(seed=cfg.seed, min_gap_score=ident.min_gap_score, top_share=ident.top_share)
    cands = load_strategy(ident.strategy).finalize(cands, selection)
    atomic_write_text(sdir / "candidates.jsonl", "".join(c.model_dump_json() + "\n" for c in cands))
    selected = [c for c in cands if c.selected]
    atomic_write_text(sdir / "parity.jsonl", "".join(c.model_dump_json() + "\n" for c in selected))
    exports = write_exports(selected, sdir / "export", cfg.export.formats)
    usage = usage_summary(sdir / USAGE_FILE, {**dict(roles), "student": cfg.student})
    counts = _funnel(upstream, cands, [role for role, _ in roles]).model_dump()
    return rd.finish(STAGE, fp, settings, {"counts": counts, "exports": exports, "usage": usage})


# Settings that change only how answers are judged and selected, not the answers themselves.
DECISION_KEYS = ("matcher", "anls_threshold", "relaxed_tolerance", "strategy", "self_consistency_min_share",
                 "consensus", "min_gap_score", "top_share")  # fmt: skip


def answer_files(cfg: MPAConfig) -> list[str]:
    """The files holding the models' answers (what a changed decision rule can reuse)."""
    return [*(f"{role}_answers.jsonl" for role, _ in teachers(cfg)), "student_answers.jsonl", USAGE_FILE]


def _answer_settings(settings: dict[str, Any]) -> dict[str, Any]:
    ident = {k: v for k, v in settings.get("identify", {}).items() if k not in DECISION_KEYS}
    return {**settings, "identify": ident}


def _reusable_answers(rd: RunDir, settings: dict[str, Any], files: list[str]) -> dict[str, bytes]:
    """The answer files of a previous identify run that differs only in DECISION_KEYS (e.g. another matcher), so
    a forced redo re-decides without asking either model again."""
    sdir = rd.stage_dir(STAGE)
    previous, finished = rd.previous(STAGE)
    if previous is None:
        return {}
    # the run directory's rule, applied to the settings the answers depend on: would they be resumed as they are?
    answers = resume_decision({**previous, "fingerprint": fingerprint(_answer_settings(previous.get("settings", {})))},
                     finished, fingerprint(_answer_settings(settings)), _answer_settings(settings))  # fmt: skip
    if answers.action == "refuse":
        return {}
    kept = {name: (sdir / name).read_bytes() for name in files if (sdir / name).exists()}
    if kept:
        log.info("identify: only the decision rule changed; reusing %s", ", ".join(kept))
    return kept


def _funnel(upstream: dict[str, Any], cands: list[CandidateRecord], roles: list[str]) -> IdentifyCounts:
    annotated = AnnotateCounts.read(upstream)
    ok = [c for c in cands if c.reason != "failed"]
    if len(roles) > 1:  # each teacher's share of answered pseudo-QAs it answers like the pseudo-answer
        agreement = {r: round(sum((c.teacher_votes or [])[i] for c in ok) / max(len(ok), 1), 4)
                     for i, r in enumerate(roles)}  # fmt: skip
    else:
        agreement = {"teacher": round(sum(c.teacher_agrees for c in ok) / max(len(ok), 1), 4)}
    return IdentifyCounts(
        images=annotated.images_ok,
        annotated=annotated.generations,
        parseable=annotated.qa_pairs,
        answered=len(ok),
        teacher_consistent=sum(c.teacher_agrees for c in ok),
        student_fails=sum(c.teacher_agrees and not c.student_correct for c in ok),
        selected=sum(c.selected for c in cands),
        reasons=dict(Counter(c.reason for c in cands)),
        # What never became a candidate, by reason: whole generations (unparseable, empty, refusal, failed) and
        # single pairs (answer_too_long, duplicate_question, ...). Each is recorded in annotate/annotations.jsonl.
        rejected_at_annotate=annotated.rejected(),
        selected_by_answer_type=dict(Counter(c.answer_type for c in cands if c.selected)),
        teacher_agreement=agreement,
        gap_scores=dict(sorted(Counter(f"{c.gap_score:+.2f}" for c in ok if c.gap_score is not None).items())),
    )
