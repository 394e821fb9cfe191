"""Table-driven tests for `mpa.metrics`: expected values are worked out by hand from the reference scripts.

References: mmf `m4c_evaluators.py` (EvalAI processing, TextVQA accuracy), GT-Vision-Lab/VQA `vqaEval.py`
(2021 unanimous-answer rule), the RRC ANLS script (as in lmms-eval), pix2struct `relaxed_correctness`, and
vl2g/MPA `utils.py` (compat scorer). Each row's comment says why the number is what it is.
"""

from __future__ import annotations

import pytest

from mpa.metrics import (
    MATCHERS,
    anls,
    compat_accuracy,
    match_answers,
    normalize_compat,
    normalize_vqa_answer,
    relaxed_accuracy,
    vqa_accuracy,
)

TEN_YES = ["yes"] * 10

# --------------------------------------------------------------------------------------------- normalisers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two", "2"),  # number word → digit
        ("ten", "10"),
        ("eleven", "eleven"),  # the map stops at ten
        ("none", "0"),  # reference quirk (VQA issue #7)
        ("The cat.", "cat"),  # article dropped, final period dropped
        ("A", ""),  # a lone article normalises to nothing
        ("dont", "don't"),  # contraction table
        ("don't", "don't"),
        ("Im", "im"),  # capitalised key "Im" never matches after lower-casing
        ("1,000", "1000"),  # commas deleted first
        ("3.5", "3.5"),  # period followed by a digit is kept
        ("3.5.", "3.5"),
        ("5.", "5"),
        ("v.2", "v.2"),  # the intended look-behind is a no-op: only the following char matters
        ("e.g.", "eg"),
        ("t-shirt", "t shirt"),  # unspaced mark → space
        ("t - shirt", "t shirt"),  # spaced mark → deleted, then whitespace collapses
        ("1/2", "1 2"),
        ("(a)", ""),  # brackets → spaces, then the article goes
        ("yes!", "yes"),
        ("what?", "what"),
        ("man's", "man 's"),  # possessive split off
        ("$5.00", "$5.00"),  # "$" and ":" are not in the punctuation list
        ("3:00", "3:00"),
        ("R&B", "r&b"),
        ("  new\tyork\n", "new york"),
    ],
)
def test_normalize_vqa_answer(text: str, expected: str) -> None:
    assert normalize_vqa_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, World!", "helloworld"),
        ("a_b c", "a_bc"),  # underscore is a word character
        (" 3.5 % ", "35"),
        ("Café", "café"),  # Unicode letters survive
        ("!!!", ""),
        ("", ""),
    ],
)
def test_normalize_compat(text: str, expected: str) -> None:
    assert normalize_compat(text) == expected


