"""`mpa publish RUN_DIR --out DIR`: a run's gap set and leveled student as folders the Hugging Face Hub (and
`datasets` / `transformers` / `peft`) load as they are, with cards that say where they came from.

    mpa publish runs/charts --out share/ [--base-model Qwen/Qwen2-VL-2B-Instruct] [--push-to-hub me/charts-mpa]

DIR/dataset/  data/train-*.parquet: the selected set after review, images embedded (`datasets.load_dataset(DIR/
              dataset)`); candidates/train-*.parquet: every candidate with its reason and review decision (config
              `candidates`); README.md: the dataset card — Hub YAML (task categories, size category, configs),
              the funnel, the prompts, teacher and student ids and revisions, matcher, strategy, mpa version,
              the paper's citation; the licence is left to the user (the images' licence is theirs).
DIR/model/    the LoRA adapter (or fully fine-tuned model) at the top, the merged model under merged/ when the run
              saved one; README.md: the model card — base_model, datasets, model-index (this model's scores from
              the evaluate stage; before / teacher in the card's table), hyperparameters, the label-free
              validation curve, intended use and limits.
A multi-round run publishes the student of its final round. `--push-to-hub REPO_ID` uploads the dataset to the
dataset repo REPO_ID and the model to the model repo REPO_ID with `huggingface_hub`, using the token it finds
(HF_TOKEN or `hf auth login`); mpa never writes the token anywhere.
The card fields follow the Hub's card metadata (huggingface_hub `DatasetCardData` / `ModelCardData`); the
citation is the paper's (Penamakuri et al., EMNLP 2025, arXiv 2509.16633).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpa import __version__
from mpa.errors import MPAError, RunError
from mpa.records import CandidateRecord
from mpa.report.md import pct, table
from mpa.review import current_decisions, review_line, review_summary, reviewed_selection
from mpa.rundir import RunDir, atomic_write_json, read_json, read_records

log = logging.getLogger(__name__)
MAX_SHARD_BYTES = 400 * 2**20  # image bytes per Parquet file (the Hub's viewer and `datasets` like < 500 MB)
PAPER_BIBTEX = """@inproceedings{penamakuri-etal-2025-big,
  title     = {When Big Models Train Small Ones: Label-Free Model Parity Alignment for Efficient Visual Question
               Answering using Small {VLM}s},
  author    = {Penamakuri, Abhirama Subramanyam and Singh, Navlika and Arora, Piyush and Mishra, Anand},
  booktitle = {Proceedings of the 2025 Conference on Empirical Methods in Natural Language Processing},
  year      = {2025},
  address   = {Suzhou, China},
  publisher = {Association for Computational Linguistics},
  url       = {https://aclanthology.org/2025.emnlp-main.1613/},
  eprint    = {2509.16633},
  archivePrefix = {arXiv}
}"""
LICENCE_WARNING = (
    "no licence is set: the images are yours (their licence is theirs) and the answers come from the teacher "
    "(its terms may restrict use); add `license:` to the card's YAML before sharing"
)
SIZE_CATEGORIES = [(10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"),
                   (10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"),
                   (10**11, "10B<n<100B"), (10**12, "100B<n<1T")]  # the values DatasetCardData documents  # fmt: skip
COLUMNS = ("qa_id", "image_id", "question", "answer", "answer_type", "teacher_answer", "student_answer")


@dataclass(frozen=True)
class Published:
    dataset: Path
    model: Path | None  # None when the run has not leveled
    rows: int  # the selected set after review
    candidates: int  # 0 when not written


def size_category(n: int) -> str:
    """The Hub's `size_categories` value for n rows."""
    return next((label for bound, label in SIZE_CATEGORIES if n < bound), "n>1T")


def _features(candidates: bool) -> Any:
    import datasets

    fields: dict[str, Any] = {"image": datasets.Image(), **{c: datasets.Value("string") for c in COLUMNS}}
    fields["gap_score"] = datasets.Value("float64")
    fields["review"] = datasets.Value("string")  # accept / reject / None
    if candidates:
        fields["reason"] = datasets.Value("string")
        fields.update({k: datasets.Value("bool") for k in ("selected", "teacher_agrees", "student_correct")})
    return datasets.Features(fields)


def _row(c: CandidateRecord, review: str | None, candidates: bool) -> dict[str, Any]:
    path = Path(c.image_path)
    try:
        image = {"bytes": path.read_bytes(), "path": path.name}
    except OSError as err:
        raise MPAError(f"{path}: cannot read the image of candidate {c.qa_id} ({err.strerror}); restore the file "
                       "and rerun `mpa publish` (nothing was published)") from None  # fmt: skip
    row = {"image": image, "qa_id": c.qa_id, "image_id": c.image_id, "question": c.question,
           "answer": c.pseudo_answer, "answer_type": c.answer_type, "teacher_answer": c.teacher_answer,
           "student_answer": c.student_answer, "gap_score": c.gap_score, "review": review}  # fmt: skip
    if candidates:
        row.update({"reason": c.reason, "selected": c.selected, "teacher_agrees": c.teacher_agrees,
                    "student_correct": c.student_correct})  # fmt: skip
    return row


def _shards(rows: Sequence[CandidateRecord], max_bytes: int) -> list[Sequence[CandidateRecord]]:
    """Consecutive slices whose image files add up to at most `max_bytes` (at least one row each)."""
    out: list[Sequence[CandidateRecord]] = []
    start, size = 0, 0
    for i, c in enumerate(rows):
        n = Path(c.image_path).stat().st_size if Path(c.image_path).exists() else 0
        if i > start and size + n > max_bytes:
            out.append(rows[start:i])
            start, size = i, 0
        size += n
    out.append(rows[start:])
    return [s for s in out if len(s)]


def write_parquet(
    rows: Sequence[CandidateRecord], folder: Path, reviews: dict[str, str], candidates: bool, max_bytes: int
) -> int:
    """`folder/train-0000i-of-0000n.parquet`, images embedded; one shard in memory at a time. Returns rows."""
    import datasets

    features = _features(candidates)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):
        old.unlink()  # a republished set with fewer shards leaves none behind
    shards = _shards(rows, max_bytes) if rows else [rows]
    for i, shard in enumerate(shards):
        table = [_row(c, reviews.get(c.qa_id), candidates) for c in shard]
        ds = datasets.Dataset.from_list(table, features=features)
        ds.to_parquet(str(folder / f"train-{i:05d}-of-{len(shards):05d}.parquet"))
    return len(rows)


