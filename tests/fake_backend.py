"""A numpy back-end for pipeline tests: every hook of ``SegmentPipeline`` but ``_predict`` done the simplest
way (identity embeddings, the pipeline's own resize and label upsampling), each call recorded in ``calls``.
A test subclasses it with the ``_predict`` it needs."""

from __future__ import annotations

from typing import Any

import numpy as np

from alignzeg.config import AlignZegConfig
from alignzeg.pipeline.labels import upsample_labels
from alignzeg.pipeline.segment import SegmentPipeline
from alignzeg.pipeline.windows import resize_bilinear


class FakeBackend(SegmentPipeline):
    """``config``'s geometry (windows, mask stride, embedding width) with fake hooks.

    ``calls``: ``("encode", names)``, ``("resize", (h, w))``, ``("predict", (crops.shape, bias_correction))``
    (recorded by ``_predict`` overrides that call ``record_predict``) and ``("upsample", (H, W))``, in order.
    """

    def __init__(self, config: AlignZegConfig, batch_size: int = 8, progress: bool = False) -> None:
        self.config, self.batch_size, self.progress = config, batch_size, progress
        self.calls: list[tuple[str, Any]] = []

    def _encode_names(self, names):
        self.calls.append(("encode", names))
        return np.eye(len(names), self.config.embed_dim, dtype=np.float32)

    def _embeddings(self, embeddings):
        return embeddings

    def _native_array(self, value):
        return None

    def _resize(self, pixels, size):
        self.calls.append(("resize", size))
        return pixels if pixels.shape[1:] == size else resize_bilinear(pixels, size)

    def record_predict(self, crops: np.ndarray, bias_correction: bool) -> None:
        self.calls.append(("predict", (crops.shape, bias_correction)))

    def _upsample_labels(self, probs, size, threshold):
        self.calls.append(("upsample", size))
        return (probs, *upsample_labels(probs, size, threshold))

    @property
    def batches(self) -> list[int]:
        """The number of crops of each ``_predict`` call, in order."""
        return [args[0][0] for kind, args in self.calls if kind == "predict"]
