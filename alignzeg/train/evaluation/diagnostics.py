"""Diagnostics of a trained model on a labelled split: does the class indicator find unseen classes, and are
all background prototypes used?

- ``indicator_auc``: each image's proposals are matched (Hungarian, mask cost only: BCE + dice, so the
  biased classifier plays no part) to the ground-truth masks of *all* its classes, seen and unseen; the
  indicator's score ``sigmoid(unseen_logit)`` of proposals matched to unseen classes (positives) is
  compared with that of proposals matched to seen classes (negatives) by the ROC AUC. 0.5 is chance; an
  indicator that learned "background" instead of "unseen" scores near or below 0.5. The mean score of
  unmatched proposals is reported beside it, and so is ``reference_auc``: the AUC of an untrained score on
  the same proposals, one minus the proposal's largest cosine similarity to a seen class's prototype
  (far from every seen class = likely unseen). A trained indicator should beat it.
- ``background_prototype_usage``: for the proposals classified as background, how often each of the M
  background prototypes is the most similar one (``wins``), and its share of the soft maximum
  (``responsibility``: the softmax of the similarities at the background temperature, which is also each
  prototype's share of the background logit's gradient; with temperature 0 the one-hot winner).

Images are resized to the model's square input (bilinear for the image, nearest for the label): these are
diagnostics of the proposals, not the evaluation protocol (that is ``evaluate``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from ...modeling.clip_readout import geometric_ensemble
from ...progress import track
from ..datasets.augmentation import to_tensors
from .evaluate import dataset_vocabulary
from ..training.matching import build_targets, hungarian_match, pairwise_mask_costs

__all__ = ["roc_auc", "IndicatorAUC", "indicator_auc", "ensemble_margin", "matched_regions", "per_image_outputs",
           "reference_scores", "prototype_usage", "BackgroundUsage",
           "background_prototype_usage"]

logger = logging.getLogger(__name__)


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Exact ROC AUC by the rank-sum (Mann-Whitney U) formula, ties counted as one half.

    ``AUC = (sum of the positives' ranks - n1 (n1 + 1) / 2) / (n1 n0)`` with average ranks for ties: the
    probability that a random positive scores above a random negative.

    Args:
        scores: (P,) float.
        labels: (P,) bool or {0, 1}, True for positives.

    Returns:
        The AUC in [0, 1], or NaN when there are no positives or no negatives.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels must have the same length, got {scores.size} and {labels.size}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    n1 = int(labels.sum())
    n0 = labels.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks, 1-based
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _model_inputs(segmenter: Any, dataset: Any) -> tuple[torch.Tensor, np.ndarray]:
    """The vocabulary embeddings (K, E) of the dataset's classes on the device and its (K,) seen flags, as the
    evaluation protocol makes them (``evaluate.dataset_vocabulary``)."""
    embeddings, _, seen = dataset_vocabulary(dataset).prepare(segmenter)
    return embeddings, seen


def per_image_outputs(segmenter: Any, dataset: Any, limit: int | None,
             progress: bool) -> Iterator[tuple[Any, torch.Tensor, np.ndarray, torch.Tensor]]:
    """Per image: the model outputs on the resized image, its resized (S, S) label, the (K,) seen flags and
    the (K, E) vocabulary embeddings."""
    embeddings, seen = _model_inputs(segmenter, dataset)
    model, size = segmenter.model, segmenter.config.input_size
    was_training = model.training
    model.eval()
    count = len(dataset) if limit is None else min(limit, len(dataset))
    try:
        for i in track(range(count), disable=not progress, desc="alignzeg-diagnostics"):
            image, label = to_tensors(dataset[i])
            image = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False,
                                  antialias=True).clamp(0, 1)
            label = F.interpolate(label[None, None].float(), size=(size, size), mode="nearest")[0].long()
            with torch.inference_mode():
                out = model(image.to(segmenter.device), embeddings, deep_supervision=False,
                            seen_mask=torch.from_numpy(seen).to(segmenter.device))
            yield out, label, seen, embeddings
    finally:
        model.train(was_training)


@dataclass
class IndicatorAUC:
    """The class indicator on proposals matched to unseen vs seen regions.

    Attributes:
        auc: ROC AUC of the unseen score, unseen-matched (positive) vs seen-matched (negative); NaN when
            either is missing.
        num_unseen / num_seen: matched proposals of each kind.
        mean_unseen / mean_seen / mean_unmatched: mean unseen score (sigmoid) of each group (NaN if empty).
        reference_auc: the same AUC for the untrained score ``1 - max cos(proposal, seen prototypes)``.
        margin_auc: the same AUC for the untrained ensemble margin (``ensemble_margin``): the statistic the
            seen-score offset thresholds, the class indicator's fair reference.
        readout_acc_seen / readout_acc_unseen: top-1 of the CLIP readout alone on the matched seen / unseen
            proposals.
    """

    auc: float
    num_unseen: int
    num_seen: int
    mean_unseen: float
    mean_seen: float
    mean_unmatched: float
    reference_auc: float = float("nan")
    margin_auc: float = float("nan")
    readout_acc_seen: float = float("nan")
    readout_acc_unseen: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def reference_scores(embeddings: torch.Tensor, prototypes: torch.Tensor, seen: np.ndarray) -> torch.Tensor:
    """An untrained unseen score: ``1 - max_c cos(e, t_c)`` over the seen classes c.

    Args:
        embeddings: (N, E) float, L2-normalised proposal embeddings.
        prototypes: (K, E) float, L2-normalised vocabulary prototypes.
        seen: (K,) bool, which prototypes are seen classes.

    Returns:
        (N,) float32 in [0, 2].

    Raises:
        ValueError: no seen class in ``seen``.
    """
    seen = np.asarray(seen, dtype=bool)
    if not seen.any():
        raise ValueError("reference_scores needs at least one seen class; got no seen class in the vocabulary")
    mask = torch.from_numpy(seen).to(prototypes.device)
    return 1.0 - (embeddings.float() @ prototypes[mask].float().t()).amax(-1)


def ensemble_margin(out: Any, seen: np.ndarray, config: Any) -> torch.Tensor:
    """Per proposal: the best non-seen class's log-score minus the best seen class's, after the CLIP
    readout's ensemble with ``config``'s weights (the decoder's log-softmax without the readout). A proposal
    changes from a seen to a non-seen class exactly when this margin rises above ``-seen_score_offset``,
    so it is the statistic the offset thresholds.

    Args:
        out: an ``AlignZegOutput`` of one image (batch 1).
        seen: (C,) bool with at least one seen and one non-seen class.
        config: an ``AlignZegConfig`` (readout weights, ``ensemble_void``).

    Returns:
        (N,) float32.
    """
    mask = torch.from_numpy(np.asarray(seen, dtype=bool)).to(out.class_logits.device)
    if out.readout_logits is None:
        scores = F.log_softmax(out.class_logits[0].float(), dim=-1)
    else:
        scores = geometric_ensemble(out.class_logits, out.readout_logits, mask, config.readout_weight_seen,
                                    config.readout_weight_unseen, void=config.ensemble_void)[0]
    classes = scores[:, :-1]
    return classes[:, ~mask].amax(-1) - classes[:, mask].amax(-1)


def matched_regions(out: Any, label: torch.Tensor, cost_mask: float = 5.0,
                    cost_dice: float = 5.0) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The proposals matched one-to-one to the labelled regions of one image (Hungarian, mask cost only).

    Args:
        out: an ``AlignZegOutput`` of one image (batch 1).
        label: (S, S) int64 labels at the model's input size (255 = ignore).
        cost_mask / cost_dice: weights of the BCE and dice mask costs.

    Returns:
        ``(proposals, classes)``: (M,) int64 proposal indices and the (M,) int64 class of the region each is
        matched to; ``None`` when the image has no labelled region.
    """
    (target,) = build_targets(label, tuple(out.mask_logits.shape[-2:]))
    if target.classes.numel() == 0:
        return None
    bce, dice = pairwise_mask_costs(out.mask_logits[0].flatten(1).cpu(), target.masks, target.weight)
    proposals, regions = hungarian_match(cost_mask * bce + cost_dice * dice)
    return proposals, target.classes[regions]


def indicator_auc(segmenter: Any, dataset: Any, limit: int | None = None, cost_mask: float = 5.0,
                  cost_dice: float = 5.0, progress: bool = False) -> IndicatorAUC:
    """ROC AUC of the class indicator for unseen vs seen regions of a labelled split (see the module doc).

    Args:
        segmenter: an ``AlignZegSegmenter``.
        dataset: a protocol dataset with unseen pixels kept (``build_dataset(..., train=False)``).
        limit: use only the first ``limit`` images.
        cost_mask / cost_dice: weights of the mask matching cost.
        progress: show a progress bar.
    """
    scores: list[float] = []
    labels: list[bool] = []
    unmatched: list[float] = []
    reference: list[float] = []
    margins: list[float] = []
    readout_hits: list[tuple[bool, bool]] = []  # (unseen region, readout top-1 correct)
    for out, label, seen, vocabulary in per_image_outputs(segmenter, dataset, limit, progress):
        probs = out.unseen_logits[0].float().sigmoid().cpu()
        matched = matched_regions(out, label, cost_mask, cost_dice)
        if matched is None:
            unmatched.extend(probs.tolist())
            continue
        rows, classes = matched
        far = reference_scores(out.embeddings[0], vocabulary, seen).cpu() if seen.any() else None
        margin = ensemble_margin(out, seen, segmenter.model.config).cpu() if seen.any() and not seen.all() else None
        for n, true in zip(rows.tolist(), classes.tolist()):
            scores.append(float(probs[n]))
            labels.append(not seen[true])
            reference.append(float("nan") if far is None else float(far[n]))
            margins.append(float("nan") if margin is None else float(margin[n]))
            if out.readout_logits is not None:
                readout_hits.append((not seen[true], int(out.readout_logits[0, n].argmax()) == true))
        rest = torch.ones(probs.shape[0], dtype=torch.bool)
        rest[rows] = False
        unmatched.extend(probs[rest].tolist())
    positives = [s for s, y in zip(scores, labels) if y]
    negatives = [s for s, y in zip(scores, labels) if not y]
    result = IndicatorAUC(auc=roc_auc(scores, labels) if scores else float("nan"), num_unseen=len(positives),
                          num_seen=len(negatives), mean_unseen=_mean(positives), mean_seen=_mean(negatives),
                          mean_unmatched=_mean(unmatched),
                          reference_auc=(roc_auc(reference, labels) if scores and not np.isnan(reference).any()
                                         else float("nan")),
                          margin_auc=(roc_auc(margins, labels) if scores and not np.isnan(margins).any()
                                      else float("nan")),
                          readout_acc_seen=_mean([float(ok) for unseen, ok in readout_hits if not unseen]),
                          readout_acc_unseen=_mean([float(ok) for unseen, ok in readout_hits if unseen]))
    logger.info("class indicator: %s", result.to_dict())
    return result


def prototype_usage(embeddings: torch.Tensor, bg_prototypes: torch.Tensor,
                    temperature: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """How P proposals use M background prototypes.

    Args:
        embeddings: (P, E) float, L2-normalised proposal embeddings.
        bg_prototypes: (M, E) float background prototypes (normalised here).
        temperature: the soft maximum's temperature; 0 = hard maximum.

    Returns:
        (wins, responsibility): two (M,) float64 tensors that each sum to 1 (zeros when P = 0): the share of
        proposals for which prototype m is the most similar, and the mean of ``softmax(sims / temperature)``
        (the one-hot winner when ``temperature`` is 0).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    m = bg_prototypes.shape[0]
    if embeddings.shape[0] == 0:
        return torch.zeros(m, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)
    sims = embeddings.double() @ F.normalize(bg_prototypes.double(), dim=-1).t()  # (P, M)
    wins = F.one_hot(sims.argmax(dim=-1), m).double()
    soft = wins if temperature == 0 else (sims / temperature).softmax(dim=-1)
    return wins.mean(0), soft.mean(0)


@dataclass
class BackgroundUsage:
    """Use of the M background prototypes over a dataset's background proposals.

    Attributes:
        wins: (M,) float, share of background proposals whose most similar prototype is m.
        responsibility: (M,) float, mean soft-maximum weight of prototype m (= ``wins`` at temperature 0).
        num_proposals: background proposals counted.
        temperature: the temperature used.
    """

    wins: np.ndarray
    responsibility: np.ndarray
    num_proposals: int
    temperature: float

    @property
    def used(self) -> int:
        """Prototypes that win for at least one proposal."""
        return int((self.wins > 0).sum())


def background_prototype_usage(segmenter: Any, dataset: Any, temperature: float | None = None,
                               only_background: bool = True, limit: int | None = None,
                               progress: bool = False) -> BackgroundUsage:
    """How often each background prototype wins on a dataset (see the module doc).

    Args:
        segmenter: an ``AlignZegSegmenter``.
        dataset: a protocol dataset.
        temperature: default: the model's ``bg_temperature``.
        only_background: count only proposals whose most probable column is background; ``False`` counts all.
        limit: use only the first ``limit`` images.
        progress: show a progress bar.
    """
    if temperature is None:
        temperature = float(segmenter.config.bg_temperature)
    prototypes = segmenter.model.classifier.bg_prototypes.detach().float().cpu()
    chosen = []
    for out, _, _, _ in per_image_outputs(segmenter, dataset, limit, progress):
        emb = out.embeddings[0].float().cpu()
        if only_background:
            emb = emb[out.class_logits[0].argmax(dim=-1).cpu() == out.class_logits.shape[-1] - 1]
        chosen.append(emb)
    embeddings = torch.cat(chosen) if chosen else torch.zeros(0, prototypes.shape[1])
    wins, soft = prototype_usage(embeddings, prototypes, temperature)
    result = BackgroundUsage(wins=wins.numpy(), responsibility=soft.numpy(), num_proposals=int(embeddings.shape[0]),
                             temperature=temperature)
    logger.info("background prototypes: %d of %d win; wins %s", result.used, len(result.wins),
                np.round(result.wins, 3).tolist())
    return result
