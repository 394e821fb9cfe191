"""Versioned prompt templates for the teacher (Pseudo Annotator) and for short answers, plus pure render functions.

Every prompt is a constant with an id such as ``annotate.chartqa@1``; the id goes into stage fingerprints, so a
changed prompt must get a new version (``tests/test_prompts.py`` compares every text with its snapshot,
``tests/snapshots/prompts/<id>.txt``, to enforce this).

Two families of annotate presets:

* ``textvqa``, ``stvqa``, ``chartqa``, ``okvqa``, ``generic`` — ours: ask for ``k`` pairs per image as a JSON list.
* ``*-paper`` — the MPA authors' own prompts, verbatim, asking for one pair per call in ``Question: / Answer:`` lines.

Usage::

    prompt = get_annotate_prompt("chartqa")
    text = render_annotate_prompt(prompt, k=prompt.pairs_per_call or 5)
    question_text = render_answer_prompt("What is the highest value?")
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

OUTPUT_FORMATS = ("json", "qa_lines")


@dataclass(frozen=True)
class AnnotatePrompt:
    """A teacher prompt that asks for question/answer pairs about one image.

    ``template`` may contain ``{k}`` (the number of pairs); it is substituted with ``str.replace``, so JSON braces
    in the text need no escaping. ``pairs_per_call`` is the number of pairs the text itself asks for, or None when
    the count comes from ``k`` (the paper presets ask for exactly one pair per call).
    """

    name: str
    version: int
    template: str
    output_format: str
    pairs_per_call: int | None

    @property
    def id(self) -> str:
        return f"annotate.{self.name}@{self.version}"


# --- Our presets: k pairs per image, JSON out. --------------------------------------------------------------------

_JSON_REPLY = """Reply with only a JSON list of {k} objects and no other text:
[{"question": "...", "answer": "..."}]"""

_SCENE_TEXT_TEMPLATE = (
    """You are writing training data for a visual question answering model that must read text in images.
Look at the image and write {k} question-answer pairs about the text that appears in it (signs, labels, brand names,
numbers, screens, book covers, jerseys, licence plates).

Rules:
- Each question must be answerable only by reading text that is visible in the image.
- The answer is that text exactly as written in the image (same spelling and digits), 1 to 3 words.
- Ask about different pieces of text. Do not repeat a question.
- Skip text that you cannot read with certainty.

"""
    + _JSON_REPLY
)

_CHART_TEMPLATE = (
    """You are writing training data for a chart question answering model.
Look at the chart and write {k} question-answer pairs about it. Mix these kinds of questions:
- lookup: read one value from the chart (a bar, a point, a slice, a table cell);
- comparison: compare values across categories or series (which is larger, the difference between two values);
- trend: how the data changes (the peak year, whether a series rises or falls);
- inference: a short calculation or reasoning over several values (a sum, an average, a ratio).

Rules:
- Every answer must follow from the chart itself.
- Answers are 1 to 3 words: a number, a label that appears in the chart, or Yes/No.
- Write numeric answers as plain numbers, without units, currency or percent signs and without thousands separators
  (write 1250.5, not "$1,250.5" or "1250.5%").
- Do not repeat a question.

"""
    + _JSON_REPLY
)

_KNOWLEDGE_TEMPLATE = (
    """You are writing training data for a visual question answering model that needs outside knowledge.
Look at the image and write {k} question-answer pairs about it.

Rules:
- Each question must be about something shown in the image, but answering it must need common-sense or world knowledge
  that is not visible in the image: what an object is used for or made of, where a food or animal comes from, what a
  sport, breed, style or event is called, facts from history, science, geography or culture.
- Do not ask questions that are answered just by looking, such as colours, counts or positions.
- Answers are 1 to 3 words: the answer most people would give.
- Do not repeat a question.

"""
    + _JSON_REPLY
)

_GENERIC_TEMPLATE = (
    """You are writing training data for a visual question answering model.
Look at the image and write {k} question-answer pairs about it.

