"""Proposal-based Bias Correction (PBC): a pure function over class logits, applied at inference only.

A masked softmax. Proposals that the class indicator flags as likely unseen (score above ``threshold``)
get seen-class logits of -inf, so their softmax is taken again over the unseen classes and background:
a confidently wrong proposal ("tree" called "bush") keeps its mass for the right unseen class instead of
losing it. Optionally ``seen_score_offset`` is first subtracted from the seen-class logits of every
proposal (ZegCLIP's calibration). Other proposals are a plain softmax. With no seen class or no unseen
class in the vocabulary there is nothing to correct towards: the result is the plain softmax (no offset).

Without a class indicator (``unseen_scores=None``: a model whose indicator was never trained) no proposal is
flagged and the result is the offset alone.

Soft PBC (``soft=True``) uses the indicator's probability s of each proposal instead of a flag:
``p = (1 - s) * softmax(logits) + s * masked_softmax(logits)`` (the offset applied to both); a score of 0
or 1 gives the hard result of a proposal left alone or flagged.
"""

from __future__ import annotations

import math

import torch

__all__ = ["proposal_bias_correction"]


def proposal_bias_correction(class_logits: torch.Tensor, unseen_scores: torch.Tensor | None, seen_mask: torch.Tensor,
                             threshold: float = 0.5, seen_score_offset: float = 0.0,
                             soft: bool = False) -> torch.Tensor:
    """Class probabilities with the seen classes masked out of the proposals flagged as unseen.

    Args:
        class_logits: (B, N, C + 1) float logits, last column background (never masked).
        unseen_scores: (B, N) float in [0, 1], the class indicator's unseen probability per proposal; ``None``:
            no indicator, no proposal flagged (the seen-score offset alone).
        seen_mask: (C,) bool, True where vocabulary entry c is a seen (training) class.
        threshold: a proposal is flagged when its score is strictly above this.
        seen_score_offset: subtracted from every proposal's seen-class logits before the softmax.
        soft: weigh the masked softmax by the unseen score instead of flagging (``threshold`` unused).

    Returns:
        (B, N, C + 1) float32 probabilities (rows sum to 1); the input is not modified.
    """
    if class_logits.dim() != 3 or (unseen_scores is not None and unseen_scores.shape != class_logits.shape[:2]):
        raise ValueError(
            f"expected class_logits (B, N, C+1) and unseen_scores (B, N), got "
            f"{tuple(class_logits.shape)} and {None if unseen_scores is None else tuple(unseen_scores.shape)}"
        )
    num_classes = seen_mask.shape[0]
    if class_logits.shape[-1] != num_classes + 1:
        raise ValueError(f"seen_mask has {num_classes} entries but class_logits has {class_logits.shape[-1]} "
                         f"columns; expected {num_classes} classes + 1 background column")
    if not math.isfinite(seen_score_offset):
        raise ValueError(f"seen_score_offset must be finite, got {seen_score_offset}")
    logits = class_logits.float()
    seen_mask = seen_mask.to(device=logits.device, dtype=torch.bool)
    if not seen_mask.any() or seen_mask.all():
        return logits.softmax(dim=-1)
    seen_column = torch.cat([seen_mask, seen_mask.new_zeros(1)])  # (C + 1,), background never seen
    logits = logits - seen_score_offset * seen_column.to(logits.dtype)
    if unseen_scores is None:
        return logits.softmax(dim=-1)
    if soft:
        masked = logits.masked_fill(seen_column, float("-inf")).softmax(dim=-1)
        weight = unseen_scores.float().clamp(0, 1).unsqueeze(-1)
        return (1 - weight) * logits.softmax(dim=-1) + weight * masked
    suppress = (unseen_scores > threshold).unsqueeze(-1) & seen_column  # (B, N, C + 1)
    return logits.masked_fill(suppress, float("-inf")).softmax(dim=-1)
