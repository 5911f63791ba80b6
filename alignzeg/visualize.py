"""Overlays: class colours over the image with a legend (drawn by imgviz, a well-kept library).

Colours follow the class names, not their positions in the vocabulary:

- a name with a colour word (``"blue striped"``, ``"Red car"``: the first of ``COLOUR_WORDS`` among its words)
  is drawn in a shade of that colour, the shade picked by the whole name, so ``"blue striped"`` and
  ``"blue dotted"`` are two blues;
- any other name gets a colour of imgviz's 256-colour PASCAL map picked by a hash (CRC-32) of the name.

So a class keeps its colour when the vocabulary is reordered or extended. Two names of one vocabulary that
would get the same colour are told apart: the later one takes the next free shade or map entry.

Region outlines: where the label changes, a line in black or white (whichever contrasts with the blended pixel)
marks the boundary, so regions stay visible where a class colour is close to the image's own (``"cyan wavy"``
drawn over cyan stripes). The line is a 250th of the shorter side wide (at least 1 px).

The legend lists the classes present, bottom right, in a font that grows with the image (a 25th of its
shorter side, at least 10 px); it is drawn smaller when it would cover more than a fifth of the image, and
left out when even at 10 px it would (a 64 px image: draw it larger first, as ``alignzeg demo`` and the page do).
"""

from __future__ import annotations

import logging
import re
import zlib
from typing import Sequence

import imgviz
import numpy as np
from PIL import Image

__all__ = ["COLOUR_WORDS", "class_colors", "draw_overlay", "legend_font_size", "outline_width", "region_edges"]

logger = logging.getLogger(__name__)

COLOUR_WORDS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "orange": (245, 130, 20), "yellow": (235, 210, 20), "green": (40, 170, 50),
    "cyan": (20, 200, 210), "blue": (30, 70, 225), "purple": (135, 50, 185), "pink": (245, 110, 180),
    "magenta": (220, 30, 200), "violet": (145, 80, 220), "brown": (140, 85, 40), "black": (25, 25, 25),
    "white": (240, 240, 240), "gray": (128, 128, 128), "grey": (128, 128, 128), "silver": (190, 190, 190),
    "gold": (220, 175, 30), "teal": (0, 128, 128), "navy": (20, 30, 120), "olive": (120, 130, 30),
    "maroon": (128, 20, 40), "lime": (150, 230, 40), "turquoise": (50, 215, 200), "beige": (225, 205, 165),
}
"""Colour words (lower case) and the RGB colour a class name containing one is drawn in (its shades)."""

_SHADES = (0.0, 0.4, -0.35, 0.65, -0.55, 0.2, -0.2)
"""Shades of a colour word: > 0 mixes toward white, < 0 toward black, by that share."""

_MIN_FONT = 10
_FONT_FRACTION = 25
_LEGEND_MAX_SHARE = 0.2


def _rgb(values: Sequence[float] | np.ndarray) -> tuple[int, int, int]:
    red, green, blue = (int(round(float(v))) for v in values)
    return red, green, blue


