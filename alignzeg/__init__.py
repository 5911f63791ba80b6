"""alignzeg: zero-shot semantic segmentation with AlignZeg (Ge et al., ECCV 2024).

    from alignzeg import AlignZegSegmenter
    seg = AlignZegSegmenter.from_pretrained("org/name")   # or a local folder
    result = seg.segment("photo.jpg", ["cat", "sofa", "wall"])

The public names are imported on first use (PEP 562), so ``import alignzeg`` is cheap and the torch-free
parts (``alignzeg.onnx.runtime``, ``alignzeg.config``, ``alignzeg.result``) import without PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import attach

from ._version import __version__

_LAZY = {
    "AlignZegSegmenter": ".segmenter",
    "Vocabulary": ".pipeline.vocabulary",
    "AlignZegConfig": ".config",
    "SegmentationResult": ".pipeline.result",
    "UNLABELLED": ".pipeline.result",
    "WeightsError": ".errors",
    "ImageInput": ".pipeline.images",
    "list_models": ".presets",
    "proposal_bias_correction": ".modeling.bias_correction",
}

__all__ = [
    "AlignZegSegmenter", "AlignZegConfig", "SegmentationResult", "WeightsError", "UNLABELLED", "ImageInput",
    "Vocabulary", "list_models", "proposal_bias_correction", "__version__",
]

if TYPE_CHECKING:  # pragma: no cover
    from .config import AlignZegConfig
    from .errors import WeightsError
    from .modeling.bias_correction import proposal_bias_correction
    from .pipeline.images import ImageInput
    from .presets import list_models
    from .pipeline.result import UNLABELLED, SegmentationResult
    from .pipeline.vocabulary import Vocabulary
    from .segmenter import AlignZegSegmenter


__getattr__, __dir__ = attach(__name__, _LAZY)
