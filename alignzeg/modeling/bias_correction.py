"""Proposal-based Bias Correction (PBC): a pure function, applied at inference only.

Proposals that the class indicator flags as likely unseen (score above ``threshold``) have their
seen-class probabilities multiplied by ``factor`` (0 by default: only the unseen classes remain for that
proposal). All other proposals are returned unchanged. It is the identity when the vocabulary holds no
seen class or no unseen class (there is nothing to correct towards).
"""

from __future__ import annotations

import torch

__all__ = ["proposal_bias_correction"]


def proposal_bias_correction(class_probs: torch.Tensor, unseen_scores: torch.Tensor, seen_mask: torch.Tensor,
                             threshold: float = 0.5, factor: float = 0.0) -> torch.Tensor:
    """Suppress seen classes in the proposals flagged as unseen.

    Args:
        class_probs: (B, N, C) or (B, N, C + 1) float probabilities; a trailing background column
            (when C + 1 columns are given) is never changed.
        unseen_scores: (B, N) float in [0, 1], the class indicator's unseen probability per proposal.
        seen_mask: (C,) bool, True where vocabulary entry c is a seen (training) class.
        threshold: a proposal is flagged when its score is strictly above this.
        factor: multiplier for the flagged proposals' seen-class probabilities, in [0, 1].

    Returns:
        A new tensor of class_probs' shape and dtype; the input is not modified.
    """
    if class_probs.dim() != 3 or unseen_scores.shape != class_probs.shape[:2]:
        raise ValueError(
            f"expected class_probs (B, N, C[+1]) and unseen_scores (B, N), got "
            f"{tuple(class_probs.shape)} and {tuple(unseen_scores.shape)}"
        )
    num_classes = seen_mask.shape[0]
    if class_probs.shape[-1] not in (num_classes, num_classes + 1):
        raise ValueError(f"seen_mask has {num_classes} entries but class_probs has {class_probs.shape[-1]} columns")
    if not 0.0 <= factor <= 1.0:
        raise ValueError(f"factor must be in [0, 1], got {factor}")
    seen_mask = seen_mask.to(device=class_probs.device, dtype=torch.bool)
    if not seen_mask.any() or seen_mask.all():
        return class_probs.clone()
    flagged = unseen_scores > threshold  # (B, N)
    column = torch.zeros(class_probs.shape[-1], dtype=torch.bool, device=class_probs.device)
    column[:num_classes] = seen_mask
    suppress = flagged.unsqueeze(-1) & column  # (B, N, C[+1])
    scale = torch.where(suppress, torch.as_tensor(factor, dtype=class_probs.dtype, device=class_probs.device),
                        torch.ones((), dtype=class_probs.dtype, device=class_probs.device))
    return class_probs * scale
