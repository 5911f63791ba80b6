"""The training parts of GEPC: synthetic (virtual) proposal features and negative proposal selection.

- Feature Expansion Strategy (FES): pick pairs of matched proposals whose classes differ, mix their
  embeddings Manifold-Mixup-style, ``z = normalize(lam * e_i + (1 - lam) * e_j)`` with
  ``lam ~ Beta(alpha, alpha)``, and train ``classifier.classify(z)`` toward the soft target that puts
  ``lam`` on class i and ``1 - lam`` on class j (the matching mix of the two prototypes).
- Background Diversity Strategy (BDS): for each seen class g present in the image, rank all N proposals
  by their loss for g (the matching cost column ``cost[:, g]``: class CE + mask BCE + dice) and take the
  K with the *largest* loss (the proposals least like g). A proposal in that top-K for **every** seen
  class of the image, and not matched to any ground-truth mask, is a negative proposal: it is trained
  toward the background prototypes with full weight instead of the ``eos_coef`` down-weight.
- The class indicator's positives (``off_prototype_features``): a *separate* set of synthetic features
  that stand for unseen classes. A mix ``u`` of two matched proposals of different seen classes a, b (it
  lies between the two prototypes, off both) is optionally rotated by an angle theta (``indicator_angle``;
  0 by default) toward a direction ``d`` orthogonal to ``u`` and to both prototypes t_a, t_b (the trainer
  draws ``d`` as a random combination of the batch's matched proposal embeddings, so it stays in the span
  where proposal embeddings live): ``z = cos(theta) u + sin(theta) d``, so ``cos(z, t_a) = cos(theta)
  cos(u, t_a)`` (the same for t_b). Background and negative proposals are never positives: in inductive
  training they include the unseen objects of the training images (labelled "ignore"), and an indicator
  trained on them learns "background", not "unseen".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["select_negative_proposals", "sample_mix_pairs", "mix_features", "sample_mix_weights",
           "off_prototype_features", "sample_angles"]


def select_negative_proposals(cost: torch.Tensor, matched: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Negative proposals of one image.

    Args:
        cost: (N, G) float, the loss of proposal n for the image's seen class g.
        matched: (N,) bool, proposals matched to a ground-truth mask (never negative).
        k: top-K per class; ``min(k, N)`` when N < k. Ties are broken toward the lower index.

    Returns:
        (N,) bool, True for negative proposals. All False when the image has no seen class (G = 0).
    """
    if cost.dim() != 2 or matched.shape != cost.shape[:1]:
        raise ValueError(f"expected cost (N, G) and matched (N,), got {tuple(cost.shape)} and {tuple(matched.shape)}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    num, classes = cost.shape
    if classes == 0:
        return torch.zeros(num, dtype=torch.bool, device=cost.device)
    # A stable descending sort keeps the lower index first among equal losses.
    order = torch.sort(cost.detach(), dim=0, descending=True, stable=True).indices[:min(k, num)]  # (K, G)
    in_topk = torch.zeros_like(cost, dtype=torch.bool)
    in_topk.scatter_(0, order, True)
    return in_topk.all(dim=1) & ~matched.bool()


def sample_mix_pairs(classes: torch.Tensor, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random pairs of items whose classes differ.

    Args:
        classes: (S,) int64, the class of each matched proposal.
        num: how many pairs to draw (with replacement).
        generator: torch RNG for the draw (default: the global one).

    Returns:
        (num, 2) int64 indices into ``classes``; (0, 2) when no two items have different classes.
    """
    pairs = torch.nonzero(classes[:, None] != classes[None, :], as_tuple=False)
    pairs = pairs[pairs[:, 0] < pairs[:, 1]]
    if pairs.shape[0] == 0 or num == 0:
        return torch.zeros(0, 2, dtype=torch.long, device=classes.device)
    pick = torch.randint(pairs.shape[0], (num,), generator=generator, device="cpu").to(classes.device)
    return pairs[pick]


def sample_mix_weights(num: int, alpha: float) -> torch.Tensor:
    """(num,) float mixing weights drawn from Beta(alpha, alpha) with the global torch RNG."""
    concentration = torch.full((num,), float(alpha))
    return torch.distributions.Beta(concentration, concentration).sample()


def mix_features(embeddings: torch.Tensor, classes: torch.Tensor, pairs: torch.Tensor, lam: torch.Tensor,
                 num_columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic features and their soft targets.

    Args:
        embeddings: (S, E) float, L2-normalised matched proposal embeddings.
        classes: (S,) int64 class index of each.
        pairs: (V, 2) int64 index pairs (i, j) with different classes.
        lam: (V,) float in [0, 1], the weight of item i.
        num_columns: C + 1, the classifier's output width (background column last, always 0 in the target).

    Returns:
        (z, target): (V, E) L2-normalised mixed embeddings and (V, C + 1) float targets that sum to 1.
    """
    i, j = pairs[:, 0], pairs[:, 1]
    lam = lam.to(embeddings.dtype).to(embeddings.device)
    z = F.normalize(lam[:, None] * embeddings[i] + (1 - lam[:, None]) * embeddings[j], dim=-1)
    target = torch.zeros(pairs.shape[0], num_columns, dtype=embeddings.dtype, device=embeddings.device)
    rows = torch.arange(pairs.shape[0], device=embeddings.device)
    target[rows, classes[i]] += lam
    target[rows, classes[j]] += 1 - lam
    return z, target


def sample_angles(num: int, low: float, high: float) -> torch.Tensor:
    """(num,) float32 angles in radians, uniform in [low, high] degrees (global torch RNG)."""
    return torch.deg2rad(low + (high - low) * torch.rand(num))


def off_prototype_features(embeddings: torch.Tensor, classes: torch.Tensor, prototypes: torch.Tensor,
                           pairs: torch.Tensor, lam: torch.Tensor, theta: torch.Tensor,
                           noise: torch.Tensor | None = None) -> torch.Tensor:
    """Synthetic features off the seen prototypes: the class indicator's positives.

    ``u = normalize(lam e_i + (1 - lam) e_j)``; ``d`` = ``noise`` with its components along ``u``, t_a and
    t_b removed (Gram-Schmidt), normalised; ``z = cos(theta) u + sin(theta) d``.

    Args:
        embeddings: (S, E) float, L2-normalised matched proposal embeddings (detach them first).
        classes: (S,) int64, their seen-class indices (rows of ``prototypes``).
        prototypes: (C, E) float, L2-normalised seen-class prototypes.
        pairs: (V, 2) int64 index pairs with different classes (``sample_mix_pairs``).
        lam: (V,) float in [0, 1], the weight of item i.
        theta: (V,) float, the rotation in radians, in [0, pi / 2] (0 returns the mix ``u`` itself).
        noise: (V, E) float directions to orthogonalise; default: standard normal (global torch RNG). A row
            that lies (numerically) in span{u, t_a, t_b} is replaced by a standard normal direction.

    Returns:
        (V, E) float, L2-normalised; ``cos(z, t) = cos(theta) * cos(u, t)`` for both source prototypes t.
    """
    if pairs.shape[0] == 0:
        return embeddings.new_zeros(0, embeddings.shape[1])
    i, j = pairs[:, 0], pairs[:, 1]
    lam = lam.to(embeddings)[:, None]
    u = F.normalize(lam * embeddings[i] + (1 - lam) * embeddings[j], dim=-1)
    if noise is None:
        noise = torch.randn(u.shape).to(u)
    d = noise.to(u)
    # Modified Gram-Schmidt against u, t_a, t_b (each first orthogonalised against the earlier ones).
    basis: list[torch.Tensor] = []
    for v in (u, prototypes[classes[i]].to(u), prototypes[classes[j]].to(u)):
        for b in basis:
            v = v - (v * b).sum(-1, keepdim=True) * b
        basis.append(F.normalize(v, dim=-1))
    for b in basis:
        d = d - (d * b).sum(-1, keepdim=True) * b
    # Where ``noise`` lies in span{u, t_a, t_b} nothing is left of it: a random orthogonal direction instead.
    spare = torch.randn(d.shape).to(d)
    for b in basis:
        spare = spare - (spare * b).sum(-1, keepdim=True) * b
    d = torch.where(d.norm(dim=-1, keepdim=True) > 1e-4 * noise.norm(dim=-1, keepdim=True).clamp_min(1e-12), d, spare)
    d = F.normalize(d, dim=-1)
    theta = theta.to(u)[:, None]
    return F.normalize(torch.cos(theta) * u + torch.sin(theta) * d, dim=-1)
