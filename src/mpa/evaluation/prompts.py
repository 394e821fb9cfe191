"""Versioned answering prompts for evaluation: lmms-eval's conventional post-prompts, one id per benchmark.

    from mpa.evaluation.prompts import render_eval_prompt
    text = render_eval_prompt("eval.chartqa@1", "Which year has the highest value?")

A prompt is `{question}{post_prompt}` exactly as lmms-eval builds it (`f"{pre_prompt}{question}{post_prompt}"`,
empty pre-prompt, no stripping). Changing a text means a new version id: ids go into run fingerprints.
Sources (EvolvingLMMs-Lab/lmms-eval, `default` entry of the task's `lmms_eval_specific_kwargs`):

- TextVQA: `lmms_eval/tasks/textvqa/_default_template_textvqa_yaml`; `textvqa/utils.py::textvqa_doc_to_text` also
  applies `question.capitalize()` (first letter upper, the rest lower-cased), which we reproduce.
- ST-VQA: `lmms_eval/tasks/stvqa/stvqa.yaml` (question verbatim, the short-answer text).
- ChartQA: `lmms_eval/tasks/chartqa/chartqa.yaml`: "with a single word." (older revisions of the file had
  "using a single word or phrase."; the current one, quoted by several downstream ports, is the single-word text).
- OK-VQA: `lmms_eval/tasks/ok_vqa/_default_template_vqa_yaml`: the short-answer line *preceded by* a VizWiz-style
  "respond with 'Unanswerable'" line, kept verbatim for comparability (use `answer.short@1` to drop it).
- easy-VQA, generic JSONL: the short-answer text (LLaVA-1.5's, also lmms-eval's GQA/MME/TextVQA default).
- OCR probe: ours (lmms-eval has no plain transcription task with this shape).

The short-answer prompt is `mpa.prompts`' answer prompt, `answer.short@1`, the one the student is trained on
(identify, level): one text, one id. Here the question goes in verbatim, as lmms-eval does; `render_answer_prompt`
strips it first (the two agree on every question without leading or trailing whitespace). Evaluations recorded
before the two shared an id name it `eval.short_answer@1`: `LEGACY_IDS` maps that to `answer.short@1`, so they
still render and resume.

`eval.mpa_paper@1` is the prompt of the MPA authors' evaluation script (vl2g/MPA `scripts/utils/evaluate.py`):
`question + "Answer the following question in a single word or phrase."`, concatenated without a separator.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpa.prompts import ANSWER_PROMPT_ID, ANSWER_SUFFIX

__all__ = [
    "ANSWER_PROMPT_ID",
    "CHARTQA",
    "EVAL_PROMPTS",
    "LEGACY_IDS",
    "MPA_PAPER",
    "OCR",
    "OCR_QUESTION",
    "OKVQA",
    "TEXTVQA",
    "EvalPrompt",
    "canonical_prompt_id",
    "render_eval_prompt",
]


@dataclass(frozen=True)
class EvalPrompt:
    """An answering prompt: the question (optionally `str.capitalize()`d) followed by `post_prompt`."""

    id: str
    post_prompt: str
    capitalize_question: bool = False


TEXTVQA = "eval.textvqa@1"
CHARTQA = "eval.chartqa@1"
OKVQA = "eval.okvqa@1"
OCR = "eval.ocr@1"
MPA_PAPER = "eval.mpa_paper@1"

# Ids recorded by earlier versions (evaluate settings, metrics.json) → the prompt id with the same text today.
LEGACY_IDS: dict[str, str] = {"eval.short_answer@1": ANSWER_PROMPT_ID}

# The fixed question of the OCR probe (the sample's `question`); `eval.ocr@1` adds the output instruction.
OCR_QUESTION = "What is the text in the image?"

_SHORT = "\n" + ANSWER_SUFFIX

EVAL_PROMPTS: dict[str, EvalPrompt] = {
    p.id: p
    for p in (
        EvalPrompt(ANSWER_PROMPT_ID, _SHORT),
        EvalPrompt(TEXTVQA, _SHORT, capitalize_question=True),
        EvalPrompt(CHARTQA, "\nAnswer the question with a single word."),
        EvalPrompt(OKVQA, "\nWhen the provided information is insufficient, respond with 'Unanswerable'." + _SHORT),
        EvalPrompt(OCR, "\nReply with the text only, exactly as written."),
        EvalPrompt(MPA_PAPER, "Answer the following question in a single word or phrase."),
    )
}


def canonical_prompt_id(prompt_id: str) -> str:
    """Today's id of a prompt id as recorded on disk (`LEGACY_IDS`), so an earlier evaluation still matches."""
    return LEGACY_IDS.get(prompt_id, prompt_id)


def render_eval_prompt(prompt_id: str, question: str) -> str:
    """The text asking a model to answer `question` under prompt `prompt_id` (a key of `EVAL_PROMPTS`)."""
    prompt = EVAL_PROMPTS.get(canonical_prompt_id(prompt_id))
    if prompt is None:
        raise ValueError(f"unknown eval prompt {prompt_id!r}; expected one of {', '.join(EVAL_PROMPTS)}")
    text = question.capitalize() if prompt.capitalize_question else question
    return f"{text}{prompt.post_prompt}"
