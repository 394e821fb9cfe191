"""Snapshot and behaviour tests for mpa.prompts and mpa.evaluation.prompts.

Every shipped prompt's text is kept in tests/snapshots/prompts/<prompt id>.txt, e.g. `annotate.chartqa@1.txt`. A
prompt whose text changes must get a new version (its id goes into stage fingerprints), so an existing snapshot is
never rewritten: a changed text fails until the version is bumped. A new id's snapshot is written by
`MPA_UPDATE_SNAPSHOTS=1 pytest tests/test_prompts.py` (which also deletes the snapshots of ids that are gone);
review the new file before committing it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from mpa.evaluation.prompts import EVAL_PROMPTS, render_eval_prompt
from mpa.prompts import (
    ANNOTATE_PRESETS,
    ANSWER_PROMPT_ID,
    AnnotatePrompt,
    get_annotate_prompt,
    load_prompt_file,
    render_annotate_prompt,
    render_answer_prompt,
)

SNAPSHOTS = Path(__file__).parent / "snapshots" / "prompts"
UPDATE = os.environ.get("MPA_UPDATE_SNAPSHOTS") == "1"
HOW_TO_UPDATE = "MPA_UPDATE_SNAPSHOTS=1 pytest tests/test_prompts.py"
# Answering prompts are snapshotted rendered, with a question that shows their case handling (TextVQA capitalizes).
EXAMPLE_QUESTION = "what does the NASA sign say?"

OURS = ("textvqa", "stvqa", "chartqa", "okvqa", "generic")
PAPER = ("textvqa-paper", "stvqa-paper", "chartqa-paper", "okvqa-paper")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prompt_texts() -> dict[str, str]:
    """Every shipped prompt by id: annotate templates as written (with `{k}`), answering prompts rendered."""
    texts = {prompt.id: prompt.template for prompt in ANNOTATE_PRESETS.values()}
    texts[ANSWER_PROMPT_ID] = render_answer_prompt(EXAMPLE_QUESTION)
    texts.update({prompt_id: render_eval_prompt(prompt_id, EXAMPLE_QUESTION) for prompt_id in EVAL_PROMPTS})
    return texts


def _snapshot_path(prompt_id: str) -> Path:
    return SNAPSHOTS / f"{prompt_id}.txt"


@pytest.mark.parametrize("prompt_id", sorted(prompt_texts()))
def test_prompt_snapshot(prompt_id: str) -> None:
    path = _snapshot_path(prompt_id)
    actual = prompt_texts()[prompt_id]
    if not path.exists():
        if UPDATE:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual + "\n", encoding="utf-8")  # one final newline, dropped when read back
            return
        pytest.fail(f"no snapshot of prompt {prompt_id} ({path}): create it with `{HOW_TO_UPDATE}` and review it")
    expected = path.read_text(encoding="utf-8").removesuffix("\n")
    # Never rewritten, even with MPA_UPDATE_SNAPSHOTS: a changed text needs a new version, hence a new file.
    assert actual == expected, f"{prompt_id} text changed: give it a new version, then run `{HOW_TO_UPDATE}`"


def test_every_snapshot_belongs_to_a_shipped_prompt() -> None:
    stale = sorted(p.name for p in SNAPSHOTS.glob("*.txt") if p.stem not in prompt_texts())
    if UPDATE:
        for name in stale:
            (SNAPSHOTS / name).unlink()
        return
    assert not stale, f"snapshots of prompt ids that no longer exist: {stale}; delete them or run `{HOW_TO_UPDATE}`"


def test_prompt_ids_are_unique_across_families() -> None:
    ids = [p.id for p in ANNOTATE_PRESETS.values()] + [*EVAL_PROMPTS]  # EVAL_PROMPTS holds answer.short@1
    assert len(ids) == len(set(ids)) == len(prompt_texts())


def test_preset_names_and_ids() -> None:
    assert set(ANNOTATE_PRESETS) == {*OURS, *PAPER}
    for name, prompt in ANNOTATE_PRESETS.items():
        assert prompt.name == name
        assert prompt.id == f"annotate.{name}@{prompt.version}"
        assert get_annotate_prompt(name) is prompt


@pytest.mark.parametrize("name", OURS)
def test_our_presets_ask_for_k_pairs_in_json(name: str) -> None:
    prompt = get_annotate_prompt(name)
    assert prompt.output_format == "json"
    assert prompt.pairs_per_call is None
    assert "{k}" in prompt.template
    assert '[{"question": "...", "answer": "..."}]' in prompt.template
    assert "1 to 3 words" in prompt.template


@pytest.mark.parametrize("name", PAPER)
def test_paper_presets_ask_for_one_pair_in_lines(name: str) -> None:
    prompt = get_annotate_prompt(name)
    assert prompt.output_format == "qa_lines"
    assert prompt.pairs_per_call == 1
    assert "{k}" not in prompt.template
    assert prompt.template.startswith("The objective is to generate a question-answer pair for a ")
    assert "- Question: A natural language question grounded in the " in prompt.template
    assert prompt.template == prompt.template.strip()


def test_paper_prompts_keep_the_release_text_verbatim() -> None:
    scene = get_annotate_prompt("textvqa-paper").template
    assert get_annotate_prompt("stvqa-paper").template == scene  # the release uses one prompt for both
    assert "directly relate to the image's content, incorporating reasoning or\ndirect references" in scene
    chart = get_annotate_prompt("chartqa-paper").template
    assert "derived from the chart’s data." in chart  # curly apostrophe, as released
    assert "1. Direct Lookup Questions – Questions that require extracting specific values from the chart." in chart
    knowledge = get_annotate_prompt("okvqa-paper").template
    assert "- Answer: A single-word response based on general world knowledge." in knowledge
    assert knowledge.endswith("requires external knowledge beyond just the image’s visual content.")


def test_task_specific_guidance() -> None:
    assert "reading text" in get_annotate_prompt("textvqa").template
    chart = get_annotate_prompt("chartqa").template
    for kind in ("lookup", "comparison", "trend", "inference", "plain numbers"):
        assert kind in chart
    assert "world knowledge" in get_annotate_prompt("okvqa").template


def test_unknown_preset_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown annotate prompt preset 'nope'") as info:
        get_annotate_prompt("nope")
    for name in (*OURS, *PAPER):
        assert name in str(info.value)


def test_prompts_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_annotate_prompt("chartqa").version = 2  # type: ignore[misc]


def test_render_fills_k_and_keeps_json_braces() -> None:
    text = render_annotate_prompt(get_annotate_prompt("chartqa"), k=5)
    assert "write 5 question-answer pairs" in text
    assert "JSON list of 5 objects" in text
    assert "{k}" not in text
    assert text.endswith('[{"question": "...", "answer": "..."}]')


def test_render_paper_prompt_only_for_its_pair_count() -> None:
    prompt = get_annotate_prompt("okvqa-paper")
    assert render_annotate_prompt(prompt, k=1) == prompt.template
    with pytest.raises(ValueError, match="exactly 1 pair"):
        render_annotate_prompt(prompt, k=3)


@pytest.mark.parametrize("k", [0, -1])
def test_render_rejects_non_positive_k(k: int) -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        render_annotate_prompt(get_annotate_prompt("generic"), k=k)


def test_load_prompt_file_json_autodetect(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    text = "Write {k} questions about the image. Reply as a JSON list.\n"
    path.write_text(text, encoding="utf-8")
    prompt = load_prompt_file(path)
    assert prompt.name == "custom"
    assert prompt.output_format == "json"
    assert prompt.pairs_per_call is None
    assert prompt.template == text.strip()
    assert f"{prompt.version:08x}" == _sha(text.strip())[:8]
    assert prompt.id == f"annotate.custom@{prompt.version}"
    assert render_annotate_prompt(prompt, 3) == "Write 3 questions about the image. Reply as a JSON list."


def test_load_prompt_file_qa_lines_and_override(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("Ask one question.\nQuestion: ...\nAnswer: ...", encoding="utf-8")
    assert load_prompt_file(path).output_format == "qa_lines"
    assert load_prompt_file(path, output_format="json").output_format == "json"
    # No {k}: the text decides the count, rendering leaves it unchanged.
    assert render_annotate_prompt(load_prompt_file(path), 4) == "Ask one question.\nQuestion: ...\nAnswer: ..."


def test_load_prompt_file_version_follows_content(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("Ask a question.", encoding="utf-8")
    first = load_prompt_file(path)
    assert load_prompt_file(path) == first
    path.write_text("Ask a harder question.", encoding="utf-8")
    assert load_prompt_file(path).id != first.id


def test_load_prompt_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="prompt file not found"):
        load_prompt_file(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="prompt file not found"):
        load_prompt_file(tmp_path)  # a directory
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\t\n", encoding="utf-8")
    with pytest.raises(ValueError, match="prompt file is empty"):
        load_prompt_file(blank)
    ok = tmp_path / "ok.txt"
    ok.write_text("Ask.", encoding="utf-8")
    with pytest.raises(ValueError, match="output_format"):
        load_prompt_file(ok, output_format="yaml")


def test_answer_prompt_snapshot() -> None:
    assert ANSWER_PROMPT_ID == "answer.short@1"
    assert render_answer_prompt("What is written on the sign?") == (
        "What is written on the sign?\nAnswer the question using a single word or phrase."
    )
    assert render_answer_prompt("  What year?\n") == "What year?\nAnswer the question using a single word or phrase."


def test_annotate_prompt_is_a_plain_dataclass() -> None:
    prompt = AnnotatePrompt(name="x", version=3, template="t", output_format="json", pairs_per_call=None)
    assert prompt.id == "annotate.x@3"
