"""Teacher/student text → question/answer pairs and short answers. Nothing here raises on any input string.

``parse_qa_pairs`` reads what a teacher wrote for one image: a JSON list or object (fenced, wrapped in prose,
with trailing commas or single quotes, or cut off mid-object), or ``Question: ... Answer: ...`` / ``Q: ... A: ...``
lines (numbered, bulleted, markdown bold, one pair per line or per two lines). It never drops a recognised pair
silently: every pair it does not accept comes back in ``rejected`` with a reason. The raw text itself is kept by
the caller (the annotate stage stores it next to the parse), so a parse can always be redone.

``parse_short_answer`` turns a model's reply to an answer prompt into the short answer; ``answer_type`` gives the
VQA answer type of an answer string.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

STATUSES = ("ok", "empty", "refusal", "unparseable")
REJECT_REASONS = ("duplicate_question", "answer_too_long", "empty_answer", "empty_question")


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str


@dataclass(frozen=True)
class ParseResult:
    """What ``parse_qa_pairs`` made of one teacher reply.

    ``status`` is ``ok`` when at least one pair was accepted, ``empty`` for blank text, ``refusal`` when nothing was
    accepted and the text reads like a refusal, else ``unparseable`` (``fmt`` and ``rejected`` then say whether
    pairs were recognised but all rejected). ``fmt`` is the format that matched: ``json``, ``qa_lines`` or ``none``.
    """

    pairs: tuple[QAPair, ...]
    status: str
    rejected: tuple[tuple[QAPair, str], ...]
    fmt: str


# A candidate is (question, answer) as found in the text, before cleaning; None = the field is missing.
_Candidate = tuple[str | None, str | None]

_QUESTION_KEYS = frozenset({"question", "q", "ques", "query", "questiontext"})
_ANSWER_KEYS = frozenset({"answer", "a", "ans", "shortanswer", "answertext"})

_FENCE_RE = re.compile(r"```[ \t]*[\w+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_FLAT_OBJECT_RE = re.compile(r"\{[^{}]*\}")
_TRAILING_COMMA_RE = re.compile(r",\s*([}\]])")
_QUOTED_QUESTION_KEY_RE = re.compile(r"""["'](?:question|q|ques|query)["']\s*:""", re.IGNORECASE)
_KV_RE = re.compile(r"""["']?([A-Za-z_][\w ]{0,30}?)["']?\s*:\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^,}\n]*)""")

# A "Question:" / "Answer:" / "Q1:" / "**A:**" marker, with any list bullet, number or heading before it on its line
# (so that "2. " in front of the next marker does not end up in the previous value). Single letters must be capital.
_MARKER_RE = re.compile(
    r"(?:^[ \t]*(?:[-*•+>]|#{1,6}|\(?\d{1,3}[.)])[ \t]*)?"
    r"(?<!\w)(?:\*\*|__)?[ \t]*"
    r"(?:(?P<q>(?i:question|ques)|Q)|(?P<a>(?i:answer|ans)|A))"
    r"[ \t]*#?\d{0,3}[ \t]*(?:\*\*|__)?[ \t]*[:：](?:[ \t]*(?:\*\*|__))?",
    re.MULTILINE,
)

_REFUSAL_RE = re.compile(
    r"\bI\s*(?:'|’)?m\s+(?:sorry|unable|not\s+able)|\bI\s+am\s+(?:sorry|unable|not\s+able)"
    r"|\bI\s+(?:cannot|can\s+not|can't|can’t)\b|\bI\s+apologi[sz]e|\bAs\s+an\s+AI\b|^\s*Sorry\b",
    re.IGNORECASE,
)

_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "`": "`"}
_ABBREVIATION_END_RE = re.compile(r"(?:^|\s)(?:[A-Za-z]\.){2,}$")
_ANSWER_PREFIX_RE = re.compile(
    r"^(?:(?:the\s+)?(?:short\s+|final\s+|correct\s+)?answer\b(?:\s+is\b)?\s*[:：\-–]?|A\s*[:：])\s*", re.IGNORECASE
)

_NUMBER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_NUMBER_WORDS = frozenset(
    {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}
    | {"eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"}
)


# --- Cleaning -------------------------------------------------------------------------------------------------------


def _strip_wrappers(text: str) -> str:
    """Strip whitespace, markdown emphasis/code marks and paired quotes from both ends, until nothing changes."""
    while True:
        before = text
        text = text.strip().strip("*`").strip()
        if len(text) >= 4 and text.startswith("__") and text.endswith("__"):
            text = text[2:-2]
        if len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1]:
            text = text[1:-1]
        if text == before:
            return text


def _clean_question(raw: str) -> str:
    return _strip_wrappers(" ".join(raw.split()))


def _clean_answer(raw: str, strip_period: bool = True) -> str:
    """First non-empty line, without wrappers or trailing sentence punctuation (abbreviations like U.S. kept)."""
    line = next((ln for ln in (_strip_wrappers(x) for x in raw.splitlines()) if ln), "")
    text = " ".join(line.split())
    while True:
        before = text
        text = _strip_wrappers(text).rstrip(",;:").rstrip()
        if strip_period and text.endswith(".") and not _ABBREVIATION_END_RE.search(text):
            text = text[:-1]
        if text == before:
            return text


