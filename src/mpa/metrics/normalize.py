"""Answer normalisers: the VQA / EvalAI answer processing and the MPA paper's "compat" normalisation.

The tables (contractions, number words, articles, punctuation) are the ones shipped with the official VQA
evaluation script (GT-Vision-Lab/VQA `vqaEval.py`) and repeated verbatim in the EvalAI answer processor of
facebookresearch/mmf (`mmf/utils/m4c_evaluators.py::EvalAIAnswerProcessor`, also used by lmms-eval). The code
below is our own; where it reproduces a quirk of those scripts the docstring says so, because published numbers
were produced with the quirks in place.

Pure functions, no I/O.
"""

from __future__ import annotations

import re

__all__ = [
    "ARTICLES",
    "CONTRACTIONS",
    "NUMBER_MAP",
    "PUNCTUATION",
    "normalize_compat",
    "normalize_vqa_answer",
    "process_digit_article",
    "process_punctuation",
]

# Missing-apostrophe forms → canonical contraction. Quirks kept on purpose: the keys "Id've", "I'dve", "Im" and
# "Ive" are capitalised and can never match (the text is lower-cased first), and "somebody'd" maps to
# "somebodyd" (the reverse direction of every other entry).
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip

# Whole-word number words → digits. "none" → "0" is a known reference quirk (GT-Vision-Lab/VQA issue #7).
NUMBER_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# Order matters only for readability: each mark is handled independently against the *input* text.
# Note what is absent: "'", ":", ".", "%", "$", "&", "#", "*" are not in the reference list.
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip

# A comma between two digits ("1,000") switches *every* mark to deletion instead of replacement by a space.
_DIGIT_COMMA = re.compile(r"\d,\d")
# The reference pattern is "(?!<=\d)(\.)(?!\d)": the intended look-behind is written as a look-ahead for the
# two characters "<=" and so never applies. Net effect: a period is deleted unless a digit follows it.
_PERIOD = re.compile(r"\.(?!\d)")
# The reference calls `pattern.sub("", text, re.UNICODE)`, passing re.UNICODE (== 32) as the *count*.
_PERIOD_MAX_REPLACEMENTS = 32

_WHITESPACE = re.compile(r"\s+")
_NON_WORD = re.compile(r"\W+")


def process_punctuation(text: str) -> str:
    """Apply `processPunctuation` of the official VQA script (GT-Vision-Lab/VQA `vqaEval.py`).

    For each mark in `PUNCTUATION`: delete it if the *original* text has it next to a space, or if the original
    text contains a digit-comma-digit sequence anywhere; otherwise replace it by a space ("t-shirt" → "t shirt",
    "1/2" → "1 2", "1,000" → "1000"). Then delete every period not followed by a digit ("5." → "5", "3.5" kept,
    "e.g." → "eg"), at most 32 of them (reference quirk, see `_PERIOD_MAX_REPLACEMENTS`).
    """
    delete_all = _DIGIT_COMMA.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        spaced = (mark + " ") in text or (" " + mark) in text
        out = out.replace(mark, "" if (delete_all or spaced) else " ")
    return _PERIOD.sub("", out, count=_PERIOD_MAX_REPLACEMENTS)


def process_digit_article(text: str) -> str:
    """Apply `processDigitArticle` of the official VQA script: lower-case, split on whitespace, map number words
    to digits, drop articles, then expand missing-apostrophe contractions ("dont" → "don't"); join with spaces.

    Number mapping happens before article removal and contractions after it, as in the reference.
    """
    words = [NUMBER_MAP.get(word, word) for word in text.lower().split()]
    kept = [CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES]
    return " ".join(kept)


def normalize_vqa_answer(text: str) -> str:
    """Normalise an answer the way EvalAI / the TextVQA evaluator does (mmf `EvalAIAnswerProcessor`).

    Steps: lower-case; delete "," and "?"; split a possessive "'s" off its word ("man's" → "man 's"); turn
    newlines and tabs into spaces and strip; then `process_punctuation` and `process_digit_article`.
    Examples: "Two" → "2", "The cat." → "cat", "1,000" → "1000", "dont" → "don't", "A" → "" (an article alone
    normalises to the empty string, as in the reference).
    """
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def normalize_compat(text: str) -> str:
    """Normalise as the MPA paper's released scorer does (vl2g/MPA `scripts/utils/utils.py::preprocess`).

    Lower-case, then delete all whitespace and all non-word characters (regex `\\s` and `\\W`, Unicode-aware).
    The underscore is a word character and survives ("a_b" stays "a_b"); so do accented letters.
    """
    return _NON_WORD.sub("", _WHITESPACE.sub("", text.lower()))
