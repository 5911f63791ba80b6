"""``alignzeg.progress``: a bar's last line is drawn once, and log records go above the bar."""

import io
import logging

from alignzeg.progress import advance, progress_bar, track


def _lines(text: str) -> list[str]:
    return [line for line in text.replace("\r", "\n").splitlines() if line.strip()]


def test_the_last_line_is_drawn_once():
    out = io.StringIO()
    assert list(track(range(3), file=out, desc="t", mininterval=0)) == [0, 1, 2]
    lines = _lines(out.getvalue())
    assert [line for line in lines if "3/3" in line] == [lines[-1]]  # tqdm alone drew "3/3" twice
    assert sum("2/3" in line for line in lines) == 1


def test_a_log_record_during_the_bar_is_a_line_of_its_own(capsys):
    import sys

    handler = logging.StreamHandler(sys.stderr)  # a console handler, as logging.basicConfig makes
    logging.root.addHandler(handler)
    try:
        with progress_bar(2, file=sys.stderr, desc="t", mininterval=0) as bar:
            advance(bar)
            logging.getLogger("alignzeg.test").warning("halfway")
            advance(bar)
    finally:
        logging.root.removeHandler(handler)
    lines = _lines(capsys.readouterr().err)
    assert "halfway" in lines  # not glued to a bar line
    assert sum("2/2" in line for line in lines) == 1 and bar.n == 2

