"""The frozen CLIP backbone (gray in the paper's figure 2): dense patch features and text embeddings.

open_clip builds the network; this module only reads it densely: every patch token goes through
``ln_post`` and the visual projection, so patch features live in the same joint space as the text
embeddings (the ZegCLIP family's practice).

Deep visual prompt tuning (VPT-deep, as ZegCLIP adapts its frozen CLIP): ``DeepPrompts`` holds
``clip_prompt_tokens`` learnable tokens for each of the first ``clip_prompt_depth`` ViT layers. Before
such a layer its tokens are appended after the [CLS] + patch tokens, and after the layer they are dropped
again, so every layer sees fresh prompts and the output has CLIP's token layout. The prompts live at
``backbone.prompts``, outside ``backbone.clip``: CLIP's tensors (and their fingerprint) never change, and
slim checkpoints, which drop ``backbone.clip.*``, keep the prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..config import AlignZegConfig
from .clip_readout import region_attention_mask, region_tokens

__all__ = ["CLIPBackbone", "DeepPrompts", "VisualFeatures", "interpolate_pos_embed", "build_open_clip", "run_blocks",
           "block_forward", "uses_sdpa_blocks"]


@dataclass
class VisualFeatures:
    """Dense CLIP output for a batch.

    Attributes:
        patches: (B, E, h, w) float, patch features projected into the joint embedding space.
        block_inputs: for the CLIP region readout, the (B, 1 + h*w, D) image tokens ([CLS] first, prompts
            removed) entering each of the last ``readout_layers`` ViT blocks; empty when not asked for.
    """

    patches: torch.Tensor
    block_inputs: list[torch.Tensor] = field(default_factory=list)


class DeepPrompts(nn.Module):
    """VPT-deep prompt tokens: ``tokens`` learnable vectors of CLIP's width for each of ``depth`` layers.

    Initialised as VPT: uniform in ``[-v, v]`` with ``v = sqrt(6 / (3 * patch_size**2 + width))``, the
    Xavier bound of the patch embedding (fan-in ``3 * patch**2``, fan-out ``width``), so prompts start at
    the scale of the patch tokens.

    Args:
        depth: number of leading ViT layers that get prompts.
        tokens: prompt tokens per layer (> 0).
        width: the ViT's token width.
        patch_size: the ViT's patch size (for the initialisation scale).
    """

    def __init__(self, depth: int, tokens: int, width: int, patch_size: int) -> None:
        super().__init__()
        bound = math.sqrt(6.0 / (3 * patch_size ** 2 + width))
        self.tokens = nn.Parameter(torch.empty(depth, tokens, width).uniform_(-bound, bound))

    @property
    def depth(self) -> int:
        return self.tokens.shape[0]


def _plain_block(block: nn.Module) -> bool:
    """Whether ``block`` is open_clip's self-attention ``ResidualAttentionBlock`` with one packed q/k/v
    projection (what ``block_forward`` computes); anything else runs through its own ``forward``."""
    attn = getattr(block, "attn", None)
    return (type(block).__name__ == "ResidualAttentionBlock" and not hasattr(block, "ln_1_kv")
            and isinstance(attn, nn.MultiheadAttention) and attn.in_proj_weight is not None
            and all(hasattr(block, name) for name in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2")))


def uses_sdpa_blocks(x: torch.Tensor) -> bool:
    """Whether ``run_blocks`` computes the blocks with ``block_forward`` for tokens ``x``: on CPU at inference.

    On this package's reference CPU (2 threads, torch 2.14.1) open_clip's ViT-B/16 at 512 px ran in 0.77 s with
    torch's fused multi-head-attention fast path off and 0.96 s with it on (the default at inference);
    ``block_forward`` is the fast path off without touching torch's global switch. On CUDA, and while
    training, tracing or exporting, the blocks run their own ``forward`` (nothing measured says otherwise).
    """
    return (x.device.type == "cpu" and not torch.is_grad_enabled() and not torch.jit.is_tracing()
            and not torch.onnx.is_in_onnx_export())


def block_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip's ``ResidualAttentionBlock.forward`` on (B, L, D) tokens, its attention computed with
    ``F.scaled_dot_product_attention`` on the block's own weights (no mask, no dropout: inference).

    ``x + ls_1(out_proj(attention(ln_1(x))))``, then ``+ ls_2(mlp(ln_2(.)))``: the same arithmetic as the
    block, so outputs agree to float rounding. Blocks of another kind (``_plain_block`` False) run their own
    ``forward``.

    Args:
        block: a ViT block whose ``attn`` is batch-first or not (this function works on (B, L, D) either way).
        x: (B, L, D) float tokens.

    Returns:
        (B, L, D) tokens, dtype of ``x``.
    """
    attn = block.attn
    heads = attn.num_heads
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B, heads, L, D / heads)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(-2)
    x = x + block.ls_1(attn.out_proj(out))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, batch_first: bool, prompts: torch.Tensor | None = None,
               keep: list[torch.Tensor] | None = None, keep_from: int = 0) -> torch.Tensor:
    """ViT blocks over (B, L, D) tokens, with (depth, T, D) prompts appended before each of the first
    ``depth`` blocks and dropped after it; the inputs of blocks ``keep_from..`` go to ``keep``. On CPU at
    inference plain blocks run through ``block_forward`` (``uses_sdpa_blocks``)."""
    length = x.shape[1]
    depth = 0 if prompts is None else prompts.shape[0]
    sdpa = uses_sdpa_blocks(x)
    for i, block in enumerate(blocks):
        if keep is not None and i >= keep_from:
            keep.append(x)
        if i < depth:
            x = torch.cat([x, prompts[i].to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
        if sdpa and _plain_block(block):
            x = block_forward(block, x)
        else:
            x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)
        x = x[:, :length]
    return x


def build_open_clip(config: AlignZegConfig) -> nn.Module:
    """A randomly initialised ``open_clip.CLIP`` with the architecture of ``config.clip_cfg``."""
    import open_clip  # imported here, not at package import: it pulls in timm and torchvision (seconds)

    cfg = dict(config.clip_cfg)
    return open_clip.CLIP(
        embed_dim=cfg["embed_dim"],
        vision_cfg=dict(cfg["vision_cfg"]),
        text_cfg=dict(cfg["text_cfg"]),
        quick_gelu=bool(cfg.get("quick_gelu", False)),
    )


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a ViT position embedding to another patch grid (bicubic, [CLS] row kept).

    Args:
        pos_embed: (1 + g*g, D) float, a square grid's embedding with the [CLS] row first.
        grid: target (h, w) in patches.

    Returns:
        (1 + h*w, D) float, the same tensor when the grid already matches.
    """
    n_old = pos_embed.shape[0] - 1
    side = int(math.isqrt(n_old))
    if side * side != n_old:
        raise ValueError(f"position embedding of {n_old} patch rows is not a square grid")
    if (side, side) == tuple(grid):
        return pos_embed
    cls_row, patch_rows = pos_embed[:1], pos_embed[1:]
    patch_rows = rearrange(patch_rows, "(h w) d -> 1 d h w", h=side)
    patch_rows = F.interpolate(patch_rows.float(), size=grid, mode="bicubic", align_corners=False)
    patch_rows = rearrange(patch_rows, "1 d h w -> (h w) d").to(pos_embed.dtype)
    return torch.cat([cls_row, patch_rows], dim=0)


class CLIPBackbone(nn.Module):
    """Frozen open_clip CLIP: dense image features and text embeddings.

    Args:
        config: model config; ``config.clip_cfg`` gives the architecture.
    """

    def __init__(self, config: AlignZegConfig) -> None:
        super().__init__()
        self.clip = build_open_clip(config)
        self.embed_dim = config.embed_dim
        self.patch_size = config.patch_size
        self.context_length = config.context_length
        self.clip.requires_grad_(False)
        self.clip.eval()
        layers = len(self.clip.visual.transformer.resblocks)
        depth = layers if config.clip_prompt_depth is None else config.clip_prompt_depth
        self.prompts = (DeepPrompts(depth, config.clip_prompt_tokens, self.clip.visual.transformer.width,
                                    config.patch_size) if config.clip_prompt_tokens > 0 else None)

    def train(self, mode: bool = True) -> "CLIPBackbone":
        # CLIP stays frozen in eval mode (no dropout) whatever the rest of the model does.
        super().train(mode)
        self.clip.eval()
        return self

    def encode_image_dense(self, images: torch.Tensor, readout_layers: int = 0) -> VisualFeatures:
        """Dense features of normalised images.

        Args:
            images: (B, 3, H, W) float, normalised with the CLIP mean/std; H, W multiples of the patch size.
            readout_layers: keep the image tokens entering the last this many blocks (for ``read_regions``).

        Returns:
            VisualFeatures with patches (B, E, H/p, W/p); with prompts, the prompted CLIP's.
        """
        visual = self.clip.visual
        x = visual.conv1(images)  # (B, width, h, w)
        h, w = x.shape[-2:]
        x = rearrange(x, "b d h w -> b (h w) d")
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + interpolate_pos_embed(visual.positional_embedding, (h, w)).to(x.dtype)
        x = visual.ln_pre(x)
        blocks = visual.transformer.resblocks
        keep: list[torch.Tensor] = []
        if self.prompts is None and not readout_layers:
            x = visual.transformer(x)
        else:
            prompts = None if self.prompts is None else self.prompts.tokens
            x = run_blocks(blocks, x, visual.transformer.batch_first, prompts, keep, len(blocks) - readout_layers)
        x = self.project(x[:, 1:])
        return VisualFeatures(patches=rearrange(x, "b (h w) e -> b e h w", h=h, w=w), block_inputs=keep)

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., D) ViT tokens -> (..., E) joint-space features: ``ln_post`` then the visual projection."""
        visual = self.clip.visual
        x = visual.ln_post(tokens)
        return x @ visual.proj if visual.proj is not None else x

    @property
    def num_layers(self) -> int:
        """Blocks of the CLIP image encoder."""
        return len(self.clip.visual.transformer.resblocks)

    def read_regions(self, features: VisualFeatures, mask_logits: torch.Tensor) -> torch.Tensor:
        """The CLIP region readout (``clip_readout.region_tokens``) of each proposal.

        Args:
            features: from ``encode_image_dense(..., readout_layers=K)`` with K >= 1.
            mask_logits: (B, N, H', W') the proposals' mask logits (detached here).

        Returns:
            (B, N, E) float, L2-normalised region embeddings in CLIP's joint space.
        """
        k = len(features.block_inputs)
        if k == 0:
            raise ValueError("read_regions needs the image tokens of the readout blocks: "
                             "call encode_image_dense with readout_layers >= 1")
        allow = region_attention_mask(mask_logits, tuple(features.patches.shape[-2:]))
        blocks = list(self.clip.visual.transformer.resblocks)[-k:]
        regions = region_tokens(blocks, features.block_inputs, allow)
        return F.normalize(self.project(regions), dim=-1)

    @property
    def clip_logit_scale(self) -> torch.Tensor:
        """CLIP's own inverse temperature (``exp(logit_scale)``, at most 100), a 0-dim tensor."""
        return self.clip.logit_scale.detach().exp().clamp(max=100.0)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """CLIP BPE tokens, (T, context_length) int64 (open_clip's tokenizer; truncates at the context)."""
        import open_clip

        return open_clip.tokenize(texts, context_length=self.context_length)

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Number of BPE tokens of each text including start/end tokens, before any truncation."""
        from open_clip.tokenizer import _tokenizer as tokenizer

        return [len(tokenizer.encode(t)) + 2 for t in texts]

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text embeddings, (T, E) float, L2-normalised, from (T, context_length) tokens.

        With CLIP's causal mask and end-token pooling, positions after the last end token cannot change
        the result, so the batch is cut to its longest prompt (prompts are ~10 of 77 tokens: ~5x less work).
        """
        clip = self.clip
        if clip.attn_mask is None or clip.text_pool_type != "argmax":
            return clip.encode_text(tokens, normalize=True)
        length = int(tokens.argmax(dim=-1).max()) + 1  # the end token has the highest id
        tokens = tokens[:, :length]
        cast_dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask[:length, :length]))
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        x = clip.text_projection(x) if isinstance(clip.text_projection, nn.Linear) else x @ clip.text_projection
        return F.normalize(x, dim=-1)
