"""Sliding-window inference geometry: resize, pad, cut into square crops, stitch crop outputs back.

An image is resized so its short side equals the model's ``input_size`` (its long side capped at
``max_long_side``; a side that ends up shorter than a crop is padded), both sides rounded to a multiple of
the mask stride so every window lands on the low-resolution output grid. Crop outputs are averaged where
windows overlap. All coordinates are (row, column) = (y, x), top-left origin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .window_plan import WindowPlan, num_windows, plan_windows

__all__ = ["WindowPlan", "plan_windows", "num_windows", "cut_windows", "stitch_windows"]


def cut_windows(pixels: torch.Tensor, plan: WindowPlan, fill: torch.Tensor) -> torch.Tensor:
    """Resize, pad and cut one image.

    Args:
        pixels: (3, H, W) float in [0, 1].
        plan: from ``plan_windows``.
        fill: (3,) float in [0, 1], the padding colour (the normalisation mean, so padding maps to 0).

    Returns:
        (n_windows, 3, crop, crop) float.
    """
    image = pixels.unsqueeze(0)
    if tuple(image.shape[-2:]) != plan.resized:
        antialias = plan.resized[0] < image.shape[-2] or plan.resized[1] < image.shape[-1]
        image = F.interpolate(image, size=plan.resized, mode="bilinear", align_corners=False, antialias=antialias)
        image = image.clamp(0, 1)
    if plan.padded != plan.resized:
        canvas = fill.view(1, 3, 1, 1).to(image).expand(1, 3, *plan.padded).clone()
        canvas[..., : plan.resized[0], : plan.resized[1]] = image
        image = canvas
    c = plan.crop
    return torch.cat([image[..., y:y + c, x:x + c] for y, x in plan.origins])


def stitch_windows(window_maps: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
    """Average per-window low-resolution maps into one map of the resized image.

    Args:
        window_maps: (n_windows, K, crop/cell, crop/cell) float.
        plan: the plan the windows were cut with.

    Returns:
        (K, resized_h/cell, resized_w/cell) float: the padding cut off.
    """
    n, channels, side, _ = window_maps.shape
    cell = plan.cell
    if n == 1:  # one window (any image whose short side is resized to the crop and long side fits): no overlap
        return window_maps[0, :, : plan.resized[0] // cell, : plan.resized[1] // cell]
    total = torch.zeros(channels, plan.padded[0] // cell, plan.padded[1] // cell,
                        dtype=window_maps.dtype, device=window_maps.device)
    count = torch.zeros(1, *total.shape[1:], dtype=window_maps.dtype, device=window_maps.device)
    for (y, x), window in zip(plan.origins, window_maps):
        y, x = y // cell, x // cell
        total[:, y:y + side, x:x + side] += window
        count[:, y:y + side, x:x + side] += 1
    stitched = total / count
    return stitched[:, : plan.resized[0] // cell, : plan.resized[1] // cell]
