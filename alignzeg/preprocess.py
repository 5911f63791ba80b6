"""PyTorch image inputs: CHW/BCHW tensors -> ``LoadedImage``s (the other inputs go through the shared
decoder, ``alignzeg.pipeline.images``: paths, PIL images, numpy arrays), and torch's implementation of the
pipeline's resize (``pipeline.windows.resize_bilinear``)."""

from __future__ import annotations

import os
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .pipeline.images import MAX_PIXELS, LoadedImage, check_size

__all__ = ["ImageInput", "LoadedImage", "MAX_PIXELS", "tensor_images", "resize_pixels"]

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray, torch.Tensor]
"""What ``segment`` accepts: a file path, a PIL image, an HWC numpy array or a CHW/BCHW torch tensor."""


def tensor_images(tensor: Any) -> list[LoadedImage] | None:
    """A CHW (one image) or BCHW (B images) tensor, float in [0, 1] or uint8 -> ``LoadedImage``s; ``None``
    for anything that is not a tensor."""
    if not isinstance(tensor, torch.Tensor):
        return None
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 4:
        raise ValueError(f"image tensor must be CHW or BCHW, got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise ValueError("image batch is empty")
    if tensor.shape[1] not in (1, 3):
        hint = " (it looks HWC: use tensor.permute(2, 0, 1))" if tensor.shape[-1] in (1, 3, 4) else ""
        raise ValueError(f"image tensor must have 1 or 3 channels first, got shape {tuple(tensor.shape)}{hint}")
    check_size(tensor.shape[2], tensor.shape[3], f"image tensor of shape {tuple(tensor.shape)}")
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.uint8:
        tensor = tensor.to(torch.float32).div_(255.0)
    elif tensor.is_floating_point():
        tensor = tensor.float()
        lo, hi = (float(v) for v in torch.aminmax(tensor))  # NaN propagates through min/max
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"image tensor contains NaN or infinite values (min {lo}, max {hi})")
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"float image tensors must hold values in [0, 1], got range [{lo:g}, {hi:g}]")
    else:
        raise TypeError(f"image tensor must be float or uint8, got {tensor.dtype}")
    if tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    return [LoadedImage(np.ascontiguousarray(t.numpy(), dtype=np.float32)) for t in tensor]


def resize_pixels(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] -> (3, h, w): bilinear, antialiased when shrinking, clipped to [0, 1].

    The same function as ``pipeline.windows.resize_bilinear`` (PIL's triangle filter), computed by torch
    (agreement within 1e-4, tested).
    """
    out = F.interpolate(pixels[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp_(0.0, 1.0)