def _stage_settings(rd: RunDir, stage: str) -> dict[str, Any]:
    manifest = rd.manifest(stage)
    return manifest["settings"] if manifest else {}


def _model_line(ident: dict[str, Any]) -> str:
    rev = ident.get("revision") or (f"weights {ident['weights']}" if ident.get("weights") else "revision not pinned")
    return f"`{ident.get('model')}` ({rev}; backend {ident.get('backend', 'hf')})"


def _prompt_text(rd: RunDir) -> str | None:
    """The annotation prompt as the teacher saw it (from the run's config); None if it cannot be rebuilt here."""
    from mpa.config import build_config, read_yaml
    from mpa.prompts import render_annotate_prompt
    from mpa.stages.annotate import pairs_per_call, resolve_prompt

    try:
        cfg = build_config(read_yaml(rd.root / "config.yaml"), source="config.yaml")
        prompt = resolve_prompt(cfg)
    except (MPAError, OSError, ValueError):
        return None
    if prompt.id != _stage_settings(rd, "annotate").get("prompt_id"):
        return None  # config.yaml was changed since annotate ran: its prompt is not the one the teacher saw
    return render_annotate_prompt(prompt, pairs_per_call(cfg, prompt))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    return "\n".join(table(header, rows))


def card_text(data: Any, body: list[str]) -> str:
    """A card's text: the YAML metadata (huggingface_hub card data), the body, then the paper's citation."""
    citation = ["## Citation", "", "```bibtex", PAPER_BIBTEX, "```", ""]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join([*body, *citation])


