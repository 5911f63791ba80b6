"""Run an exported AlignZeg ONNX file with onnxruntime: numpy + PIL only, no PyTorch.

    from alignzeg.onnx.runtime import OnnxSegmenter
    seg = OnnxSegmenter.load("model.onnx")
    result = seg.segment("photo.jpg", ["cat", "sofa"])   # names stored at export, or (C, E) embeddings

The steps of ``AlignZegSegmenter.segment``, from the same code (``alignzeg.pipeline``): decode, resize (short
side to the crop size, long side capped), pad, sliding windows, the graph per batch of crops, stitching,
bilinear upsample + argmax, optional unlabelled threshold; the result is an ``alignzeg.SegmentationResult``.
Importing this module imports neither torch nor open_clip (``pip install "alignzeg[onnx]"`` gives onnxruntime).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import AlignZegConfig
from ..pipeline.images import MAX_PIXELS
from ..pipeline.labels import upsample_labels
from ..pipeline.segment import SegmentPipeline, check_batch_size, check_max_pixels
from ..pipeline.windows import resize_bilinear
from ..pipeline.vocabulary import class_name_key
from .metadata import INPUT_NAMES, KEY_CONFIG, KEY_FORMAT, ONNX_FORMAT, OUTPUT_NAME, read_precision,\
    read_quantization, read_vocabulary

logger = logging.getLogger(__name__)

__all__ = ["OnnxSegmenter", "MAX_PIXELS"]


class OnnxSegmenter(SegmentPipeline):
    """Zero-shot segmentation with an exported AlignZeg graph on onnxruntime.

    Args:
        session: an ``onnxruntime.InferenceSession`` of a file written by ``export_onnx``.
        batch_size: crops per graph run.
        max_pixels: image files and PIL images with more pixels are refused before decoding (``None``: no limit).

    Attributes:
        precision: ``"float32"`` or ``"int8"``; quantization: an int8 file's record of how it was quantized
            (``onnx.metadata.read_quantization``: method, quantized node count...), ``None`` for float32.

    ``segment``, ``segment_batch`` and ``segment_iter`` come from ``alignzeg.pipeline.segment.SegmentPipeline``
    (shared with ``AlignZegSegmenter``); this class adds the stored vocabulary and ``InferenceSession.run``.
    """

    def __init__(self, session: Any, batch_size: int = 8, max_pixels: int | None = MAX_PIXELS) -> None:
        check_batch_size(batch_size)
        check_max_pixels(max_pixels)
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
        self.precision = read_precision(metadata)  # "float32" or "int8" (export_onnx(..., int8=True))
        self.quantization = read_quantization(metadata)  # the int8 file's quantization record; None for float32
        stored = read_vocabulary(metadata)
        self._stored = {} if stored is None else {class_name_key(n): e for n, e in zip(stored[0], stored[1])}
        self.stored_names = () if stored is None else tuple(stored[0])

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
        _check_onnx_file(path)
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
                raise ValueError(f"threads must be a positive integer, got {threads!r}")
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))
        return cls(session, batch_size=batch_size, max_pixels=max_pixels)

    # The back-end contract (SegmentPipeline's abstract methods) --------------------------------------
    def _encode_names(self, names: tuple[str, ...]) -> np.ndarray:
        missing = [n for n in names if class_name_key(n) not in self._stored]
        if missing:
            raise ValueError(f"class names {missing} are not in the vocabulary stored in this ONNX file "
                             f"({list(self.stored_names)}); there is no text tower in the graph, so pass "
                             "their embeddings (AlignZegSegmenter.encode_vocabulary) or export with them")
        return np.stack([self._stored[class_name_key(n)] for n in names]).astype(np.float32, copy=False)

    def _embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        return embeddings

    def _native_array(self, value: object) -> None:
        return None  # numpy is this back-end's array type: the shared decoder takes it

    def _resize(self, pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return pixels if pixels.shape[1:] == tuple(size) else resize_bilinear(pixels, size)

    def _predict(self, crops: np.ndarray, embeddings: np.ndarray, seen: np.ndarray,
                 bias_correction: bool) -> np.ndarray:
        return self.predict(crops, embeddings, seen, bias_correction)

    def _upsample_labels(self, probs: np.ndarray, size: tuple[int, int],
                         threshold: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        labels, confidence = upsample_labels(probs, size, threshold)  # numpy is this back-end's array type
        return probs, labels, confidence

    # Inference ---------------------------------------------------------------------------------------
    def predict(self, crops: np.ndarray, class_embeddings: np.ndarray, seen_mask: np.ndarray,
                bias_correction: bool = True) -> np.ndarray:
        """The raw graph: (B, 3, S, S) float32 crops in [0, 1], (C, E) unit embeddings, (C,) bool seen mask
        -> (B, C + 1, S / mask_stride, S / mask_stride) float32 probabilities (channel C: background).

        ``bias_correction`` switches PBC (files of format 1, without that input: through an all-False mask).
        """
        seen_mask = np.asarray(seen_mask, dtype=bool)
        values = [np.ascontiguousarray(crops, dtype=np.float32),
                  np.ascontiguousarray(class_embeddings, dtype=np.float32)]
        if INPUT_NAMES[3] in self._input_names:
            values += [seen_mask, np.array([bool(bias_correction)])]
        else:
            values.append(seen_mask if bias_correction else np.zeros_like(seen_mask))
        return self.session.run([OUTPUT_NAME], dict(zip(INPUT_NAMES, values)))[0]

    @property
    def _input_names(self) -> set[str]:
        return {i.name for i in self.session.get_inputs()}

    def __repr__(self) -> str:
        cfg = self.config
        return (f"OnnxSegmenter(clip={cfg.clip_model!r}, input_size={cfg.input_size}, "
                f"precision={self.precision!r}, stored_classes={len(self.stored_names)}, providers={self.session.get_providers()})")


# The model file ---------------------------------------------------------------------------------------
_WIRE_SIZES = {1: 8, 5: 4}  # protobuf wire types of fixed size (64-bit, 32-bit)
_REQUIRED_FIELDS = {7: "graph", 8: "opset_import"}  # of ModelProto


def _check_onnx_file(path: str | os.PathLike) -> None:
    """Refuse a file that is not a whole ONNX model before onnxruntime reads it (its errors name no file).

    Walks the top-level protobuf fields of the ``ModelProto`` without decoding them: a file that is not
    protobuf, ends inside a field (truncated) or has no graph or opset is refused.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not an ONNX model; the message names the file and what was found.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX file not found: {str(path)!r}")
    problem = _onnx_structure_problem(Path(path))
    if problem:
        raise ValueError(f"{str(path)!r} is not an ONNX model file: {problem}; write one with `alignzeg export` "
                         "or AlignZegSegmenter.export_onnx")


