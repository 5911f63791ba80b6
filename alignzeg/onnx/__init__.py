"""ONNX export of the segmenter's image path, and a runtime that needs no PyTorch.

    seg.export_onnx("model.onnx", vocabulary=["cat", "sofa", "wall"])    # with torch: alignzeg.onnx.export
    OnnxSegmenter.load("model.onnx").segment("photo.jpg", ["cat", "wall"])  # numpy + PIL + onnxruntime

Importing this package imports neither torch nor onnxruntime: ``export_onnx`` and ``OnnxSegmenter`` are
resolved on first use (PEP 562), so the runtime half works where torch is not installed.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["export_onnx", "OnnxSegmenter"]

_LAZY = {"export_onnx": "alignzeg.onnx.export", "OnnxSegmenter": "alignzeg.onnx.runtime"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'alignzeg.onnx' has no attribute {name!r}")
