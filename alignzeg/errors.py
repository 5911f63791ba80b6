"""The package's own exception types (a leaf module: it imports nothing from alignzeg)."""

from __future__ import annotations

__all__ = ["WeightsError"]


class WeightsError(RuntimeError):
    """A checkpoint that cannot be found, read or matched to the model; the message says which and why.

    Every problem with a checkpoint's ``config.json`` is one too, naming the file and the key.
    """
