"""Ground-truth class masks and Hungarian matching of N proposals to them.

Resolution choice: costs and mask losses are computed **at the mask-logit resolution** (input size /
``mask_stride``, e.g. 64x64 for a 512 crop with ViT-B/16). The label map is turned into per-class
soft targets by area pooling: a cell's target is the fraction of its valid (non-ignore) pixels that
belong to the class, and its weight is the fraction of valid pixels (cells made only of ignore pixels
get weight 0 and count nowhere). No point sampling, so matching is exact and deterministic.

Per-proposal, per-class cost (the matching cost, and, with ``class_cost="logprob"``, the loss used to
rank proposals for negative selection)::

    cost[n, g] = cost_class * K(class_logits[n], class_g) + cost_mask * BCE(mask_n, target_g)
                 + cost_dice * Dice(mask_n, target_g)

with the weighted BCE and dice of ``losses.py`` and the class term K either ``-p(g | n)`` (``"prob"``,
Mask2Former's and ZegCLIP's matcher: bounded in [-1, 0], so one confident wrong class cannot outweigh the
masks) or ``-log p(g | n)`` (``"logprob"``, the cross-entropy: unbounded). The assignment minimises the total cost with scipy's
``linear_sum_assignment``; with N >= G every ground-truth mask gets exactly one proposal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

__all__ = ["ImageTargets", "build_targets", "pairwise_mask_costs", "class_mask_costs", "batch_class_mask_costs",
           "hungarian_match", "class_cost_matrix", "CLASS_COSTS"]

CLASS_COSTS = ("prob", "logprob")


def class_cost_matrix(class_logits: torch.Tensor, kind: str = "prob") -> torch.Tensor:
    """The class term of the cost for every column: ``-softmax`` (``"prob"``) or ``-log_softmax`` (``"logprob"``).

    Args:
        class_logits: (..., C + 1) float.
        kind: ``"prob"`` or ``"logprob"``.

    Returns:
        (..., C + 1) float32.
    """
    if kind == "prob":
        return -class_logits.float().softmax(dim=-1)
    if kind == "logprob":
        return -F.log_softmax(class_logits.float(), dim=-1)
    raise ValueError(f"class cost must be one of {CLASS_COSTS}, got {kind!r}")


@dataclass
class ImageTargets:
    """Ground truth of one image at mask resolution.

    Attributes:
        classes: (G,) int64, the training-class index of each present class (sorted ascending).
        masks: (G, P) float in [0, 1], soft class masks over the P = h * w mask cells.
        weight: (P,) float in [0, 1], fraction of valid (non-ignore) pixels of each cell.
    """

    classes: torch.Tensor
    masks: torch.Tensor
    weight: torch.Tensor


def build_targets(labels: torch.Tensor, size: tuple[int, int], ignore_index: int = 255) -> list[ImageTargets]:
    """Per-image class masks from label maps.

    Args:
        labels: (B, H, W) int64 training-class indices, ``ignore_index`` where unlabelled.
        size: (h, w) of the mask logits; each cell averages the pixels it covers (area pooling).
        ignore_index: label value that counts nowhere.

    Returns:
        B ``ImageTargets`` (G may be 0 for an image with no valid pixel).
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must be (B, H, W), got shape {tuple(labels.shape)}")
    valid = labels != ignore_index
    # One-hot planes of every class present anywhere in the batch, pooled in one call (each plane is pooled
    # on its own, so the values are the ones a per-image pooling gives); each image keeps its own classes.
    present = torch.unique(labels[valid])
    onehot = (labels.unsqueeze(1) == present.view(1, -1, 1, 1)).float()  # (B, K, H, W)
    pooled = F.adaptive_avg_pool2d(torch.cat([onehot, valid[:, None].float()], dim=1), size)  # (B, K + 1, h, w)
    has = onehot.flatten(2).amax(-1).bool()  # (B, K)
    targets = []
    for b in range(labels.shape[0]):
        weight = pooled[b, -1].flatten()
        keep = has[b]
        masks = pooled[b, :-1][keep].flatten(1) / weight.clamp_min(1e-6)
        targets.append(ImageTargets(classes=present[keep], masks=masks.clamp(0.0, 1.0), weight=weight))
    return targets


