"""Image inputs -> (3, H, W) float32 RGB in [0, 1], with numpy and PIL only.

Accepted: a path, a PIL image (any mode: gray, RGBA, palette, 16-bit, 32-bit "I"/"F", CMYK; EXIF orientation
honoured), an HWC numpy array (uint8, uint16, or float in [0, 1]; 1, 3 or 4 channels; or HW gray; any byte
order). The PyTorch back-end adds CHW/BCHW tensors (``chw_images``, below). Anything else gets a
``TypeError``/``ValueError`` that names it. Alpha is dropped, never composited: each pixel keeps the colour
stored under it (fully transparent pixels, usually stored as 0, 0, 0, are read as black).

Files and PIL images are checked against a pixel limit (``MAX_PIXELS``, or the ``max_pixels`` argument)
*before* they are decoded: a small file that declares a huge image (a decompression bomb) is refused
from its header, in microseconds, with a ``ValueError`` naming its size.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageInput", "SupportsArray", "LoadedImage", "MAX_PIXELS", "IMAGE_TYPES", "decode_image", "from_array", "check_size", "check_image_list",
           "unsupported_image", "chw_images"]

MAX_PIXELS = 100_000_000
"""Default limit on the pixel count (H x W) of an image file or PIL image, checked before decoding.

100 megapixels (e.g. 12,000 x 8,000) decode to ~300 MB of uint8 RGB and ~1.2 GB as float32. Raise it per
segmenter with ``max_pixels=...``; ``None`` means no limit. PIL refuses images above twice its own
``PIL.Image.MAX_IMAGE_PIXELS`` (~179 MP) when opening them; raise that too for larger images.
"""

class SupportsArray(Protocol):
    """A back-end's own array type (a torch tensor): anything numpy can read through ``__array__``. The back-end's
    ``_native_array`` says whether it takes one."""

    def __array__(self) -> Any: ...


IMAGE_TYPES = "a path, PIL.Image, HWC numpy array or (PyTorch back-end) CHW/BCHW torch tensor"
"""What ``segment`` accepts, as error messages name it (the same text in both back-ends)."""

_BAND_ELEMENTS = 1 << 22
"""Floats converted per row band in ``LoadedImage.to_uint8`` (bounds its temporary memory to 16 MiB)."""

_URL_SCHEMES = ("http://", "https://", "ftp://", "s3://", "gs://", "data:")


@dataclass
class LoadedImage:
    """One decoded image.

    Attributes:
        pixels: (3, H, W) float32 RGB in [0, 1], C-contiguous, in host memory.
        name: file name when it came from a path, else ``None``.
    """

    pixels: np.ndarray
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
            rows = np.clip(self.pixels[:, r0:r0 + band], 0, 1) * np.float32(255)
            out[r0:r0 + band] = np.round(rows).astype(np.uint8).transpose(1, 2, 0)
        return out


ImageInput = Union[str, os.PathLike[str], Image.Image, np.ndarray, LoadedImage, SupportsArray]
"""What ``segment`` accepts: a file path, a PIL image, an HWC numpy array, an already decoded ``LoadedImage``,
or the back-end's own array type (the PyTorch back-end: a CHW/BCHW torch tensor)."""


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
                         f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels; raise PIL.Image.MAX_IMAGE_PIXELS and max_pixels= "
                         "if you trust the file") from err
    except UnidentifiedImageError as err:
        raise ValueError(f"{str(path)!r} is not an image file PIL can read") from err
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode image {str(path)!r} (truncated or corrupt?): {err}") from err


def _from_pil(img: Image.Image, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    _check_pixels(img.width, img.height, max_pixels, f"PIL image ({img.mode})")
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return from_array(np.asarray(img, dtype=np.uint16))
    if img.mode in ("I", "F"):
        return from_array(_wide_to_unit(np.asarray(img), img.mode))
    if img.mode != "RGB":
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        img = img.convert("RGB")
    return from_array(np.asarray(img))


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


def check_size(height: int, width: int, what: str) -> None:
    """Refuse an empty spatial size."""
    if height < 1 or width < 1:
        raise ValueError(f"{what} has an empty spatial size {height}x{width}")


def from_array(array: np.ndarray) -> np.ndarray:
    """HW / HWC (1, 3 or 4 channels; alpha dropped) uint8, uint16 or float in [0, 1], any byte order
    -> (3, H, W) float32 in [0, 1]."""
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer)
                                       or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"image array must be uint8, uint16 or float, got dtype {array.dtype}")
    if not array.dtype.isnative:  # big-endian data (e.g. from FITS or network formats): same values, native order
        array = array.astype(array.dtype.newbyteorder("="))
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"image array must be HxW or HxWxC, got shape {array.shape}")
    if array.shape[2] not in (1, 3, 4):
        hint = " (it looks CHW: use array.transpose(1, 2, 0))" if array.shape[0] in (1, 3, 4) else ""
        raise ValueError(f"image array must have 1, 3 or 4 channels last, got shape {array.shape}{hint}")
    check_size(array.shape[0], array.shape[1], f"image array of shape {array.shape}")
    scale = _unit_scale(array)
    # One float32 allocation: each channel is cast straight into the (3, H, W) output, then scaled in place.
    out = np.empty((3, array.shape[0], array.shape[1]), dtype=np.float32)
    for channel in range(3):
        out[channel] = array[:, :, channel if array.shape[2] > 1 else 0]
    if scale != 1.0:
        np.divide(out, np.float32(scale), out=out)
    return out


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


def decode_image(image: Any, max_pixels: int | None = MAX_PIXELS) -> LoadedImage | None:
    """Decode a path, PIL image or HWC numpy array; ``None`` for any other type (the caller decides).

    Raises:
        TypeError: an unsupported dtype.
        ValueError: bad shape, value range, NaN, an undecodable file, a URL, or more than ``max_pixels`` pixels.
        FileNotFoundError: a path that does not exist. IsADirectoryError: a path to a folder.
    """
    if isinstance(image, LoadedImage):
        return image
    if isinstance(image, (str, os.PathLike)):
        return _from_path(image, max_pixels)
    if isinstance(image, Image.Image):
        return LoadedImage(_from_pil(image, max_pixels))
    if isinstance(image, np.ndarray):
        return LoadedImage(from_array(image))
    return None


def chw_images(array: np.ndarray) -> list[LoadedImage]:
    """A back-end's CHW (one image) or BCHW (B images) tensor, as a CPU numpy array (float in [0, 1] or uint8),
    -> ``LoadedImage``s (a 1-channel image is replicated to RGB).

    Raises:
        ValueError: another rank, an empty batch, not 1 or 3 channels first, an empty spatial size, NaN/inf or
            float values outside [0, 1] (the message gives the shape or the range).
        TypeError: a dtype other than float or uint8.
    """
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"image tensor must be CHW or BCHW, got shape {tuple(array.shape)}")
    if array.shape[0] == 0:
        raise ValueError("image batch is empty")
    if array.shape[1] not in (1, 3):
        hint = " (it looks HWC: use tensor.permute(2, 0, 1))" if array.shape[-1] in (1, 3, 4) else ""
        raise ValueError(f"image tensor must have 1 or 3 channels first, got shape {tuple(array.shape)}{hint}")
    check_size(array.shape[2], array.shape[3], f"image tensor of shape {tuple(array.shape)}")
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
        lo, hi = float(array.min()), float(array.max())  # NaN propagates through min/max
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"image tensor contains NaN or infinite values (min {lo}, max {hi})")
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"float image tensors must hold values in [0, 1], got range [{lo:g}, {hi:g}]")
    else:
        raise TypeError(f"image tensor must be float or uint8, got {array.dtype}")
    if array.shape[1] == 1:
        array = np.broadcast_to(array, (array.shape[0], 3, *array.shape[2:]))
    return [LoadedImage(np.ascontiguousarray(image, dtype=np.float32)) for image in array]


def unsupported_image(image: Any) -> TypeError:
    """The error for an input of a type no decoder takes (one message for both back-ends)."""
    return TypeError(f"image must be {IMAGE_TYPES}, got {type(image).__name__}")


def check_image_list(images: Any) -> list[Any]:
    """``segment_batch``'s ``images`` as a list (a non-empty list, tuple or other iterable of inputs)."""
    if not isinstance(images, (list, tuple)) and not hasattr(images, "__iter__"):
        raise TypeError(f"images must be a list of images, got {type(images).__name__}")
    images = list(images)
    if not images:
        raise ValueError("image batch is empty")
    return images
