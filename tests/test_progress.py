"""Progress bars (mpa.progress): plain lines off a terminal, nothing at all after set_progress(False)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mpa import progress as common


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    common.set_progress(True)


def test_off_a_terminal_each_update_is_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    bar = common.progress(total=4, desc="annotate", unit="img")
    bar.update(4)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0].startswith("annotate: 0/4 img (0%) [00:00<?")
    assert lines[-1].startswith("annotate: 4/4 img (100%) [00:00<00:00,") and lines[-1].endswith("img/s]")


def test_set_progress_false_silences_every_bar(capsys: pytest.CaptureFixture[str]) -> None:
    common.set_progress(False)
    assert not common.progress_enabled()
    bar = common.progress(total=3, desc="identify (teacher)", unit="q")
    bar.update(3)
    bar.set_postfix({"loss": "0.1"})
    bar.close()
    assert capsys.readouterr().err == ""
