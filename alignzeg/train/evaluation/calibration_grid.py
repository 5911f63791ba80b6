"""Grid search of the post-processing settings on cached model outputs: one forward pass per image.

The settings searched act after the network only (PBC's threshold, offset and mode, the CLIP readout's
ensemble weights), so the network runs once per crop of each image (``cache_outputs``, with ``segment``'s
resizing and sliding windows) and every grid point re-runs only ``semantic_probabilities``, the window
averaging, the bilinear upsampling and the argmax (``evaluate_cached``). Every step is the ``segment`` path's own
public piece: the vocabulary (``evaluate.dataset_vocabulary``), the crops (``window_crops``), the network
(``AlignZegSegmenter.model_outputs``), the post-processing (``modeling.semantic_map.output_probabilities``), the
window averaging (``pipeline.windows.stitch_windows``) and the upsample with its labels
(``modeling.semantic_map.upsample_labels``), so the labels equal ``segment``'s up to the float rounding of
batching crops differently (checked by the tests). ``search`` is the one search: ``alignzeg-eval
--calibrate`` (``alignzeg.train.evaluation.calibrate.calibrate`` and ``calibrate_inductive``, over the axes
``applicable_grid`` keeps) and the zero-shot worlds' benchmark (``benchmarks/zeroshot_world.py``, one search
per ablation row on the ``WORLD_CALIB_*`` grid) both call it.

    cached = cache_outputs(segmenter, WorldDataset(world, "val", 500))
    best, grid = search(cached, segmenter.config, pbc=(0.5, 0.9, 1.0, "soft"), offsets=(0, 0.5, 1),
                        readout_weights=((0.0, 0.0), (0.3, 0.8)))
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ...metrics import ConfusionMatrix
from ...modeling.semantic_map import output_probabilities, upsample_labels
from ...pipeline.windows import WindowPlan, stitch_windows
from ...progress import track
from .evaluate import EvalResult, compute_metrics, dataset_vocabulary

__all__ = ["CachedOutputs", "cache_outputs", "evaluate_cached", "check_grid", "search",
           "applicable_grid", "SETTINGS", "WORLD_CALIB_THRESHOLDS", "WORLD_CALIB_OFFSETS",
           "WORLD_CALIB_PBC", "WORLD_CALIB_READOUT"]

logger = logging.getLogger(__name__)

WORLD_CALIB_THRESHOLDS = (0.3, 0.5, 0.7, 0.9, 1.0)
"""PBC threshold grid of the world models' calibration on the world's val split; 1.0 flags no proposal
(scores are compared strictly), leaving the seen-score offset alone."""
WORLD_CALIB_OFFSETS = (0.0, 0.25, 0.5, 1.0, 2.0)
"""Seen-score offset grid (logits) of that calibration."""
WORLD_CALIB_PBC = WORLD_CALIB_THRESHOLDS + ("soft",)
"""PBC settings of the world calibration on cached outputs (``search``): hard thresholds and soft PBC."""
WORLD_CALIB_READOUT = ((0.0, 0.0), (0.0, 0.8), (0.3, 0.5), (0.3, 0.8), (0.3, 1.0), (0.6, 0.8), (0.6, 1.0))
"""(seen, unseen) weights of the CLIP readout in the geometric ensemble searched on val (FC-CLIP's default
is (0.4, 0.8))."""


@dataclass
class CachedOutputs:
    """Network outputs of the P crops of I images (``segment``'s sliding windows, before any post-processing).

    Attributes:
        class_logits: (P, N, C + 1) float32. mask_logits: (P, N, h, w) float32. unseen_logits: (P, N) float32.
        readout_logits: (P, N, C) float32 or ``None`` (a model without ``clip_readout``).
        labels: ground truth, (I, S, S) int64 when every image is one ``input_size`` square crop, else a list
            of I (H, W) arrays.
        seen: (C,) bool. class_names: C names.
        plans: the I images' ``WindowPlan``s, in crop order (``pipeline.windows``); ``()`` when every image is
            one ``input_size`` square crop (then P = I).
    """

    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    unseen_logits: torch.Tensor
    readout_logits: torch.Tensor | None
    labels: np.ndarray | list[np.ndarray]
    seen: np.ndarray
    class_names: tuple[str, ...]
    plans: tuple[WindowPlan, ...] = ()

    @property
    def num_images(self) -> int:
        """I, the number of images."""
        return len(self.plans) if self.plans else self.class_logits.shape[0]

    def crops(self, part: slice) -> "CachedOutputs":
        """The outputs of the crops ``part`` (views), the other fields as they are: what
        ``output_probabilities`` reads, as it reads a model's ``AlignZegOutput``."""
        return dataclasses.replace(self, class_logits=self.class_logits[part], mask_logits=self.mask_logits[part],
                                   unseen_logits=self.unseen_logits[part],
                                   readout_logits=None if self.readout_logits is None else self.readout_logits[part])


def cache_outputs(segmenter: Any, dataset: Any, limit: int | None = None, batch_size: int = 32,
                  progress: bool = False) -> CachedOutputs:
    """Run the network once over the crops of a protocol dataset's images, as ``segment`` cuts them.

    Images are decoded, resized, padded and cut into windows by the ``segment`` pipeline's own steps; the
    vocabulary is ``evaluate``'s (``dataset_vocabulary``). Memory:
    ``N * (h * w + 2 * C + 2)`` float32 per crop (ViT-B/16 at 512 px, 100 queries, 171 classes: 1.8 MB a crop).

    Args:
        segmenter: an ``AlignZegSegmenter``.
        dataset: a protocol dataset built for evaluation (``alignzeg.train.datasets``).
        limit: use only the first ``limit`` images.
        batch_size: crops per forward pass.
        progress: show a progress bar.
    """
    embeddings, names, seen = dataset_vocabulary(dataset).prepare(segmenter)
    model, config = segmenter.model, segmenter.config
    seen_mask = torch.from_numpy(seen)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("class", "mask", "unseen", "readout")}
    labels, plans, pending = [], [], []

    def run(crops: list[torch.Tensor]) -> None:
        out = segmenter.model_outputs(torch.stack(crops), embeddings, seen_mask)
        parts["class"].append(out.class_logits.float().cpu())
        parts["mask"].append(out.mask_logits.float().cpu())
        parts["unseen"].append(out.unseen_logits.float().cpu())
        if out.readout_logits is not None:
            parts["readout"].append(out.readout_logits.float().cpu())

    model.eval()
    for i in track(range(count), disable=not progress, desc="alignzeg-calibrate"):
        item = dataset[i]
        (image,) = segmenter.load_image(item["image"])
        crops, plan = segmenter.window_crops(image)
        plans.append(plan)
        pending.extend(crops)
        labels.append(np.asarray(item["label"]))
        while len(pending) >= batch_size:
            run(pending[:batch_size])
            pending = pending[batch_size:]
    if pending:
        run(pending)
    if not plans:
        raise ValueError("cache_outputs needs at least one image, got an empty dataset")
    size = config.input_size
    one_crop = all(p.image_size == (size, size) and len(p.origins) == 1 and p.resized == (size, size) for p in plans)
    same_size = len({label.shape for label in labels}) == 1
    return CachedOutputs(torch.cat(parts["class"]), torch.cat(parts["mask"]), torch.cat(parts["unseen"]),
                         torch.cat(parts["readout"]) if parts["readout"] else None,
                         np.stack(labels) if same_size else labels, seen, names, () if one_crop else tuple(plans))


