"""alignzeg: zero-shot semantic segmentation with AlignZeg (Ge et al., ECCV 2024).

    from alignzeg import AlignZegSegmenter
    seg = AlignZegSegmenter.from_pretrained("org/name")   # or a local folder
    result = seg.segment("photo.jpg", ["cat", "sofa", "wall"])
"""

from ._version import __version__
from .config import AlignZegConfig
from .errors import WeightsError
from .modeling.bias_correction import proposal_bias_correction
from .preprocess import ImageInput
from .presets import list_models
from .result import UNLABELLED, SegmentationResult
from .segmenter import AlignZegSegmenter, Vocabulary

__all__ = [
    "AlignZegSegmenter", "AlignZegConfig", "SegmentationResult", "WeightsError", "UNLABELLED", "ImageInput",
    "Vocabulary", "list_models", "proposal_bias_correction", "__version__",
]
