"""Overlays: class colours over the image with a legend (drawn by imgviz, a well-kept library)."""

from __future__ import annotations

from typing import Sequence

import imgviz
import numpy as np
from PIL import Image

__all__ = ["draw_overlay", "class_colors"]


def class_colors(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 RGB colour of each vocabulary index (PASCAL-style colour map, black skipped)."""
    return _colormap(num_classes + 1)[1:num_classes + 1]


def _colormap(size: int) -> np.ndarray:
    """(max(size, 256), 3) uint8: imgviz's 256-colour PASCAL map, repeated past 256 entries."""
    base = imgviz.label_colormap()
    reps = -(-size // len(base))
    return np.concatenate([base] + [base[1:]] * reps)[: max(size, len(base))]


def draw_overlay(label_map: np.ndarray, class_names: Sequence[str], image: np.ndarray | None = None,
                 alpha: float = 0.5, legend: bool = True) -> Image.Image:
    """Colour a label map, blended over ``image``, with a legend of the classes present.

    Args:
        label_map: (H, W) int, indices into ``class_names``; -1 (unlabelled) is left uncoloured.
        class_names: the vocabulary.
        image: (H, W, 3) uint8 RGB, or ``None`` for colours on black.
        alpha: colour opacity in [0, 1].
        legend: draw the legend (bottom right).

    Returns:
        (W, H) RGB PIL image.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = label_map.shape
    if image is None:
        image = np.zeros((height, width, 3), dtype=np.uint8)
    shifted = label_map.astype(np.int64) + 1  # 0 = unlabelled, drawn transparent
    colormap = _colormap(len(class_names) + 1)
    alphas = {0: 0.0, **{i + 1: alpha for i in range(len(class_names))}}
    names = {i + 1: name for i, name in enumerate(class_names)} if legend else None
    font = max(8, min(30, min(height, width) // 12))
    rgb = imgviz.label2rgb(shifted, image=image, alpha=alphas, label_names=names, colormap=colormap,
                           font_size=font, loc="rb")
    return Image.fromarray(rgb)