# ------------------------------------------------------------------------------------------- VQA accuracy


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("2", ["two"] * 10, 1.0),
        ("two", ["2"] * 10, 1.0),
        ("the cat", ["cat"] * 10, 1.0),
        ("A dog", ["dog"] * 10, 1.0),
        ("dont", ["don't"] * 10, 1.0),
        ("1,000", ["1000"] * 10, 1.0),
        ("3.5", ["35"] * 10, 0.0),  # decimal point kept
        ("3.5.", ["3.5"] * 10, 1.0),  # sentence-final period dropped
        ("e.g.", ["eg"] * 10, 1.0),
        ("YES", TEN_YES, 1.0),
        ("  yes \n", TEN_YES, 1.0),
        ("yes!", TEN_YES, 1.0),
        ("t-shirt", ["t shirt"] * 10, 1.0),
        ("tshirt", ["t-shirt"] * 10, 0.0),
        ("1/2", ["1 2"] * 10, 1.0),
        ("man's", ["mans"] * 10, 0.0),  # "man 's" vs "mans"
        ("Im", ["I'm"] * 10, 0.0),  # "im" vs "i'm"
        ("A", ["the"] * 10, 1.0),  # both normalise to "" (reference behaviour)
        ("maybe", ["yes"] * 5 + ["no"] * 5, 0.0),
        # leave-one-out with ten answers: k matches → (k·min(1,(k-1)/3) + (10-k)·min(1,k/3)) / 10
        ("yes", ["yes"] * 1 + ["no"] * 9, 0.3),  # (1·0 + 9·1/3)/10
        ("yes", ["yes"] * 2 + ["no"] * 8, 0.6),  # (2·1/3 + 8·2/3)/10
        ("yes", ["yes"] * 3 + ["no"] * 7, 0.9),  # (3·2/3 + 7·1)/10
        ("yes", ["yes"] * 4 + ["no"] * 6, 1.0),  # (4·1 + 6·1)/10
        ("no", ["yes"] * 8 + ["no"] * 2, 0.6),  # the worked example in VQA issue #1
        ("Two", ["2"] * 2 + ["two"] * 1 + ["3"] * 7, 0.9),  # "two" and "2" pool to 3 matches
        # fewer than ten answers: leave-one-out over what is there, one answer = exact match
        ("yes", ["yes"], 1.0),
        ("no", ["yes"], 0.0),
        ("yes", ["yes", "yes"], 1 / 3),
        ("yes", ["yes"] * 3, 2 / 3),
        ("yes", ["yes"] * 4, 1.0),
        ("yes", ["yes", "no"], 1 / 6),  # leave out "yes": 0 matches; leave out "no": 1 → (0 + 1/3) / 2
        ("yes", [], 0.0),
    ],
)
def test_vqa_accuracy(prediction: str, answers: list[str], expected: float) -> None:
    assert vqa_accuracy(prediction, answers) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("black", ["black"] * 10, 1.0),
        ("Black", ["black"] * 10, 0.0),  # unanimous → no normalisation at all, case-sensitive
        ("black.", ["black"] * 10, 0.0),
        ("2", ["two"] * 10, 0.0),
        (" black\t", ["black"] * 10, 1.0),  # only newlines/tabs → spaces and strip
        ("2", ["two"] * 9 + ["2"], 1.0),  # not unanimous → "two" → "2" everywhere
        ("Yes", ["yes"] * 3 + ["no"] * 7, 0.9),  # not unanimous → lower-cased
        ("a,b", ["a b"] * 4 + ["c"] * 6, 1.0),  # official processing: unspaced "," → space
        ("none", ["none"] + ["nothing"] * 9, 0.3),  # both sides "0"
        ("yes", ["yes"], 1.0),
        ("Yes", ["yes"], 0.0),  # a single answer is unanimous
    ],
)
def test_vqa_accuracy_2021_unanimous_rule(prediction: str, answers: list[str], expected: float) -> None:
    assert vqa_accuracy(prediction, answers, normalize_when_unanimous=False) == pytest.approx(expected)


def test_vqa_accuracy_modes_differ_where_documented() -> None:
    assert vqa_accuracy("Black", ["black"] * 10) == 1.0
    assert vqa_accuracy("a,b", ["a b"] * 4 + ["c"] * 6) == 0.0  # EvalAI deletes the comma: "ab"


# ---------------------------------------------------------------------------------------------------- ANLS


