"""Progress bars for long work (every stage, and training steps in level): rate and ETA on a terminal, a plain
line at most every 30 s in a log file or CI output, none at all with `mpa -q`."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")

_BARS_ENABLED = True  # `mpa -q` turns every bar off (set once by the CLI; library users may call set_progress)


def set_progress(enabled: bool) -> None:
    """Show (default) or hide the stages' progress bars, and the training bars of the level stage."""
    global _BARS_ENABLED
    _BARS_ENABLED = enabled


def progress_enabled() -> bool:
    return _BARS_ENABLED


_LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class _LineWriter:
    """tqdm redraws one line with carriage returns; in a log file or CI output that is one endless line. This
    turns each redraw into a plain line of its own (tqdm writes one at most every `mininterval` seconds)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str, unit: str) -> tqdm:
    """A progress bar with rate and ETA; on a non-terminal a plain line every 30 s; none at all after
    `set_progress(False)`."""
    interactive = sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr if interactive else _LineWriter(sys.stderr),
        dynamic_ncols=True,
        bar_format=None if interactive or total is None else _LINE_FORMAT,
        mininterval=0.5 if interactive else 30.0,
        maxinterval=10.0 if interactive else 60.0,  # tqdm's monitor redraws a stalled bar; no more than 1 line/30 s
        ascii=not interactive,
        leave=True,
        disable=not _BARS_ENABLED,
    )
