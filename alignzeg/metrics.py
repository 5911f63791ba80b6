"""Segmentation metrics shared by evaluation (``alignzeg.train.evaluation.evaluate``) and the demo: numpy only.

- ``ConfusionMatrix``: a (K, K + 1) int64 matrix, rows true classes, columns predictions (column K: a
  prediction outside [0, K), e.g. the segmenter's "unlabelled" -1); ground truth ``ignore_index`` is skipped.
- ``class_iou``: IoU_k = TP_k / (TP_k + FP_k + FN_k) per class, NaN for an empty union.
- ``nanmean`` and ``harmonic_iou``: the means over the classes with an IoU, and hIoU = 2 S U / (S + U)
  (0 when S + U = 0, NaN when either is NaN).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["IGNORE_INDEX", "ConfusionMatrix", "class_iou", "nanmean", "harmonic_iou"]

IGNORE_INDEX = 255
"""Ground-truth label of pixels that are not scored."""


class ConfusionMatrix:
    """Accumulates a (K, K + 1) int64 matrix: rows are true classes, columns predictions (column K: other).

    Args:
        num_classes: K.
    """

    def __init__(self, num_classes: int) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    def update(self, pred: np.ndarray, label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> None:
        """Add one image (or a stack). pred, label: integer arrays of the same shape, e.g. (H, W)."""
        pred, label = np.asarray(pred), np.asarray(label)
        if pred.shape != label.shape:
            raise ValueError(f"prediction shape {pred.shape} does not match label shape {label.shape}")
        valid = label != ignore_index
        true = label[valid].astype(np.int64)
        if true.size and (true.min() < 0 or true.max() >= self.num_classes):
            raise ValueError(f"label values must be in [0, {self.num_classes}) or {ignore_index}, "
                             f"got range [{true.min()}, {true.max()}]")
        guess = pred[valid].astype(np.int64)
        guess = np.where((guess >= 0) & (guess < self.num_classes), guess, self.num_classes)
        k1 = self.num_classes + 1
        self.matrix += np.bincount(true * k1 + guess, minlength=self.num_classes * k1).reshape(self.num_classes, k1)


def class_iou(confusion: np.ndarray) -> np.ndarray:
    """(K,) float64 per-class IoU of a (K, K) or (K, K + 1) confusion matrix, NaN where the union is empty."""
    confusion = np.asarray(confusion, dtype=np.int64)
    k = confusion.shape[0]
    tp = np.diag(confusion[:, :k]).astype(np.float64)
    union = confusion.sum(1) + confusion[:, :k].sum(0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN values (NaN when there are none)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def harmonic_iou(seen: float, unseen: float) -> float:
    """hIoU = 2 S U / (S + U); 0 when S + U = 0, NaN when either mean is NaN."""
    if math.isnan(seen) or math.isnan(unseen):
        return float("nan")
    return 2 * seen * unseen / (seen + unseen) if seen + unseen > 0 else 0.0
