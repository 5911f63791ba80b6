"""How class names are compared: the visible text of a name and the key under which two names are one class.

A leaf module (standard library only), so that results (``alignzeg.pipeline.result``) and the vocabulary rules
(``pipeline.vocabulary``) use one rule without importing each other.
"""

from __future__ import annotations

import unicodedata

__all__ = ["visible_text", "prompt_text", "class_name_key"]


def visible_text(name: str) -> str:
    """``name`` without format characters (zero-width spaces and joiners, BOM, soft hyphen: category Cf)."""
    if name.isascii():  # no ASCII character is in category Cf: skip the per-character scan
        return name
    return "".join(ch for ch in name if unicodedata.category(ch) != "Cf")


def prompt_text(name: str) -> str:
    """The text of a class name put into prompts: invisible format characters removed, stripped (the name
    reported in results stays as given)."""
    return visible_text(name).strip()


def class_name_key(name: str) -> str:
    """The form under which two class names count as the same class: NFKC-normalised, invisible format
    characters removed, stripped and lower-cased the way CLIP's tokenizer lower-cases (``str.lower``, so
    "Straße" and "strasse" differ)."""
    if name.isascii():  # NFKC leaves ASCII unchanged and no ASCII character is invisible (Cf)
        return name.strip().lower()
    return visible_text(unicodedata.normalize("NFKC", name)).strip().lower()
