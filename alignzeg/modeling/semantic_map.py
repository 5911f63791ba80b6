"""Semantic-map assembly: proposals (masks + class probabilities) -> per-pixel class probabilities -> labels.

Per-pixel evidence for class c is ``sum_n P(c | proposal n) * sigmoid(mask_n)``, background included as
one more channel; dividing by the sum over all channels gives per-pixel probabilities over
[classes + background]. Everything is computed at mask resolution (stride ``patch / mask_upsample``);
the (C + 1)-channel map is upsampled once, in row chunks so that memory stays bounded for any image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .bias_correction import proposal_bias_correction

__all__ = ["semantic_probabilities", "bilinear_weights", "upsample_labels"]

UNLABELLED = -1
"""Label value of pixels whose best class probability is below the ``unlabelled_threshold``."""


def semantic_probabilities(class_logits: torch.Tensor, mask_logits: torch.Tensor, unseen_logits: torch.Tensor,
                           seen_mask: torch.Tensor, bias_correction: bool = True, threshold: float = 0.5,
                           factor: float = 0.0) -> torch.Tensor:
    """Combine proposals into a per-pixel probability map.

    Args:
        class_logits: (B, N, C + 1) float, last column background.
        mask_logits: (B, N, h, w) float.
        unseen_logits: (B, N) float, the class indicator's logits.
        seen_mask: (C,) bool, True for the checkpoint's seen (training) classes.
        bias_correction: apply PBC (``proposal_bias_correction``) before assembling.
        threshold, factor: PBC settings.

    Returns:
        (B, C + 1, h, w) float32, non-negative, summing to 1 over channels at each pixel;
        channel C is background.
    """
    probs = class_logits.float().softmax(dim=-1)
    if bias_correction:
        probs = proposal_bias_correction(probs, unseen_logits.float().sigmoid(), seen_mask, threshold, factor)
    masks = mask_logits.float().sigmoid()
    evidence = torch.einsum("bnc,bnhw->bchw", probs, masks)
    return evidence / evidence.sum(dim=1, keepdim=True).clamp_min(1e-12)


def bilinear_weights(in_size: int, out_size: int, device: torch.device | None = None) -> torch.Tensor:
    """The (out_size, in_size) matrix of 1-D bilinear resampling, ``align_corners=False`` semantics.

    ``W @ x`` equals ``F.interpolate(x, size=out_size, mode="linear", align_corners=False)`` along one
    axis (without antialiasing), so a 2-D upsample is ``Wy @ X @ Wx.T`` and can be computed by row bands.
    """
    scale = in_size / out_size
    src = ((torch.arange(out_size, dtype=torch.float64, device=device) + 0.5) * scale - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    frac = (src - i0).clamp(0, 1)
    weights = torch.zeros(out_size, in_size, dtype=torch.float64, device=device)
    rows = torch.arange(out_size, device=device)
    weights.index_put_((rows, i0), 1 - frac, accumulate=True)
    weights.index_put_((rows, i1), frac, accumulate=True)
    return weights.float()


def upsample_labels(probs: torch.Tensor, out_size: tuple[int, int], unlabelled_threshold: float | None = None,
                    max_elements: int = 1 << 25) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinearly upsample a low-resolution probability map and take the per-pixel best class.

    Args:
        probs: (C + 1, h, w) float per-pixel probabilities, last channel background.
        out_size: (H, W) of the output.
        unlabelled_threshold: pixels whose best class probability is below this get ``UNLABELLED`` (-1);
            ``None`` labels every pixel.
        max_elements: bound on the floats of one upsampled row band (memory stays O(max_elements)).

    Returns:
        labels (H, W) int32 in [0, C) (or -1), and confidence (H, W) float32: the probability of the
        chosen class. Background is never chosen; it only lowers the probabilities of the classes.
    """
    channels, h, w = probs.shape
    height, width = out_size
    probs = probs.float()
    wy = bilinear_weights(h, height, probs.device)
    wx_t = bilinear_weights(w, width, probs.device).t().contiguous()  # (w, W)
    labels = torch.empty(height, width, dtype=torch.int32, device=probs.device)
    confidence = torch.empty(height, width, dtype=torch.float32, device=probs.device)
    band = max(1, min(height, max_elements // max(1, channels * width)))
    for r0 in range(0, height, band):
        r1 = min(height, r0 + band)
        rows = wy[r0:r1]
        used = rows.abs().sum(dim=0).nonzero().flatten()
        c0, c1 = int(used[0]), int(used[-1]) + 1
        part = torch.einsum("rk,ckw->crw", rows[:, c0:c1], probs[:, c0:c1]) @ wx_t  # (C + 1, r, W)
        best, index = part[:-1].max(dim=0)
        if unlabelled_threshold is not None:
            index = torch.where(best < unlabelled_threshold, torch.full_like(index, UNLABELLED), index)
        labels[r0:r1] = index.to(torch.int32)
        confidence[r0:r1] = best
    return labels, confidence


def upsample_probabilities(probs: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """The straightforward full-resolution upsample, (C + 1, h, w) -> (C + 1, H, W); for reference and tests."""
    return F.interpolate(probs[None].float(), size=out_size, mode="bilinear", align_corners=False)[0]