Rules:
- Each question must be answerable from the image.
- Vary the questions: objects, attributes, counts, positions, actions, and any text in the image.
- Answers are 1 to 3 words: a name, a number, or Yes/No.
- Do not repeat a question.

"""
    + _JSON_REPLY
)

# --- The paper's presets: verbatim from the authors' release. -------------------------------------------------------
# Source: github.com/vl2g/MPA, scripts/PA/PA.py (commit 2b37d84b0c51ac05f45225a01209a0a224e22724), function
# PseudoAnnotator, the three `text_prompt` f-strings: "[TextVQA Prompt]" (used for both textVQA and stVQA), chartVQA
# and okVQA. They match the three task-specific PA prompts the paper describes (Sec. 3.1). The text is kept exactly,
# typos included ("directly relate", "it's correct answer", curly apostrophes, en dashes); the only change is that the
# 16-space source indentation and the leading/trailing blank lines of the f-strings are removed (textwrap.dedent +
# strip), keeping every line break. The release generates with max_new_tokens=128 and reads the reply with the
# regexes `Question:\s*(.*?)\?` and `Answer:\s*(.*)`, i.e. one pair in "Question: ... / Answer: ..." lines.
# Long lines below are split into adjacent string literals only to respect the 120-column limit.

_PAPER_SCENE_TEXT_TEMPLATE = "\n".join(
    (
        "The objective is to generate a question-answer pair for a Textual Visual Question "
        "Answering (Text-VQA) task. Your",
        "task is to create a contextually relevant question that directly relate to the image's "
        "content, incorporating reasoning or",
        "direct references to the text, and it's correct answer.",
        "",
        "Output:",
        "- Question: A natural language question grounded in the image's content and text.",
        "- Answer: A concise response (single word, phrase, or Yes/No) derived from the text or reasoning based on it.",
    )
)

_PAPER_CHART_TEMPLATE = "\n".join(
    (
        "The objective is to generate a question-answer pair for a Chart Visual Question Answering (ChartVQA) task.",
        "Your task is to create a contextually relevant question that directly relates to the "
        "content of a given chart, incorporating",
        "reasoning based on the visualized data.",
        "",
        "Output Requirements:",
        "- Question: A natural language question grounded in the chart's content, requiring "
        "numerical reasoning, trend analysis,",
        "or data lookup.",
        "- Answer: A concise response (single word, number, phrase, or Yes/No) derived from the chart’s data.",
        "",
        "Guidelines for Question Generation:",
        "1. Direct Lookup Questions – Questions that require extracting specific values from the chart.",
        "2. Comparison Questions – Questions that require comparing values between different categories.",
        "3. Trend & Pattern Recognition – Questions about trends, increases, decreases, or correlations in the data.",
        "4. Inference-Based Questions – Questions that require reasoning beyond direct value lookup.",
        "",
        "Ensure the question is meaningful and the answer is accurate based on the chart data.",
    )
)

_PAPER_KNOWLEDGE_TEMPLATE = "\n".join(
    (
        "The objective is to generate a question-answer pair for a Knowledge-based Visual Question "
        "Answering (K-VQA) task.",
        "Your task is to create a contextually relevant question that directly relates to the "
        "image's content while requiring external",
        "world knowledge to answer correctly, and it's correct answer.",
        "",
        "Output Requirements:",
        "- Question: A natural language question grounded in the image’s content but requiring "
        "reasoning beyond direct perception,",
        "incorporating real-world knowledge.",
        "- Answer: A single-word response based on general world knowledge.",
        "",
        "Guidelines for Question Generation:",
        "1. Object & Scene Understanding – Questions that require identifying objects or actions "
        "in the image and connecting them",
        "to broader knowledge.",
        "2. Commonsense Reasoning – Questions that require logical deductions about the scene.",
        "3. Cultural & Historical Context – Questions related to well-known historical events, "
        "traditions, or cultural references.",
        "4. Scientific & Factual Knowledge – Questions involving basic physics, biology, "
        "geography, or general knowledge.",
        "5. Everyday Life & Social Understanding – Questions about daily activities, professions, or human behaviors.",
        "",
        "Ensure that the generated question is meaningful and requires external knowledge beyond "
        "just the image’s visual content.",
    )
)


def _ours(name: str, template: str) -> AnnotatePrompt:
    return AnnotatePrompt(name=name, version=1, template=template, output_format="json", pairs_per_call=None)


def _paper(name: str, template: str) -> AnnotatePrompt:
    return AnnotatePrompt(name=name, version=1, template=template, output_format="qa_lines", pairs_per_call=1)


ANNOTATE_PRESETS: dict[str, AnnotatePrompt] = {
    p.name: p
    for p in (
        _ours("textvqa", _SCENE_TEXT_TEMPLATE),
        _ours("stvqa", _SCENE_TEXT_TEMPLATE),
        _ours("chartqa", _CHART_TEMPLATE),
        _ours("okvqa", _KNOWLEDGE_TEMPLATE),
        _ours("generic", _GENERIC_TEMPLATE),
        _paper("textvqa-paper", _PAPER_SCENE_TEXT_TEMPLATE),
        _paper("stvqa-paper", _PAPER_SCENE_TEXT_TEMPLATE),
        _paper("chartqa-paper", _PAPER_CHART_TEMPLATE),
        _paper("okvqa-paper", _PAPER_KNOWLEDGE_TEMPLATE),
    )
}


def get_annotate_prompt(preset: str) -> AnnotatePrompt:
    """Look up a shipped annotate preset by name; unknown names raise ValueError listing the valid ones."""
    try:
        return ANNOTATE_PRESETS[preset]
    except KeyError:
        valid = ", ".join(sorted(ANNOTATE_PRESETS))
        raise ValueError(f"unknown annotate prompt preset {preset!r}; valid presets: {valid}") from None


def load_prompt_file(path: Path, output_format: str = "auto") -> AnnotatePrompt:
    """Load a user-written annotate prompt from a text file.

    The prompt is named ``custom`` and versioned by its content: ``version`` is the first 8 hex digits of the
    sha256 of the (stripped) text read as an int, so ``f"{prompt.version:08x}"`` is the short sha and an edited file
    gets a new id. ``output_format="auto"`` picks ``json`` when the text mentions JSON, else ``qa_lines``. A ``{k}``
    in the text is replaced by the number of pairs; without one the count is whatever the text asks for.
    """
    if output_format not in ("auto", *OUTPUT_FORMATS):
        raise ValueError(f"output_format must be 'auto', 'json' or 'qa_lines', got {output_format!r}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt file not found: {path}")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"prompt file is empty: {path}")
    if output_format == "auto":
        output_format = "json" if re.search(r"json", text, re.IGNORECASE) else "qa_lines"
    version = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)
    return AnnotatePrompt(
        name="custom", version=version, template=text, output_format=output_format, pairs_per_call=None
    )


def render_annotate_prompt(prompt: AnnotatePrompt, k: int) -> str:
    """The teacher's text for one image: the template with ``{k}`` filled in.

    A prompt whose text fixes the number of pairs (``pairs_per_call``) only accepts that ``k``: asking a paper
    preset for 5 pairs would silently yield 1, so it is an error instead.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if prompt.pairs_per_call is not None and k != prompt.pairs_per_call:
        raise ValueError(
            f"prompt {prompt.id} asks for exactly {prompt.pairs_per_call} pair(s) per call, got k={k}; "
            f"set k={prompt.pairs_per_call} or use a preset that takes k"
        )
    return prompt.template.replace("{k}", str(k))


# LLaVA-1.5's short-answer suffix. The same prompt (one id) is used when the teacher and the student answer
# pseudo-questions (identify), in the training targets (level) and at evaluation (`mpa.evaluation.prompts` builds its
# short-answer prompt from these two constants), so the student is trained on the prompt it is tested with.
ANSWER_PROMPT_ID = "answer.short@1"
ANSWER_SUFFIX = "Answer the question using a single word or phrase."


def render_answer_prompt(question: str) -> str:
    """The text asking a model to answer ``question`` with a single word or phrase."""
    return f"{question.strip()}\n{ANSWER_SUFFIX}"
