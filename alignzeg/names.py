"""Vocabulary rules without torch: when two names are one class, what a valid vocabulary is, which
entries are seen classes, and whether bias correction runs.

Shared by the segmenter and the torch-free ONNX runtime (``alignzeg.onnx.runtime``).
"""

from __future__ import annotations

import unicodedata
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["class_name_key", "validate_class_names", "seen_flags", "resolve_bias_correction"]

_UNTRAINED_INDICATOR = ("this model's class indicator was never trained (config.indicator_trained is False), "
                        "so its unseen scores are arbitrary and PBC could suppress every seen class")


def class_name_key(name: str) -> str:
    """The form under which two class names count as the same class: NFKC-normalised, stripped and
    lower-cased the way CLIP's tokenizer lower-cases (``str.lower``, so "Straße" and "strasse" differ)."""
    return unicodedata.normalize("NFKC", name).strip().lower()


def validate_class_names(names: Sequence[str], what: str = "vocabulary") -> tuple[str, ...]:
    """Check a vocabulary and return it as a tuple, order kept (the order gives the label indices).

    Raises:
        TypeError: ``names`` is not an ordered sequence (a bare string, a set, a dict, a generator...), or
            an item is not a string.
        ValueError: the vocabulary is empty, has an empty/whitespace-only name, or has duplicates
            (compared with ``class_name_key``: CLIP's tokenizer lower-cases, so "Cat" and "cat" are one class).
    """
    if isinstance(names, (str, bytes)):
        raise TypeError(f"{what} must be a list of class names, got the single string {names!r}")
    if type(names).__name__ == "ndarray" and getattr(names, "ndim", 0) == 1 and names.dtype.kind == "U":
        names = names.tolist()  # a 1-D numpy array of strings is ordered too
    if not isinstance(names, Sequence):
        hint = (": it has no order, so label indices would change from run to run; pass a list"
                if isinstance(names, (set, frozenset, dict)) else "; pass a list or tuple")
        shown = repr(names) if len(repr(names)) <= 200 else repr(names)[:200] + "..."
        raise TypeError(f"{what} must be an ordered sequence (list or tuple) of class names, "
                        f"got {type(names).__name__} {shown}{hint}")
    names = tuple(names)
    if not names:
        raise ValueError("vocabulary is empty: give at least one class name")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(f"class name at index {i} must be a str, got {type(name).__name__}: {name!r}")
        if not name.strip():
            raise ValueError(f"class name at index {i} is empty or whitespace-only: {name!r}")
        key = class_name_key(name)
        if key in seen:
            raise ValueError(
                f"duplicate class name {name!r} at index {i} (same as index {seen[key]}: "
                f"{names[seen[key]]!r}); each class must appear once so label indices are unambiguous"
            )
        seen[key] = i
    return names


def seen_flags(seen: Sequence[Any], names: Sequence[str]) -> list[bool]:
    """One flag per vocabulary entry from ``seen``: one bool per class, or the seen names (``class_name_key``).

    Raises:
        ValueError: a flag list of the wrong length, or names not in the vocabulary (they are listed).
        TypeError: not an ordered sequence (a bare string, a set...), a mix of types, or neither names nor bools.
    """
    if isinstance(seen, (str, bytes)) or not isinstance(seen, (Sequence, np.ndarray)):
        raise TypeError("seen must be a list of class names or a list of booleans, one per class, "
                        f"got {type(seen).__name__} {seen!r}")
    seen = list(seen)
    if seen and all(isinstance(s, (bool, np.bool_)) for s in seen):
        if len(seen) != len(names):
            raise ValueError(f"seen has {len(seen)} flags for {len(names)} classes")
        return [bool(s) for s in seen]
    if not all(isinstance(s, str) for s in seen):
        raise TypeError(f"seen must be a list of class names or a list of booleans, one per class, got {seen!r}")
    keys = {class_name_key(n) for n in names}
    unknown = [s for s in seen if class_name_key(s) not in keys]
    if unknown:
        raise ValueError(f"seen names {unknown} are not in the vocabulary {list(names)}")
    wanted = {class_name_key(s) for s in seen}
    return [class_name_key(n) in wanted for n in names]


def resolve_bias_correction(bias_correction: bool | None, indicator_trained: bool, seen: Sequence[bool],
                            stacklevel: int = 2) -> bool:
    """Whether PBC runs: ``None`` (auto) means "if the class indicator was trained".

    Auto on a model whose ``config.indicator_trained`` is False turns PBC off, with a warning when the
    vocabulary mixes seen and unseen classes (otherwise PBC would be the identity anyway).

    Args:
        bias_correction: the caller's choice: True, False or None (auto).
        indicator_trained: ``config.indicator_trained``.
        seen: one flag per vocabulary entry.
        stacklevel: passed to ``warnings.warn`` (counted from this function).

    Raises:
        TypeError: ``bias_correction`` is not None or a bool.
        ValueError: ``bias_correction=True`` on a model whose indicator was not trained.
    """
    if bias_correction is not None and not isinstance(bias_correction, (bool, np.bool_)):
        raise TypeError(f"bias_correction must be True, False or None (auto), got "
                        f"{type(bias_correction).__name__} {bias_correction!r}")
    if bias_correction is None:
        if not indicator_trained and any(seen) and not all(seen):
            warnings.warn(_UNTRAINED_INDICATOR + "; bias correction (PBC) is off for this call. Pass "
                          "bias_correction=False to silence this.", UserWarning, stacklevel=stacklevel + 1)
        return bool(indicator_trained)
    if bias_correction and not indicator_trained:
        raise ValueError("bias_correction=True needs a trained class indicator: " + _UNTRAINED_INDICATOR
                         + ". Leave bias_correction=None (auto) or pass False.")
    return bool(bias_correction)
