"""Snapshot and behaviour tests for mpa.prompts.

A failing hash below means a prompt's text changed: give it a new version (and id), then update the snapshot.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from mpa.prompts import (
    ANNOTATE_PRESETS,
    ANSWER_PROMPT_ID,
    AnnotatePrompt,
    get_annotate_prompt,
    load_prompt_file,
    render_annotate_prompt,
    render_answer_prompt,
)

# name -> (id, sha256 of the template text)
SNAPSHOTS = {
    "textvqa": ("annotate.textvqa@1", "b47f78c304f929be0421b26c2e04c8c74940b582995503b534451a3caf4829e5"),
    "stvqa": ("annotate.stvqa@1", "b47f78c304f929be0421b26c2e04c8c74940b582995503b534451a3caf4829e5"),
    "chartqa": ("annotate.chartqa@1", "8928b7e4a57b1e13d64ac09954aefd7a385df1ca8d8c9f1056491f86a576bb8b"),
    "okvqa": ("annotate.okvqa@1", "384924bdc9cdafc750335f48ee7efc43b107b115e3dd3519494cc4130b8a95e0"),
    "generic": ("annotate.generic@1", "73f4f740a087e22543a1aa9bb6c7df0aa14935bcaca72aa2b1cc1329dc790062"),
    "textvqa-paper": (
        "annotate.textvqa-paper@1",
        "013aec600fa2cb91886a48ad9a285f2fa6298c5f75927796f3f211e034134984",
    ),
    "stvqa-paper": ("annotate.stvqa-paper@1", "013aec600fa2cb91886a48ad9a285f2fa6298c5f75927796f3f211e034134984"),
    "chartqa-paper": (
        "annotate.chartqa-paper@1",
        "b0804909daf236f7e14f2d9e3fcfc25bc2844073081f1c177e44e6f9498869a1",
    ),
    "okvqa-paper": ("annotate.okvqa-paper@1", "5871a04364be40da8ab1e44a8dc0c8a6b77eb8aa2913b0183dc367c720f65dc5"),
}

OURS = ("textvqa", "stvqa", "chartqa", "okvqa", "generic")
PAPER = ("textvqa-paper", "stvqa-paper", "chartqa-paper", "okvqa-paper")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_preset_names_are_exactly_the_snapshot() -> None:
    assert set(ANNOTATE_PRESETS) == set(SNAPSHOTS)


@pytest.mark.parametrize("name", sorted(SNAPSHOTS))
def test_preset_snapshot(name: str) -> None:
    expected_id, expected_sha = SNAPSHOTS[name]
    prompt = get_annotate_prompt(name)
    assert prompt.name == name
    assert prompt.id == expected_id
    assert _sha(prompt.template) == expected_sha, f"{name} text changed: bump its version and update the snapshot"


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
    for name in SNAPSHOTS:
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
