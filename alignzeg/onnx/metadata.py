"""Names shared by the ONNX exporter and the runtime: graph inputs/outputs and ``metadata_props`` keys.

Torch-free: the runtime imports this module where PyTorch is not installed.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Mapping

import numpy as np

__all__ = ["INPUT_NAMES", "OUTPUT_NAME", "ONNX_FORMAT", "read_vocabulary", "read_precision", "read_quantization"]

INPUT_NAMES = ("crops", "class_embeddings", "seen_mask", "bias_correction")
OUTPUT_NAME = "probabilities"

ONNX_FORMAT = 2
"""Layout version of the exported file (inputs, outputs, metadata keys); the runtime refuses newer ones.
Format 2 added the ``bias_correction`` input (the seen mask also weighs the CLIP readout's ensemble, so it can
no longer switch PBC off); format-1 files (three inputs, PBC off through an all-False seen mask) still run."""

KEY_FORMAT = "alignzeg.onnx_format"
KEY_VERSION = "alignzeg.version"
KEY_OPSET = "alignzeg.opset"
KEY_EXPORTER = "alignzeg.exporter"
KEY_CONFIG = "alignzeg.config"
KEY_VOCABULARY = "alignzeg.vocabulary"
KEY_PRECISION = "alignzeg.precision"
"""``float32`` or ``int8`` (files written before this key existed are float32)."""
KEY_QUANTIZATION = "alignzeg.quantization"
"""Only in int8 files: JSON saying how the graph was quantized (method, op types, weight type, ...)."""

KEY_FUSIONS = "alignzeg.fusions"
"""Only in files exported with ``fuse=True``: JSON with the tool, its settings and the count of each fused op."""

PRECISIONS = ("float32", "int8")


def read_vocabulary(metadata: Mapping[str, str]) -> tuple[tuple[str, ...], np.ndarray] | None:
    """The vocabulary stored by ``export_onnx(vocabulary=...)``: the names and their (C, E) float32 embeddings.

    Returns ``None`` when the file stores none.
    """
    text = metadata.get(KEY_VOCABULARY)
    if text is None:
        return None
    data: dict[str, Any] = json.loads(text)
    embeddings = np.frombuffer(base64.b64decode(data["embeddings"]), dtype="<f4").reshape(data["shape"])
    return tuple(data["names"]), embeddings.astype(np.float32)


def read_precision(metadata: Mapping[str, str]) -> str:
    """The file's weight precision, ``"float32"`` or ``"int8"`` (``"float32"`` when the key is absent).

    Raises:
        ValueError: a precision this alignzeg does not know.
    """
    precision = metadata.get(KEY_PRECISION, "float32")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown alignzeg.precision {precision!r} in this ONNX file; expected one of {PRECISIONS}")
    return precision


def read_quantization(metadata: Mapping[str, str]) -> dict[str, Any] | None:
    """How an int8 file was quantized (the JSON written by ``export_onnx(..., int8=True)``), else ``None``."""
    text = metadata.get(KEY_QUANTIZATION)
    return None if text is None else json.loads(text)


def read_fusions(metadata: Mapping[str, str]) -> dict[str, Any] | None:
    """What ``export_onnx(..., fuse=True)`` fused (tool, model type, count per fused op type), else ``None``."""
    text = metadata.get(KEY_FUSIONS)
    return None if text is None else json.loads(text)