def _shade(base: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    """``base`` mixed toward white (``amount`` > 0) or black (< 0) by ``|amount|``."""
    rgb = np.asarray(base, dtype=np.float64)
    return _rgb(rgb + amount * (255.0 - rgb) if amount >= 0 else rgb * (1.0 + amount))


def _colour_word(name: str) -> tuple[int, int, int] | None:
    """The colour of the first colour word of ``name`` (words: runs of letters, any case), or ``None``."""
    for word in re.findall(r"[a-z]+", name.lower()):
        if word in COLOUR_WORDS:
            return COLOUR_WORDS[word]
    return None


def _candidates(name: str) -> list[tuple[int, int, int]]:
    """The colours ``name`` may take, in order of preference (the first unless another name took it)."""
    start = zlib.crc32(name.strip().lower().encode("utf-8"))
    base = _colour_word(name)
    if base is not None:
        return [_shade(base, _SHADES[(start + i) % len(_SHADES)]) for i in range(len(_SHADES))]
    table = imgviz.label_colormap()  # (256, 3); entry 0 is black (kept for "unlabelled")
    return [_rgb(table[1 + (start + i) % 255]) for i in range(255)]


def class_colors(class_names: Sequence[str]) -> np.ndarray:
    """(K, 3) uint8 RGB colour of each class, by its name (rules in the module docstring).

    A name's colour does not depend on its position; within one vocabulary no two names share a colour
    while a free one is left (the earlier name keeps its first choice).
    """
    used: set[tuple[int, int, int]] = set()
    colours = []
    for name in class_names:
        options = _candidates(str(name))
        colour = next((c for c in options if c not in used), options[0])
        used.add(colour)
        colours.append(colour)
    return np.asarray(colours, dtype=np.uint8).reshape(len(colours), 3)


def _colormap(class_names: Sequence[str]) -> np.ndarray:
    """(K + 1, 3) uint8: black for unlabelled (-1, row 0), then ``class_colors``."""
    return np.concatenate([np.zeros((1, 3), np.uint8), class_colors(class_names)])


def _legend_box(names: Sequence[str], font: int) -> tuple[int, int]:
    """(height, width) in pixels of imgviz's legend of ``names`` at ``font`` px, with its margin."""
    sizes = np.array([imgviz.draw.text_size(n, font) for n in names])
    text_height, text_width = sizes.max(axis=0)
    pad = max(2, font // 6)
    return int(text_height * len(names) + 2 * pad), int(text_width + text_height + 3 * pad)


def legend_font_size(height: int, width: int, names: Sequence[str]) -> int | None:
    """The legend's font size in px for an (H, W) image listing ``names``, or ``None`` for no legend.

    A 25th of the shorter side (at least 10 px), made smaller while the legend would cover more than a fifth
    of the image; ``None`` when even at 10 px it would (or it would not fit).
    """
    font = max(_MIN_FONT, min(height, width) // _FONT_FRACTION)
    while True:
        box_h, box_w = _legend_box(names, font)
        if box_h <= height and box_w <= width and box_h * box_w <= _LEGEND_MAX_SHARE * height * width:
            return font
        if font == _MIN_FONT:
            return None
        font = max(_MIN_FONT, int(font * 0.8))


_OUTLINE_FRACTION = 250


def outline_width(height: int, width: int) -> int:
    """Width in px of the region outlines of an (H, W) overlay: a 250th of the shorter side, at least 1."""
    return max(1, round(min(height, width) / _OUTLINE_FRACTION))


def region_edges(labels: np.ndarray, rows: int, width: int) -> np.ndarray:
    """(rows, W) bool: the pixels of the first ``rows`` rows of ``labels`` whose label differs from that of a
    pixel at most ``width`` to its right or below it (``labels``: (R, W) int, R >= rows, holding up to
    ``width`` rows after them where they exist)."""
    edge = np.zeros((rows, labels.shape[1]), dtype=bool)
    for d in range(1, width + 1):
        edge[:, :-d] |= labels[:rows, :-d] != labels[:rows, d:]
        below = min(rows, labels.shape[0] - d)
        if below > 0:
            edge[:below] |= labels[:below] != labels[d:d + below]
    return edge


_BAND_PIXELS = 1 << 20
"""Pixels blended per row band (bounds the float32 temporaries to a few MB at any image size)."""


def draw_overlay(label_map: np.ndarray, class_names: Sequence[str], image: np.ndarray | None = None,
                 alpha: float = 0.5, legend: bool = True, outline: bool = True) -> Image.Image:
    """Colour a label map, blended over ``image``, with region outlines and a legend of the classes present.
    Each class has the colour of its name (``class_colors``).

    The blend is ``round((1 - alpha) * image + alpha * colour)`` per labelled pixel, as
    ``imgviz.label2rgb`` computes it, but in float32 row bands over the labelled pixels only; the
    classes present are counted with ``bincount``. An 8000 x 6000 overlay needs about the output's
    own memory (see benchmarks/bench_overlay.py).

    Args:
        label_map: (H, W) int, indices into ``class_names``; -1 (unlabelled) is left uncoloured.
        class_names: the vocabulary.
        image: (H, W, 3) uint8 RGB, or ``None`` for colours on black.
        alpha: colour opacity in [0, 1].
        legend: draw the legend of the classes present (bottom right; its size follows the image, and an
            image too small for a readable one gets none: ``legend_font_size``).
        outline: draw the boundaries between regions (labels, unlabelled included), ``outline_width`` px wide,
            black on pixels whose blended luminance is 128 or more, white on darker ones.

    Returns:
        (W, H) RGB PIL image.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    height, width = label_map.shape
    if image is not None and (image.shape != (height, width, 3) or image.dtype != np.uint8):
        raise ValueError(f"image must be ({height}, {width}, 3) uint8 to match the label map, "
                         f"got {image.shape} {image.dtype}")
    colormap = _colormap(class_names)
    out = np.zeros((height, width, 3), dtype=np.uint8) if image is None else image.copy()
    opacity = np.full(len(colormap), alpha, dtype=np.float32)
    opacity[0] = 0.0  # index 0 = unlabelled (-1): the image shows through unchanged
    band = max(1, _BAND_PIXELS // max(1, width))
    line = outline_width(height, width)
    for r0 in range(0, height, band):
        index = label_map[r0:r0 + band].astype(np.intp) + 1
        put = opacity[index][..., None]
        rows = out[r0:r0 + band]  # a view: written in place
        blend = rows.astype(np.float32)
        blend *= 1.0 - put
        blend += colormap[index] * put
        np.rint(blend, out=blend)
        rows[...] = blend  # in [0, 255] already: a convex combination of two uint8 values
        if outline:
            edge = region_edges(label_map[r0:r0 + band + line], index.shape[0], line)
            luminance = blend[edge] @ np.array([0.299, 0.587, 0.114], np.float32)
            rows[edge] = np.where(luminance >= 128.0, 0, 255).astype(np.uint8)[:, None]
    if legend:
        counts = np.bincount(label_map.ravel().astype(np.int64) + 1, minlength=len(class_names) + 1)
        items = [(name, colormap[i + 1]) for i, name in enumerate(class_names) if counts[i + 1]]
        font = legend_font_size(height, width, [name for name, _ in items]) if items else None
        if font is not None:
            out = imgviz.components.legend(out, items=items, font_size=font, loc="rb")
        elif items:
            logger.debug("overlay of %dx%d: no legend (too small for a readable one)", width, height)
    return Image.fromarray(out)
