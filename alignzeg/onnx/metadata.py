"""Names shared by the ONNX exporter and the runtime: graph inputs/outputs and ``metadata_props`` keys.

Torch-free: the runtime imports this module where PyTorch is not installed.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Mapping

import numpy as np

__all__ = ["INPUT_NAMES", "OUTPUT_NAME", "ONNX_FORMAT", "read_vocabulary"]

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