def _question_key(question: str) -> str:
    """Duplicate-detection key: case-insensitive, punctuation and whitespace normalised."""
    return " ".join(re.sub(r"[\W_]+", " ", question.casefold()).split())


# --- JSON -----------------------------------------------------------------------------------------------------------


def _loads_lenient(text: str) -> object | None:
    """json.loads, then with trailing commas removed, then as a Python literal (single quotes); None if all fail."""
    text = text.strip()
    if not text or text[0] not in "[{":
        return None
    fixed = _TRAILING_COMMA_RE.sub(r"\1", text)
    for attempt in (text, fixed):
        try:
            return json.loads(attempt)
        except Exception:  # any failure just means "try the next fix"
            pass
    try:
        return ast.literal_eval(fixed)
    except Exception:  # includes SyntaxError, ValueError, MemoryError, RecursionError
        return None


def _value_text(value: object) -> str | None:
    """A JSON value as answer/question text; a list gives its first usable element."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return next((t for t in (_value_text(v) for v in value) if t and t.strip()), None)
    return None


def _pairs_from_dict(obj: dict) -> list[_Candidate]:
    """QA candidates in one dict: {"question", "answer"} (any case/variant), or numbered {"Q1", "A1", "Q2", ...}."""
    groups: dict[str, dict[str, str | None]] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            continue
        match = re.fullmatch(r"([a-z]+)(\d*)", re.sub(r"[^a-z0-9]", "", key.lower()))
        if match is None:
            continue
        base, number = match.groups()
        role = "q" if base in _QUESTION_KEYS else "a" if base in _ANSWER_KEYS else None
        if role is not None:
            groups.setdefault(number, {}).setdefault(role, _value_text(value))
    return [(fields.get("q"), fields.get("a")) for fields in groups.values()]


def _walk(obj: object, out: list[_Candidate], depth: int = 0) -> None:
    if depth > 32:
        return
    if isinstance(obj, dict):
        pairs = _pairs_from_dict(obj)
        if pairs:
            out.extend(pairs)
            return
        for value in obj.values():
            _walk(value, out, depth + 1)
    elif isinstance(obj, list):
        for value in obj:
            _walk(value, out, depth + 1)


def _dict_from_key_values(chunk: str) -> dict[str, str]:
    """Last resort for broken JSON (missing commas, cut-off strings): pick out `"key": value` by regex."""
    found: dict[str, str] = {}
    for key, raw in _KV_RE.findall(chunk):
        value = raw.strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            try:
                value = json.loads(value)
            except Exception:
                value = value[1:-1]
        found.setdefault(key.strip(), value.strip("\"' \t"))
    return found


def _json_candidates(text: str) -> list[_Candidate]:
    """Try, in order: every fenced block, the whole text, the outermost bracket span, then object by object."""
    out: list[_Candidate] = []
    for fence in _FENCE_RE.finditer(text):
        _walk(_loads_lenient(fence.group(1)), out)
    if out:
        return out
    starts = [i for i in (text.find("["), text.find("{")) if i >= 0]
    end = max(text.rfind("]"), text.rfind("}"))
    spans = [text] + ([text[min(starts) : end + 1]] if starts and end > min(starts) else [])
    for span in spans:
        _walk(_loads_lenient(span), out)
        if out:
            return out
    # Object by object: survives prose between objects, a broken list, or a reply cut off after some objects.
    last_end = 0
    for match in _FLAT_OBJECT_RE.finditer(text):
        parsed = _loads_lenient(match.group())
        _walk(parsed if isinstance(parsed, dict) else _dict_from_key_values(match.group()), out)
        last_end = match.end()
    tail_start = text.find("{", last_end)
    tail = text[tail_start:] if tail_start >= 0 else ""
    if _QUOTED_QUESTION_KEY_RE.search(tail):  # an object cut off by the token limit; its answer may be cut too
        out.extend((q, None) for q, _ in _pairs_from_dict(_dict_from_key_values(tail)) if q)
    return out


# --- Question:/Answer: lines ----------------------------------------------------------------------------------------


def _question_span(span: str) -> str:
    """A question runs to its first line ending in "?" or to a blank line, so a wrapped question stays whole."""
    lines: list[str] = []
    for line in re.split(r"\n[ \t]*\n", span.strip(), maxsplit=1)[0].splitlines():
        lines.append(line)
        if _strip_wrappers(line).endswith("?"):
            break
    return "\n".join(lines)


def _qa_line_candidates(text: str) -> list[_Candidate]:
    """Walk the markers in order: a question marker opens a pair, the next answer marker closes it."""
    markers = list(_MARKER_RE.finditer(text))
    out: list[_Candidate] = []
    open_question: str | None = None
    for i, marker in enumerate(markers):
        end = markers[i + 1].start() if i + 1 < len(markers) else len(text)
        span = text[marker.end() : end]
        if marker.group("q") is not None:
            if open_question is not None:
                out.append((open_question, None))
            open_question = _question_span(span)
        elif open_question is not None:
            out.append((open_question, span))
            open_question = None
        elif _clean_answer(span):  # an answer with no question before it
            out.append((None, span))
    if open_question is not None:
        out.append((open_question, None))
    return out


# --- Public API -----------------------------------------------------------------------------------------------------


def _select(
    candidates: list[_Candidate], max_pairs: int | None, max_answer_words: int
) -> tuple[list[QAPair], list[tuple[QAPair, str]]]:
    accepted: list[QAPair] = []
    rejected: list[tuple[QAPair, str]] = []
    seen: set[str] = set()
    for raw_question, raw_answer in candidates:
        if max_pairs is not None and len(accepted) >= max_pairs:
            break
        pair = QAPair(_clean_question(raw_question or ""), _clean_answer(raw_answer or ""))
        key = _question_key(pair.question)
        if not key:
            rejected.append((pair, "empty_question"))
        elif not pair.answer:
            rejected.append((pair, "empty_answer"))
        elif len(pair.answer.split()) > max_answer_words:
            rejected.append((pair, "answer_too_long"))
        elif key in seen:
            rejected.append((pair, "duplicate_question"))
        else:
            seen.add(key)
            accepted.append(pair)
    return accepted, rejected


def _parse(text: str, max_pairs: int | None, max_answer_words: int) -> ParseResult:
    if not text.strip():
        return ParseResult(pairs=(), status="empty", rejected=(), fmt="none")
    fmt = "json"
    candidates = _json_candidates(text)
    if not candidates:
        fmt, candidates = "qa_lines", _qa_line_candidates(text)
    if not candidates:
        fmt = "none"
    accepted, rejected = _select(candidates, max_pairs, max_answer_words)
    if accepted:
        status = "ok"
    elif _REFUSAL_RE.search(text):
        status = "refusal"
    else:
        status = "unparseable"
    return ParseResult(pairs=tuple(accepted), status=status, rejected=tuple(rejected), fmt=fmt)


_REASONING_END = "</think>"


def strip_reasoning(text: str) -> str:
    """The reply after a reasoning block: thinking models (Qwen3.5, Qwen3-VL Thinking) write `<think>...</think>`
    before their answer, or only `...</think>` when the chat template's generation prompt opened the block."""
    return text.rsplit(_REASONING_END, 1)[-1] if _REASONING_END in text else text


