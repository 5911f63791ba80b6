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
from .clip_readout import geometric_ensemble

__all__ = ["semantic_probabilities", "output_probabilities", "upsample_probabilities"]


def semantic_probabilities(class_logits: torch.Tensor, mask_logits: torch.Tensor, unseen_logits: torch.Tensor,
                           seen_mask: torch.Tensor, bias_correction: bool = True, threshold: float = 0.5,
                           seen_score_offset: float = 0.0, readout_logits: torch.Tensor | None = None,
                           readout_weights: tuple[float, float] = (0.0, 0.0), soft: bool = False) -> torch.Tensor:
    """Combine proposals into a per-pixel probability map.

    Args:
        class_logits: (B, N, C + 1) float, last column background.
        mask_logits: (B, N, h, w) float.
        unseen_logits: (B, N) float, the class indicator's logits.
        seen_mask: (C,) bool, True for the checkpoint's seen (training) classes.
        bias_correction: apply PBC (``proposal_bias_correction``, a masked softmax) instead of a plain softmax.
        threshold, seen_score_offset, soft: PBC settings (unused without bias correction).
        readout_logits: (B, N, C) float CLIP readout logits; when given, the class logits are first replaced by
            ``geometric_ensemble(class_logits, readout_logits, seen_mask, *readout_weights)``.
        readout_weights: the readout's weight for (seen, unseen) classes.

    Returns:
        (B, C + 1, h, w) float32, non-negative, summing to 1 over channels at each pixel;
        channel C is background.
    """
    if readout_logits is not None:
        class_logits = geometric_ensemble(class_logits, readout_logits, seen_mask, *readout_weights)
    if bias_correction:
        probs = proposal_bias_correction(class_logits, unseen_logits.float().sigmoid(), seen_mask, threshold,
                                         seen_score_offset, soft)
    else:
        probs = class_logits.float().softmax(dim=-1)
    masks = mask_logits.float().sigmoid()
    evidence = torch.einsum("bnc,bnhw->bchw", probs, masks)
    return evidence / evidence.sum(dim=1, keepdim=True).clamp_min(1e-12)


def output_probabilities(out, seen_mask: torch.Tensor, config, bias_correction: bool) -> torch.Tensor:
    """``semantic_probabilities`` of a model output (``AlignZegOutput``) with the settings of ``config``
    (``AlignZegConfig``: PBC threshold, offset and mode, the CLIP readout's ensemble weights).

    Returns:
        (B, C + 1, h, w) float32 probabilities, as ``semantic_probabilities``.
    """
    return semantic_probabilities(out.class_logits, out.mask_logits, out.unseen_logits, seen_mask, bias_correction,
                                  config.pbc_threshold, config.seen_score_offset, out.readout_logits,
                                  (config.readout_weight_seen, config.readout_weight_unseen), config.pbc_soft)


def upsample_probabilities(probs: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """The straightforward full-resolution upsample, (C + 1, h, w) -> (C + 1, H, W); for reference and tests."""
    return F.interpolate(probs[None].float(), size=out_size, mode="bilinear", align_corners=False)[0]
