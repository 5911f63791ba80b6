"""The network, one module per box of the paper's figure 2.

- ``clip_backbone``: frozen CLIP (dense patch features, text embeddings)
- ``text_encoder``: class names -> prototypes (prompt ensemble, cached)
- ``mrpe``: Mutually-Refined Proposal Extraction
- ``gepc``: Generalization-Enhanced Proposal Classification (inference part)
- ``class_indicator``: the unseen-proposal indicator of PBC
- ``bias_correction``: Proposal-based Bias Correction (pure function)
- ``semantic_map``: proposals -> per-pixel probabilities -> labels
- ``model``: ``AlignZegModel`` wiring them together
"""

from .model import AlignZegModel, AlignZegOutput

__all__ = ["AlignZegModel", "AlignZegOutput"]
