"""Generalization-Enhanced Proposal Classification (GEPC): the inference part of the head.

A proposal embedding (query -> MLP -> L2 norm, in CLIP space) is scored against the class prototypes
(text embeddings) by scaled cosine similarity, and against M learnable background prototypes: the
background logit is the maximum over the M. The training parts of GEPC (synthetic features and negative
proposal selection) live in ``alignzeg.train.gepc`` and use ``classify`` below.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import AlignZegConfig

__all__ = ["ProposalClassifier"]


class ProposalClassifier(nn.Module):
    """Cosine classifier over [vocabulary classes + background] with M background prototypes.

    Args:
        config: model config (decoder_dim, embed_dim, num_bg_prototypes, logit_scale).
    """

    def __init__(self, config: AlignZegConfig) -> None:
        super().__init__()
        d, e = config.decoder_dim, config.embed_dim
        self.embed = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, e))
        self.bg_prototypes = nn.Parameter(F.normalize(torch.randn(config.num_bg_prototypes, e), dim=-1))
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale)))

    @property
    def logit_scale(self) -> torch.Tensor:
        """Inverse temperature, clamped to at most 100 as in CLIP."""
        return self.log_logit_scale.exp().clamp(max=100.0)

    def proposal_embeddings(self, queries: torch.Tensor) -> torch.Tensor:
        """(B, N, d) query states -> (B, N, E) L2-normalised proposal embeddings."""
        return F.normalize(self.embed(queries), dim=-1)

    def classify(self, embeddings: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
        """Logits over classes then background.

        Args:
            embeddings: (..., E) L2-normalised proposal (or synthetic) embeddings.
            class_embeddings: (C, E) L2-normalised class prototypes.

        Returns:
            (..., C + 1) float logits; the last column is the background logit (max over M prototypes).
        """
        bg = F.normalize(self.bg_prototypes, dim=-1).to(embeddings.dtype)
        scale = self.logit_scale.to(embeddings.dtype)
        class_logits = embeddings @ class_embeddings.to(embeddings.dtype).t()
        bg_logits = (embeddings @ bg.t()).amax(dim=-1, keepdim=True)
        return scale * torch.cat([class_logits, bg_logits], dim=-1)

    def forward(self, queries: torch.Tensor, class_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, d) queries, (C, E) prototypes -> ((B, N, E) embeddings, (B, N, C + 1) logits)."""
        embeddings = self.proposal_embeddings(queries)
        return embeddings, self.classify(embeddings, class_embeddings)