def _onnx_structure_problem(path: Path) -> str | None:
    """What keeps ``path`` from being a complete ``ModelProto`` (``None``: its top level is whole)."""
    size, fields = path.stat().st_size, set()
    with open(path, "rb") as f:
        while f.tell() < size:
            start, tag = f.tell(), _read_varint(f)
            field, wire = (tag >> 3, tag & 7) if tag is not None else (0, -1)
            if field == 0 or wire not in (0, 1, 2, 5):
                return f"byte {start} is not protobuf data (an empty, text or image file?)"
            length = _read_varint(f) if wire in (0, 2) else _WIRE_SIZES[wire]
            if length is None or f.tell() + (0 if wire == 0 else length) > size:
                return f"it ends at byte {size}, inside a field that starts at byte {start} (a truncated file?)"
            f.seek(0 if wire == 0 else length, os.SEEK_CUR)
            fields.add(field)
    missing = [name for number, name in _REQUIRED_FIELDS.items() if number not in fields]
    return f"it holds no {' and no '.join(missing)} (an empty or cut file?)" if missing else None


def _read_varint(f: Any) -> int | None:
    """A protobuf varint at ``f``'s position; ``None`` when the file ends first or it is over 10 bytes."""
    value = 0
    for shift in range(0, 70, 7):
        byte = f.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    return None
