"""Generalization-Enhanced Proposal Classification (GEPC): the inference part of the head.

A proposal embedding (query -> MLP, in CLIP space) is scored against the class prototypes (text
embeddings) by scaled cosine similarity, and against M learnable background prototypes: the background
logit is a soft maximum over the M (``bg_temperature * logsumexp(cos / bg_temperature)``, so every
prototype gets gradient; 0 gives the hard max). With ``clip_grounding`` the embedding is grounded in
CLIP's own joint space: CLIP's projected patch features pooled under the proposal's mask
(``mask_pooled_features``) are blended with the query embedding by a learned per-proposal gate. The
training parts of GEPC (synthetic features, negative proposal selection) live in ``alignzeg.train.training.gepc``
and use ``classify`` below.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import AlignZegConfig

__all__ = ["ProposalClassifier", "mask_pooled_features", "soft_max"]


def soft_max(sims: torch.Tensor, temperature: float) -> torch.Tensor:
    """``temperature * logsumexp(sims / temperature)`` over the last dim; the hard max for temperature 0.

    Args:
        sims: (..., M) float similarities.
        temperature: >= 0. The result lies in ``[max, max + temperature * log M]``.

    Returns:
        (...,) float. Its gradient reaches every entry with weights ``softmax(sims / temperature)``
        (only the maximum for temperature 0).
    """
    if temperature == 0:
        return sims.amax(dim=-1)
    return temperature * torch.logsumexp(sims / temperature, dim=-1)


def mask_pooled_features(features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Average of per-pixel features under each proposal's soft mask.

    The sigmoid masks are area-averaged down to the feature grid (``adaptive_avg_pool2d``; masks are at a
    finer stride than CLIP's patches), then ``pooled[b, n] = sum_p w[b, n, p] f[b, :, p] / sum_p w[b, n, p]``.

    Args:
        features: (B, E, h, w) float per-patch features (CLIP's projected patch features).
        mask_logits: (B, N, H', W') float mask logits, H' and W' multiples of h and w (or equal).

    Returns:
        (B, N, E) float, not normalised (an all-zero mask gives zeros).
    """
    grid = [int(s) for s in features.shape[-2:]]  # plain ints: ONNX export needs a constant pooling size
    weights = F.adaptive_avg_pool2d(mask_logits.sigmoid(), grid).to(features.dtype)
    pooled = torch.einsum("bnhw,behw->bne", weights, features)
    return pooled / weights.sum(dim=(-2, -1)).unsqueeze(-1).clamp_min(1e-6)


class ProposalClassifier(nn.Module):
    """Cosine classifier over [vocabulary classes + background] with M background prototypes.

    Args:
        config: model config (decoder_dim, embed_dim, num_bg_prototypes, logit_scale, bg_temperature,
            clip_grounding).
    """

    def __init__(self, config: AlignZegConfig) -> None:
        super().__init__()
        d, e = config.decoder_dim, config.embed_dim
        self.embed = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, e))
        self.bg_prototypes = nn.Parameter(F.normalize(torch.randn(config.num_bg_prototypes, e), dim=-1))
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale)))
        self.bg_temperature = float(config.bg_temperature)
        # Grounding gate: sigmoid(linear(LN(query))) per proposal; zero init = an even 0.5 blend at the start.
        self.gate = None
        if config.clip_grounding:
            self.gate = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 1))
            nn.init.zeros_(self.gate[1].weight)
            nn.init.zeros_(self.gate[1].bias)

    @property
    def logit_scale(self) -> torch.Tensor:
        """Inverse temperature, clamped to at most 100 as in CLIP."""
        return self.log_logit_scale.exp().clamp(max=100.0)

    def proposal_embeddings(self, queries: torch.Tensor, clip_patches: torch.Tensor | None = None,
                            mask_logits: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised proposal embeddings in CLIP space.

        Args:
            queries: (B, N, d) query states.
            clip_patches: (B, E, h, w) CLIP projected patch features; needed with ``clip_grounding``.
            mask_logits: (B, N, H', W') the proposals' mask logits; needed with ``clip_grounding``. They are
                detached: classification does not reshape the masks (the mask losses do).

        Returns:
            (B, N, E) float: ``normalize((1 - g) * normalize(MLP(q)) + g * normalize(pool))`` with
            ``g = sigmoid(gate(q))`` when grounding, else ``normalize(MLP(q))``.
        """
        query_embed = F.normalize(self.embed(queries), dim=-1)
        if self.gate is None:
            return query_embed
        if clip_patches is None or mask_logits is None:
            raise ValueError("clip_grounding needs the CLIP patch features and the proposals' mask logits")
        pooled = F.normalize(mask_pooled_features(clip_patches, mask_logits.detach()), dim=-1)
        g = torch.sigmoid(self.gate(queries))  # (B, N, 1)
        return F.normalize((1 - g) * query_embed + g * pooled.to(query_embed.dtype), dim=-1)

    def classify(self, embeddings: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
        """Logits over classes then background.

        Args:
            embeddings: (..., E) L2-normalised proposal (or synthetic) embeddings.
            class_embeddings: (C, E) L2-normalised class prototypes.

        Returns:
            (..., C + 1) float logits; the last column is the background logit (``soft_max`` over M prototypes).
        """
        bg = F.normalize(self.bg_prototypes, dim=-1).to(embeddings.dtype)
        scale = self.logit_scale.to(embeddings.dtype)
        class_logits = embeddings @ class_embeddings.to(embeddings.dtype).t()
        bg_logits = soft_max(embeddings @ bg.t(), self.bg_temperature).unsqueeze(-1)
        return scale * torch.cat([class_logits, bg_logits], dim=-1)

    def forward(self, queries: torch.Tensor, class_embeddings: torch.Tensor, clip_patches: torch.Tensor | None = None,
                mask_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, d) queries, (C, E) prototypes [, CLIP patches, masks] -> ((B, N, E) embeddings, (B, N, C + 1) logits)."""
        embeddings = self.proposal_embeddings(queries, clip_patches, mask_logits)
        return embeddings, self.classify(embeddings, class_embeddings)
