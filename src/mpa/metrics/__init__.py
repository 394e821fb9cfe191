"""VQA metrics ported from their reference implementations, plus the answer matchers of the Parity Identifier.

    from mpa.metrics import vqa_accuracy, anls, relaxed_accuracy, compat_accuracy, match_answers

- `vqa_accuracy`: TextVQA / OK-VQA / VQAv2 (mmf TextVQA evaluator; optional 2021 vqaEval.py behaviour).
- `anls`: ST-VQA (RRC scoring script).
- `relaxed_accuracy`: ChartQA (pix2struct `relaxed_correctness`).
- `compat_accuracy`: the MPA paper's released scorer (substring of the normalised majority answer).
- `character_error_rate`, `word_accuracy`: the OCR probe (`mpa.metrics.ocr`).
- `match_answers(a, b, matcher)`: does model answer `a` agree with reference `b`; matcher in `MATCHERS`.

Every function scores one question; quirks of each reference are documented in `mpa.metrics.vqa`.
Pure functions: no torch, no I/O. Evaluation names them in one registry, `mpa.evaluation.metrics.METRICS`.
"""

from mpa.metrics.normalize import normalize_compat, normalize_vqa_answer
from mpa.metrics.ocr import character_error_rate, word_accuracy
from mpa.metrics.vqa import MATCHERS, anls, compat_accuracy, match_answers, relaxed_accuracy, vqa_accuracy

__all__ = [
    "MATCHERS",
    "anls",
    "character_error_rate",
    "compat_accuracy",
    "match_answers",
    "normalize_compat",
    "normalize_vqa_answer",
    "relaxed_accuracy",
    "vqa_accuracy",
    "word_accuracy",
]
