"""Sliding-window inference geometry: plan where an image's square crops come from, cut them, stitch the outputs.

An image is resized so its short side equals the model's ``input_size`` (its long side capped at
``max_long_side``; a side that ends up shorter than a crop is padded), both sides rounded to a multiple of
the mask stride so every window lands on the low-resolution output grid. Crop outputs are averaged where
windows overlap. All coordinates are (row, column) = (y, x), top-left origin. Both back-ends cut and stitch here:
``cut_windows`` and ``stitch_windows`` use only what numpy and torch share (slicing, ``+=``, ``/`` and the
namespace functions ``zeros``, ``stack``), so they run on the back-end's own arrays (``xp``: numpy by default,
torch for the PyTorch back-end) with the same float32 values; the module itself imports numpy and PIL only.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..config import AlignZegConfig

__all__ = ["WindowPlan", "WindowStitcher", "plan_windows", "resize_bilinear", "cut_windows", "stitch_windows"]


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


def resize_bilinear(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (3, H, W) float32 to (3, h, w), antialiased when shrinking, clipped to [0, 1].

    PIL's float ("F" mode) resampling uses the triangle filter that ``F.interpolate(mode="bilinear",
    antialias=True)`` reproduces; when enlarging both axes it equals plain bilinear (``align_corners=False``).
    """
    height, width = size
    out = np.empty((pixels.shape[0], height, width), dtype=np.float32)
    for channel, plane in enumerate(pixels):
        out[channel] = np.asarray(Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
                                  .resize((width, height), Image.Resampling.BILINEAR))
    return np.clip(out, 0.0, 1.0, out=out)


def cut_windows(pixels: np.ndarray, plan: WindowPlan, fill: np.ndarray,
                resize: Callable[[np.ndarray, tuple[int, int]], Any] | None = None, xp: ModuleType = np) -> Any:
    """Resize, pad with ``fill`` (3,) and cut one (3, H, W) float32 image into (n, 3, crop, crop) float32 crops.

    Args:
        pixels: (3, H, W) float32 in [0, 1].
        plan: its ``plan_windows``.
        fill: (3,) the padding value per channel (the CLIP mean).
        resize: ``resize_bilinear`` or a back-end's ``_resize`` (same arguments, called once, also when no
            resizing is needed: it returns the pixels as an ``xp`` array); ``None``: ``resize_bilinear`` when the
            size differs.
        xp: the array namespace of ``resize``'s result (numpy, or torch).

    Returns:
        (n, 3, crop, crop) float32 ``xp`` array, the crops in ``plan.origins`` order.
    """
    if resize is not None:
        image = resize(pixels, plan.resized)
    else:
        image = pixels if tuple(pixels.shape[1:]) == plan.resized else resize_bilinear(pixels, plan.resized)
    if plan.padded != plan.resized:
        canvas = xp.zeros((3, *plan.padded), dtype=xp.float32)
        for channel, value in enumerate(np.asarray(fill, dtype=np.float32).tolist()):
            canvas[channel] = value
        canvas[:, : plan.resized[0], : plan.resized[1]] = image
        image = canvas
    c = plan.crop
    return xp.stack([image[:, y:y + c, x:x + c] for y, x in plan.origins])


class WindowStitcher:
    """Averages one image's window maps as they arrive, at the mask resolution (``stitch_windows`` in pieces).

    The pipeline hands each batch's window maps to their images' stitchers and drops the batch: what stays per
    image is one (K, padded_h/cell, padded_w/cell) float32 sum and a (1, ...) count, never all its windows' maps
    at once. Windows must arrive in ``plan.origins`` order (the sums are then added in the order
    ``stitch_windows`` adds them: the same float32 values).

    Args:
        plan: the image's ``plan_windows``.
        xp: the array namespace of the window maps (numpy, or torch).
    """

    def __init__(self, plan: WindowPlan, xp: ModuleType = np) -> None:
        self.plan, self.xp = plan, xp
        self.added = 0
        self._total: Any = None
        self._count: Any = None

    def add(self, window: Any) -> None:
        """Add the next window's (K, crop/cell, crop/cell) float32 map (an ``xp`` array)."""
        plan, cell = self.plan, self.plan.cell
        if self.added >= len(plan.origins):
            raise ValueError(f"this image has {len(plan.origins)} windows; got a map for window {self.added + 1}")
        if len(plan.origins) == 1:  # one window (short side resized to the crop, long side fits): no overlap
            self._total = window[:, : plan.resized[0] // cell, : plan.resized[1] // cell]
        else:
            if self._total is None:
                self._total = self.xp.zeros((window.shape[0], plan.padded[0] // cell, plan.padded[1] // cell),
                                            dtype=self.xp.float32)
                self._count = self.xp.zeros((1, *self._total.shape[1:]), dtype=self.xp.float32)
            side = window.shape[-1]
            y, x = (value // cell for value in plan.origins[self.added])
            self._total[:, y:y + side, x:x + side] += window
            self._count[:, y:y + side, x:x + side] += 1
        self.added += 1

    def result(self) -> Any:
        """(K, resized_h/cell, resized_w/cell) float32: the average of the windows covering each cell.

        Raises:
            ValueError: not every window of the plan was added (the message says how many were).
        """
        plan = self.plan
        if self.added != len(plan.origins):
            raise ValueError(f"this image has {len(plan.origins)} windows; {self.added} were added")
        if len(plan.origins) == 1:
            return self._total
        self._total /= self._count  # in place: the image's one (K, h, w) map
        return self._total[:, : plan.resized[0] // plan.cell, : plan.resized[1] // plan.cell]


def stitch_windows(window_maps: Any, plan: WindowPlan, xp: ModuleType = np) -> Any:
    """Average (n, K, crop/cell, crop/cell) float32 window maps (an ``xp`` array: numpy or torch) into
    (K, resized_h/cell, resized_w/cell) float32 of the same kind (``WindowStitcher`` with all maps at once)."""
    stitcher = WindowStitcher(plan, xp)
    for window in window_maps:
        stitcher.add(window)
    return stitcher.result()
