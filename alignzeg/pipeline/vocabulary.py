"""Vocabulary rules without torch: what a valid vocabulary is, when two names are one class, synonyms,
which entries are seen classes, and precomputed class embeddings.

A vocabulary is an ordered sequence of entries (list, tuple, 1-D numpy array of str), or a mapping
``{name: synonyms}``. An entry is one class: a name (``"person"``), or several names of one class
(``("person", "man", "woman")``: the class is reported under its first name, and its prototype is the
normalised mean of the names' prototypes, as SAN, FC-CLIP and CAT-Seg average "person, man, woman").
In a mapping, ``{"person": ["man", "woman"], "car": []}``, the key is the first name and the value lists
further names (a string, a sequence, or empty).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from .result import RESERVED_NAMES
from .images import SupportsArray
from .name_keys import class_name_key, prompt_text, visible_text as _visible

__all__ = ["ClassList", "class_name_key", "prompt_text", "validate_class_names", "parse_vocabulary", "seen_flags",
           "trained_flags", "unit_rows", "merge_synonyms", "Vocabulary"]

Vocabulary = Union[Sequence[Union[str, Sequence[str]]], Mapping[str, Sequence[str]], np.ndarray, SupportsArray]
"""A vocabulary: class names in label order (an entry may be a tuple of synonyms), a mapping name -> synonyms,
or precomputed (C, E) class embeddings (numpy, or the back-end's own array type: a torch tensor)."""

_SHOWN = 200


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


@dataclass(frozen=True)
class ClassList:
    """A validated vocabulary.

    Attributes:
        names: one name per class, in label order (the first name of each entry).
        synonyms: every name of each class, first name first (``(name,)`` for a plain entry).
    """

    names: tuple[str, ...]
    synonyms: tuple[tuple[str, ...], ...]

    @property
    def has_synonyms(self) -> bool:
        return any(len(group) > 1 for group in self.synonyms)

    @property
    def all_names(self) -> tuple[str, ...]:
        """Every name of every class, class by class (each once: names are unique across the vocabulary)."""
        return tuple(name for group in self.synonyms for name in group)


def _as_entries(vocabulary: Any, what: str) -> list[Any]:
    """The entries of a vocabulary, order kept; refuses unordered and single-string inputs."""
    if isinstance(vocabulary, (str, bytes)):
        raise TypeError(f"{what} must be a list of class names, got the single string {vocabulary!r}")
    if isinstance(vocabulary, Mapping):
        return [(key, value) for key, value in vocabulary.items()]
    if isinstance(vocabulary, np.ndarray):
        if vocabulary.ndim != 1 or vocabulary.dtype.kind not in "UO":
            raise TypeError(f"{what} as a numpy array must be 1-D of str, got shape {vocabulary.shape} "
                            f"dtype {vocabulary.dtype}")
        return vocabulary.tolist()
    if not isinstance(vocabulary, Sequence):
        hint = (": it has no order, so label indices would change from run to run; pass a list"
                if isinstance(vocabulary, (set, frozenset)) else "; pass a list or tuple")
        raise TypeError(f"{what} must be an ordered sequence (list or tuple) of class names, "
                        f"got {type(vocabulary).__name__} {_shown(vocabulary)}{hint}")
    return list(vocabulary)


def _entry_names(entry: Any, index: int) -> tuple[Any, ...]:
    """The names of one entry: a str, or a list/tuple of synonyms (first name first)."""
    if isinstance(entry, str):
        return (entry,)
    if isinstance(entry, (list, tuple)):
        if not entry:
            raise ValueError(f"class at index {index} has no name: {entry!r}")
        return tuple(entry)
    raise TypeError(f"class name at index {index} must be a str (or a tuple of synonyms), "
                    f"got {type(entry).__name__}: {_shown(entry)}")


def parse_vocabulary(vocabulary: Any, what: str = "vocabulary") -> ClassList:
    """Check a vocabulary of names (with optional synonyms) and return its ``ClassList``, order kept.

    A list or tuple of plain strings is checked once and remembered (the last 32 such vocabularies), since a
    loop over images passes the same one each call.

    Raises:
        TypeError: not an ordered sequence or mapping (a bare string, a set, a generator...), or a name that
            is not a string.
        ValueError: the vocabulary is empty; a name is empty once whitespace and invisible characters are
            removed; a name is reserved by the result (``"<unlabelled>"``); or a name appears twice
            (compared with ``class_name_key``: CLIP's tokenizer lower-cases, so "Cat" and "cat" are one class).
    """
    if type(vocabulary) in (list, tuple) and all(type(n) is str for n in vocabulary):
        return _parse_plain_names(tuple(vocabulary), what)
    return _parse_vocabulary(vocabulary, what)


@functools.lru_cache(maxsize=32)
def _parse_plain_names(names: tuple[str, ...], what: str) -> ClassList:
    return _parse_vocabulary(names, what)  # exceptions are not cached: a bad vocabulary fails every time


def _parse_vocabulary(vocabulary: Any, what: str) -> ClassList:
    """``parse_vocabulary`` without the memory."""
    entries = _as_entries(vocabulary, what)
    if not entries:
        raise ValueError(f"{what} is empty: give at least one class name")
    groups: list[tuple[str, ...]] = []
    seen: dict[str, tuple[int, str]] = {}
    reserved = {class_name_key(n) for n in RESERVED_NAMES}
    for i, entry in enumerate(entries):
        if isinstance(entry, tuple) and isinstance(vocabulary, Mapping):
            first, more = entry
            if not isinstance(first, str):
                raise TypeError(f"class name at index {i} must be a str, got {type(first).__name__}: {first!r}")
            more = (more,) if isinstance(more, str) else more
            if isinstance(more, (Mapping, set, frozenset)) or not isinstance(more, Sequence):
                raise TypeError(f"synonyms of class {first!r} must be a string or a list of strings, got "
                                f"{type(more).__name__} {_shown(more)}")
            same = class_name_key(first)  # the key repeated among its own synonyms counts once
            names = (first, *(n for n in more if not (isinstance(n, str) and class_name_key(n) == same)))
        else:
            names = _entry_names(entry, i)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"class name at index {i} must be a str, got {type(name).__name__}: {name!r}")
            key = class_name_key(name)
            if not key:
                raise ValueError(f"class name at index {i} is empty once whitespace and invisible characters "
                                 f"are removed: {name!r}")
            if key in reserved:
                raise ValueError(f"class name {name!r} at index {i} is reserved: results use it for "
                                 "pixels below unlabelled_threshold; name the class differently")
            if key in seen:
                j, other = seen[key]
                raise ValueError(
                    f"duplicate class name {name!r} at index {i} (same as index {j}: {other!r}); each class "
                    "must appear once so label indices are unambiguous"
                )
            seen[key] = (i, name)
        groups.append(tuple(str(n) for n in names))
    return ClassList(tuple(group[0] for group in groups), tuple(groups))