def _probabilities(cached: CachedOutputs, part: slice, config: Any, bias_correction: bool) -> torch.Tensor:
    """(p, C + 1, h, w) float32 probabilities of the crops ``part`` post-processed with ``config``'s settings."""
    return output_probabilities(cached.crops(part), torch.from_numpy(cached.seen), config, bias_correction)


def evaluate_cached(cached: CachedOutputs, config: Any, bias_correction: bool = True, chunk: int = 64) -> EvalResult:
    """Metrics of the cached outputs post-processed with ``config``'s settings (as ``segment`` does).

    Each image's map is upsampled to its size and labelled as ``segment`` does (``upsample_labels``), after its
    windows are averaged (``stitch_windows``) when it has several.

    Args:
        cached: from ``cache_outputs``.
        config: an ``AlignZegConfig`` (``pbc_threshold``, ``seen_score_offset``, ``pbc_soft``,
            ``readout_weight_seen`` / ``readout_weight_unseen``).
        bias_correction: apply PBC.
        chunk: crops post-processed at once.
    """
    confusion = ConfusionMatrix(len(cached.class_names))
    if not cached.plans:
        truth = np.asarray(cached.labels)  # (I, S, S): one square crop per image, so the labels are stacked
        size = (truth.shape[-2], truth.shape[-1])
        for start in range(0, cached.class_logits.shape[0], chunk):
            part = slice(start, start + chunk)
            probs = _probabilities(cached, part, config, bias_correction)
            predicted = np.stack([upsample_labels(image, size)[0].numpy() for image in probs])
            confusion.update(predicted, truth[part])
        return compute_metrics(confusion.matrix, cached.seen, cached.class_names)
    first = 0
    for group in _image_groups(cached.plans, chunk):
        crops = sum(len(cached.plans[i].origins) for i in group)
        window_probs = _probabilities(cached, slice(first, first + crops), config, bias_correction).numpy()
        offset = 0
        for i in group:
            plan = cached.plans[i]
            stitched = stitch_windows(window_probs[offset:offset + len(plan.origins)], plan)
            image_labels, _ = upsample_labels(torch.from_numpy(np.ascontiguousarray(stitched)), plan.image_size)
            confusion.update(image_labels.numpy(), cached.labels[i])
            offset += len(plan.origins)
        first += crops
    return compute_metrics(confusion.matrix, cached.seen, cached.class_names)


