"""Mutually-Refined Proposal Extraction (MRPE): mask queries and visual features refine each other.

Each decoder layer runs the standard mask-decoder step on the queries (cross-attention to the visual
features, self-attention, FFN) and then, when ``mutual_refinement`` is on, the reverse step: the visual
features cross-attend to the updated queries and are updated residually. After every layer the mask
logits are the dot product of the query mask embeddings with the upsampled per-pixel features.

The learnable encoder (``side_encoder``, ``SideEncoder``) is MRPE's "learnable" branch next to the frozen
CLIP: its stride-``patch`` features are added to the visual tokens the decoder refines, and its finer
stages (stride 8, and 4 with ``side_fusion_stride=4``) reach the mask features through ``PixelDecoder``,
a light FPN-style merge (lateral 1x1 convs added to the upsampled decoder features), so masks can follow
edges finer than CLIP's 16-pixel grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..config import AlignZegConfig

__all__ = ["PixelDecoder", "ProposalExtractor", "ProposalExtractorOutput", "SideEncoder"]


@dataclass
class ProposalExtractorOutput:
    """MRPE output for a batch.

    Attributes:
        queries: list of L tensors (B, N, d), the query states after each layer (last is final).
        mask_logits: list of tensors (B, N, h*u, w*u), mask logits after each layer (or the last only),
            u = mask_upsample (masks at stride ``patch / u``: ``side_fusion_stride`` with the side encoder).
    """

    queries: list[torch.Tensor]
    mask_logits: list[torch.Tensor]


class SideEncoder(nn.Module):
    """A small learnable conv encoder: stride-2 3x3 conv stages (GroupNorm, GELU) down to the patch stride.

    Stage ``k`` has stride ``2**(k+1)`` and ``dim * 2**(k+1) / 2**K`` channels (at least 16), K stages in
    all: narrow where the maps are large, so the encoder stays cheap (about 2 GFLOPs at 512 px, d = 256).

    Args:
        dim: channels of the last (stride ``2**K >= patch_size``) stage, the decoder width.
        patch_size: the ViT patch size; the last stage's stride is the smallest power of two >= it.
    """

    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        num = max(1, math.ceil(math.log2(patch_size)))
        self.strides = [2 ** (k + 1) for k in range(num)]
        self.channels = [max(16, dim * s // self.strides[-1]) for s in self.strides]
        self.channels[-1] = dim
        stages, c_in = [], 3
        for c_out in self.channels:
            stages.append(nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(1, c_out),
                                        nn.GELU()))
            c_in = c_out
        self.stages = nn.ModuleList(stages)

    def forward(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        """(B, 3, H, W) normalised images -> {stride s: (B, channels, ceil(H/s), ceil(W/s))} for every stage."""
        out, x = {}, images
        for stride, stage in zip(self.strides, self.stages):
            x = stage(x)
            out[stride] = x
        return out


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) to ``size``; the tensor itself when it already has that size."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="bilinear",
                                                                      align_corners=False)


class PixelDecoder(nn.Module):
    """Per-pixel mask features: the refined visual tokens upsampled to the mask grid, plus (FPN-style)
    the learnable encoder's finer stages.

    ``ConvTranspose(u) -> GroupNorm -> GELU`` upsamples the (B, d, h, w) tokens by ``u = mask_upsample``
    (identity for u = 1); each fused encoder stage (strides ``fusion_strides``, e.g. [8] or [8, 4]) goes
    through a lateral 1x1 conv, is resized to the mask grid when its size differs (ViT-L/14's stride 7)
    and added; a GroupNorm, GELU and 1x1 conv then give the mask features.

    Args:
        dim: decoder width d.
        upsample: u, the mask grid is (h*u, w*u).
        lateral_channels: {stride: channels} of the encoder stages to fuse (empty: no fusion).
    """

    def __init__(self, dim: int, upsample: int, lateral_channels: dict[int, int]) -> None:
        super().__init__()
        self.up = (nn.Sequential(nn.ConvTranspose2d(dim, dim, upsample, stride=upsample), nn.GroupNorm(1, dim),
                                 nn.GELU()) if upsample > 1 else nn.Identity())
        self.laterals = nn.ModuleDict({str(s): nn.Conv2d(c, dim, 1) for s, c in sorted(lateral_channels.items())})
        self.out = (nn.Sequential(nn.GroupNorm(1, dim), nn.GELU(), nn.Conv2d(dim, dim, 1)) if self.laterals
                    else nn.Conv2d(dim, dim, 1))

    def forward(self, pixel: torch.Tensor, side: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, d, h, w) tokens and {stride: (B, c, h_s, w_s)} encoder stages -> (B, d, h*u, w*u) mask features."""
        x = self.up(pixel)
        for stride, lateral in self.laterals.items():
            if side is None:
                raise ValueError("the pixel decoder fuses the learnable encoder: pass its stages")
            x = x + _resize(lateral(side[int(stride)]), x.shape[-2:])
        return self.out(x)


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
    """One MRPE layer: queries <- visual features, then (mutual) visual features <- queries.

    With ``gated``, the visual features' update is scaled per channel by ``v_gate`` (d,), zero at
    initialisation (LayerScale / ReZero): the layer starts as the one-way decoder layer.
    """

    def __init__(self, dim: int, heads: int, mutual: bool, gated: bool = False) -> None:
        super().__init__()
        self.q_cross = _Attention(dim, heads)
        self.q_self = _Attention(dim, heads)
        self.q_ffn = _FFN(dim, 4 * dim)
        self.mutual = mutual
        if mutual:
            self.v_cross = _Attention(dim, heads)
            self.v_ffn = _FFN(dim, 2 * dim)
            self.v_gate = nn.Parameter(torch.zeros(dim)) if gated else None

    def forward(self, queries: torch.Tensor, visual: torch.Tensor, query_pos: torch.Tensor,
                visual_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (B, N, d), visual (B, hw, d) -> updated (queries, visual), same shapes."""
        queries = self.q_cross(queries, visual, pos_q=query_pos, pos_k=visual_pos)
        queries = self.q_self(queries, pos_q=query_pos, pos_k=query_pos)
        queries = self.q_ffn(queries)
        if self.mutual:
            refined = self.v_ffn(self.v_cross(visual, queries, pos_q=visual_pos, pos_k=query_pos))
            visual = refined if self.v_gate is None else visual + self.v_gate * (refined - visual)
        return queries, visual


class ProposalExtractor(nn.Module):
    """MRPE: N learnable mask queries and the CLIP patch features refine each other over L layers.

    Args:
        config: model config (decoder_dim, num_queries, num_decoder_layers, num_heads, mutual_refinement,
            side_encoder, side_fusion_stride, mask_upsample, embed_dim, patch_size, refinement_gates).

    With ``refinement_gates`` what MRPE adds to the CLIP tokens the queries read (the learnable encoder's
    coarse features, ``side_gate`` (d,), and each layer's refinement, ``MRPELayer.v_gate``) is scaled by
    per-channel gates that start at zero: training starts from the one-way decoder on CLIP's features.
    """

    def __init__(self, config: AlignZegConfig) -> None:
        super().__init__()
        d = config.decoder_dim
        self.input_proj = nn.Sequential(nn.Linear(config.embed_dim, d), nn.LayerNorm(d))
        self.side = SideEncoder(d, config.patch_size) if config.side_encoder else None
        gated = config.refinement_gates
        self.side_gate = nn.Parameter(torch.zeros(d)) if gated and self.side is not None else None
        self.query_embed = nn.Parameter(torch.randn(config.num_queries, d) * 0.02)
        self.query_pos = nn.Parameter(torch.randn(config.num_queries, d) * 0.02)
        grid = config.input_size // config.patch_size
        self.visual_pos = nn.Parameter(torch.randn(1, d, grid, grid) * 0.02)
        self.layers = nn.ModuleList(
            MRPELayer(d, config.num_heads, config.mutual_refinement, gated) for _ in range(config.num_decoder_layers)
        )
        self.query_norm = nn.LayerNorm(d)
        self.mask_embed = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        laterals = {}
        if self.side is not None:
            laterals = {s: c for s, c in zip(self.side.strides, self.side.channels)
                        if config.side_fusion_stride <= s < config.patch_size}
        self.pixel_decoder = PixelDecoder(d, config.mask_upsample, laterals)

    def _visual_pos(self, h: int, w: int) -> torch.Tensor:
        pos = self.visual_pos
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        return rearrange(pos, "1 d h w -> 1 (h w) d")

    def pixel_features(self, visual: torch.Tensor, hw: tuple[int, int],
                       side: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, h*w, d) visual tokens (+ encoder stages) -> (B, d, h*u, w*u) per-pixel mask features."""
        return self.pixel_decoder(rearrange(visual, "b (h w) d -> b d h w", h=hw[0], w=hw[1]), side)

    def predict_masks(self, queries: torch.Tensor, visual: torch.Tensor, hw: tuple[int, int],
                      side: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Mask logits (B, N, h*u, w*u) from queries (B, N, d), visual tokens (B, h*w, d) and encoder stages."""
        pixel = self.pixel_features(visual, hw, side)
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
        side = None
        if self.side is not None:
            if images is None:
                raise ValueError("the side encoder needs the input images")
            side = self.side(images)
            coarse = rearrange(_resize(side[self.side.strides[-1]], (h, w)), "b d h w -> b (h w) d")  # stride patch
            visual = visual + (coarse if self.side_gate is None else self.side_gate * coarse)
        visual_pos = self._visual_pos(h, w)
        query_pos = self.query_pos.unsqueeze(0).expand(b, -1, -1)
        queries = self.query_embed.unsqueeze(0).expand(b, -1, -1)
        out = ProposalExtractorOutput(queries=[], mask_logits=[])
        for i, layer in enumerate(self.layers):
            queries, visual = layer(queries, visual, query_pos, visual_pos)
            out.queries.append(queries)
            if all_layers or i == len(self.layers) - 1:
                out.mask_logits.append(self.predict_masks(queries, visual, (h, w), side))
        return out
