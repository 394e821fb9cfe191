"""Tests for mpa.parsing: a corpus of messy teacher replies, a no-raise fuzz, short answers and answer types."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from mpa import parsing
from mpa.parsing import REJECT_REASONS, STATUSES, QAPair, answer_type, parse_qa_pairs, parse_short_answer


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    pairs: list[tuple[str, str]]
    status: str = "ok"
    fmt: str = "json"
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (question, answer, reason)


REPEATED = "Question: What is the brand name?\nAnswer: Pepsi\n" * 40 + "Question: What is the brand name?\nAns"

CORPUS = [
    # --- JSON -----------------------------------------------------------------------------------------------------
    Case(
        "json-list",
        '[{"question": "What brand is shown?", "answer": "Pepsi"}, {"question": "What year?", "answer": "1998"}]',
        [("What brand is shown?", "Pepsi"), ("What year?", "1998")],
    ),
    Case(
        "json-single-object", '{"question": "What is the title?", "answer": "Dune"}', [("What is the title?", "Dune")]
    ),
    Case(
        "json-key-variants",
        '[{"Question": "Who wrote it?", "Answer": "Tolkien"}, {"q": "How many pages?", "a": "310"},'
        ' {"QUESTION": "Is it red?", "ANSWER": "no"}]',
        [("Who wrote it?", "Tolkien"), ("How many pages?", "310"), ("Is it red?", "no")],
    ),
    Case(
        "json-fenced-with-prose",
        "Sure! Here are the pairs:\n```json\n"
        '[\n  {"question": "What is written on the sign?", "answer": "STOP"}\n]\n```'
        "\nLet me know if you need more.",
        [("What is written on the sign?", "STOP")],
    ),
    Case(
        "json-prose-no-fence",
        'Here you go: [{"question": "What team is on the jersey?", "answer": "Lakers"}] Hope that helps!',
        [("What team is on the jersey?", "Lakers")],
    ),
    Case(
        "json-trailing-commas",
        '[\n  {"question": "What is the price?", "answer": "4.99",},\n'
        '  {"question": "What store?", "answer": "Aldi"},\n]',
        [("What is the price?", "4.99"), ("What store?", "Aldi")],
    ),
    Case(
        "json-single-quotes",
        "[{'question': \"What's the street name?\", 'answer': 'Main St'}]",
        [("What's the street name?", "Main St")],
    ),
    Case(
        "json-nested-under-key",
        '{"qa_pairs": [{"question": "Which bar is tallest?", "answer": "2019"},'
        ' {"question": "Is the trend rising?", "answer": "Yes"}]}',
        [("Which bar is tallest?", "2019"), ("Is the trend rising?", "Yes")],
    ),
    Case(
        "json-non-string-values",
        '[{"question": "How many bars?", "answer": 7}, {"question": "Is 2020 higher than 2019?", "answer": true},'
        ' {"question": "What is the peak?", "answer": 12.5}]',
        [("How many bars?", "7"), ("Is 2020 higher than 2019?", "yes"), ("What is the peak?", "12.5")],
    ),
    Case(
        "json-answer-list-takes-first",
        '[{"question": "What drink is this?", "answer": ["coffee", "latte"]}]',
        [("What drink is this?", "coffee")],
    ),
    Case(
        "json-numbered-keys",
        '{"Q1": "What is the brand?", "A1": "Nike", "Q2": "What number is on the shirt?", "A2": "23"}',
        [("What is the brand?", "Nike"), ("What number is on the shirt?", "23")],
    ),
    Case(
        "json-answer-cleanup",
        '[{"question": "  What   is the\\n title? ", "answer": " \\"The Hobbit\\". "}]',
        [("What is the title?", "The Hobbit")],
    ),
    Case(
        "json-truncated-list",
        '[{"question": "What brand?", "answer": "Sony"}, {"question": "What model is it?", "answer": "PS',
        [("What brand?", "Sony")],
        rejected=[("What model is it?", "", "empty_answer")],
    ),
    Case(
        "json-truncated-in-question",
        '```json\n[\n  {"question": "What is the name of the',
        [],
        status="unparseable",
        rejected=[("What is the name of the", "", "empty_answer")],
    ),
    Case(
        "json-missing-comma",
        '{"question": "What is the capital shown?" "answer": "Paris"}',
        [("What is the capital shown?", "Paris")],
    ),
    Case(
        "json-objects-separated-by-prose",
        'First: {"question": "What color is the bus?", "answer": "yellow"}\n'
        'Second: {"question": "What route number?", "answer": "42"}',
        [("What color is the bus?", "yellow"), ("What route number?", "42")],
    ),
    Case(
        "json-duplicates-and-too-long",
        '[{"question": "What is the brand?", "answer": "Pepsi"},'
        ' {"question": "what is the BRAND", "answer": "Pepsi Max"},'
        ' {"question": "Why?", "answer": "because the label on the can clearly says so in big letters"},'
        ' {"question": "", "answer": "x"}, {"question": "Where?"}]',
        [("What is the brand?", "Pepsi")],
        rejected=[
            ("what is the BRAND", "Pepsi Max", "duplicate_question"),
            ("Why?", "because the label on the can clearly says so in big letters", "answer_too_long"),
            ("", "x", "empty_question"),
            ("Where?", "", "empty_answer"),
        ],
    ),
    # --- Question:/Answer: lines ------------------------------------------------------------------------------
    Case(
        "lines-one-line",
        "Question: What is the name of the store? Answer: Walmart",
        [("What is the name of the store?", "Walmart")],
        fmt="qa_lines",
    ),
    Case(
        "lines-two-lines-paper-style",
        "- Question: What is the brand name on the bottle?\n- Answer: Coca-Cola.",
        [("What is the brand name on the bottle?", "Coca-Cola")],
        fmt="qa_lines",
    ),
    Case(
        "lines-markdown-bold",
        "**Question:** How many people are in the photo?\n**Answer:** 3\n\n"
        '**Question**: What colour is the car?\n**Answer**: "red"',
        [("How many people are in the photo?", "3"), ("What colour is the car?", "red")],
        fmt="qa_lines",
    ),
    Case(
        "lines-numbered",
        "1. Question: What time is shown?\n   Answer: 10:45\n2. Question: What brand is the clock?\n   Answer: Seiko",
        [("What time is shown?", "10:45"), ("What brand is the clock?", "Seiko")],
        fmt="qa_lines",
    ),
    Case(
        "lines-q-a-short",
        "Q: What is on the plate?\nA: pizza\nQ: Is it sliced?\nA: yes",
        [("What is on the plate?", "pizza"), ("Is it sliced?", "yes")],
        fmt="qa_lines",
    ),
    Case(
        "lines-q1-a1",
        "Q1: What is the speed limit?\nA1: 35\n\nQ2: What street is this?\nA2: *Elm Street*",
        [("What is the speed limit?", "35"), ("What street is this?", "Elm Street")],
        fmt="qa_lines",
    ),
    Case(
        "lines-inline-numbered",
        "1. Q: What animal? A: cat\n2. Q: What is it on? A: sofa",
        [("What animal?", "cat"), ("What is it on?", "sofa")],
        fmt="qa_lines",
    ),
    Case(
        "lines-heading-and-explanation",
        "### Question 1:\nWhat is the title of the book?\n### Answer 1:\nDune\n\nExplanation: the cover says Dune.",
        [("What is the title of the book?", "Dune")],
        fmt="qa_lines",
    ),
    Case(
        "lines-prose-before",
        "Sure! Here is a question-answer pair for the image:\n\nQuestion: What does the sign say?\nAnswer: 'Open'",
        [("What does the sign say?", "Open")],
        fmt="qa_lines",
    ),
    Case(
        "lines-endless-repetition",
        REPEATED,
        [("What is the brand name?", "Pepsi")],
        fmt="qa_lines",
        rejected=[("What is the brand name?", "Pepsi", "duplicate_question")] * 39
        + [("What is the brand name?", "", "empty_answer")],
    ),
    Case(
        "lines-truncated-final-pair",
        "Question: What is the jersey number?\nAnswer: 10\nQuestion: What team is it?\nAnswer:",
        [("What is the jersey number?", "10")],
        fmt="qa_lines",
        rejected=[("What team is it?", "", "empty_answer")],
    ),
    Case(
        "lines-question-only",
        "Question: What is written on the banner?",
        [],
        status="unparseable",
        fmt="qa_lines",
        rejected=[("What is written on the banner?", "", "empty_answer")],
    ),
    Case(
        "lines-answer-too-long",
        "Question: What is happening?\nAnswer: A man is riding a bicycle down a busy street in the rain.",
        [],
        status="unparseable",
        fmt="qa_lines",
        rejected=[
            ("What is happening?", "A man is riding a bicycle down a busy street in the rain", "answer_too_long")
        ],
    ),
    Case(
        "lines-abbreviation-kept",
        "Question: Which country is on the flag?\nAnswer: U.S.",
        [("Which country is on the flag?", "U.S.")],
        fmt="qa_lines",
    ),
    Case(
        "lines-empty-answer-then-numbered-next",
        "1. Question: What is the price?\nAnswer:\n2. Question: What is the product?\nAnswer: Milk",
        [("What is the product?", "Milk")],
        fmt="qa_lines",
        rejected=[("What is the price?", "", "empty_answer")],
    ),
    Case(
        "lines-answer-without-question",
        "Answer: 42",
        [],
        status="unparseable",
        fmt="qa_lines",
        rejected=[("", "42", "empty_question")],
    ),
    Case(
        "lines-in-code-fence",
        "```\nQuestion: What is the temperature?\nAnswer: 72\n```",
        [("What is the temperature?", "72")],
        fmt="qa_lines",
    ),
    Case(
        "lines-wrapped-question",
        "Question: What is the name of the shop\nshown on the awning?\nAnswer: Joe's Diner",
        [("What is the name of the shop shown on the awning?", "Joe's Diner")],
        fmt="qa_lines",
    ),
    Case(
        "lines-values-after-blank-lines",
        "**Question:**\n\nWhat is the player's number?\n\n**Answer:**\n\n7",
        [("What is the player's number?", "7")],
        fmt="qa_lines",
    ),
    # --- No pairs -------------------------------------------------------------------------------------------------
    Case("refusal-sorry", "I'm sorry, but I can't help with that request.", [], status="refusal", fmt="none"),
    Case("refusal-as-an-ai", "As an AI language model, I cannot see images.", [], status="refusal", fmt="none"),
    Case(
        "refusal-unable",
        "Unfortunately the image is too blurry. I am unable to read any text in it.",
        [],
        status="refusal",
        fmt="none",
    ),
    Case("empty", "", [], status="empty", fmt="none"),
    Case("whitespace", "  \n\t \n", [], status="empty", fmt="none"),
    Case(
        "prose-only", "This image shows a dog playing in a park on a sunny day.", [], status="unparseable", fmt="none"
    ),
    Case("json-without-qa", '{"caption": "a dog", "objects": ["dog", "ball"]}', [], status="unparseable", fmt="none"),
    # --- Wrong language: labels we do not know are not guessed at; content in another language is kept --------------
    Case("wrong-language-zh-labels", "问题：图片是什么颜色？\n答案：红色", [], status="unparseable", fmt="none"),
    Case(
        "wrong-language-fr-labels",
        "Question : Quelle est la couleur ?\nRéponse : rouge",
        [],
        status="unparseable",
        fmt="qa_lines",
        rejected=[("Quelle est la couleur ?", "", "empty_answer")],
    ),
    Case(
        "wrong-language-json-content",
        '[{"question": "¿De qué color es?", "answer": "rojo"}]',
        [("¿De qué color es?", "rojo")],
    ),
    Case("repeated-word-no-pairs", "red " * 200, [], status="unparseable", fmt="none"),
    Case(
        "braces-in-lines",
        "Question: What does {x} mean?\nAnswer: unknown",
        [("What does {x} mean?", "unknown")],
        fmt="qa_lines",
    ),
]


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_corpus(case: Case) -> None:
    result = parse_qa_pairs(case.text)
    assert [(p.question, p.answer) for p in result.pairs] == case.pairs
    assert result.status == case.status
    assert result.fmt == case.fmt
    assert [(p.question, p.answer, why) for p, why in result.rejected] == case.rejected


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 30
    assert len({c.id for c in CORPUS}) == len(CORPUS)


def test_several_pairs_when_one_was_asked_keep_the_first() -> None:
    result = parse_qa_pairs("Q: What colour?\nA: red\nQ: What shape?\nA: circle\nQ: Is it big?\nA: yes", max_pairs=1)
    assert result.status == "ok" and result.pairs == (QAPair("What colour?", "red"),)


def test_max_pairs_keeps_first_accepted_and_ignores_the_rest() -> None:
    text = "Q: a?\nA: 1\nQ: a?\nA: 1\nQ: b?\nA: 2\nQ: c?\nA: 3"
    result = parse_qa_pairs(text, max_pairs=2)
    assert result.pairs == (QAPair("a?", "1"), QAPair("b?", "2"))
    assert result.rejected == ((QAPair("a?", "1"), "duplicate_question"),)  # seen before the 2nd accept
    assert parse_qa_pairs(text, max_pairs=None).pairs[-1] == QAPair("c?", "3")


def test_max_answer_words() -> None:
    text = '[{"question": "Where?", "answer": "New York City"}]'
    assert parse_qa_pairs(text, max_answer_words=3).status == "ok"
    result = parse_qa_pairs(text, max_answer_words=2)
    assert result.pairs == ()
    assert result.rejected == ((QAPair("Where?", "New York City"), "answer_too_long"),)


def test_json_is_preferred_over_lines() -> None:
    text = 'Question: ignored?\nAnswer: no\n[{"question": "Used?", "answer": "yes"}]'
    result = parse_qa_pairs(text)
    assert result.fmt == "json"
    assert result.pairs == (QAPair("Used?", "yes"),)


def test_non_string_input_does_not_raise() -> None:
    assert parse_qa_pairs(None).status == "empty"  # type: ignore[arg-type]
    assert parse_qa_pairs(123).status == "unparseable"  # type: ignore[arg-type]
    assert parse_short_answer(None) == ""  # type: ignore[arg-type]
    assert answer_type(None) == "other"  # type: ignore[arg-type]


# --- Fuzz: arbitrary strings never raise ----------------------------------------------------------------------------

FRAGMENTS = [
    "{", "}", "[", "]", '"', "'", ",", ":", "：", "\n", "\n\n", " ", "\t", "\\", "`", "```", "```json\n", "**", "__",
    '"question"', '"answer"', "'q'", "'a'", '"Question": ', '"answer": "', "Question:", "Answer:", "Q:", "A:", "Q1:",
    "A1:", "**Question:**", "- ", "1. ", "2) ", "### ", "?", ".", "...", "U.S.", "Pepsi", "42", "-3.5", "1,000",
    "yes", "no", "I'm sorry", "As an AI", "I cannot", "The answer is", "null", "true", "None", "😀", "🚀", "é", "中文",
    "\u200b", "\x00", "\ufeff", "“", "”", "’", "–", "{k}", "((((", "[[[[", "{{{{",
]  # fmt: skip


def _fuzz_strings(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        if rng.random() < 0.2:  # raw random code points, surrogates excluded
            chars = [chr(rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0xA0, 0xD7FF)])) for _ in range(40)]
            out.append("".join(chars))
        else:
            out.append("".join(rng.choice(FRAGMENTS) for _ in range(rng.randrange(0, 30))))
    out.append("[" * 5000 + "]" * 10)  # deep nesting
    out.append("{" * 3000)
    out.append("Question: " * 2000)
    return out


def _check_invariants(result: parsing.ParseResult, max_answer_words: int = 8) -> None:
    assert result.status in STATUSES
    assert result.fmt in ("json", "qa_lines", "none")
    assert (result.status == "ok") == bool(result.pairs)
    keys = [" ".join(p.question.lower().split()) for p in result.pairs]
    assert len(set(keys)) == len(keys)
    for pair in result.pairs:
        assert pair.question and pair.answer
        assert len(pair.answer.split()) <= max_answer_words
    for pair, why in result.rejected:
        assert isinstance(pair, QAPair)
        assert why in REJECT_REASONS


def test_fuzz_parse_qa_pairs_never_raises() -> None:
    for text in _fuzz_strings(seed=1234, count=3000):
        _check_invariants(parse_qa_pairs(text))
        # The internal parser too, so the public function's last-resort guard cannot hide a bug.
        _check_invariants(parsing._parse(text, None, 8))


def test_fuzz_short_answer_and_answer_type_never_raise() -> None:
    for text in _fuzz_strings(seed=99, count=2000):
        answer = parse_short_answer(text)
        assert isinstance(answer, str)
        assert "\n" not in answer
        assert answer_type(answer) in ("yes/no", "number", "other")
        assert answer_type(text) in ("yes/no", "number", "other")


# --- parse_short_answer / answer_type --------------------------------------------------------------------------------

SHORT_ANSWERS = [
    ("Pepsi", "Pepsi"),
    ("Pepsi.", "Pepsi"),
    ("  Coca-Cola  \n", "Coca-Cola"),
    ('The answer is "Pepsi".', "Pepsi"),
    ("The answer is: 42", "42"),
    ("Answer: Yes", "Yes"),
    ("**Answer:** 12.5", "12.5"),
    ("Answer:\nStop", "Stop"),
    ("**Nike**", "Nike"),
    ("`coca cola`", "coca cola"),
    ("'Main St'", "Main St"),
    ("“Dune”", "Dune"),
    ("\n\nYes, it is.\nThe sign says so.", "Yes, it is"),
    ("U.S.", "U.S."),
    ("Washington D.C.", "Washington D.C."),
    ("3.14", "3.14"),
    ("A: red", "red"),
    ("Final answer: blue", "blue"),
    ("answering machine", "answering machine"),
    ("", ""),
    ("   \n  ", ""),
    ("I'm sorry, I cannot determine that from the image.", "I'm sorry, I cannot determine that from the image"),
    ("红色", "红色"),
    ("red\nred\nred\nred\nred\nred", "red"),
    ('""', ""),
]


@pytest.mark.parametrize(("text", "expected"), SHORT_ANSWERS)
def test_parse_short_answer(text: str, expected: str) -> None:
    assert parse_short_answer(text) == expected


ANSWER_TYPES = [
    ("yes", "yes/no"),
    ("No", "yes/no"),
    ("yes.", "yes/no"),
    (" YES ", "yes/no"),
    ("yes sir", "other"),
    ("3", "number"),
    ("-2", "number"),
    ("3.5", "number"),
    (".5", "number"),
    ("1,000", "number"),
    ("1,234,567.89", "number"),
    ("twelve", "number"),
    ("Twenty", "number"),
    ("one", "number"),
    ("21st", "other"),
    ("twenty one", "other"),
    ("1,00", "other"),
    ("10%", "other"),
    ("Pepsi", "other"),
    ("", "other"),
]


@pytest.mark.parametrize(("answer", "expected"), ANSWER_TYPES)
def test_answer_type(answer: str, expected: str) -> None:
    assert answer_type(answer) == expected


def test_reasoning_blocks_are_skipped() -> None:
    from mpa.parsing import parse_qa_pairs, parse_short_answer

    assert parse_short_answer("<think>\nThe image is red.\n</think>\n\nRed.") == "Red"
    assert parse_short_answer("\n</think>\n\nred") == "red"  # the generation prompt opened the block
    pairs = parse_qa_pairs("</think>\nQuestion: What colour is it? Answer: red").pairs
    assert [(p.question, p.answer) for p in pairs] == [("What colour is it?", "red")]
