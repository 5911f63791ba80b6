"""The class indicator of Proposal-based Bias Correction: how likely is a proposal an unseen-class region?

A small MLP on the proposal embedding. It is trained in ``alignzeg.train`` (seen proposals as negatives,
synthetic features and negative proposals as the "not a seen class" positives) and used at inference by
``bias_correction.proposal_bias_correction``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import AlignZegConfig

__all__ = ["ClassIndicator"]


class ClassIndicator(nn.Module):
    """MLP: (..., E) proposal embeddings -> (...) unseen logits (sigmoid gives the unseen score)."""

    def __init__(self, config: AlignZegConfig) -> None:
        super().__init__()
        e, h = config.embed_dim, config.indicator_hidden
        self.net = nn.Sequential(nn.Linear(e, h), nn.GELU(), nn.Linear(h, h), nn.GELU(), nn.Linear(h, 1))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.net(embeddings).squeeze(-1)
