"""The keyword options of ``segment`` and the one rule that decides whether bias correction (PBC) runs.

Both back-ends and the evaluation (``alignzeg.train.evaluation.evaluate``) call ``resolve_bias_correction``: one rule,
one message.
"""

from __future__ import annotations

import warnings
from numbers import Real
from typing import Any, Sequence

import numpy as np

from ..errors import AlignZegWarning

__all__ = ["check_bool", "check_threshold", "check_bias_correction", "resolve_bias_correction", "untrained_warning_due",
           "UNTRAINED_INDICATOR", "UNCALIBRATED"]

UNTRAINED_INDICATOR = ("this model's class indicator was never trained (config.indicator_trained is False), "
                       "so its unseen scores are arbitrary and PBC could suppress every seen class")


def check_bool(name: str, value: Any, allow_none: bool = False) -> bool | None:
    """``value`` as a bool (numpy bools too); ``None`` passes when ``allow_none``."""
    if allow_none and value is None:
        return None
    if not isinstance(value, (bool, np.bool_)):
        what = "True, False or None (auto)" if allow_none else "True or False"
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}")
    return bool(value)


def check_threshold(value: Any) -> float | None:
    """``unlabelled_threshold``: a real number in [0, 1] (not a bool), or ``None``."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise TypeError(f"unlabelled_threshold must be a number in [0, 1] or None, got {type(value).__name__} {value!r}")
    if not 0.0 <= float(value) <= 1.0:  # NaN fails too
        raise ValueError(f"unlabelled_threshold must be in [0, 1] or None, got {value!r}")
    return float(value)


def check_bias_correction(bias_correction: Any) -> bool | None:
    """``bias_correction``: True, False, or ``None`` / ``"auto"`` (both returned as ``None``)."""
    if isinstance(bias_correction, str) and bias_correction == "auto":
        return None
    if bias_correction is not None and not isinstance(bias_correction, (bool, np.bool_)):
        raise TypeError(f"bias_correction must be True, False, None or 'auto', got "
                        f"{type(bias_correction).__name__} {bias_correction!r}")
    return None if bias_correction is None else bool(bias_correction)


UNCALIBRATED = ("its seen-score offset was never calibrated (config.calibration_protocol is 'none'), so nothing "
                "corrects its bias toward the seen classes")


def untrained_warning_due(bias_correction: Any, indicator_trained: bool, seen: Sequence[bool] | None,
                          seen_score_offset: float = 0.0, calibrated: bool = False) -> bool:
    """Whether ``resolve_bias_correction`` warns for these arguments: auto on a model with no bias correction
    at all (an untrained indicator, a seen-score offset of 0) that was never calibrated (``calibrated``: a
    calibration that chose an offset of 0 found nothing to correct), with a vocabulary that mixes seen and
    unseen classes, or an unknown one (``seen=None``)."""
    if check_bias_correction(bias_correction) is not None or indicator_trained or seen_score_offset or calibrated:
        return False
    return seen is None or (any(seen) and not all(seen))


def resolve_bias_correction(bias_correction: Any, indicator_trained: bool, seen: Sequence[bool] | None = None,
                            warn: bool = True, stacklevel: int = 2, seen_score_offset: float = 0.0,
                            calibrated: bool = False) -> bool:
    """Whether the bias correction runs: ``None`` or ``"auto"`` means "if the class indicator was trained or
    the model has a seen-score offset".

    The bias correction is the seen-score offset (any model) and PBC's flags (only with a trained class
    indicator). Auto on a model whose ``config.indicator_trained`` is False and whose offset is 0 turns it
    off (it would be the identity), with a warning when the model was never calibrated (a calibrated offset
    of 0 is a choice: nothing to correct) and the vocabulary mixes seen and unseen classes (otherwise the
    correction would be the identity anyway) or is not known yet (``seen=None``). The class indicator is off
    in the training presets (its flags measured no gain over the offset), so the warning points to the
    calibration.

    Args:
        bias_correction: the caller's choice: True, False, None or "auto".
        indicator_trained: ``config.indicator_trained``.
        seen: one flag per vocabulary entry, or ``None`` (decided before the vocabulary).
        seen_score_offset: ``config.seen_score_offset``; non-zero, the bias correction runs without a trained
            indicator (the offset alone).
        calibrated: ``config.calibration_protocol != "none"`` (no warning: the calibration chose the offset).
        warn: emit the warning (a segmenter warns once, not on every call).
        stacklevel: passed to ``warnings.warn`` (counted from this function).

    Raises:
        TypeError: ``bias_correction`` is not None, "auto" or a bool.
        ValueError: ``bias_correction=True`` on a model whose indicator was not trained and whose
            seen-score offset is 0 (nothing would be corrected).
    """
    choice = check_bias_correction(bias_correction)
    if choice is None:
        if warn and untrained_warning_due(choice, indicator_trained, seen, seen_score_offset, calibrated):
            warnings.warn(f"this model's class indicator was never trained (config.indicator_trained is False) and "
                          f"{UNCALIBRATED}: bias correction (PBC) is off. Calibrate the model (alignzeg-eval "
                          "--calibrate, docs/training.md) or pass bias_correction=False to silence this.",
                          AlignZegWarning, stacklevel=stacklevel + 1)
        return bool(indicator_trained or seen_score_offset)
    if choice and not indicator_trained and not seen_score_offset:
        raise ValueError("bias_correction=True needs a trained class indicator or a seen-score offset: "
                         + UNTRAINED_INDICATOR + " and config.seen_score_offset is 0. Leave bias_correction=None "
                         "(auto) or pass False.")
    return choice