@pytest.mark.parametrize(
    ("prediction", "answers", "threshold", "expected"),
    [
        ("Paris", ["paris"], 0.5, 1.0),
        ("HELLO", ["hello"], 0.5, 1.0),
        ("pariss", ["paris"], 0.5, 1 - 1 / 6),  # one insertion over length 6
        ("12345", ["12346"], 0.5, 0.8),  # one substitution over length 5
        ("hello worl", ["hello world"], 0.5, 1 - 1 / 11),
        ("abcdef", ["abcdfe"], 0.5, 1 - 2 / 6),  # a transposition costs 2
        ("ab", ["ba"], 0.5, 0.0),  # NL = 2/2
        ("abcd", ["abxy"], 0.5, 0.5),  # NL = 0.5 exactly: kept by the script (the paper would give 0)
        ("ab", ["ac"], 0.5, 0.5),
        ("abcde", ["abxyz"], 0.5, 0.0),  # NL = 0.6
        ("hello", ["hello world"], 0.5, 0.0),  # 1 - 6/11 < 0.5
        ("abc", ["xyz"], 0.5, 0.0),
        ("", ["abc"], 0.5, 0.0),
        ("", [""], 0.5, 1.0),  # both empty: NL defined as 0
        ("   ", [""], 0.5, 1.0),  # normalises to "", distance 0, raw length 3
        ("  Hello   World ", ["hello world"], 0.5, 1.0),
        ("new\tyork", ["new york"], 0.5, 1.0),
        ("pariss   ", ["paris"], 0.5, 1 - 1 / 9),  # denominator uses the raw length 9
        ("ßx", ["x"], 0.5, 1 - 1 / 3),  # len("ßx".upper()) == 3
        ("cat", ["dog", "cats", "cat"], 0.5, 1.0),  # max over answers
        ("cots", ["cat", "cats"], 0.5, 0.75),  # 1 - 2/4 vs 1 - 1/4
        ("ab", ["ac"], 0.6, 0.0),  # 0.5 < 0.6
        ("pariss", ["paris"], 0.9, 0.0),
        ("abc", ["abxyz"], 0.0, 0.4),  # threshold 0 keeps everything: 1 - 3/5
        ("anything", [], 0.5, 0.0),
    ],
)
def test_anls(prediction: str, answers: list[str], threshold: float, expected: float) -> None:
    assert anls(prediction, answers, threshold) == pytest.approx(expected)


# -------------------------------------------------------------------------------------------------- relaxed


@pytest.mark.parametrize(
    ("prediction", "answers", "tolerance", "expected"),
    [
        ("105", ["100"], 0.05, 1.0),  # 5/100 == 0.05, boundary included
        ("95", ["100"], 0.05, 1.0),
        ("105.1", ["100"], 0.05, 0.0),
        ("94.9", ["100"], 0.05, 0.0),
        ("1.05", ["1"], 0.05, 0.0),  # 1.05 - 1.0 = 0.050000000000000044 in floating point
        ("-105", ["-100"], 0.05, 1.0),  # divided by |target|
        ("105", ["-100"], 0.05, 0.0),
        ("110", ["100"], 0.1, 1.0),  # custom tolerance, 10/100 == 0.1
        ("2020", ["2019"], 0.05, 1.0),  # years get 5 % slack too
        ("50%", ["50%"], 0.05, 1.0),
        ("0.5", ["50%"], 0.05, 1.0),  # "50%" parses to 0.5
        ("50", ["50%"], 0.05, 0.0),
        ("12 %", ["0.12"], 0.05, 1.0),  # float("12 ") / 100
        ("5%%", ["0.05"], 0.05, 1.0),  # rstrip removes every trailing "%"
        ("1,000", ["1000"], 0.05, 0.0),  # "1,000" does not parse → string comparison
        ("1,000", ["1,000"], 0.05, 1.0),
        ("1_000", ["1000"], 0.05, 1.0),  # Python float() accepts underscores
        ("1e2", ["100"], 0.05, 1.0),
        (" 100 ", ["100"], 0.05, 1.0),  # float() tolerates surrounding whitespace
        ("0", ["0"], 0.05, 1.0),  # zero target → string comparison
        ("0.0", ["0"], 0.05, 0.0),
        ("0.01", ["0"], 0.05, 0.0),
        ("Yes", ["yes"], 0.05, 1.0),  # case-insensitive
        (" yes", ["yes"], 0.05, 0.0),  # but not stripped
        ("5", ["five"], 0.05, 0.0),
        ("nan", ["nan"], 0.05, 0.0),  # NaN target is truthy; NaN <= tol is False
        ("abc", ["xyz", "ABC"], 0.05, 1.0),  # max over answers
        ("", [""], 0.05, 1.0),
        ("1", [], 0.05, 0.0),
    ],
)
def test_relaxed_accuracy(prediction: str, answers: list[str], tolerance: float, expected: float) -> None:
    assert relaxed_accuracy(prediction, answers, tolerance) == expected


