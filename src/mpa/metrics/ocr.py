"""OCR metrics for the OCR probe: character error rate (CER) and word accuracy (1 - WER, clipped at 0).

Both compare one model transcription with one reference text. Whitespace layout is not text recognition, so
runs of whitespace count as one space and leading/trailing whitespace is ignored; everything else counts as
written: case, punctuation, diacritics ("Stop" vs "STOP" is 3 substitutions). Normalise both sides first for a
case-insensitive score. Pure functions, no torch, no I/O; edit distance is `mpa.metrics.vqa._levenshtein`.
"""

from __future__ import annotations

from mpa.metrics.vqa import _levenshtein

__all__ = ["character_error_rate", "word_accuracy"]

_FIRST_SYMBOL = 0x10000  # word ids are encoded as code points from here (outside the surrogate range)


def _squash(text: str) -> str:
    return " ".join(text.split())


def character_error_rate(prediction: str, reference: str) -> float:
    """CER = Levenshtein(prediction, reference) / len(reference), in Unicode code points.

    The standard definition (as in `jiwer.cer` and the ICDAR robust-reading text-recognition tasks): unit-cost
    insertions, deletions and substitutions, no transpositions ("ab" vs "ba" is 2 edits). 0.0 is perfect; it is
    not clipped, so a prediction with many extra characters scores above 1 ("abcdef" vs "ab" is 2.0). Both
    strings are whitespace-squashed first (see the module docstring).

    Empty reference (after squashing): 0.0 if the prediction is empty too, else 1.0 (the rate is undefined there;
    `jiwer` refuses it; we keep a mean over samples finite).
    """
    pred, ref = _squash(prediction), _squash(reference)
    if not ref:
        return 0.0 if not pred else 1.0
    return _levenshtein(pred, ref) / len(ref)


def _encode_words(*texts: str) -> list[str]:
    """Map each distinct whitespace-separated word to one code point, so character edit distance = word edit
    distance."""
    ids: dict[str, str] = {}
    return ["".join(ids.setdefault(word, chr(_FIRST_SYMBOL + len(ids))) for word in text.split()) for text in texts]


def word_accuracy(prediction: str, reference: str) -> float:
    """Word accuracy = max(0, 1 - WER), WER = word-level Levenshtein(prediction, reference) / #reference words.

    The speech-recognition definition of word accuracy (WAcc = 1 - WER, e.g. Morris, Maier & Green 2004, "From
    WER and RIL to MER and WIL"), also the ISRI OCR word accuracy ((n - word errors) / n) up to the clipping:
    words are whitespace-separated tokens compared exactly (case and punctuation count: "hello," != "hello");
    reference words recovered in order score, missing, wrong and extra words cost one edit each, so
    "the quick fox" vs "the quick brown fox" is 0.75, and any prediction with more errors than the reference has
    words scores 0.0 (hence the clip, which keeps the value in [0, 1]).

    Empty reference (no words): 1.0 if the prediction has no words either, else 0.0.
    """
    pred, ref = _encode_words(prediction, reference)
    if not ref:
        return 1.0 if not pred else 0.0
    return max(0.0, 1.0 - _levenshtein(pred, ref) / len(ref))
