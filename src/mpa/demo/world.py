"""The demo world on easy-VQA (the `easy-vqa` PyPI package: 64×64 images of one coloured shape, 13 answers).

The 4,000 train images are split once with a fixed seed:
  L  (2,000)  labelled: their QAs train the teacher; the student sees only the natural yes/no QAs of L;
  U  (2,000)  the unlabeled pool MPA annotates — no code reads its labels.
The benchmark is easy-VQA test (1,000 images, 9,673 questions), never trained on.

The teacher also learns to *write* question/answer pairs. easy-VQA's yes/no questions can be answered from their
wording alone to ~0.83 (negated questions are mostly "yes"); `balanced_yes_no` re-draws yes/no questions 50/50
from each L image's shape and colour to push the teacher to look. In our runs tiny teachers did not learn grounded
yes/no in the CPU budget (balanced-only training sat at ~0.54), so the teacher mixes natural (0.3) and balanced
(0.1) yes/no and reaches slightly above the wording prior.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass

COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
SHAPES = ("circle", "rectangle", "triangle")
SPLIT_SEED = 0
N_LABELLED = 2000
WRITE_PROMPT = "Write {k} question-answer pairs about this image."

# easy-VQA's question templates ({c} colour, {s} shape); positive and negated yes/no forms.
YES_NO_POS = ("is there a {c} shape?", "is a {c} shape present?", "does the image contain a {c} shape?",
              "is there a {c} shape in the image?", "is there a {s}?", "is a {s} present?",
              "does the image contain a {s}?", "is there a {s} in the image?")  # fmt: skip
YES_NO_NEG = ("is there not a {c} shape?", "is no {c} shape present?", "does the image not contain a {c} shape?",
              "is there not a {c} shape in the image?", "is there not a {s}?", "is no {s} present?",
              "does the image not contain a {s}?", "is there not a {s} in the image?")  # fmt: skip
COLOR_QS = ("what color is the shape?", "what color is the {s}?", "what is the color of the {s}?",
            "what is the color of the shape?")  # fmt: skip
SHAPE_QS = ("what shape is in the image?", "what shape does the image contain?", "what shape is present?",
            "what is the {c} shape?")  # fmt: skip


@dataclass(frozen=True)
class QA:
    image_id: int
    question: str
    answer: str


def question_type(answer: str) -> str:
    """easy-VQA question types, from the answer: yes/no, shape or color."""
    if answer in ("yes", "no"):
        return "yes/no"
    return "shape" if answer in SHAPES else "color"


def load_split(split: str) -> tuple[list[QA], dict[int, str]]:
    """All QAs of easy-VQA `train` or `test`, and image id → path."""
    from mpa.evaluation.benchmarks.simple import easyvqa_split

    texts, answers, ids, paths = easyvqa_split(split)
    return [QA(i, t, a) for t, a, i in zip(texts, answers, ids, strict=True)], paths


def split_train(ids: list[int]) -> tuple[list[int], list[int]]:
    """(L, U): the labelled part and the unlabeled pool of the train images (fixed seed)."""
    order = sorted(ids)
    random.Random(SPLIT_SEED).shuffle(order)
    return sorted(order[:N_LABELLED]), sorted(order[N_LABELLED:])


def attributes(qas: list[QA]) -> dict[int, dict[str, str]]:
    """Each labelled image's colour and shape, read from its QAs (answers, or yes/no on a named attribute)."""
    out: dict[int, dict[str, str]] = defaultdict(dict)
    for qa in qas:
        if qa.answer in COLORS:
            out[qa.image_id]["color"] = qa.answer
        elif qa.answer in SHAPES:
            out[qa.image_id]["shape"] = qa.answer
        else:
            negated = " not " in f" {qa.question} " or qa.question.startswith("is no ")
            if (qa.answer == "yes") != negated:  # the named attribute is present
                for word in re.findall(r"[a-z]+", qa.question):
                    if word in COLORS:
                        out[qa.image_id]["color"] = word
                    elif word in SHAPES:
                        out[qa.image_id]["shape"] = word
    return dict(out)


def balanced_yes_no(image_id: int, attrs: dict[str, str], rng: random.Random) -> QA:
    """A yes/no question whose answer is 50/50 yes/no whatever its wording: the answer must come from the image."""
    about = rng.choice([k for k in ("color", "shape") if k in attrs])
    negated = rng.random() < 0.5
    present = rng.random() < 0.5
    pool = COLORS if about == "color" else SHAPES
    word = attrs[about] if present else rng.choice([w for w in pool if w != attrs[about]])
    templates = [t for t in (YES_NO_NEG if negated else YES_NO_POS) if ("{c}" in t) == (about == "color")]
    question = rng.choice(templates).format(c=word, s=word)
    return QA(image_id, question, "yes" if present != negated else "no")


def what_question(image_id: int, attrs: dict[str, str], kind: str, rng: random.Random) -> QA | None:
    """A colour or shape question with its answer, from the image's attributes (None if unknown)."""
    if kind not in attrs:
        return None
    templates = [t for t in (COLOR_QS if kind == "color" else SHAPE_QS) if ("{s}" not in t or "shape" in attrs)
                 and ("{c}" not in t or "color" in attrs)]  # fmt: skip
    question = rng.choice(templates).format(c=attrs.get("color", ""), s=attrs.get("shape", ""))
    return QA(image_id, question, attrs[kind])


def write_target(qas: list[QA]) -> str:
    """What the teacher writes for an image: one `Question: ... Answer: ...` line per pair."""
    return "\n".join(f"Question: {qa.question} Answer: {qa.answer}" for qa in qas)


def corpus() -> list[str]:
    """Every template filled with every word, for the tokenizer."""
    from mpa.prompts import render_answer_prompt

    lines = [WRITE_PROMPT.format(k=k) for k in range(1, 6)] + [render_answer_prompt("x"), "Question: Answer:"]
    for template in (*YES_NO_POS, *YES_NO_NEG, *COLOR_QS, *SHAPE_QS):
        for c in COLORS:
            for s in SHAPES:
                lines.append(f"Question: {template.format(c=c, s=s)} Answer: yes no {c} {s}")
    return lines


def true_answer(question: str, attrs: dict[str, str]) -> str | None:
    """The answer an easy-VQA question has for an image of these attributes (None when the question is not one of
    easy-VQA's forms or names what is unknown). Only the demo study reads it, to measure pseudo-label precision."""
    q = question.strip().lower().rstrip("?").strip() + "?"
    words = re.findall(r"[a-z]+", q)
    if q.startswith("what") or q.startswith("which"):
        if "color" in words or "colour" in words:
            return attrs.get("color")
        return attrs.get("shape") if "shape" in words else None
    named = [(w, "color") for w in words if w in COLORS] + [(w, "shape") for w in words if w in SHAPES]
    if len(named) != 1 or named[0][1] not in attrs:
        return None
    word, kind = named[0]
    negated = " not " in f" {q} " or q.startswith("is no ")
    return "yes" if (attrs[kind] == word) != negated else "no"