def _image_groups(plans: Sequence[WindowPlan], chunk: int) -> list[list[int]]:
    """Consecutive images whose crops add up to about ``chunk`` (an image's crops stay together)."""
    groups: list[list[int]] = [[]]
    crops = 0
    for i, plan in enumerate(plans):
        if groups[-1] and crops + len(plan.origins) > chunk:
            groups.append([])
            crops = 0
        groups[-1].append(i)
        crops += len(plan.origins)
    return groups


def check_grid(pbc: Sequence[float | str] | None = None, offsets: Sequence[float] | None = None,
               readout_weights: Sequence[tuple[float, float]] | None = None) -> None:
    """Refuse a grid that is empty or holds a value a config would refuse (``None``: that axis is not searched).

    Raises:
        ValueError: naming the value and what was expected.
        TypeError: a value that is not a number (nor ``"soft"`` in ``pbc``), or a readout point that is not a pair.
    """
    for name, values in (("pbc", pbc), ("offsets", offsets), ("readout_weights", readout_weights)):
        if values is not None and (isinstance(values, (str, bytes)) or len(values) == 0):
            raise ValueError(f"{name} must be a non-empty sequence (or None: not searched), got {values!r}")
    for value in pbc or ():
        if isinstance(value, str):
            if value != "soft":
                raise ValueError(f"a pbc grid value must be a threshold in [0, 1] or 'soft', got {value!r}")
        elif not 0.0 <= _number(value, "pbc threshold") <= 1.0:
            raise ValueError(f"pbc thresholds must be in [0, 1] (1.0: no proposal flagged), got {value!r}")
    for value in offsets or ():
        if not 0.0 <= _number(value, "seen-score offset") < math.inf:
            raise ValueError(f"seen-score offsets must be finite and >= 0 (logits), got {value!r}")
    for point in readout_weights or ():
        if isinstance(point, (str, bytes)) or not isinstance(point, Sequence) or len(point) != 2:
            raise TypeError(f"a readout_weights point must be a (seen, unseen) pair, got {point!r}")
        for value in point:
            if not 0.0 <= _number(value, "readout weight") <= 1.0:
                raise ValueError(f"readout weights must be in [0, 1], got {value!r} in {tuple(point)!r}")


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"a {what} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def search(cached: CachedOutputs, config: Any, pbc: Sequence[float | str] | None = (1.0,),
           offsets: Sequence[float] | None = (0.0,),
           readout_weights: Sequence[tuple[float, float]] | None = ((0.0, 0.0),), bias_correction: bool = True
           ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The grid point with the highest hIoU (ties: the first), and every point's metrics.

    The grid is ``pbc`` x ``offsets`` x ``readout_weights`` in that nesting order (the last varies fastest);
    an axis given as ``None`` is not searched and keeps ``config``'s value.

    Args:
        cached: outputs of a validation split (never the test split).
        config: the model's ``AlignZegConfig`` (other settings are kept).
        pbc: thresholds in [0, 1] (1.0 flags no proposal: the offset alone) and/or ``"soft"`` (soft PBC; the
            config's threshold is kept, soft PBC does not use it).
        offsets: seen-score offsets (logits), >= 0.
        readout_weights: (seen, unseen) ensemble weights in [0, 1]; only with cached readout logits.
        bias_correction: ``False`` searches the readout weights alone (``pbc`` and ``offsets`` ``None``, or
            one value each).

    Returns:
        (best, grid): each a dict with ``pbc_threshold``, ``pbc_soft``, ``seen_score_offset``,
        ``readout_weight_seen``, ``readout_weight_unseen`` (config fields) and ``mIoU_S``, ``mIoU_U``, ``hIoU``.

    Raises:
        ValueError: a bad grid (``check_grid``), readout weights other than (0, 0) without readout logits, or
            hIoU undefined everywhere.
    """
    check_grid(pbc, offsets, readout_weights)
    if cached.readout_logits is None and any(tuple(w) != (0.0, 0.0) for w in readout_weights or ()):
        raise ValueError("readout_weights need a model with clip_readout (no readout logits were cached)")
    modes = ("soft" if config.pbc_soft else config.pbc_threshold,) if pbc is None else pbc
    offsets = (config.seen_score_offset,) if offsets is None else offsets
    weights = ((config.readout_weight_seen, config.readout_weight_unseen),) if readout_weights is None \
        else readout_weights
    grid = []
    for mode, offset, (ws, wu) in itertools.product(modes, offsets, weights):
        soft = mode == "soft"
        point = {"pbc_threshold": config.pbc_threshold if soft else float(mode), "pbc_soft": soft,
                 "seen_score_offset": float(offset), "readout_weight_seen": float(ws),
                 "readout_weight_unseen": float(wu)}
        result = evaluate_cached(cached, config.replace(**point), bias_correction)
        grid.append(dict(point, mIoU_S=result.miou_seen, mIoU_U=result.miou_unseen, hIoU=result.hiou))
        logger.debug("%s: hIoU %.4f", point, result.hiou)
    scored = [g for g in grid if not math.isnan(g["hIoU"])]
    if not scored:
        raise ValueError("hIoU is undefined on the calibration split (it needs both seen and unseen classes)")
    return max(scored, key=lambda g: g["hIoU"]), grid


SETTINGS = ("pbc_threshold", "pbc_soft", "seen_score_offset", "readout_weight_seen", "readout_weight_unseen")
"""The config fields that ``search`` chooses."""


def applicable_grid(config: Any, pbc: Sequence[float | str] | None, offsets: Sequence[float] | None,
                    readout_weights: Sequence[tuple[float, float]] | None
                    ) -> tuple[Sequence[float | str] | None, Sequence[float] | None,
                               Sequence[tuple[float, float]] | None, bool]:
    """The axes of a grid that apply to a model: the seen-score offsets always (the offset needs no class
    indicator), PBC's thresholds or soft mode only when its class indicator was trained
    (``config.indicator_trained``: its flags are never used otherwise), the readout weights only with
    ``config.clip_readout``; the others become ``None`` (not searched, the config's value kept).

    Returns:
        (pbc, offsets, readout_weights, bias_correction): the arguments of ``search`` (bias correction on).
    """
    use_pbc, use_readout = bool(config.indicator_trained), bool(config.clip_readout)
    return pbc if use_pbc else None, offsets, readout_weights if use_readout else None, True