# --------------------------------------------------------------------------------------------------- compat


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("Coca Cola", ["coca-cola"], 1.0),
        ("The answer is Coca-Cola.", ["coca cola"], 1.0),  # substring of the normalised prediction
        ("red", ["dark red"], 0.0),  # the reference must be inside the prediction, not vice versa
        ("YES", ["yes"], 1.0),
        ("new\nyork", ["New York"], 1.0),
        ("1,000", ["1000"], 1.0),
        ("1000", ["1,000"], 1.0),
        ("3.5", ["35"], 1.0),  # decimal point deleted
        ("$5", ["5"], 1.0),
        ("10", ["1"], 1.0),  # lenient substring
        ("not sure", ["no"], 1.0),
        ("two", ["2"], 0.0),  # no number-word mapping
        ("a_b", ["ab"], 0.0),  # "_" is kept
        ("Café", ["cafe"], 0.0),
        ("CAFÉ", ["café"], 1.0),
        ("pepsi", ["coke", "coke", "pepsi"], 0.0),  # most frequent answer is "coke"
        ("pepsi", ["pepsi", "coke", "coke", "pepsi"], 1.0),  # tie → first occurring
        ("pepsi", ["coke", "pepsi", "pepsi", "coke"], 0.0),
        ("coca cola", ["Coca Cola", "coca-cola", "coca cola", "pepsi", "pepsi"], 0.0),  # vote on raw strings
        ("yes", ["Yes", "yes", "no"], 1.0),  # three-way tie → "Yes" → "yes"
        ("yes", ["no", "Yes", "yes"], 0.0),  # three-way tie → "no"
        ("anything", ["!!!"], 0.0),  # empty normalised reference never matches (reference would say 1.0)
        ("", ["a"], 0.0),
        ("a", [], 0.0),
    ],
)
def test_compat_accuracy(prediction: str, answers: list[str], expected: float) -> None:
    assert compat_accuracy(prediction, answers) == expected


# -------------------------------------------------------------------------------------------- match_answers


@pytest.mark.parametrize(
    ("a", "b", "matcher", "expected"),
    [
        ("The Eiffel Tower", "eiffel tower", "compat", True),
        ("eiffel", "Eiffel Tower", "compat", False),  # asymmetric
        ("x", "", "compat", False),  # empty reference
        ("x", "!!", "compat", False),
        ("", "", "compat", False),
        ("Two", "2", "exact", True),
        ("the cat.", "cat", "exact", True),
        ("dog", "dogs", "exact", False),
        ("a", "the", "exact", False),  # both normalise to ""
        ("pariss", "paris", "anls", True),
        ("ab", "ac", "anls", True),  # similarity exactly 0.5
        ("abc", "xyz", "anls", False),
        ("104", "100", "relaxed", True),
        ("106", "100", "relaxed", False),
        ("0.0", "0", "relaxed", False),
        ("Yes", "yes", "relaxed", True),
    ],
)
def test_match_answers(a: str, b: str, matcher: str, expected: bool) -> None:
    assert match_answers(a, b, matcher) is expected


def test_match_answers_parameters() -> None:
    assert match_answers("pariss", "paris", "anls", anls_threshold=0.9) is False
    assert match_answers("110", "100", "relaxed", relaxed_tolerance=0.1) is True
    assert match_answers("111", "100", "relaxed", relaxed_tolerance=0.1) is False


def test_matchers_and_unknown_matcher() -> None:
    assert MATCHERS == ("compat", "exact", "anls", "relaxed")
    with pytest.raises(ValueError, match="unknown matcher"):
        match_answers("a", "a", "fuzzy")