def validate_class_names(names: Any, what: str = "vocabulary") -> tuple[str, ...]:
    """A vocabulary of plain names (no synonyms: ``class_names``, ``seen_classes``), as a tuple, order kept.

    Raises: as ``parse_vocabulary``; and ``TypeError`` for a synonym entry.
    """
    classes = parse_vocabulary(names, what)
    if classes.has_synonyms or isinstance(names, Mapping):
        raise TypeError(f"{what} must be a list of plain class names (no synonyms), got {_shown(names)}")
    return classes.names


@functools.lru_cache(maxsize=32)
def trained_flags(names: tuple[str, ...], trained: tuple[str, ...]) -> tuple[bool, ...]:
    """Which of ``names`` are among the model's training classes ``trained`` (``class_name_key``): the
    default seen flags of a vocabulary."""
    keys = {class_name_key(n) for n in trained}
    return tuple(class_name_key(n) in keys for n in names)


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


def unit_rows(embeddings: Any, dim: int) -> np.ndarray:
    """Validate (C, E) class embeddings (any float array) and L2-normalise their rows: (C, E) float32.

    Raises:
        ValueError: another shape, NaN/inf values, or an all-zero row (its index is named).
        TypeError: not floating point.
    """
    array = np.asarray(embeddings)
    if array.ndim != 2 or array.shape[1] != dim or array.shape[0] < 1:
        raise ValueError(f"class embeddings must have shape (C, {dim}) with C >= 1, got {tuple(array.shape)}")
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"class embeddings must be floating point, got {array.dtype}")
    array = array.astype(np.float32)  # a copy, in native byte order
    if not np.isfinite(array).all():
        raise ValueError("class embeddings contain NaN or infinite values")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"class embedding rows {np.flatnonzero(norms == 0).tolist()} are all zeros")
    return array / np.maximum(norms, np.float32(1e-12))


def merge_synonyms(embeddings: np.ndarray, classes: ClassList) -> np.ndarray:
    """Prototypes of ``classes.all_names`` (K, E) -> one per class (C, E): the normalised mean of each class's
    unit rows (a plain class keeps its row)."""
    out, start = [], 0
    for group in classes.synonyms:
        rows = embeddings[start:start + len(group)].astype(np.float32)
        out.append(rows[0] if len(group) == 1 else rows.mean(axis=0))
        start += len(group)
    merged = np.stack(out)
    return merged / np.maximum(np.linalg.norm(merged, axis=1, keepdims=True), np.float32(1e-12))
