"""Pseudo Annotator (PA): the teacher writes question/answer pairs for every unlabeled image.

Inputs: the images named by `cfg.images`. Outputs in RUN_DIR/annotate/:
  images.jsonl        every input image, ok / duplicate / skipped with a reason (key: source)
  annotations.jsonl   every teacher generation with its raw text and parse status (key: image_id/sample)
  qa.jsonl            accepted pseudo-QA pairs, derived from annotations.jsonl when the stage ends (key: qa_id)
  images/             copies of images that came from a HF dataset (so later stages and exports have paths)
Before any image is annotated, the contamination guard (`contamination.check`) compares the pool with the images
of every `evaluate.benchmarks` entry; near-duplicates are recorded as skipped with reason `contaminated` (kept with
`contamination.allow`). The scan is cached in RUN_DIR/contamination/ (flagged.jsonl, manifest.json).
  usage.jsonl         token counts of every generate call (summed into the manifest's `usage`)
  manifest.json       counts and token usage, written last
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from mpa import contamination
from mpa.backends import Backend, GenRequest, decoding_settings, load_backend
from mpa.config import ConfigError, MPAConfig
from mpa.counts import AnnotateCounts
from mpa.images import ImageSource, LoadedImage, iter_images, list_sources, load_image
from mpa.parsing import answer_type, parse_qa_pairs
from mpa.progress import progress
from mpa.prompts import AnnotatePrompt, get_annotate_prompt, load_prompt_file, render_annotate_prompt
from mpa.records import AnnotationRecord, ImageRecord, QARecord
from mpa.rundir import (
    JsonlWriter,
    RunDir,
    atomic_write_json,
    atomic_write_text,
    done_keys,
    fingerprint,
    iter_jsonl,
    latest_by_key,
    read_json,
    read_records,
    repair_jsonl,
)
from mpa.stages.common import checked, chunk_size, model_identity, prefetched
from mpa.stages.usage import USAGE_FILE, record_usage, usage_summary

log = logging.getLogger(__name__)
STAGE = "annotate"
CHUNK_IMAGES = 64  # images decoded and written per step; bounds memory and the work lost to a crash


def resolve_prompt(cfg: MPAConfig) -> AnnotatePrompt:
    try:
        if cfg.annotate.prompt_file:
            return load_prompt_file(Path(cfg.annotate.prompt_file))
        return get_annotate_prompt(cfg.annotate.task)
    except ValueError as err:
        key = "annotate.prompt_file" if cfg.annotate.prompt_file else "annotate.task"
        raise ConfigError(f"{key}: {err}") from None


def pairs_per_call(cfg: MPAConfig, prompt: AnnotatePrompt) -> int:
    """k: a preset whose text fixes the number of pairs (the paper's: 1) wins over `annotate.pairs_per_image`."""
    return prompt.pairs_per_call or cfg.annotate.pairs_per_image


def sources_digest(sources: list[ImageSource]) -> str:
    """Which inputs (by name, in order): adding or removing images changes the stage's outputs."""
    return f"{len(sources)}:" + fingerprint({"sources": [s.source for s in sources]})


def annotate_request(cfg: MPAConfig, key: str, prompt: str, image: Any) -> GenRequest:
    """The teacher's request for one image: every decoding parameter from the config, none left to a backend."""
    a = cfg.annotate
    return GenRequest(key=key, prompt=prompt, image=image, n=a.samples_per_image, temperature=a.temperature,
                      top_p=a.top_p, top_k=a.top_k, repetition_penalty=a.repetition_penalty,
                      max_new_tokens=a.max_new_tokens, seed=cfg.seed)  # fmt: skip


def stage_settings(
    cfg: MPAConfig, sources: list[ImageSource] | None = None, excluded: list[str] | None = None
) -> dict[str, Any]:
    """Everything that changes this stage's outputs, and the exact decoding the teacher is asked with. `excluded`:
    the sources the contamination guard leaves out (absent when none, so earlier runs keep their fingerprint)."""
    settings = {
        "images": cfg.images.model_dump(),
        "sources": sources_digest(sources if sources is not None else list_sources(cfg.images)),
        "teacher": model_identity(cfg.teacher),
        "annotate": cfg.annotate.model_dump(),
        "prompt_id": resolve_prompt(cfg).id,
        "seed": cfg.seed,
        "decoding": decoding_settings(cfg.teacher, annotate_request(cfg, "", "", None)),
    }
    if excluded:
        settings["excluded"] = f"{len(excluded)}:" + fingerprint({"sources": sorted(excluded)})
    return settings


SCREEN_DIR = "contamination"
# scans made while planning a run (not yet written), so the run that follows does not scan the pool twice
_PLANNED: dict[tuple[Path, str], tuple[list[dict[str, Any]], int]] = {}


def _benchmarks(cfg: MPAConfig) -> list[tuple[str, list[Any]]]:
    """(label, samples) of every configured benchmark, all its questions (a limit applies to scoring only)."""
    from mpa.evaluation.benchmarks import BenchmarkError, load_benchmark

    out = []
    for b in cfg.evaluate.benchmarks:
        try:
            samples = load_benchmark(b.name, Path(b.data_dir) if b.data_dir else None, split=b.split)
        except BenchmarkError as err:
            raise ConfigError(f"evaluate.benchmarks ({b.name}): {err}") from None
        out.append((b.name + (f"_{b.split}" if b.split else ""), samples))
    return out


def screen_settings(cfg: MPAConfig, sources: list[ImageSource]) -> dict[str, Any]:
    refs = [{"name": b.name, "data_dir": b.data_dir, "split": b.split} for b in cfg.evaluate.benchmarks]
    return {"sources": sources_digest(sources), "references": refs, "method": contamination.METHOD}


def screen_pool(cfg: MPAConfig, rd: RunDir, sources: list[ImageSource], *, write: bool = True) -> dict[str, str]:
    """The contamination guard: source → why it is a near-duplicate of a benchmark image, for every flagged pool
    image (empty when the check is off or no benchmark is configured). Cached in RUN_DIR/contamination/ under the
    fingerprint of the pool, the benchmarks and the method; `write=False` (planning) computes without caching."""
    if not cfg.contamination.check or not cfg.evaluate.benchmarks:
        return {}
    settings = screen_settings(cfg, sources)
    fp = fingerprint(settings)
    sdir = rd.stage_dir(SCREEN_DIR)
    cached = read_json(sdir / "manifest.json") if (sdir / "manifest.json").exists() else None
    if cached is not None and cached.get("fingerprint") == fp:
        return {r["source"]: r["reason"] for r in iter_jsonl(sdir / "flagged.jsonl")}
    if (rd.root, fp) not in _PLANNED:
        _PLANNED[(rd.root, fp)] = _scan(cfg, sources)
    flagged, n_refs = _PLANNED[(rd.root, fp)]
    if write:
        if flagged:
            log.warning("contamination: %d of %d pool images are near-duplicates of benchmark images (%s); see %s",
                        len(flagged), len(sources), "kept: contamination.allow" if cfg.contamination.allow else
                        "left out; --allow-contamination keeps them", sdir / "flagged.jsonl")  # fmt: skip
        atomic_write_text(sdir / "flagged.jsonl", "".join(json.dumps(r) + "\n" for r in flagged))
        counts = {"pool": len(sources), "references": n_refs, "flagged": len(flagged),
                  "excluded": 0 if cfg.contamination.allow else len(flagged)}  # fmt: skip
        atomic_write_json(sdir / "manifest.json", {"fingerprint": fp, "settings": settings, "counts": counts,
                                                   "finished_at": time.time()})  # fmt: skip
        del _PLANNED[(rd.root, fp)]
    return {r["source"]: r["reason"] for r in flagged}


def _scan(cfg: MPAConfig, sources: list[ImageSource]) -> tuple[list[dict[str, Any]], int]:
    """(flagged pool images with their match, number of reference images)."""
    screen = contamination.Screen()
    for label, samples in _benchmarks(cfg):
        screen.add(label, contamination.image_paths(s.image_path for s in samples))
    flagged: list[dict[str, Any]] = []
    bar = progress(total=len(sources), desc="contamination scan", unit="img")
    for src, loaded in iter_images(cfg.images, sources):
        bar.update(1)
        match = screen.match(loaded.image) if loaded.image is not None else None
        if match is not None:
            reason = (f"contaminated: near-duplicate of {match.benchmark} image {match.reference} "
                      f"({match.rule} {match.score})")  # fmt: skip
            flagged.append({"source": src.source, "path": str(src.path) if src.path else None, "reason": reason,
                            **dataclasses.asdict(match)})  # fmt: skip
    bar.close()
    return flagged, len(screen)


def planned_settings(cfg: MPAConfig, rd: RunDir) -> dict[str, Any]:
    """The settings annotate would run with now (for `mpa validate` and the run plan; nothing is written)."""
    sources = list_sources(cfg.images)
    flags = screen_pool(cfg, rd, sources, write=False)
    return stage_settings(cfg, sources, [] if cfg.contamination.allow else list(flags))


def _question_key(question: str) -> str:
    return re.sub(r"[\W_]+", " ", question.lower()).strip()


def _image_path(src: ImageSource, loaded: LoadedImage, sdir: Path) -> str:
    if src.path is not None:
        return str(src.path.resolve())
    out = sdir / "images" / f"{loaded.image_id}.png"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp.png")
        loaded.image.save(tmp)  # type: ignore[union-attr]
        tmp.replace(out)
    return str(out)


def _annotation(cfg: MPAConfig, prompt: AnnotatePrompt, image_id: str, sample: int, raw: str, error: str | None):
    parsed = parse_qa_pairs(raw, max_pairs=pairs_per_call(cfg, prompt), max_answer_words=cfg.annotate.max_answer_words)
    return AnnotationRecord(
        key=f"{image_id}/{sample}",
        image_id=image_id,
        sample=sample,
        prompt_id=prompt.id,
        raw=raw,
        status="failed" if error else parsed.status,
        fmt=parsed.fmt,
        n_pairs=len(parsed.pairs),
        rejected=[{"question": p.question, "answer": p.answer, "reason": why} for p, why in parsed.rejected],
        error=error,
    )


def _annotate_chunk(
    cfg: MPAConfig,
    backend: Backend,
    prompt: AnnotatePrompt,
    work: list[tuple[str, Any]],
    done: set[str],
    writer: JsonlWriter,
) -> None:
    """Generate for `work` [(image_id, image)]; write only samples not already done (samples are seeded per
    (image, sample), so regenerating a request reproduces the samples that were kept)."""
    text = render_annotate_prompt(prompt, pairs_per_call(cfg, prompt))
    a = cfg.annotate
    requests = [annotate_request(cfg, image_id, text, image) for image_id, image in work]
    results = checked(requests, backend.generate(requests))
    record_usage(writer.path.parent / USAGE_FILE, "teacher", results)
    records = []
    n = a.samples_per_image if a.temperature > 0 else 1
    for req, res in zip(requests, results, strict=True):
        for s in range(n):
            if f"{req.key}/{s}" in done:
                continue
            raw = res.texts[s] if res.error is None else ""
            records.append(_annotation(cfg, prompt, req.key, s, raw, res.error).model_dump())
    writer.write_many(records)


def _build_qa(sdir: Path, images: dict[str, str], cfg: MPAConfig, k: int) -> Counter[str]:
    """Derive qa.jsonl from annotations.jsonl: parse again (pure), drop questions repeated across samples."""
    order = {image_id: i for i, image_id in enumerate(images)}
    anns = sorted(
        latest_by_key(sdir / "annotations.jsonl", "key").values(),
        key=lambda r: (order.get(r["image_id"], 1 << 60), r["sample"]),
    )
    counts: Counter[str] = Counter()
    seen: set[tuple[str, str]] = set()
    lines = []
    for ann in anns:
        parsed = parse_qa_pairs(ann["raw"], max_pairs=k, max_answer_words=cfg.annotate.max_answer_words)
        for idx, pair in enumerate(parsed.pairs if ann["error"] is None else ()):
            qkey = (ann["image_id"], _question_key(pair.question))
            if qkey in seen:
                counts["duplicate_across_samples"] += 1
                continue
            seen.add(qkey)
            rec = QARecord(
                qa_id=f"{ann['image_id']}/{ann['sample']}/{idx}",
                image_id=ann["image_id"],
                image_path=images[ann["image_id"]],
                question=pair.question,
                pseudo_answer=pair.answer,
                answer_type=answer_type(pair.answer),  # type: ignore[arg-type]
            )
            lines.append(rec.model_dump_json() + "\n")
            counts["qa_pairs"] += 1
    atomic_write_text(sdir / "qa.jsonl", "".join(lines))
    return counts


def run(cfg: MPAConfig, rd: RunDir, *, force: bool = False, backend: Backend | None = None) -> dict[str, Any]:
    """Annotate every image (resuming a stopped run); returns the stage manifest."""
    sources = list_sources(cfg.images)
    flags = screen_pool(cfg, rd, sources)
    excluded = {} if cfg.contamination.allow else flags
    settings = stage_settings(cfg, sources, list(excluded))
    fp = fingerprint(settings)
    if not rd.begin(STAGE, fp, settings, force=force):
        log.info("annotate: already complete with these settings, skipped")
        return rd.require(STAGE)
    sdir = rd.stage_dir(STAGE)
    prompt = resolve_prompt(cfg)
    img_file, ann_file = sdir / "images.jsonl", sdir / "annotations.jsonl"
    repair_jsonl(img_file)
    known = {r.source: r for r in read_records(img_file, ImageRecord)}
    done = done_keys(ann_file, "key")  # image_id/sample keys that succeeded
    n_samples = cfg.annotate.samples_per_image if cfg.annotate.temperature > 0 else 1

    def pending(image_id: str) -> bool:
        return any(f"{image_id}/{s}" not in done for s in range(n_samples))

    images = {r.image_id: r.path for r in known.values() if r.status == "ok"}  # id -> path, in order
    own_backend = backend is None
    try:
        with JsonlWriter(img_file) as img_w, JsonlWriter(ann_file) as ann_w:
            bar = progress(total=len(sources), desc="annotate", unit="img")
            step = chunk_size(CHUNK_IMAGES, cfg.engine, cfg.teacher)
            chunks = (sources[start : start + step] for start in range(0, len(sources), step))
            for chunk, loaded_chunk in prefetched(chunks, lambda c: list(_load_chunk(cfg, c, known, pending))):
                new_records, work = [], []
                for src, loaded in loaded_chunk:
                    if src.source in known:
                        rec = known[src.source]
                        if rec.status == "ok" and pending(rec.image_id) and loaded.image is not None:
                            work.append((rec.image_id, loaded.image))
                        continue
                    rec = _image_record(src, loaded, images, sdir, excluded.get(src.source))
                    new_records.append(rec.model_dump())
                    if rec.status == "ok":
                        images[rec.image_id] = rec.path
                        work.append((rec.image_id, loaded.image))
                img_w.write_many(new_records)
                if work:
                    if backend is None:
                        backend = load_backend(cfg.teacher, cfg.engine)
                    _annotate_chunk(cfg, backend, prompt, work, done, ann_w)
                    done.update(f"{image_id}/{s}" for image_id, _ in work for s in range(n_samples))
                bar.update(len(chunk))
            bar.close()
    finally:
        if own_backend and backend is not None:
            backend.close()
    counts = _count(sdir, images, cfg, pairs_per_call(cfg, prompt), flagged=len(flags))
    usage = usage_summary(sdir / USAGE_FILE, {"teacher": cfg.teacher})
    return rd.finish(STAGE, fp, settings, {"prompt_id": prompt.id, "counts": counts.model_dump(), "usage": usage})


def _load_chunk(cfg: MPAConfig, chunk: Any, known: dict[str, ImageRecord], pending: Any):
    """Decode new sources; re-read recorded images (by their recorded path) only if their annotation is missing."""
    fresh = [s for s in chunk if s.source not in known]
    out = dict((s.source, (s, li)) for s, li in iter_images(cfg.images, fresh)) if fresh else {}
    for src in chunk:
        if src.source in out:
            yield out[src.source]
        else:
            rec = known[src.source]
            path = rec.path if rec.status == "ok" and pending(rec.image_id) else None
            yield src, load_image(ImageSource(src.source, Path(path))) if path else LoadedImage("", None, "n/a")


def _image_record(
    src: ImageSource, loaded: LoadedImage, images: dict[str, str], sdir: Path, contaminated: str | None
) -> ImageRecord:
    if loaded.image is None or contaminated:
        why = loaded.error if loaded.image is None else contaminated
        return ImageRecord(source=src.source, image_id=loaded.image_id, status="skipped", reason=why)
    if loaded.image_id in images:
        dup = f"same content as {images[loaded.image_id]}"
        return ImageRecord(source=src.source, image_id=loaded.image_id, status="duplicate", reason=dup)
    path = _image_path(src, loaded, sdir)
    w, h = loaded.image.size
    return ImageRecord(source=src.source, image_id=loaded.image_id, status="ok", path=path, width=w, height=h)


def _count(sdir: Path, images: dict[str, str], cfg: MPAConfig, k: int, flagged: int) -> AnnotateCounts:
    img_status: Counter[str] = Counter()
    skip_reasons: Counter[str] = Counter()
    for rec in read_records(sdir / "images.jsonl", ImageRecord):
        img_status[rec.status] += 1
        if rec.status == "skipped":
            skip_reasons[str(rec.reason).split(":")[0]] += 1
    gen_status: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    for ann in latest_by_key(sdir / "annotations.jsonl", "key").values():
        gen_status[ann["status"]] += 1
        rejected.update(r["reason"] for r in ann["rejected"])
    qa_counts = _build_qa(sdir, images, cfg, k)
    rejected.update({"duplicate_across_samples": qa_counts["duplicate_across_samples"]})
    return AnnotateCounts(
        images=sum(img_status.values()),
        images_ok=img_status["ok"],
        images_duplicate=img_status["duplicate"],
        images_skipped=img_status["skipped"],
        skip_reasons=dict(skip_reasons),
        generations=sum(gen_status.values()),
        generation_status=dict(gen_status),
        pairs_rejected={k: v for k, v in rejected.items() if v},
        qa_pairs=qa_counts["qa_pairs"],
        images_flagged=flagged,
        questions_in_benchmarks=_questions_in_benchmarks(cfg, sdir / "qa.jsonl"),
    )


def _questions_in_benchmarks(cfg: MPAConfig, qa_file: Path) -> int:
    """Pseudo-questions whose normalised text is one of a benchmark's questions (question-level overlap; for
    templated benchmarks such as easy-VQA most are, and that alone is no leak — the images are what the scan
    checks)."""
    if not cfg.contamination.check or not cfg.evaluate.benchmarks:
        return 0
    questions = {contamination.normalize_question(s.question) for _, samples in _benchmarks(cfg) for s in samples}
    return sum(contamination.normalize_question(qa.question) in questions for qa in read_records(qa_file, QARecord))