def dataset_card(rd: RunDir, rows: int, candidates: int, repo_id: str | None) -> Any:
    """The dataset card (huggingface_hub `DatasetCard`): YAML metadata + what the set is and how it was made."""
    from huggingface_hub import DatasetCard, DatasetCardData

    ident = rd.require("identify")
    a_set, i_set = _stage_settings(rd, "annotate"), ident["settings"]
    counts = ident["counts"]
    configs: list[dict[str, Any]] = [{"config_name": "default", "default": True,
                                      "data_files": [{"split": "train", "path": "data/train-*"}]}]  # fmt: skip
    if candidates:
        configs.append({"config_name": "candidates", "data_files": [{"split": "train", "path": "candidates/train-*"}]})
    data = DatasetCardData(
        task_categories=["visual-question-answering", "image-text-to-text"],
        size_categories=[size_category(rows)],
        language=["en"],
        pretty_name=f"MPA gap set: {Path(i_set.get('student', {}).get('model', 'student')).name}",
        tags=["mpa", "model-parity-alignment", "synthetic", "distillation", "vqa"],
        configs=configs,
    )
    teachers = [a_set.get("teacher", {}), *i_set.get("teachers", [])]
    funnel = [["images", counts.get("images")], ["teacher generations", counts.get("annotated")],
              ["QA pairs (parsed)", counts.get("parseable")], ["teacher-consistent", counts.get("teacher_consistent")],
              ["student fails", counts.get("student_fails")], ["selected by the strategy", counts.get("selected")],
              ["**published (after review)**", rows]]  # fmt: skip
    review = review_summary(rd.root)
    prompt = _prompt_text(rd)
    load_id = repo_id or "path/to/dataset"
    load = [f'gaps = load_dataset("{load_id}", split="train")  # the selected set, images embedded']
    columns = (
        "Columns: `image`, `question`, `answer` (the teacher's pseudo-answer, the training target), `answer_type`, "
        "`teacher_answer`, `student_answer` (the student before leveling), `gap_score`, `review` (a reviewer's "
        "accept / reject, if any)."
    )
    if candidates:
        load.append(f'candidates = load_dataset("{load_id}", "candidates", split="train")  # every pseudo-QA')
        columns += " `candidates` adds `reason`, `selected`, `teacher_agrees`, `student_correct`."
    roles = [["teacher" if i == 0 else f"teacher {i + 1}", _model_line(t)] for i, t in enumerate(teachers)]
    roles.append(["student", _model_line(i_set.get("student", {}))])
    ident_set = i_set.get("identify", {})
    body = [
        f"# {data.pretty_name}",
        "",
        "Pseudo question/answer pairs on unlabeled images, written by a large vision-language model (the teacher) "
        "and kept where the teacher agrees with its own answer and the student does not — the student's knowledge "
        "gap — by `mpa` (Model Parity Alignment, Penamakuri et al., EMNLP 2025, arXiv 2509.16633). "
        "No human labels were used; answers are the teacher's and can be wrong.",
        "",
        "> **Licence: not set.** The images are the publisher's and their licence is theirs; the answers come "
        "from the teacher, whose terms may restrict use. Add `license:` to the YAML header before sharing.",
        "",
        "## Load",
        "",
        "```python",
        "from datasets import load_dataset",
        *load,
        "```",
        "",
        columns,
        "",
        "## How it was made",
        "",
        _table(["step", "count"], funnel),
        "",
        _table(["role", "model"], roles),
        "",
        f"- annotation prompt: `{a_set.get('prompt_id')}`; answering prompt: `{i_set.get('answer_prompt')}`",
        f"- matcher: `{ident_set.get('matcher')}`; strategy: `{ident_set.get('strategy')}`; "
        f"consensus: `{ident_set.get('consensus')}`",
        f"- review: {review_line(review)}",
        f"- mpa {__version__}; run fingerprint (identify) `{ident['fingerprint']}`",
        "",
        *(["### Annotation prompt", "", "```text", prompt, "```", ""] if prompt else []),
    ]
    return DatasetCard(card_text(data, body))


def final_round(rd: RunDir) -> RunDir:
    """The run directory of the round whose student is the run's result (the run itself for one round)."""
    path = rd.root / "rounds.json"
    if not path.exists():
        return rd
    final = read_json(path)["final_round"]
    return rd if final == 1 else RunDir(rd.root / "rounds" / str(final))


def write_model(rd: RunDir, dest: Path, base_model: str | None, repo_id: str | None) -> Path | None:
    """Copy the leveled student (final round) and write its card; None when the run has not leveled."""
    lrd = final_round(rd)
    manifest = lrd.manifest("level")
    if manifest is None:
        return None
    out = Path(manifest["output"])
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(out, dest)
    if manifest.get("merged"):
        shutil.copytree(manifest["merged"], dest / "merged")
    lora = (dest / "adapter_config.json").exists()
    if lora and base_model:  # others load the adapter from the Hub model it was trained on, not our local path
        config = read_json(dest / "adapter_config.json")
        config["base_model_name_or_path"] = base_model
        atomic_write_json(dest / "adapter_config.json", config)
    model_card(lrd, manifest, lora, base_model, repo_id).save(dest / "README.md")
    return dest


