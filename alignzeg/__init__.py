"""alignzeg: zero-shot semantic segmentation with AlignZeg (Ge et al., ECCV 2024).

    from alignzeg import AlignZegSegmenter
    seg = AlignZegSegmenter.from_pretrained("org/name")   # or a local folder
    result = seg.segment("photo.jpg", ["cat", "sofa", "wall"])
"""

__version__ = "0.1.0"

from .config import AlignZegConfig  # noqa: E402
from .hub import WeightsError  # noqa: E402
from .modeling.bias_correction import proposal_bias_correction  # noqa: E402
from .presets import list_models  # noqa: E402
from .result import UNLABELLED, SegmentationResult  # noqa: E402
from .segmenter import AlignZegSegmenter  # noqa: E402

__all__ = [
    "AlignZegSegmenter", "AlignZegConfig", "SegmentationResult", "WeightsError", "UNLABELLED",
    "list_models", "proposal_bias_correction", "__version__",
]
