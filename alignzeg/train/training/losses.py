"""AlignZeg's training losses: L = λbc L_bc + λ1 L_ce + λ2 L_mask + λ3 L_vir + λ4 L_reg.

- L_ce: cross-entropy of every proposal over [seen classes + background]; matched proposals target their
  class (weight 1), unmatched ones the background (weight ``eos_coef``), negative proposals the background
  (weight ``negative_weight``). Normalised by the sum of weights (Mask2Former's weighted mean).
- L_mask: for matched pairs, weighted BCE (or sigmoid focal) + dice at mask resolution (``matching.py``),
  averaged over the matched pairs of the batch.
- Deep supervision: each earlier decoder layer is matched on its own and adds its L_ce and L_mask.
- L_vir: soft-target cross-entropy of ``classifier.classify`` on synthetic features (``gepc.py``).
- L_bc: BCE of the class indicator on detached embeddings; positives ("an unseen class") are
  ``num_synthetic`` synthetic features that lie off the seen prototypes (``gepc.off_prototype_features``:
  mixes of two matched proposals of different seen classes, optionally rotated further away from both
  prototypes by ``indicator_angle``), a set drawn apart from L_vir's mixes; negatives are the matched
  (seen) proposals. Background, unmatched and negative proposals are not in L_bc at all (in
  inductive training they hold the unseen objects of the training images, labelled "ignore"). The
  embeddings are detached so the indicator does not reshape the proposal space.
  With a ``"profile"`` indicator (``config.indicator_inputs``), L_bc is trained by episodic class hold-out
  instead (``holdout_profile_batch``): in each of ``HOLDOUT_EPISODES`` episodes a random share of the seen
  classes plays the unseen classes; the indicator reads each matched proposal's similarity profile to the
  remaining ("seen") and the held-out ("other") names, and the held-out classes' proposals are its positives.
- L_vir with ``vir_target="extra"``: the synthetic feature's own mixed prototype
  ``normalize(lam t_i + (1 - lam) t_j)`` is one more class of its softmax and the target.
- L_reg: mean squared cosine similarity between distinct background prototypes (keeps them apart).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...modeling.class_indicator import profile_features
from ...modeling.model import AlignZegModel, AlignZegOutput
from .config import TrainConfig
from .gepc import (mix_features, off_prototype_features, sample_angles, sample_mix_pairs, sample_mix_weights,
                   select_negative_proposals)
from .matching import ImageTargets, batch_class_mask_costs, build_targets, hungarian_match

__all__ = [
    "sigmoid_bce_loss", "sigmoid_focal_loss", "dice_loss", "classification_loss", "soft_cross_entropy",
    "background_diversity_loss", "indicator_loss", "indicator_batch", "holdout_profile_batch", "AlignZegCriterion",
    "LayerMatch", "HOLDOUT_EPISODES", "extra_class_logits",
]

HOLDOUT_EPISODES = 4
"""Hold-out episodes drawn per step for the ``"profile"`` class indicator (its inputs are cheap)."""


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (values * weight).sum(-1) / weight.sum(-1).clamp_min(1e-6)


def sigmoid_bce_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-mask weighted BCE. logits, targets: (M, P); weight: (P,) or (M, P). Returns (M,)."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    return _weighted_mean(bce, weight.float().expand_as(bce))


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                       alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Per-mask weighted sigmoid focal loss (RetinaNet's form). Shapes as ``sigmoid_bce_loss``; returns (M,)."""
    x, t = logits.float(), targets.float()
    p = torch.sigmoid(x)
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = (alpha * t + (1 - alpha) * (1 - t)) * (1 - p_t) ** gamma * bce
    return _weighted_mean(loss, weight.float().expand_as(loss))


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-mask weighted dice, ``1 - (2 sum(p t w^2) + 1) / (sum(p w) + sum(t w) + 1)``; returns (M,)."""
    w = weight.float().expand_as(logits)
    p = torch.sigmoid(logits.float()) * w
    t = targets.float() * w
    return 1.0 - (2.0 * (p * t).sum(-1) + 1.0) / (p.sum(-1) + t.sum(-1) + 1.0)


def classification_loss(class_logits: torch.Tensor, target_classes: torch.Tensor,
                        weights: torch.Tensor) -> torch.Tensor:
    """Weighted cross-entropy over [classes + background].

    Args:
        class_logits: (..., C + 1) float.
        target_classes: (...) int64 in [0, C] (C = background).
        weights: (...) float per-proposal weights.

    Returns:
        Scalar: ``sum(w * ce) / sum(w)``.
    """
    ce = F.cross_entropy(class_logits.float().flatten(0, -2), target_classes.flatten(), reduction="none")
    w = weights.float().flatten()
    return (ce * w).sum() / w.sum().clamp_min(1e-6)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum(target * log_softmax(logits))``; logits, targets: (V, K)."""
    return -(targets.float() * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def background_diversity_loss(prototypes: torch.Tensor) -> torch.Tensor:
    """L_reg: mean of cos(b_i, b_j)^2 over ordered pairs i != j of the (M, E) prototypes; 0 for M = 1."""
    m = prototypes.shape[0]
    if m < 2:
        return prototypes.sum() * 0.0
    b = F.normalize(prototypes.float(), dim=-1)
    cos = b @ b.t()
    off = ~torch.eye(m, dtype=torch.bool, device=b.device)
    return cos[off].pow(2).mean()


def indicator_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE of class-indicator logits (V,) against labels (V,) in {0, 1} (1 = not a seen class)."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def indicator_batch(matched: torch.Tensor, positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of L_bc: matched seen proposals (label 0) then unseen stand-ins (label 1).

    Args:
        matched: (S, E) float, embeddings of proposals matched to seen-class masks.
        positives: (V, E) float, off-prototype synthetic features.

    Returns:
        ((S + V, E) detached float inputs, (S + V,) float labels in {0, 1}).
    """
    inputs = torch.cat([matched, positives.to(matched)]).detach()
    labels = torch.zeros(inputs.shape[0], device=inputs.device)
    labels[matched.shape[0]:] = 1.0
    return inputs, labels


def holdout_profile_batch(decoder_cos: torch.Tensor, readout_cos: torch.Tensor | None, classes: torch.Tensor,
                          num_classes: int, fraction: tuple[float, float], episodes: int = HOLDOUT_EPISODES,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of L_bc for a ``"profile"`` indicator: episodic class hold-out.

    Each episode draws a share ``f ~ U(fraction)`` and holds out ``max(1, round(f * num_classes))`` of the seen
    classes; every matched proposal's profile (``profile_features``) is computed with the held-out classes as
    the "other" names, and its label is 1 when its own class is held out.

    Args:
        decoder_cos: (S, C) float, cosines of the matched proposals' embeddings to the C seen prototypes.
        readout_cos: (S, C) float, the same for the CLIP readout, or ``None``.
        classes: (S,) int64, each matched proposal's seen class.
        num_classes: C.
        fraction: (low, high) in (0, 1).
        episodes: how many episodes.
        generator: torch RNG (CPU) for the draws; default the global one.

    Returns:
        ((episodes * S, 6) float32 detached features, (episodes * S,) float32 labels in {0, 1}).
    """
    inputs, labels = [], []
    for _ in range(episodes):
        share = fraction[0] + (fraction[1] - fraction[0]) * float(torch.rand(1, generator=generator))
        count = min(num_classes - 1, max(1, round(share * num_classes)))
        held = torch.zeros(num_classes, dtype=torch.bool)
        held[torch.randperm(num_classes, generator=generator)[:count]] = True
        held = held.to(decoder_cos.device)
        inputs.append(profile_features(decoder_cos.detach(), None if readout_cos is None else readout_cos.detach(),
                                       ~held))
        labels.append(held[classes].float())
    return torch.cat(inputs), torch.cat(labels)


def extra_class_logits(logits: torch.Tensor, z: torch.Tensor, prototypes: torch.Tensor, pairs: torch.Tensor,
                       classes: torch.Tensor, lam: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """L_vir's logits with each synthetic feature's own mixed prototype as one more (last) column.

    Args:
        logits: (V, C + 1) the classifier's logits of the synthetic features ``z`` (V, E).
        prototypes: (C, E) seen prototypes; ``pairs`` (V, 2) and ``classes`` (S,) say which two were mixed, with
            weights ``lam`` (V,); ``scale``: the classifier's logit scale.

    Returns:
        (V, C + 2) float: ``scale * cos(z, normalize(lam t_a + (1 - lam) t_b))`` appended.
    """
    lam = lam.to(z)[:, None]
    mixed = F.normalize(lam * prototypes[classes[pairs[:, 0]]].to(z) + (1 - lam) * prototypes[classes[pairs[:, 1]]].to(z),
                        dim=-1)
    return torch.cat([logits, scale.to(z) * (z * mixed).sum(-1, keepdim=True)], dim=-1)


@dataclass
class LayerMatch:
    """Matching of one decoder layer for a batch: per image, matched (proposal_idx, target_idx) and costs."""

    indices: list[tuple[torch.Tensor, torch.Tensor]]
    costs: list[torch.Tensor]


class AlignZegCriterion:
    """Computes the total loss of a batch from the model outputs.

    Args:
        config: the training config (λs, switches, matching costs).
    """

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def match(self, class_logits: torch.Tensor, mask_logits: torch.Tensor,
              targets: list[ImageTargets]) -> LayerMatch:
        """Hungarian matching for every image of one layer's outputs (no gradient)."""
        cfg = self.config
        indices, costs = [], []
        with torch.no_grad():
            for cost in batch_class_mask_costs(class_logits, mask_logits.flatten(2), targets,
                                               cfg.cost_class, cfg.cost_mask, cfg.cost_dice, cfg.class_cost):
                indices.append(hungarian_match(cost))
                costs.append(cost)
        return LayerMatch(indices, costs)

    def _mask_loss(self, mask_logits: torch.Tensor, targets: list[ImageTargets], match: LayerMatch) -> torch.Tensor:
        # All matched pairs of the batch in one call (per-pair values as image by image).
        pairs = [(b, src, tgt) for b, (src, tgt) in enumerate(match.indices) if src.numel()]
        if not pairs:
            return mask_logits.sum() * 0.0
        flat = mask_logits.flatten(2)
        batch = torch.cat([torch.full_like(src, b) for b, src, _ in pairs])
        logits = flat[batch, torch.cat([src for _, src, _ in pairs])]
        t = torch.cat([targets[b].masks[tgt] for b, _, tgt in pairs])
        w = torch.cat([targets[b].weight.expand(src.numel(), -1) for b, src, _ in pairs])
        first = (sigmoid_focal_loss if self.config.mask_loss == "focal" else sigmoid_bce_loss)(logits, t, w)
        return (first + dice_loss(logits, t, w)).mean()

    def _class_targets(self, class_logits: torch.Tensor, targets: list[ImageTargets], match: LayerMatch,
                       negatives: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, width = class_logits.shape
        classes = torch.full((b, n), width - 1, dtype=torch.long, device=class_logits.device)
        weights = torch.full((b, n), self.config.eos_coef, device=class_logits.device)
        if negatives is not None:
            weights[negatives] = self.config.negative_weight
        for i, (src, tgt) in enumerate(match.indices):
            classes[i, src] = targets[i].classes[tgt]
            weights[i, src] = 1.0
        return classes, weights

    def _layer_losses(self, class_logits: torch.Tensor, mask_logits: torch.Tensor, targets: list[ImageTargets],
                      match: LayerMatch, negatives: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        classes, weights = self._class_targets(class_logits, targets, match, negatives)
        return classification_loss(class_logits, classes, weights), self._mask_loss(mask_logits, targets, match)

    def ranking_costs(self, class_logits: torch.Tensor, mask_logits: torch.Tensor, targets: list[ImageTargets],
                      match: LayerMatch) -> list[torch.Tensor]:
        """Per image (N, G) losses that rank proposals for negative selection: the matching cost when it
        is the loss (``class_cost="logprob"``), else the same cost with ``-log p`` as its class term."""
        if self.config.class_cost == "logprob":
            return match.costs
        cfg = self.config
        with torch.no_grad():
            return batch_class_mask_costs(class_logits, mask_logits.flatten(2), targets, cfg.cost_class,
                                          cfg.cost_mask, cfg.cost_dice, "logprob")

    def negatives(self, match: LayerMatch, num_proposals: int,
                  costs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(B, N) bool negative proposals of the batch, ranked by ``costs`` (default: the matching costs)."""
        rows = []
        for (src, _), cost in zip(match.indices, match.costs if costs is None else costs):
            matched = torch.zeros(num_proposals, dtype=torch.bool, device=cost.device)
            matched[src] = True
            rows.append(select_negative_proposals(cost, matched, self.config.negative_topk))
        return torch.stack(rows)

    def __call__(self, model: AlignZegModel, out: AlignZegOutput, labels: torch.Tensor,
                 class_embeddings: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its terms.

        Args:
            model: the (unwrapped) model, for ``classifier.classify``, the indicator and the prototypes.
            out: the model outputs of the batch (with ``aux`` when deep supervision is on).
            labels: (B, H, W) int64 training-class indices, 255 = ignore.
            class_embeddings: (C, E) float, the training classes' prototypes.

        Returns:
            (total, terms): a scalar tensor and a dict of the unweighted terms as floats.
        """
        cfg = self.config
        height, width = out.mask_logits.shape[-2:]
        targets = build_targets(labels, (height, width))
        match = self.match(out.class_logits, out.mask_logits, targets)
        negatives = None
        if cfg.negative_proposals and cfg.lambda_ce > 0:
            ranking = self.ranking_costs(out.class_logits, out.mask_logits, targets, match)
            negatives = self.negatives(match, out.class_logits.shape[1], ranking)
        terms: dict[str, torch.Tensor] = {}
        total = out.class_logits.sum() * 0.0
        if cfg.lambda_ce > 0 or cfg.lambda_mask > 0:
            ce, mask = self._layer_losses(out.class_logits, out.mask_logits, targets, match, negatives)
            if cfg.deep_supervision:
                for aux_masks, aux_logits in out.aux:
                    aux_match = self.match(aux_logits, aux_masks, targets)
                    aux_ce, aux_mask = self._layer_losses(aux_logits, aux_masks, targets, aux_match, None)
                    ce, mask = ce + aux_ce, mask + aux_mask
            terms["ce"], terms["mask"] = ce, mask
            total = total + cfg.lambda_ce * ce + cfg.lambda_mask * mask
        matched_emb, matched_cls = self._matched(out.embeddings, targets, match)
        if cfg.synthetic_features and cfg.num_synthetic > 0 and cfg.lambda_vir > 0:
            pairs = sample_mix_pairs(matched_cls, cfg.num_synthetic)
            if pairs.shape[0]:
                lam = sample_mix_weights(pairs.shape[0], cfg.mixup_alpha)
                z, soft = mix_features(matched_emb, matched_cls, pairs, lam, out.class_logits.shape[-1])
                logits = model.classifier.classify(z, class_embeddings)
                if cfg.vir_target == "extra":
                    logits = extra_class_logits(logits, z, class_embeddings, pairs, matched_cls, lam,
                                                model.classifier.logit_scale)
                    soft = F.one_hot(torch.full_like(pairs[:, 0], logits.shape[-1] - 1), logits.shape[-1]).to(z)
                terms["vir"] = soft_cross_entropy(logits, soft)
                total = total + cfg.lambda_vir * terms["vir"]
        if cfg.class_indicator and cfg.lambda_bc > 0 and matched_emb.shape[0]:
            if model.indicator.inputs == "profile":
                readout = None
                if out.readout_logits is not None:
                    readout = self._matched(out.readout_logits, targets, match)[0] / model.backbone.clip_logit_scale
                inputs, targets01 = holdout_profile_batch(matched_emb @ class_embeddings.to(matched_emb).t(), readout,
                                                          matched_cls, class_embeddings.shape[0], cfg.indicator_holdout)
            else:
                inputs, targets01 = indicator_batch(matched_emb, self.indicator_positives(matched_emb, matched_cls,
                                                                                           class_embeddings))
            terms["bc"] = indicator_loss(model.indicator(inputs), targets01)
            total = total + cfg.lambda_bc * terms["bc"]
        if cfg.reg and cfg.lambda_reg > 0:
            terms["reg"] = background_diversity_loss(model.classifier.bg_prototypes)
            total = total + cfg.lambda_reg * terms["reg"]
        return total, {k: float(v.detach()) for k, v in terms.items()}

    @staticmethod
    def _matched(embeddings: torch.Tensor, targets: list[ImageTargets],
                 match: LayerMatch) -> tuple[torch.Tensor, torch.Tensor]:
        emb = [embeddings[b, src] for b, (src, _) in enumerate(match.indices)]
        cls = [targets[b].classes[tgt] for b, (_, tgt) in enumerate(match.indices)]
        return torch.cat(emb), torch.cat(cls)

    def indicator_positives(self, matched: torch.Tensor, classes: torch.Tensor,
                            class_embeddings: torch.Tensor) -> torch.Tensor:
        """(V, E) off-prototype synthetic features from ``num_synthetic`` fresh pairs (V = 0 with one class)."""
        cfg = self.config
        matched = matched.detach()
        pairs = sample_mix_pairs(classes, cfg.num_synthetic)
        if pairs.shape[0] == 0:
            return matched.new_zeros(0, matched.shape[1])
        lam = sample_mix_weights(pairs.shape[0], cfg.mixup_alpha)
        theta = sample_angles(pairs.shape[0], *cfg.indicator_angle)
        # Rotation directions from the span of the batch's real proposal embeddings (random combinations),
        # so the positives stay where proposal embeddings live instead of in arbitrary directions.
        noise = torch.randn(pairs.shape[0], matched.shape[0]).to(matched) @ matched
        return off_prototype_features(matched, classes, class_embeddings, pairs, lam, theta, noise)