def _eval_results(lrd: RunDir) -> tuple[list[Any], list[list[Any]]]:
    """model-index entries (this model's scores: the student after leveling) and the card's full table."""
    from huggingface_hub import EvalResult

    path = lrd.stage_dir("evaluate") / "summary.json"
    summary = read_json(path) if path.exists() else {}
    results, rows = [], []
    for bench, row in summary.items():
        rows.append([bench, row["metric"], pct(row.get("teacher")), pct(row.get("student_before")),
                     pct(row.get("student_after")), pct(row.get("gap_closed"))])  # fmt: skip
        if row.get("student_after") is not None:
            results.append(EvalResult(task_type="visual-question-answering", task_name="Visual Question Answering",
                                      dataset_type=bench, dataset_name=bench, metric_type=row["metric"],
                                      metric_name=f"{row['metric']} (0-1)",
                                      metric_value=row["student_after"]))  # fmt: skip
    return results, rows


def _val_curve(lrd: RunDir) -> list[list[Any]]:
    metrics = lrd.stage_dir("level") / "metrics.json"
    history = read_json(metrics)["log_history"] if metrics.exists() else []
    return [[h.get("step"), f"{h.get('epoch', 0):.2f}", f"{h['eval_loss']:.4f}"] for h in history if "eval_loss" in h]


def model_card(lrd: RunDir, manifest: dict[str, Any], lora: bool, base_model: str | None, repo_id: str | None) -> Any:
    from huggingface_hub import ModelCard, ModelCardData

    student = manifest["settings"]["student"]
    name = f"{Path(str(student.get('model'))).name}-mpa"
    results, bench_rows = _eval_results(lrd)
    data = ModelCardData(
        model_name=name,
        base_model=base_model,
        base_model_relation="adapter" if lora else "finetune",
        library_name="peft" if lora else "transformers",
        pipeline_tag="image-text-to-text",
        datasets=[repo_id] if repo_id else None,
        tags=["mpa", "model-parity-alignment", "vision-language", "lora" if lora else "full-finetune"],
        eval_results=results or None,
    )
    level = manifest["settings"]["level"]
    skip = () if lora else ("lora_",)  # LoRA settings say nothing about a fully fine-tuned model
    hyper = [[k, f"`{v}`"] for k, v in level.items() if v is not None and not k.startswith(skip)]
    counts = manifest.get("counts", {})
    curve = _val_curve(lrd)
    where = repo_id or "path/to/model"
    loader = ["from transformers import AutoModelForImageTextToText, AutoProcessor"] + (
        ["from peft import PeftModel",
         f'base = AutoModelForImageTextToText.from_pretrained("{base_model or "BASE_MODEL"}")',
         f'model = PeftModel.from_pretrained(base, "{where}")',
         f'processor = AutoProcessor.from_pretrained("{where}")']
        if lora else
        [f'model = AutoModelForImageTextToText.from_pretrained("{where}")',
         f'processor = AutoProcessor.from_pretrained("{where}")']
    )  # fmt: skip
    body = [
        f"# {name}",
        "",
        f"The student `{student.get('model')}` leveled with [Model Parity Alignment]"
        "(https://arxiv.org/abs/2509.16633) by mpa: fine-tuned "
        + (
            "with LoRA (this folder is the adapter"
            + ("; `merged/` holds the merged model)" if manifest.get("merged") else ")")
            if lora
            else "in full"
        )
        + " on the pseudo-QAs where a teacher was right and it was wrong, on unlabeled images, with label-free "
        "guards against forgetting (retention mix, held-out validation).",
        "",
        *(
            [
                "> **base_model is not set**: the student was a local folder. Republish with `--base-model HUB_ID` "
                "(the Hub checkpoint it is a copy of) so the Hub links it to its base"
                + (" and the adapter loads anywhere." if lora else "."),
                "",
            ]
            if not base_model
            else []
        ),
        "## Load",
        "",
        "```python",
        *loader,
        "```",
        "",
        "## Results (the mpa evaluate stage)",
        "",
        "`model-index` holds this model's scores (student after leveling); the student before and the teacher are "
        "the references it was compared with on the same questions:",
        "",
        _table(["benchmark", "metric", "teacher", "student before", "this model", "gap closed"], bench_rows)
        if bench_rows
        else "No benchmark was evaluated in this run.",
        "",
        "## Training",
        "",
        f"Trained on {counts.get('train')} samples: {counts.get('gap')} gap samples (after review), "
        f"{counts.get('retention')} retention samples; {counts.get('val')} held out for validation. "
        f"Label-free validation accuracy (agreement with the teacher's pseudo-answers on held-out "
        f"teacher-consistent QAs): {pct(manifest.get('val_accuracy_before'))} → "
        f"{pct(manifest.get('val_accuracy_after'))}.",
        "",
        _table(["hyperparameter", "value"], hyper),
        "",
        "Label-free validation loss during training:",
        "",
        _table(["step", "epoch", "validation loss"], curve) if curve else "(no validation set)",
        "",
        "## Intended use and limits",
        "",
        "- For the kind of images and questions of its unlabeled pool and annotation prompt; check it on your own "
        "labelled data before relying on it.",
        "- Its training targets are a teacher's answers, not human labels: it inherits the teacher's mistakes "
        "and biases, and the teacher's terms of use may restrict how it can be used.",
        "- Scores above are from the benchmarks listed only; other skills may have changed (the retention mix "
        "guards against forgetting, it does not prove its absence).",
        f"- mpa {__version__}; level fingerprint `{manifest['fingerprint']}`.",
        "",
    ]
    return ModelCard(card_text(data, body))


