"""Deprecated: the attribute world moved to ``alignzeg.worlds.attributes``; this name will be removed in 0.4.

Every name read from here is the one of ``alignzeg.worlds.attributes`` (the same objects), with a
``DeprecationWarning`` that names the new module.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_NEW = "alignzeg.worlds.attributes"


def __getattr__(name: str) -> Any:
    module = importlib.import_module(_NEW)
    if not hasattr(module, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"alignzeg.world is deprecated: import {name} from {_NEW} (alignzeg.world will be removed in 0.4)",
                  DeprecationWarning, stacklevel=2)
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted(importlib.import_module(_NEW).__all__)