def parse_qa_pairs(text: str, *, max_pairs: int | None = None, max_answer_words: int = 8) -> ParseResult:
    """Parse a teacher's reply into question/answer pairs; never raises.

    JSON is tried first, then ``Question:``/``Answer:`` lines. Pairs are cleaned (whitespace collapsed; quotes,
    markdown and a trailing period stripped from answers) and checked in order: empty question, empty answer (also
    a final pair cut off before its answer), answer longer than ``max_answer_words`` words, question already
    accepted (case/punctuation-insensitive; this absorbs a teacher repeating one pair until the token limit).
    ``max_pairs`` keeps the first N accepted pairs; candidates after the N-th accepted one are ignored, neither
    accepted nor rejected, since asking for fewer pairs is not an error in the reply.
    """
    try:
        text = text if isinstance(text, str) else ("" if text is None else str(text))
        return _parse(strip_reasoning(text), max_pairs, max_answer_words)
    except Exception:  # a last guard: one bad reply must never stop a whole annotate run
        return ParseResult(pairs=(), status="unparseable", rejected=(), fmt="none")


def parse_short_answer(text: str, *, strip_period: bool = True) -> str:
    """A model's reply to an answer prompt → its short answer, case kept ("" when there is none).

    Takes the first non-empty line and strips "Answer:" / "The answer is" prefixes, markdown, quotes and (unless
    `strip_period` is off) a trailing period. Matching normalises further (metrics/normalize.py). ANLS scoring
    keeps the period: ST-VQA answers such as "Fair grounds." contain one, and ANLS compares characters. A
    reasoning block (`<think>...</think>`) before the answer is skipped.
    """
    try:
        if not isinstance(text, str):
            return ""
        for line in strip_reasoning(text).splitlines():
            stripped = _strip_wrappers(line)
            while True:
                shorter = _strip_wrappers(_ANSWER_PREFIX_RE.sub("", stripped, count=1))
                if shorter == stripped:
                    break
                stripped = shorter
            answer = _clean_answer(stripped, strip_period)
            if answer:
                return answer
        return ""
    except Exception:
        return ""


def answer_type(answer: str) -> str:
    """VQA answer type derived from the answer text: ``yes/no``, ``number`` or ``other``."""
    if not isinstance(answer, str):
        return "other"
    text = answer.strip().strip("\"'“”‘’`").rstrip(".!?").strip().lower()
    if text in ("yes", "no"):
        return "yes/no"
    if _NUMBER_RE.fullmatch(text) or text in _NUMBER_WORDS:
        return "number"
    return "other"
