"""Per-question VQA metrics (VQA accuracy, ANLS, relaxed accuracy, compat accuracy) and pairwise answer matchers.

Each metric scores one prediction against the ground-truth answers of one question and returns a float in
[0, 1]; a benchmark score is the mean over questions. Each follows a named reference implementation, quirks
included (documented per function), so that our numbers are comparable with published ones. All metrics return
0.0 for an empty list of answers. `match_answers` turns them into yes/no decisions for the Parity Identifier.

Pure functions, no torch, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from mpa.metrics.normalize import normalize_compat, normalize_vqa_answer, process_digit_article, process_punctuation

__all__ = ["MATCHERS", "anls", "compat_accuracy", "match_answers", "relaxed_accuracy", "vqa_accuracy"]

MATCHERS: tuple[str, ...] = ("compat", "exact", "anls", "relaxed")


def _leave_one_out(prediction: str, answers: Sequence[str]) -> float:
    """Mean over i of min(1, #{j != i : answers[j] == prediction} / 3); a single answer is an exact match."""
    if len(answers) == 1:
        return 1.0 if answers[0] == prediction else 0.0
    matches = sum(answer == prediction for answer in answers)
    # Leaving out a matching answer leaves matches - 1 matches among the others; leaving out another leaves all.
    total = sum(min(1.0, (matches - (answer == prediction)) / 3) for answer in answers)
    return total / len(answers)


def _strip_newlines(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_accuracy(prediction: str, answers: Sequence[str], *, normalize_when_unanimous: bool = True) -> float:
    """VQA accuracy (TextVQA, OK-VQA, VQAv2): min(1, #humans that said it / 3), averaged over leave-one-out sets.

    Default (`normalize_when_unanimous=True`): the TextVQA evaluator of facebookresearch/mmf
    (`TextVQAAccuracyEvaluator`, also lmms-eval's TextVQA task): the prediction and every answer go through
    `normalize_vqa_answer` (EvalAI processing), then for each answer i we count the *other* answers equal to the
    prediction, take min(1, count / 3), and average over i. With ten answers, k matches score
    0.3, 0.6, 0.9, 1.0 for k = 1, 2, 3, >= 4.

    `normalize_when_unanimous=False`: the 2021 GT-Vision-Lab/VQA `vqaEval.py` (quoted in GT-Vision-Lab/VQA
    issue #14; lmms-eval's VQAv2 task before its PR #794). Prediction and answers only get newlines/tabs turned
    into spaces and are stripped. If the answers are then not all identical, both sides go through the official
    `process_punctuation` + `process_digit_article` (no EvalAI pre-step, so "a,b" becomes "a b", not "ab").
    If they are all identical, *nothing* else is normalised, so the comparison is case- and punctuation-
    sensitive: answers ["black"] * 10 give "black" 1.0 but "Black" or "black." 0.0. (The rationale given by the
    authors: unanimous answers are often OCR-like and should be matched verbatim.)

    Fewer than ten answers (our choice, the references assume ten): the leave-one-out average runs over the
    answers that are there, so two identical answers cap the score at 1/3 and three at 2/3; a single answer is
    scored as an exact match (1.0 or 0.0) because leaving it out would leave nothing. No answers → 0.0.
    """
    if not answers:
        return 0.0
    if normalize_when_unanimous:
        return _leave_one_out(normalize_vqa_answer(prediction), [normalize_vqa_answer(a) for a in answers])
    pred = _strip_newlines(prediction)
    gts = [_strip_newlines(a) for a in answers]
    if len(set(gts)) > 1:
        pred = process_digit_article(process_punctuation(pred))
        gts = [process_digit_article(process_punctuation(a)) for a in gts]
    return _leave_one_out(pred, gts)


def _levenshtein(a: str, b: str) -> int:
    """Edit distance with unit-cost insertions, deletions and substitutions (two-row dynamic programme)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def _collapse(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """Average Normalised Levenshtein Similarity for one question (ST-VQA; also DocVQA / InfographicVQA).

    Follows the RRC (rrc.cvc.uab.es) evaluation script in the form copied by lmms-eval (`api/metrics.py::anls`)
    and VLMEvalKit: both strings are stripped, lower-cased and their whitespace runs
    collapsed to one space; NL = levenshtein(answer, prediction) / max(len(raw answer), len(raw prediction)), or
    0 when both raw strings are empty; the score is 1 - min NL over the answers, and becomes 0 when it is
    *below* `threshold`. Quirks kept from the script:

    - The boundary: a similarity of exactly `threshold` is kept (NL = 0.5 scores 0.5). The ST-VQA paper's
      equation (Biten et al., 2019, eq. 1) zeroes NL >= tau, i.e. would give 0.0 there. The script compares the
      *similarity* with the threshold, so with threshold t the cut is at NL = 1 - t, not NL = t.
    - The denominator uses the lengths of the *raw* strings, upper-cased (`len(s.upper())`), not of the
      normalised ones: "pariss   " vs "paris" is 1 - 1/9, not 1 - 1/6; "ßx" counts as 3 characters ("SSX").
    - A whitespace-only prediction against an empty answer scores 1.0 (distance 0 after normalisation).

    (mmf's `STVQAANLSEvaluator` keeps the same boundary but only lower-cases and strips, with normalised lengths.)
    """
    if not answers:
        return 0.0
    pred = _collapse(prediction)
    distances = []
    for answer in answers:
        length = max(len(answer.upper()), len(prediction.upper()))
        distances.append(0.0 if length == 0 else _levenshtein(_collapse(answer), pred) / length)
    similarity = 1.0 - min(distances)
    return 0.0 if similarity < threshold else similarity


def _to_float(text: str) -> float | None:
    """Parse like pix2struct: Python float(); a trailing "%" (all trailing "%"s) divides by 100; else None."""
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def _relaxed_correct(prediction: str, target: str, tolerance: float) -> bool:
    pred_value = _to_float(prediction)
    target_value = _to_float(target)
    # `target_value` is tested for truthiness, as in the reference: a zero target falls through to strings.
    if pred_value is not None and target_value:
        return abs(pred_value - target_value) / abs(target_value) <= tolerance
    return prediction.lower() == target.lower()


def relaxed_accuracy(prediction: str, answers: Sequence[str], tolerance: float = 0.05) -> float:
    """ChartQA relaxed accuracy: 1.0 if the prediction is relaxed-correct for any answer, else 0.0.

    Follows google-research/pix2struct `metrics.py::relaxed_correctness` (max over targets as in its
    `aggregate_metrics`). Both strings are parsed with Python's `float()`; a trailing "%" is stripped (all of
    them) and divides by 100. If both parse and the target is non-zero: correct iff
    |pred - target| / |target| <= tolerance. Otherwise: case-insensitive string equality, *without* stripping.
    Quirks kept from the reference:

    - Zero target: `0.0` is falsy, so "0" vs "0" is correct but "0.0" or "0.00" vs "0" is not.
    - Years and other large numbers get 5 % slack too: "2020" vs "2019" is correct.
    - "1,000" does not parse (falls back to strings), while " 100 ", "1e2" and "1_000" do (Python `float()`).
    - "50%" parses to 0.5, so "0.5" is correct for target "50%" but "50" is not.
    - The boundary is computed in floating point: "105" vs "100" is correct (5/100 == 0.05), "1.05" vs "1" is
      not (1.05 - 1.0 = 0.050000000000000044).
    - "nan" never equals anything, even "nan": the target parses to NaN (truthy) and NaN <= tol is False.
    """
    return 1.0 if any(_relaxed_correct(prediction, answer, tolerance) for answer in answers) else 0.0


def compat_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The MPA paper's released scorer (vl2g/MPA `scripts/utils/utils.py::calculate_vqa_accuracy`).

    The reference answer is the most frequent *raw* answer string (`Counter(answers).most_common(1)`, as in the
    repository's data loaders; ties go to the answer seen first), so the vote is case- and punctuation-
    sensitive: ["Coca Cola", "coca-cola", "pepsi", "pepsi"] picks "pepsi". Both sides then go through
    `normalize_compat`, and the score is 1.0 if the normalised reference is a substring of the normalised
    prediction. Substring matching is lenient by design ("not sure" contains "no", "10" contains "1", "3.5"
    matches "35").

    Deviation from the reference: an answer that normalises to the empty string scores 0.0 here, whereas the
    reference's `"" in prediction` would count it correct for any prediction. No answers → 0.0.
    """
    if not answers:
        return 0.0
    reference = normalize_compat(Counter(answers).most_common(1)[0][0])
    return 1.0 if reference and reference in normalize_compat(prediction) else 0.0


def match_answers(
    a: str, b: str, matcher: str, *, anls_threshold: float = 0.5, relaxed_tolerance: float = 0.05
) -> bool:
    """Decide whether model answer `a` agrees with reference answer `b` (used by the Parity Identifier).

    - "compat": `normalize_compat(b)` is a non-empty substring of `normalize_compat(a)`: the rule of vl2g/MPA
      `PI.py`. Asymmetric: a long model answer containing the reference matches, not the other way round
      ("the eiffel tower" matches "Eiffel Tower", "eiffel" does not); an empty reference never matches.
    - "exact": `normalize_vqa_answer(a) == normalize_vqa_answer(b)`, both non-empty (so "a" vs "the", both
      articles, does not match).
    - "anls": `anls(a, [b], anls_threshold) >= anls_threshold`.
    - "relaxed": `relaxed_accuracy(a, [b], relaxed_tolerance) == 1.0` (`b` is the target).

    Raises ValueError for a matcher not in `MATCHERS`.
    """
    if matcher == "compat":
        reference = normalize_compat(b)
        return bool(reference) and reference in normalize_compat(a)
    if matcher == "exact":
        norm_a, norm_b = normalize_vqa_answer(a), normalize_vqa_answer(b)
        return bool(norm_a) and norm_a == norm_b
    if matcher == "anls":
        return anls(a, [b], anls_threshold) >= anls_threshold
    if matcher == "relaxed":
        return relaxed_accuracy(a, [b], relaxed_tolerance) == 1.0
    raise ValueError(f"unknown matcher {matcher!r}; expected one of {MATCHERS}")
