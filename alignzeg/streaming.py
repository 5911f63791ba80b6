"""``alignzeg.streaming``: the public home of ``segment_iter``'s pieces (defined in ``alignzeg.pipeline.streaming``):
``ImageError`` (what ``on_error="return"`` yields), ``decode_ahead`` (the decoding stage alone) and ``segment_iter``.
"""

from .pipeline.streaming import ImageError, decode_ahead, segment_iter

__all__ = ["ImageError", "segment_iter", "decode_ahead"]
