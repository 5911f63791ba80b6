"""The package's own exception and warning types (a leaf module: it imports nothing from alignzeg)."""

from __future__ import annotations

__all__ = ["WeightsError", "AlignZegWarning"]


class WeightsError(RuntimeError):
    """A checkpoint that cannot be found, read or matched to the model; the message says which and why.

    Every problem with a checkpoint's ``config.json`` is one too, naming the file and the key.
    """


class AlignZegWarning(UserWarning):
    """A result that may not be what the caller meant (an untrained class indicator turning bias correction
    off, prompts cut at the text encoder's context); silence one with ``warnings.filterwarnings``."""
