"""Overlays: class colours over the image with a legend (drawn by imgviz, a well-kept library)."""

from __future__ import annotations

from typing import Sequence

import imgviz
import numpy as np
from PIL import Image

__all__ = ["draw_overlay"]


def _colormap(size: int) -> np.ndarray:
    """(max(size, 256), 3) uint8: imgviz's 256-colour PASCAL map, repeated past 256 entries."""
    base = imgviz.label_colormap()
    reps = -(-size // len(base))
    return np.concatenate([base] + [base[1:]] * reps)[: max(size, len(base))]


_BAND_PIXELS = 1 << 20
"""Pixels blended per row band (bounds the float32 temporaries to a few MB at any image size)."""


def draw_overlay(label_map: np.ndarray, class_names: Sequence[str], image: np.ndarray | None = None,
                 alpha: float = 0.5, legend: bool = True) -> Image.Image:
    """Colour a label map, blended over ``image``, with a legend of the classes present.

    The blend is ``round((1 - alpha) * image + alpha * colour)`` per labelled pixel, as
    ``imgviz.label2rgb`` computes it, but in float32 row bands over the labelled pixels only; the
    classes present are counted with ``bincount``. An 8000 x 6000 overlay needs about the output's
    own memory (see benchmarks/bench_overlay.py).

    Args:
        label_map: (H, W) int, indices into ``class_names``; -1 (unlabelled) is left uncoloured.
        class_names: the vocabulary.
        image: (H, W, 3) uint8 RGB, or ``None`` for colours on black.
        alpha: colour opacity in [0, 1].
        legend: draw the legend (bottom right).

    Returns:
        (W, H) RGB PIL image.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    height, width = label_map.shape
    if image is not None and (image.shape != (height, width, 3) or image.dtype != np.uint8):
        raise ValueError(f"image must be ({height}, {width}, 3) uint8 to match the label map, "
                         f"got {image.shape} {image.dtype}")
    colormap = _colormap(len(class_names) + 1)
    out = np.zeros((height, width, 3), dtype=np.uint8) if image is None else image.copy()
    opacity = np.full(len(colormap), alpha, dtype=np.float32)
    opacity[0] = 0.0  # index 0 = unlabelled (-1): the image shows through unchanged
    band = max(1, _BAND_PIXELS // max(1, width))
    for r0 in range(0, height, band):
        index = label_map[r0:r0 + band].astype(np.intp) + 1
        put = opacity[index][..., None]
        rows = out[r0:r0 + band]  # a view: written in place
        blend = rows.astype(np.float32)
        blend *= 1.0 - put
        blend += colormap[index] * put
        np.rint(blend, out=blend)
        rows[...] = blend  # in [0, 255] already: a convex combination of two uint8 values
    if legend:
        counts = np.bincount(label_map.ravel().astype(np.int64) + 1, minlength=len(class_names) + 1)
        items = [(name, colormap[i + 1]) for i, name in enumerate(class_names) if counts[i + 1]]
        if items:
            font = max(8, min(30, min(height, width) // 12))
            out = imgviz.components.legend(out, items=items, font_size=font, loc="rb")
    return Image.fromarray(out)
