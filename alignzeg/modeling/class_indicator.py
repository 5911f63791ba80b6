"""The class indicator of Proposal-based Bias Correction: how likely is a proposal an unseen-class region?

Two kinds (``config.indicator_inputs``):

- ``"embedding"``: a small MLP on the proposal embedding, trained with synthetic features as the
  "not a seen class" examples. On the attribute world it learns a shortcut of those features (ROC AUC
  0.52 on real unseen proposals).
- ``"profile"``: a logistic model on the proposal's *similarity profile* to the vocabulary
  (``profile_features``): for the decoder's embedding and for the CLIP region readout, the best cosine
  to a seen name, the best cosine to a non-seen name, and their difference. What separates real unseen
  proposals is relative to the names: they collapse onto seen prototypes, yet stay closer to their own
  name than seen proposals are to any non-seen name. It is trained by episodic class hold-out
  (``alignzeg.train``): each step some seen classes play the unseen ones.

The indicator is used at inference by ``bias_correction.proposal_bias_correction``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import AlignZegConfig

__all__ = ["ClassIndicator", "profile_features", "PROFILE_FEATURES", "PROFILE_SCALE"]

PROFILE_FEATURES = ("decoder_seen", "decoder_other", "decoder_margin", "readout_seen", "readout_other",
                    "readout_margin")
"""The columns of ``profile_features``."""
PROFILE_SCALE = 10.0
"""Cosines are multiplied by this before the logistic model (differences of a few hundredths matter)."""


def _best(cos: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Max of ``cos`` (..., C) over the True ``columns`` (C,); -1 (the lowest cosine) when there are none."""
    masked = cos.float().masked_fill(~columns, float("-inf")).amax(dim=-1)
    return torch.where(torch.isfinite(masked), masked, torch.full_like(masked, -1.0))


def profile_features(decoder_cos: torch.Tensor, readout_cos: torch.Tensor | None,
                     seen_mask: torch.Tensor) -> torch.Tensor:
    """A proposal's similarity profile to the seen and the non-seen names of the vocabulary.

    Args:
        decoder_cos: (..., C) float, cosine of each proposal embedding to each class prototype.
        readout_cos: (..., C) float, the same for the CLIP region readout; ``None`` gives zeros in its columns.
        seen_mask: (C,) bool, True for the seen (training) classes; "other" is every other entry.

    Returns:
        (..., 6) float32 in the order of ``PROFILE_FEATURES``: per source, max cos over seen names, max cos
        over other names (-1 where a group is empty), other - seen.
    """
    seen = seen_mask.to(device=decoder_cos.device, dtype=torch.bool)
    columns = []
    for cos in (decoder_cos, readout_cos):
        if cos is None:
            columns += [torch.zeros(decoder_cos.shape[:-1], device=decoder_cos.device)] * 3
            continue
        best_seen, best_other = _best(cos, seen), _best(cos, ~seen)
        columns += [best_seen, best_other, best_other - best_seen]
    return torch.stack(columns, dim=-1)


class ClassIndicator(nn.Module):
    """Proposal -> unseen logit (its sigmoid is the probability of an unseen class).

    ``"embedding"``: MLP (..., E) embeddings -> (...). ``"profile"``: logistic model on
    ``PROFILE_SCALE * profile_features`` (..., 6) -> (...).
    """

    def __init__(self, config: AlignZegConfig) -> None:
        super().__init__()
        self.inputs = config.indicator_inputs
        if self.inputs == "profile":
            self.net = nn.Sequential(nn.Linear(len(PROFILE_FEATURES), 1))  # a Sequential, as the MLP: net[-1]
            nn.init.zeros_(self.net[0].weight)
            nn.init.zeros_(self.net[0].bias)
        else:
            e, h = config.embed_dim, config.indicator_hidden
            self.net = nn.Sequential(nn.Linear(e, h), nn.GELU(), nn.Linear(h, h), nn.GELU(), nn.Linear(h, 1))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(..., E) embeddings or (..., 6) profile features (as ``self.inputs`` says) -> (...) logits."""
        if self.inputs == "profile":
            inputs = PROFILE_SCALE * inputs
        return self.net(inputs.to(self.net_dtype)).squeeze(-1)

    @property
    def net_dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype
