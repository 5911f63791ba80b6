"""Run an exported AlignZeg ONNX file with onnxruntime: numpy + PIL only, no PyTorch.

    from alignzeg.onnx.runtime import OnnxSegmenter
    seg = OnnxSegmenter.load("model.onnx")
    result = seg.segment("photo.jpg", ["cat", "sofa"])   # names stored at export, or (C, E) embeddings

The same steps as ``AlignZegSegmenter.segment``: resize (short side to the crop size, long side capped),
pad, sliding windows, the graph per batch of crops, stitching, bilinear upsample + argmax, optional
unlabelled threshold; the result is an ``alignzeg.SegmentationResult``. Importing this module imports
neither torch nor open_clip (``pip install "alignzeg[onnx]"`` gives onnxruntime).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps

from ..config import AlignZegConfig
from ..names import class_name_key, resolve_bias_correction, seen_flags, validate_class_names
from ..result import SegmentationResult
from ..window_plan import plan_windows
from .metadata import INPUT_NAMES, KEY_CONFIG, KEY_FORMAT, ONNX_FORMAT, OUTPUT_NAME, read_vocabulary
from .numpy_ops import cut_windows, stitch_windows, upsample_labels

logger = logging.getLogger(__name__)

__all__ = ["OnnxSegmenter", "load_pixels", "MAX_PIXELS"]

MAX_PIXELS = 100_000_000
"""Images (files and PIL images) with more pixels are refused from their header, before decoding."""


def _check_pixels(img: Image.Image, max_pixels: int | None, what: str) -> None:
    if max_pixels is not None and img.width * img.height > max_pixels:
        raise ValueError(f"{what} is {img.width} x {img.height} = {img.width * img.height:,} pixels, above the "
                         f"limit of {max_pixels:,}; pass max_pixels= to raise it")


def _pil_to_array(img: Image.Image) -> np.ndarray:
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img, dtype=np.uint16)
    if img.mode != "RGB":
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        img = img.convert("RGB")
    return np.asarray(img)


def _array_to_pixels(array: np.ndarray) -> np.ndarray:
    """HW / HWC (1, 3 or 4 channels) uint8, uint16 or float in [0, 1] -> (3, H, W) float32 in [0, 1]."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape[:2]:
        raise ValueError(f"image array must be HxW or HxWxC with C in (1, 3, 4), got shape {array.shape}")
    if array.dtype in (np.uint8, np.uint16):
        scale = 255.0 if array.dtype == np.uint8 else 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        lo, hi = float(array[:, :, :3].min()), float(array[:, :, :3].max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ValueError(f"float images must hold finite values in [0, 1], got range [{lo:g}, {hi:g}]")
        scale = 1.0
    else:
        raise TypeError(f"image array must be uint8, uint16 or float, got dtype {array.dtype}")
    rgb = array[:, :, :3] if array.shape[2] > 1 else np.repeat(array, 3, axis=2)
    pixels = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
    if scale != 1.0:
        np.divide(pixels, np.float32(scale), out=pixels)
    return pixels


def load_pixels(image: Any, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """A path, PIL image or HWC numpy array -> (3, H, W) float32 RGB in [0, 1] (EXIF orientation applied).

    Files and PIL images of more than ``max_pixels`` pixels (``None``: no limit) are refused before decoding.

    Raises:
        TypeError: another input type (torch tensors belong to ``AlignZegSegmenter``) or dtype.
        ValueError: bad shape or value range, too many pixels, or a file PIL cannot decode.
        FileNotFoundError: a path that does not exist.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {str(path)!r}")
        try:
            with Image.open(path) as img:
                _check_pixels(img, max_pixels, f"image {str(path)!r}")
                img.load()
                return _array_to_pixels(_pil_to_array(img))
        except (OSError, SyntaxError, Image.DecompressionBombError) as err:
            raise ValueError(f"cannot decode image {str(path)!r}: {err}") from err
    if isinstance(image, Image.Image):
        _check_pixels(image, max_pixels, f"PIL image ({image.mode})")
        return _array_to_pixels(_pil_to_array(image))
    if isinstance(image, np.ndarray):
        return _array_to_pixels(image)
    raise TypeError(f"image must be a path, PIL.Image or HWC numpy array, got {type(image).__name__}")


def _unit_rows(embeddings: Any, dim: int) -> np.ndarray:
    """Validate (C, E) class embeddings and L2-normalise their rows (float32)."""
    array = np.asarray(embeddings)
    if array.ndim != 2 or array.shape[1] != dim or array.shape[0] < 1:
        raise ValueError(f"class embeddings must have shape (C, {dim}) with C >= 1, got {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"class embeddings must be floating point, got {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError("class embeddings contain NaN or infinite values")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"class embedding rows {np.flatnonzero(norms == 0).tolist()} are all zeros")
    return array / np.maximum(norms, np.float32(1e-12))


class OnnxSegmenter:
    """Zero-shot segmentation with an exported AlignZeg graph on onnxruntime.

    Args:
        session: an ``onnxruntime.InferenceSession`` of a file written by ``export_onnx``.
        batch_size: crops per graph run.
        max_pixels: image files and PIL images with more pixels are refused before decoding (``None``: no limit).
    """

    def __init__(self, session: Any, batch_size: int = 8, max_pixels: int | None = MAX_PIXELS) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        metadata = session.get_modelmeta().custom_metadata_map
        if KEY_CONFIG not in metadata:
            raise ValueError("this ONNX file was not written by alignzeg's export_onnx (no alignzeg.config metadata)")
        version = int(metadata.get(KEY_FORMAT, ONNX_FORMAT))
        if version > ONNX_FORMAT:
            raise ValueError(f"ONNX file format {version} is newer than this alignzeg supports ({ONNX_FORMAT})")
        self.session = session
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.config = AlignZegConfig.from_dict(json.loads(metadata[KEY_CONFIG]))
        self.metadata = dict(metadata)
        stored = read_vocabulary(metadata)
        self._stored = {} if stored is None else {class_name_key(n): e for n, e in zip(stored[0], stored[1])}
        self.stored_names: tuple[str, ...] = () if stored is None else stored[0]

    @classmethod
    def load(cls, path: str | os.PathLike, providers: Sequence[str] | None = None, threads: int | None = None,
             batch_size: int = 8, max_pixels: int | None = MAX_PIXELS) -> "OnnxSegmenter":
        """Open an exported file.

        Args:
            path: the ``.onnx`` file.
            providers: onnxruntime execution providers (default: ``["CPUExecutionProvider"]``).
            threads: intra-op threads (default: onnxruntime's choice, one per core).
            batch_size, max_pixels: as in the constructor.
        """
        import onnxruntime as ort

        if not Path(path).is_file():
            raise FileNotFoundError(f"ONNX file not found: {str(path)!r}")
        options = ort.SessionOptions()
        if threads is not None:
            if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
                raise ValueError(f"threads must be a positive integer, got {threads!r}")
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))
        return cls(session, batch_size=batch_size, max_pixels=max_pixels)

    # Vocabulary --------------------------------------------------------------------------------------
    def _vocabulary(self, vocabulary: Any, class_names: Sequence[str] | None
                    ) -> tuple[np.ndarray, tuple[str, ...], list[bool]]:
        """(C, E) unit embeddings, the names, and the default seen flags (the checkpoint's seen classes)."""
        if vocabulary is None:
            if not self.stored_names:
                raise ValueError("this ONNX file stores no vocabulary: pass (C, E) class embeddings, or export "
                                 "with export_onnx(..., vocabulary=[names])")
            vocabulary = self.stored_names
        if isinstance(vocabulary, np.ndarray):
            embeddings = _unit_rows(vocabulary, self.config.embed_dim)
            num = embeddings.shape[0]
            names = tuple(f"class_{i}" for i in range(num)) if class_names is None else validate_class_names(class_names)
            if len(names) != num:
                raise ValueError(f"class_names has {len(names)} names for {num} embeddings")
            return embeddings, names, [False] * num
        if class_names is not None:
            raise ValueError("class_names is only for precomputed embeddings; the vocabulary already names them")
        names = validate_class_names(vocabulary)
        missing = [n for n in names if class_name_key(n) not in self._stored]
        if missing:
            raise ValueError(f"class names {missing} are not in the vocabulary stored in this ONNX file "
                             f"({list(self.stored_names)}); there is no text tower in the graph, so pass "
                             "their embeddings (AlignZegSegmenter.encode_vocabulary) or export with them")
        embeddings = np.stack([self._stored[class_name_key(n)] for n in names])
        trained = {class_name_key(n) for n in self.config.seen_classes}
        return embeddings, names, [class_name_key(n) in trained for n in names]

    # Inference ---------------------------------------------------------------------------------------
    def predict(self, crops: np.ndarray, class_embeddings: np.ndarray, seen_mask: np.ndarray,
                bias_correction: bool = True) -> np.ndarray:
        """The raw graph: (B, 3, S, S) float32 crops in [0, 1], (C, E) unit embeddings, (C,) bool seen mask
        -> (B, C + 1, S / mask_stride, S / mask_stride) float32 probabilities (channel C: background).

        ``bias_correction`` switches PBC (files of format 1, without that input: through an all-False mask).
        """
        seen_mask = np.asarray(seen_mask, dtype=bool)
        values = [np.ascontiguousarray(crops, dtype=np.float32), np.ascontiguousarray(class_embeddings, dtype=np.float32)]
        if INPUT_NAMES[3] in self._input_names:
            values += [seen_mask, np.array([bool(bias_correction)])]
        else:
            values.append(seen_mask if bias_correction else np.zeros_like(seen_mask))
        return self.session.run([OUTPUT_NAME], dict(zip(INPUT_NAMES, values)))[0]

    @property
    def _input_names(self) -> set[str]:
        return {i.name for i in self.session.get_inputs()}

    def segment(self, image: Any, vocabulary: Any = None, *, seen: Sequence[Any] | None = None,
                bias_correction: bool | None = None, unlabelled_threshold: float | None = None,
                class_names: Sequence[str] | None = None, keep_image: bool = True) -> SegmentationResult:
        """Segment one image, as ``AlignZegSegmenter.segment`` does.

        Args:
            image: path, PIL image, or HWC numpy array (uint8/uint16/float in [0, 1]).
            vocabulary: class names stored in the file at export (any subset, any order; ``None``: all of
                them), or (C, E) class embeddings as a numpy array (then ``class_names`` may name them).
            seen, bias_correction, unlabelled_threshold, keep_image: as in ``AlignZegSegmenter.segment``
                (``bias_correction=None``: on when the exported model's class indicator was trained).

        Returns:
            SegmentationResult with ``label_map`` (H, W) int32 at the input's size.
        """
        if unlabelled_threshold is not None and not 0.0 <= float(unlabelled_threshold) <= 1.0:
            raise ValueError(f"unlabelled_threshold must be in [0, 1] or None, got {unlabelled_threshold!r}")
        embeddings, names, default_seen = self._vocabulary(vocabulary, class_names)
        flags = np.asarray(default_seen if seen is None else seen_flags(seen, names), dtype=bool)
        bias_correction = resolve_bias_correction(bias_correction, self.config.indicator_trained, flags.tolist())
        # PBC is a plain softmax without seen classes or without unseen ones.
        active = bool(bias_correction and flags.any() and not flags.all())
        pixels = load_pixels(image, self.max_pixels)
        plan = plan_windows(pixels.shape[1:], self.config)
        crops = cut_windows(pixels, plan, np.asarray(self.config.mean, dtype=np.float32))
        outputs = [self.predict(crops[i:i + self.batch_size], embeddings, flags, active)
                   for i in range(0, len(crops), self.batch_size)]
        probs = stitch_windows(np.concatenate(outputs), plan)
        labels, confidence = upsample_labels(probs, plan.image_size, unlabelled_threshold)
        kept = np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0) if keep_image else None
        return SegmentationResult(label_map=labels, scores=confidence, class_names=names, class_probs=probs,
                                  seen=flags, bias_correction=bias_correction, image=kept)

    def __repr__(self) -> str:
        cfg = self.config
        return (f"OnnxSegmenter(clip={cfg.clip_model!r}, input_size={cfg.input_size}, "
                f"stored_classes={len(self.stored_names)}, providers={self.session.get_providers()})")
