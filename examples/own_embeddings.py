"""Use class embeddings you computed elsewhere (e.g. from another prompt set) as the vocabulary.

    python examples/own_embeddings.py
"""

import torch

from alignzeg import AlignZegSegmenter
from alignzeg.cli import example_image_path

seg = AlignZegSegmenter.from_preset("tiny", seed=0)  # UNTRAINED: replace with from_pretrained(...)
names = ["person", "chair", "table"]
# Any (C, E) tensor in the model's embedding space works (rows are L2-normalised for you);
# here: the model's own prompt ensemble, rescaled, moved to the CPU as if it came from elsewhere.
embeddings: torch.Tensor = seg.encode_vocabulary(names).cpu() * 2.0
result = seg.segment(str(example_image_path()), embeddings, class_names=names, seen=[True, False, False])
print(result.to_dict())
