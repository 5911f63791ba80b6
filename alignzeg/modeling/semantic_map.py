"""Semantic-map assembly: proposals (masks + class probabilities) -> per-pixel class probabilities.

Per-pixel evidence for class c is ``sum_n P(c | proposal n) * sigmoid(mask_n)``, background included as
one more channel; dividing by the sum over all channels gives per-pixel probabilities over
[classes + background]. Everything is computed at mask resolution (stride ``patch / mask_upsample``); the
upsampling to the image and the per-pixel label are the shared pipeline's (``alignzeg.pipeline.labels``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .bias_correction import proposal_bias_correction

__all__ = ["semantic_probabilities", "upsample_probabilities"]


def semantic_probabilities(class_logits: torch.Tensor, mask_logits: torch.Tensor, unseen_logits: torch.Tensor,
                           seen_mask: torch.Tensor, bias_correction: bool = True, threshold: float = 0.5,
                           seen_score_offset: float = 0.0) -> torch.Tensor:
    """Combine proposals into a per-pixel probability map.

    Args:
        class_logits: (B, N, C + 1) float, last column background.
        mask_logits: (B, N, h, w) float.
        unseen_logits: (B, N) float, the class indicator's logits.
        seen_mask: (C,) bool, True for the checkpoint's seen (training) classes.
        bias_correction: apply PBC (``proposal_bias_correction``, a masked softmax) instead of a plain softmax.
        threshold, seen_score_offset: PBC settings (unused without bias correction).

    Returns:
        (B, C + 1, h, w) float32, non-negative, summing to 1 over channels at each pixel;
        channel C is background.
    """
    if bias_correction:
        probs = proposal_bias_correction(class_logits, unseen_logits.float().sigmoid(), seen_mask, threshold,
                                         seen_score_offset)
    else:
        probs = class_logits.float().softmax(dim=-1)
    masks = mask_logits.float().sigmoid()
    evidence = torch.einsum("bnc,bnhw->bchw", probs, masks)
    return evidence / evidence.sum(dim=1, keepdim=True).clamp_min(1e-12)


def upsample_probabilities(probs: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """The straightforward full-resolution upsample, (C + 1, h, w) -> (C + 1, H, W); for reference and tests."""
    return F.interpolate(probs[None].float(), size=out_size, mode="bilinear", align_corners=False)[0]
