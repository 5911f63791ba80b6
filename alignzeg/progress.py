"""Progress bars (tqdm) that log files read well: the last line is drawn once, and log records printed while a
bar runs go above it (``logging_redirect_tqdm``) instead of being glued to its line.

tqdm draws a bar's final state twice when its last step is counted by ``update``: once by ``update`` and again
by ``close``; in a log file (no terminal to overwrite the line) both copies stay. ``advance`` counts the last
step without drawing it, so ``close`` draws it once.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence, TypeVar

__all__ = ["advance", "progress_bar", "track"]

T = TypeVar("T")


@contextlib.contextmanager
def progress_bar(total: int, *, disable: bool = False, **kwargs: Any) -> Iterator[Any]:
    """A ``tqdm`` bar over ``total`` steps (count them with ``advance``); log records go above it.

    Args:
        total: the number of steps.
        disable: no bar.
        kwargs: passed to ``tqdm`` (``desc``, ``unit``...).
    """
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(), tqdm(total=total, disable=disable, **kwargs) as bar:
        yield bar


def advance(bar: Any, steps: int = 1) -> None:
    """Count ``steps`` steps of ``bar``; the step that reaches the total is left for ``close`` to draw (once)."""
    if bar.total is None or bar.n + steps < bar.total:
        bar.update(steps)
    else:
        bar.n += steps


def track(items: Sequence[T], *, disable: bool = False, **kwargs: Any) -> Iterator[T]:
    """Yield ``items`` with a bar that counts each one once the loop's body is done with it (``progress_bar``).

    Args:
        items: a sequence (its length is the bar's total).
        disable, kwargs: as in ``progress_bar``.
    """
    with progress_bar(len(items), disable=disable, **kwargs) as bar:
        for item in items:
            yield item
            advance(bar)
