"""Low-resolution probabilities -> full-resolution labels: bilinear upsampling and the per-pixel best class.

numpy only. ``align_corners=False`` resampling (PyTorch's convention): ``upsample_labels`` equals
``F.interpolate(probs, size, mode="bilinear")`` followed by an argmax to float rounding (~1e-6), without
materialising the full-resolution map (classes that cannot win are pruned, rows go in bands).
"""

from __future__ import annotations

import numpy as np

__all__ = ["UNLABELLED", "BAND_ELEMENTS", "band_rows", "linear_taps", "candidate_classes", "upsample_labels",
           "upsample_plane"]

UNLABELLED = -1
"""Label value of pixels whose best class probability is below the ``unlabelled_threshold``."""

BAND_ELEMENTS = 1 << 22
"""Default bound on the 4-byte elements one row band of ``upsample_labels`` works on (16 MB): the upsampled
candidate classes and the per-pixel best value, index and label, whatever the image size or vocabulary."""

PER_PIXEL = 6
"""4-byte elements per output pixel of a band besides the classes: the best value, the int64 argmax and the
int64 label it maps to."""


def band_rows(classes: int, height: int, width: int, max_elements: int, per_class: int = 1) -> int:
    """Rows of one band of an upsample to (height, width) with ``classes`` candidate classes, so that
    ``per_class`` (rows, width) float32 arrays per class and ``PER_PIXEL`` per pixel stay within
    ``max_elements`` 4-byte elements (at least one row, at most ``height``)."""
    per_row = max(1, width * (per_class * classes + PER_PIXEL))
    return max(1, min(height, max_elements // per_row))


def linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source taps of 1-D linear resampling, ``align_corners=False`` (PyTorch's convention, no antialias).

    Returns:
        i0, i1: (out_size,) int64 source indices; frac: (out_size,) float32 in [0, 1]; sample ``i`` is
        ``x[i0] + frac * (x[i1] - x[i0])``.
    """
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * np.float32(in_size / out_size) - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, np.clip(src - i0, 0, 1).astype(np.float32)


def _lerp(stack: np.ndarray, rows: tuple[np.ndarray, ...], cols: tuple[np.ndarray, ...]) -> np.ndarray:
    """(K, h, w) -> (K, len(rows[0]), len(cols[0])): linear taps along the rows, then along the columns
    (the full-width result computed in place: two (K, r, W) arrays at a time)."""
    (y0, y1, fy), (x0, x1, fx) = rows, cols
    top, bottom = stack[:, y0], stack[:, y1]
    mid = top + fy[:, None] * (bottom - top)
    left, out = mid[:, :, x0], mid[:, :, x1]
    out -= left
    out *= fx
    out += left
    return out


def upsample_plane(plane: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsample of one (h, w) map to (H, W) float32, ``align_corners=False`` (no antialias)."""
    stack = plane[None].astype(np.float32, copy=False)
    return _lerp(stack, linear_taps(plane.shape[0], out_size[0]), linear_taps(plane.shape[1], out_size[1]))[0]


def candidate_classes(probs: np.ndarray, slack: float = 1e-6) -> np.ndarray:
    """Indices (ascending) of the classes of (K, h, w) ``probs`` that can be the bilinear argmax somewhere.

    An upsampled pixel is a convex combination of one cell's 4 corners, so a class whose maximum over a
    cell's corners is below another class's minimum over them loses everywhere in that cell.
    """
    padded = np.pad(probs, ((0, 0), (0, 1), (0, 1)), mode="edge")
    corners = (padded[:, :-1, :-1], padded[:, 1:, :-1], padded[:, :-1, 1:], padded[:, 1:, 1:])
    cell_max = np.maximum.reduce(corners)
    floor = np.minimum.reduce(corners).max(axis=0)
    return np.flatnonzero((cell_max >= floor - slack).reshape(len(probs), -1).any(axis=1))


def upsample_labels(probs: np.ndarray, out_size: tuple[int, int], unlabelled_threshold: float | None = None,
                    max_elements: int = BAND_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
    """Bilinearly upsample (C + 1, h, w) probabilities to ``out_size`` and take the best class per pixel.

    The background channel (last) is never chosen; classes that cannot win are pruned; rows are
    interpolated in bands whose working arrays hold at most ``max_elements`` 4-byte elements
    (``band_rows``): memory beyond the (H, W) outputs does not grow with the image. The bands change no value.

    Returns:
        labels (H, W) int32 in [0, C) or ``UNLABELLED``; confidence (H, W) float32, the chosen class's probability.
    """
    height, width = out_size
    classes = probs[:-1].astype(np.float32, copy=False)
    keep = candidate_classes(classes)
    classes = classes[keep]
    y0, y1, fy = linear_taps(classes.shape[1], height)
    x0, x1, fx = linear_taps(classes.shape[2], width)
    labels = np.empty((height, width), dtype=np.int32)
    confidence = np.empty((height, width), dtype=np.float32)
    band = band_rows(classes.shape[0], height, width, max_elements, per_class=2)  # _lerp's two (K', r, W)
    for r0 in range(0, height, band):
        r1 = min(height, r0 + band)
        part = _lerp(classes, (y0[r0:r1], y1[r0:r1], fy[r0:r1]), (x0, x1, fx))  # (K', r, W)
        index = part.argmax(axis=0)
        best = np.take_along_axis(part, index[None], axis=0)[0]
        index = keep[index]
        if unlabelled_threshold is not None:
            index = np.where(best < unlabelled_threshold, UNLABELLED, index)
        labels[r0:r1] = index
        confidence[r0:r1] = best
    return labels, confidence
