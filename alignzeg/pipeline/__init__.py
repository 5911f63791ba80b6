"""The image pipeline both back-ends share, in numpy and PIL (no PyTorch, no onnxruntime).

- ``images``: decode and validate image inputs -> ``LoadedImage`` ((3, H, W) float32 RGB in [0, 1]).
- ``windows``: plan, cut and stitch the square crops of the sliding-window inference.
- ``labels``: bilinear upsampling of the low-resolution probabilities and the per-pixel label.
- ``vocabulary``: class names (with synonyms), seen flags, precomputed class embeddings.
- ``options``: the keyword options of ``segment`` and the bias-correction rule.
- ``segment``: ``SegmentPipeline``, the steps of ``segment`` around a back-end's ``predict``.
- ``result``: ``SegmentationResult``, what ``segment`` returns (public as ``alignzeg.result``).
- ``streaming``: ``segment_iter``'s decode-ahead stream (public as ``alignzeg.streaming``).

A back-end (``alignzeg.segmenter`` for PyTorch, ``alignzeg.onnx.runtime`` for ONNX Runtime) subclasses
``SegmentPipeline`` and supplies the text encoding (or a stored vocabulary) and the network's forward.
"""
