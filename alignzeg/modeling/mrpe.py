"""Mutually-Refined Proposal Extraction (MRPE): mask queries and visual features refine each other.

Each decoder layer runs the standard mask-decoder step on the queries (cross-attention to the visual
features, self-attention, FFN) and then, when ``mutual_refinement`` is on, the reverse step: the visual
features cross-attend to the updated queries and are updated residually. After every layer the mask
logits are the dot product of the query mask embeddings with the upsampled per-pixel features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..config import AlignZegConfig

__all__ = ["ProposalExtractor", "ProposalExtractorOutput", "SideEncoder"]


@dataclass
class ProposalExtractorOutput:
    """MRPE output for a batch.

    Attributes:
        queries: list of L tensors (B, N, d), the query states after each layer (last is final).
        mask_logits: list of tensors (B, N, h*u, w*u), mask logits after each layer (or the last only),
            u = mask_upsample.
    """

    queries: list[torch.Tensor]
    mask_logits: list[torch.Tensor]


class SideEncoder(nn.Module):
    """A small learnable conv encoder whose stride-p features are added to the CLIP patch features.

    Args:
        dim: output channels (the decoder width).
        patch_size: total stride, a power of two >= 4.
    """

    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        stages, channels, stride = [], 3, 1
        while stride < patch_size:
            out = dim if stride * 2 >= patch_size else max(16, dim // 2)
            stages += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.GroupNorm(1, out), nn.GELU()]
            channels, stride = out, stride * 2
        self.net = nn.Sequential(*stages)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, dim, H/p, W/p)."""
        return self.net(images)


class _Attention(nn.Module):
    """Pre-norm residual multi-head attention block: x + Attn(LN(x), kv)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None, pos_q: torch.Tensor | None = None,
                pos_k: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(x)
        kv = h if kv is None else kv
        q = h if pos_q is None else h + pos_q
        k = kv if pos_k is None else kv + pos_k
        return x + self.attn(q, k, kv, need_weights=False)[0]


class _FFN(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class MRPELayer(nn.Module):
    """One MRPE layer: queries <- visual features, then (mutual) visual features <- queries."""

    def __init__(self, dim: int, heads: int, mutual: bool) -> None:
        super().__init__()
        self.q_cross = _Attention(dim, heads)
        self.q_self = _Attention(dim, heads)
        self.q_ffn = _FFN(dim, 4 * dim)
        self.mutual = mutual
        if mutual:
            self.v_cross = _Attention(dim, heads)
            self.v_ffn = _FFN(dim, 2 * dim)

    def forward(self, queries: torch.Tensor, visual: torch.Tensor, query_pos: torch.Tensor,
                visual_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (B, N, d), visual (B, hw, d) -> updated (queries, visual), same shapes."""
        queries = self.q_cross(queries, visual, pos_q=query_pos, pos_k=visual_pos)
        queries = self.q_self(queries, pos_q=query_pos, pos_k=query_pos)
        queries = self.q_ffn(queries)
        if self.mutual:
            visual = self.v_cross(visual, queries, pos_q=visual_pos, pos_k=query_pos)
            visual = self.v_ffn(visual)
        return queries, visual


class ProposalExtractor(nn.Module):
    """MRPE: N learnable mask queries and the CLIP patch features refine each other over L layers.

    Args:
        config: model config (decoder_dim, num_queries, num_decoder_layers, num_heads, mutual_refinement,
            side_encoder, mask_upsample, embed_dim, patch_size).
    """

    def __init__(self, config: AlignZegConfig) -> None:
        super().__init__()
        d = config.decoder_dim
        self.input_proj = nn.Sequential(nn.Linear(config.embed_dim, d), nn.LayerNorm(d))
        self.side = SideEncoder(d, config.patch_size) if config.side_encoder else None
        self.query_embed = nn.Parameter(torch.randn(config.num_queries, d) * 0.02)
        self.query_pos = nn.Parameter(torch.randn(config.num_queries, d) * 0.02)
        grid = config.input_size // config.patch_size
        self.visual_pos = nn.Parameter(torch.randn(1, d, grid, grid) * 0.02)
        self.layers = nn.ModuleList(
            MRPELayer(d, config.num_heads, config.mutual_refinement) for _ in range(config.num_decoder_layers)
        )
        self.query_norm = nn.LayerNorm(d)
        self.mask_embed = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        u = config.mask_upsample
        self.pixel_upsample = (
            nn.Sequential(nn.ConvTranspose2d(d, d, u, stride=u), nn.GroupNorm(1, d), nn.GELU(), nn.Conv2d(d, d, 1))
            if u > 1 else nn.Conv2d(d, d, 1)
        )

    def _visual_pos(self, h: int, w: int) -> torch.Tensor:
        pos = self.visual_pos
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        return rearrange(pos, "1 d h w -> 1 (h w) d")

    def predict_masks(self, queries: torch.Tensor, visual: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Mask logits (B, N, h*u, w*u) from queries (B, N, d) and visual tokens (B, h*w, d)."""
        pixel = rearrange(visual, "b (h w) d -> b d h w", h=hw[0], w=hw[1])
        pixel = self.pixel_upsample(pixel)
        return torch.einsum("bnd,bdhw->bnhw", self.mask_embed(self.query_norm(queries)), pixel)

    def forward(self, patches: torch.Tensor, images: torch.Tensor | None = None,
                all_layers: bool = True) -> ProposalExtractorOutput:
        """Run the L refinement layers.

        Args:
            patches: (B, E, h, w) CLIP patch features in the joint space.
            images: (B, 3, H, W) normalised images, needed only with the side encoder.
            all_layers: predict masks after every layer (deep supervision); else after the last only.

        Returns:
            ProposalExtractorOutput with L query states and L mask-logit maps of size (h*u, w*u).
        """
        b, _, h, w = patches.shape
        visual = self.input_proj(rearrange(patches, "b e h w -> b (h w) e"))
        if self.side is not None:
            if images is None:
                raise ValueError("the side encoder needs the input images")
            visual = visual + rearrange(self.side(images), "b d h w -> b (h w) d")
        visual_pos = self._visual_pos(h, w)
        query_pos = self.query_pos.unsqueeze(0).expand(b, -1, -1)
        queries = self.query_embed.unsqueeze(0).expand(b, -1, -1)
        out = ProposalExtractorOutput(queries=[], mask_logits=[])
        for i, layer in enumerate(self.layers):
            queries, visual = layer(queries, visual, query_pos, visual_pos)
            out.queries.append(queries)
            if all_layers or i == len(self.layers) - 1:
                out.mask_logits.append(self.predict_masks(queries, visual, (h, w)))
        return out
