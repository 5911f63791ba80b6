"""Image inputs -> float RGB tensors in [0, 1].

Accepted: a path, a PIL image (any mode: gray, RGBA, palette, 16-bit, CMYK; EXIF orientation honoured),
an HWC numpy array (uint8, uint16, or float in [0, 1]; 1, 3 or 4 channels; or HW gray), and a CHW/BCHW
torch tensor (float in [0, 1] or uint8). Anything else gets a ``TypeError``/``ValueError`` that names it.

Files and PIL images are checked against a pixel limit (``MAX_PIXELS``, or the ``max_pixels`` argument)
*before* they are decoded: a small file that declares a huge image (a decompression bomb) is refused
from its header, in microseconds, with a ``ValueError`` naming its size.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageInput", "LoadedImage", "MAX_PIXELS", "load_image", "load_images"]

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray, torch.Tensor]
"""What ``segment`` accepts: a file path, a PIL image, an HWC numpy array or a CHW/BCHW torch tensor."""

MAX_PIXELS = 100_000_000
"""Default limit on the pixel count (H x W) of an image file or PIL image, checked before decoding.

100 megapixels (e.g. 12,000 x 8,000) decode to ~300 MB of uint8 RGB and ~1.2 GB as float32. Raise it per
segmenter with ``AlignZegSegmenter(max_pixels=...)`` or per call of ``load_image``; ``None`` means no
limit. PIL refuses images above twice its own ``PIL.Image.MAX_IMAGE_PIXELS`` (~179 MP) when opening
them; raise that too for larger images.
"""

_BAND_ELEMENTS = 1 << 22
"""Floats converted per row band in ``LoadedImage.to_uint8`` (bounds its temporary memory to 16 MiB)."""


@dataclass
class LoadedImage:
    """One decoded image.

    Attributes:
        pixels: (3, H, W) float32 RGB in [0, 1], on the CPU.
        name: file name when it came from a path, else ``None``.
    """

    pixels: torch.Tensor
    name: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[2])

    def to_uint8(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB copy, for drawing overlays (converted in row bands: no full-size float temporaries)."""
        height, width = self.size
        out = np.empty((height, width, 3), dtype=np.uint8)
        band = max(1, _BAND_ELEMENTS // max(1, 3 * width))
        for r0 in range(0, height, band):
            rows = self.pixels[:, r0:r0 + band].clamp(0, 1).mul_(255).round_().to(torch.uint8)
            out[r0:r0 + band] = rows.permute(1, 2, 0).numpy()
        return out


_URL_SCHEMES = ("http://", "https://", "ftp://", "s3://", "gs://", "data:")


def _check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """Refuse an image of more than ``max_pixels`` pixels (from its header: nothing is decoded yet)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ValueError(
            f"{what} is {width} x {height} = {width * height:,} pixels, above the limit of {max_pixels:,} "
            "(a decompression bomb, or an image larger than expected); pass max_pixels= to raise the limit"
        )


def _from_path(path: str | os.PathLike, max_pixels: int | None) -> LoadedImage:
    text = os.fspath(path)
    if isinstance(text, str) and text.lower().startswith(_URL_SCHEMES):
        raise ValueError(f"image {text!r} is a URL; URLs are not supported, download it first and pass the file path")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"image path {str(path)!r} is a directory, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {str(path)!r}")
    try:
        with warnings.catch_warnings():
            # PIL warns above MAX_IMAGE_PIXELS and raises above twice that; alignzeg applies its own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_pixels(img.width, img.height, max_pixels, f"image {str(path)!r}")
                img.load()
                return LoadedImage(_from_pil(img, max_pixels), name=path.name)
    except Image.DecompressionBombError as err:
        raise ValueError(f"image {str(path)!r} is too large to decode: {err}. PIL refuses images above "
                         f"{2 * Image.MAX_IMAGE_PIXELS:,} pixels; raise PIL.Image.MAX_IMAGE_PIXELS and max_pixels= "
                         "if you trust the file") from err
    except UnidentifiedImageError as err:
        raise ValueError(f"{str(path)!r} is not an image file PIL can read") from err
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode image {str(path)!r} (truncated or corrupt?): {err}") from err


def _from_pil(img: Image.Image, max_pixels: int | None = MAX_PIXELS) -> torch.Tensor:
    _check_pixels(img.width, img.height, max_pixels, f"PIL image ({img.mode})")
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        array = np.asarray(img, dtype=np.uint16)
        return _from_numpy(array)
    if img.mode in ("I", "F"):
        return _from_numpy(_wide_to_unit(np.asarray(img), img.mode))
    if img.mode != "RGB":
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        img = img.convert("RGB")
    return _from_numpy(np.asarray(img))


def _wide_to_unit(array: np.ndarray, mode: str) -> np.ndarray:
    """32-bit integer ("I") or float ("F") PIL data -> float32 in [0, 1].

    The bit depth is not recorded in these modes, so the range is inferred: float data already in [0, 1]
    is kept, data up to 255 is read as 8-bit, anything larger as 16-bit (clipped to 65535).
    """
    array = array.astype(np.float64)
    lo, hi = float(array.min(initial=0)), float(array.max(initial=0))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"PIL image of mode {mode!r} contains NaN or infinite values")
    top = 1.0 if mode == "F" and hi <= 1.0 else 255.0 if hi <= 255.0 else 65535.0
    return (array / top).clip(0, 1).astype(np.float32)


def _check_size(height: int, width: int, what: str) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"{what} has an empty spatial size {height}x{width}")


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer)
                                       or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"image array must be uint8, uint16 or float, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"image array must be HxW or HxWxC, got shape {array.shape}")
    if array.shape[2] not in (1, 3, 4):
        hint = " (it looks CHW: use array.transpose(1, 2, 0))" if array.shape[0] in (1, 3, 4) else ""
        raise ValueError(f"image array must have 1, 3 or 4 channels last, got shape {array.shape}{hint}")
    _check_size(array.shape[0], array.shape[1], f"image array of shape {array.shape}")
    scale = _unit_scale(array)
    # One float32 allocation: each channel is cast straight into the (3, H, W) output, then scaled in place.
    pixels = torch.empty((3, array.shape[0], array.shape[1]), dtype=torch.float32)
    out = pixels.numpy()
    for channel in range(3):
        out[channel] = array[:, :, channel if array.shape[2] > 1 else 0]
    if scale != 1.0:
        np.divide(out, np.float32(scale), out=out)
    return pixels


def _unit_scale(array: np.ndarray) -> float:
    """The divisor that maps ``array`` (HWC, channels 1, 3 or 4) to [0, 1]; validates float data."""
    if array.dtype == np.uint8:
        return 255.0
    if array.dtype == np.uint16:
        return 65535.0
    if np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"integer image arrays must be uint8 or uint16, got {array.dtype}")
    colour = array[:, :, :3]
    lo, hi = float(colour.min()), float(colour.max())  # NaN propagates through min/max
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"image array contains NaN or infinite values (min {lo}, max {hi})")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"float images must hold values in [0, 1], got range [{lo:g}, {hi:g}]"
            + ("; divide by 255 for 0..255 data" if hi <= 255.0 and lo >= 0.0 else "")
        )
    return 1.0


def _from_tensor(tensor: torch.Tensor) -> list[torch.Tensor]:
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 4:
        raise ValueError(f"image tensor must be CHW or BCHW, got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise ValueError("image batch is empty")
    if tensor.shape[1] not in (1, 3):
        hint = " (it looks HWC: use tensor.permute(2, 0, 1))" if tensor.shape[-1] in (1, 3, 4) else ""
        raise ValueError(f"image tensor must have 1 or 3 channels first, got shape {tuple(tensor.shape)}{hint}")
    _check_size(tensor.shape[2], tensor.shape[3], f"image tensor of shape {tuple(tensor.shape)}")
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
    return [t.contiguous() for t in tensor]


def load_image(image: ImageInput, max_pixels: int | None = MAX_PIXELS) -> list[LoadedImage]:
    """Decode one input; a BCHW tensor gives B images, everything else one.

    Args:
        image: see ``ImageInput``.
        max_pixels: files and PIL images with more pixels are refused before decoding; ``None``: no limit.

    Raises:
        TypeError: an unsupported type or dtype.
        ValueError: bad shape, value range, NaN, an undecodable file, a URL, or more than ``max_pixels`` pixels.
        FileNotFoundError: a path that does not exist. IsADirectoryError: a path to a folder.
    """
    if isinstance(image, LoadedImage):
        return [image]
    if isinstance(image, (str, os.PathLike)):
        return [_from_path(image, max_pixels)]
    if isinstance(image, Image.Image):
        return [LoadedImage(_from_pil(image, max_pixels))]
    if isinstance(image, np.ndarray):
        return [LoadedImage(_from_numpy(image))]
    if isinstance(image, torch.Tensor):
        return [LoadedImage(t) for t in _from_tensor(image)]
    raise TypeError(
        "image must be a path, PIL.Image, HWC numpy array or CHW/BCHW torch tensor, "
        f"got {type(image).__name__}"
    )


def load_images(images: Sequence[ImageInput] | ImageInput, max_pixels: int | None = MAX_PIXELS) -> list[LoadedImage]:
    """Decode a list of inputs (each may itself be a BCHW batch); ``max_pixels`` as in ``load_image``."""
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray, torch.Tensor, LoadedImage)):
        return load_image(images, max_pixels)
    if not isinstance(images, (Sequence, set, frozenset)) and not hasattr(images, "__iter__"):
        raise TypeError(f"images must be a list of images, got {type(images).__name__}")
    images = list(images)
    if not images:
        raise ValueError("image batch is empty")
    return [loaded for image in images for loaded in load_image(image, max_pixels)]
