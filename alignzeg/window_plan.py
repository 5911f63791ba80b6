"""Sliding-window geometry without torch: where an image's square crops come from.

An image is resized so its short side equals the model's ``input_size`` (its long side capped at
``max_long_side``; a side that ends up shorter than a crop is padded), both sides rounded to a multiple of
the mask stride so every window lands on the low-resolution output grid. All coordinates are
(row, column) = (y, x), top-left origin. ``alignzeg.sliding_window`` (torch) and ``alignzeg.onnx.runtime``
(numpy) cut and stitch by these plans.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import AlignZegConfig

__all__ = ["WindowPlan", "plan_windows", "num_windows"]


@dataclass(frozen=True)
class WindowPlan:
    """Where one image's crops come from.

    Attributes:
        image_size: (H, W) of the original image.
        resized: (h, w) after resizing, multiples of ``cell``.
        padded: (h, w) after padding to at least one crop, multiples of ``cell``.
        origins: top-left (y, x) of each crop in padded pixels, multiples of ``cell``.
        crop: side of the square crop in pixels.
        cell: pixels per low-resolution output cell (the mask stride).
    """

    image_size: tuple[int, int]
    resized: tuple[int, int]
    padded: tuple[int, int]
    origins: tuple[tuple[int, int], ...]
    crop: int
    cell: int


def _axis_origins(length: int, crop: int, stride: int) -> list[int]:
    if length <= crop:
        return [0]
    origins = list(range(0, length - crop, stride))
    return origins + [length - crop]


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def plan_windows(image_size: tuple[int, int], config: AlignZegConfig) -> WindowPlan:
    """Plan the crops of an (H, W) image for a model with ``config``."""
    height, width = image_size
    crop, cell = config.input_size, config.mask_stride
    scale = crop / min(height, width)
    if max(height, width) * scale > config.max_long_side:
        scale = config.max_long_side / max(height, width)
    resized = (_round_to(height * scale, cell), _round_to(width * scale, cell))
    padded = (max(resized[0], crop), max(resized[1], crop))
    stride = max(cell, config.window_stride // cell * cell)
    origins = tuple((y, x) for y in _axis_origins(padded[0], crop, stride)
                    for x in _axis_origins(padded[1], crop, stride))
    return WindowPlan((height, width), resized, padded, origins, crop, cell)


def num_windows(image_size: tuple[int, int], config: AlignZegConfig) -> int:
    """How many crops an (H, W) image needs (for batching and progress)."""
    return len(plan_windows(image_size, config).origins)

