"""``alignzeg.result``: the public home of ``SegmentationResult`` (defined in ``alignzeg.pipeline.result``).

Importing it needs neither torch nor onnxruntime.
"""

from .pipeline.result import RESERVED_NAMES, UNLABELLED, SegmentationResult

__all__ = ["SegmentationResult", "UNLABELLED", "RESERVED_NAMES"]
