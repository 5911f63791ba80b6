"""Datasets for training and evaluation: the benchmarks' class lists and zero-shot splits (``splits``), their
loaders and the folder loader (``loaders``: ``build_dataset``), and the training-time augmentation and batching
(``augmentation``). The synthetic worlds' datasets are ``alignzeg.worlds.export``.

Dataset protocol (what ``Trainer`` and ``evaluate`` accept; the loaders in ``loaders`` and the worlds'
``WorldDataset`` follow it):

- ``len(dataset)`` and ``dataset[i] -> {"image": ..., "label": ...}`` where ``image`` is an (H, W, 3)
  uint8 array or a (3, H, W) float tensor in [0, 1], and ``label`` an (H, W) integer array/tensor of
  indices into ``class_names`` with 255 for ignored pixels;
- ``dataset.class_names``: the K class names (label values index them);
- ``dataset.seen_classes``: the names of the seen (training) classes;
- optionally ``dataset.class_embeddings``: a fixed (K, E) float tensor used instead of encoding the
  names with CLIP's text tower (e.g. a synthetic benchmark with no text encoder).
"""