MARKER = ".mpa_publish.json"


def _claim(out: Path, rd: RunDir) -> None:
    """OUT must be new, empty, or an earlier `mpa publish` output (its dataset/ and model/ are replaced): never a
    folder of the user's whose model/ we would delete."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise MPAError(f"--out {out} is not empty and was not written by `mpa publish`; choose a new or empty folder "
                       "(nothing was written)")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / MARKER, {"run_dir": str(rd.root.resolve()), "mpa_version": __version__})


def publish(
    run_dir: Path | str,
    out: Path | str,
    *,
    candidates: bool = True,
    base_model: str | None = None,
    repo_id: str | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> Published:
    """Write OUT/dataset and OUT/model from a finished run (identify at least); returns what was written."""
    rd, out = RunDir(run_dir), Path(out)
    rd.require("identify")
    student = _stage_settings(rd, "identify").get("student", {}).get("model")
    if base_model is None and student and not Path(student).exists():
        base_model = student  # a hub id, as the run loaded it
    cands = list(read_records(rd.stage_dir("identify") / "candidates.jsonl", CandidateRecord))
    reviews = {q: r.decision for q, r in current_decisions(rd.root).items()}
    selection = reviewed_selection(rd.root)
    missing = next((c for c in (cands if candidates else selection) if not Path(c.image_path).is_file()), None)
    if missing is not None:
        raise MPAError(f"{missing.image_path}: the image of candidate {missing.qa_id} is gone; restore it (or publish "
                       "with --no-candidates if only unselected ones are gone); nothing was written")  # fmt: skip
    _claim(out, rd)
    dataset = out / "dataset"
    rows = write_parquet(selection, dataset / "data", reviews, False, max_shard_bytes)
    n_cands = write_parquet(cands, dataset / "candidates", reviews, True, max_shard_bytes) if candidates else 0
    if not candidates:
        shutil.rmtree(dataset / "candidates", ignore_errors=True)
    dataset_card(rd, rows, n_cands, repo_id).save(dataset / "README.md")
    model = write_model(rd, out / "model", base_model, repo_id)
    log.warning("%s", LICENCE_WARNING)
    return Published(dataset, model, rows, n_cands)


def push(published: Published, repo_id: str, private: bool) -> Iterator[str]:
    """Upload the dataset (dataset repo) and the model (model repo) as REPO_ID; yields each URL. The token is
    huggingface_hub's own (HF_TOKEN or `hf auth login`), never written by mpa."""
    from huggingface_hub import HfApi, get_token

    if get_token() is None:
        raise MPAError(f"--push-to-hub: no Hugging Face token (set HF_TOKEN or run `hf auth login`); the folders are "
                       f"ready in {published.dataset.parent}")  # fmt: skip
    api = HfApi()
    folders = [("dataset", published.dataset)] + ([("model", published.model)] if published.model else [])
    for repo_type, folder in folders:
        try:
            api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
            info = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type=repo_type,
                                     commit_message=f"mpa publish ({__version__})")  # fmt: skip
        except Exception as err:  # offline, DNS, refused, 401/403/5xx: one line, the local folders stay
            first = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
            raise RunError(f"--push-to-hub: could not upload the {repo_type} to the Hugging Face Hub "
                           f"({type(err).__name__}: {first}); the folders are in {folder.parent}: rerun with "
                           "--push-to-hub when online") from None  # fmt: skip
        yield str(getattr(info, "commit_url", None) or f"{repo_type} {repo_id}")


def describe(published: Published) -> str:
    lines = [f"dataset: {published.dataset}  ({published.rows} selected rows"
             + (f", {published.candidates} candidates)" if published.candidates else ")")]  # fmt: skip
    lines.append(f"model: {published.model}" if published.model else "model: none (the run has not leveled)")
    return "\n".join(lines)