def pairwise_mask_costs(mask_logits: torch.Tensor, targets: torch.Tensor,
                        weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted BCE and dice between every proposal and every target mask.

    Args:
        mask_logits: (N, P) float logits.
        targets: (G, P) float in [0, 1].
        weight: (P,) float cell weights.

    Returns:
        (bce, dice), each (N, G) float: the same values ``losses.sigmoid_bce_loss`` and
        ``losses.dice_loss`` give for the pair.
    """
    x = mask_logits.float()
    t = targets.float()
    w = weight.float()
    # BCE(x, t) = softplus(x) - x * t, averaged over cells with weights w.
    bce = (F.softplus(x) @ w[:, None] - (x * w) @ t.t()) / w.sum().clamp_min(1e-6)
    p = torch.sigmoid(x) * w
    tw = t * w
    dice = 1.0 - (2.0 * p @ tw.t() + 1.0) / (p.sum(-1)[:, None] + tw.sum(-1)[None, :] + 1.0)
    return bce, dice


def class_mask_costs(class_logits: torch.Tensor, mask_logits: torch.Tensor, target: ImageTargets,
                     cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                     class_cost: str = "logprob") -> torch.Tensor:
    """Per-proposal, per-class cost of one image (see the module docstring).

    Args:
        class_logits: (N, C + 1) float.
        mask_logits: (N, P) float.
        target: the image's ground truth (G classes).
        class_cost: ``"prob"`` (-p) or ``"logprob"`` (-log p, the loss).

    Returns:
        (N, G) float cost.
    """
    ce = class_cost_matrix(class_logits, class_cost)[:, target.classes]  # (N, G)
    bce, dice = pairwise_mask_costs(mask_logits, target.masks, target.weight)
    return cost_class * ce + cost_mask * bce + cost_dice * dice


def batch_class_mask_costs(class_logits: torch.Tensor, mask_logits: torch.Tensor, targets: list[ImageTargets],
                           cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                           class_cost: str = "logprob") -> list[torch.Tensor]:
    """``class_mask_costs`` of every image of a batch, sharing the element-wise work.

    Args:
        class_logits: (B, N, C + 1) float.
        mask_logits: (B, N, P) float.
        targets: B ``ImageTargets``.
        class_cost: ``"prob"`` or ``"logprob"``.

    Returns:
        B (N, G_b) float costs, equal to ``class_mask_costs(class_logits[b], mask_logits[b], targets[b])``.
    """
    ce_all = class_cost_matrix(class_logits, class_cost)  # (B, N, C + 1)
    x_all = mask_logits.float()
    softplus_all, sigmoid_all = F.softplus(x_all), torch.sigmoid(x_all)
    costs = []
    for b, target in enumerate(targets):
        x, t, w = x_all[b], target.masks.float(), target.weight.float()
        bce = (softplus_all[b] @ w[:, None] - (x * w) @ t.t()) / w.sum().clamp_min(1e-6)
        p = sigmoid_all[b] * w
        tw = t * w
        dice = 1.0 - (2.0 * p @ tw.t() + 1.0) / (p.sum(-1)[:, None] + tw.sum(-1)[None, :] + 1.0)
        costs.append(cost_class * ce_all[b][:, target.classes] + cost_mask * bce + cost_dice * dice)
    return costs


def hungarian_match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of proposals (rows) to ground-truth masks (columns).

    Args:
        cost: (N, G) float, finite.

    Returns:
        (proposal_idx, target_idx), two (min(N, G),) int64 tensors on ``cost``'s device, sorted by proposal.
    """
    if cost.dim() != 2:
        raise ValueError(f"cost must be (N, G), got shape {tuple(cost.shape)}")
    array = cost.detach().float().cpu().numpy()
    if not torch.isfinite(cost).all():
        raise ValueError("matching cost contains NaN or infinite values")
    rows, cols = linear_sum_assignment(array)
    order = rows.argsort()
    device = cost.device
    return (torch.as_tensor(rows[order], dtype=torch.long, device=device),
            torch.as_tensor(cols[order], dtype=torch.long, device=device))
