"""Grid search of the post-processing settings on cached model outputs: one forward pass per image.

``calibrate`` (``alignzeg.train.calibrate``) runs the whole inference path once per grid point; that is exact
for any image size but costs ``len(grid)`` passes. The settings searched here act after the network only
(PBC's threshold, offset and mode, the CLIP readout's ensemble weights), so for images that are one model
crop (``input_size`` square, as the zero-shot worlds' images) the network runs once per image and every grid
point re-runs only ``semantic_probabilities``, the bilinear upsampling and the argmax. The labels equal the
``segment`` path's up to float rounding (checked by the tests).

    cached = cache_outputs(segmenter, WorldDataset(world, "val", 500))
    best, grid = search(cached, segmenter.config, pbc=(0.5, 0.9, 1.0, "soft"), offsets=(0, 0.5, 1),
                        readout_weights=((0.0, 0.0), (0.3, 0.8)))
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import ConfusionMatrix
from ..modeling.semantic_map import semantic_probabilities
from .evaluate import EvalResult, compute_metrics

__all__ = ["CachedOutputs", "cache_outputs", "evaluate_cached", "upsampled_argmax", "search", "choose_world_settings",
           "SETTINGS", "WORLD_CALIB_THRESHOLDS", "WORLD_CALIB_OFFSETS", "WORLD_CALIB_PBC", "WORLD_CALIB_READOUT"]

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
    """Model outputs of I images of one crop each.

    Attributes:
        class_logits: (I, N, C + 1) float32. mask_logits: (I, N, h, w) float32. unseen_logits: (I, N) float32.
        readout_logits: (I, N, C) float32 or ``None``. labels: (I, S, S) int64 ground truth.
        seen: (C,) bool. class_names: C names.
    """

    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    unseen_logits: torch.Tensor
    readout_logits: torch.Tensor | None
    labels: np.ndarray
    seen: np.ndarray
    class_names: tuple[str, ...]


def cache_outputs(segmenter: Any, dataset: Any, limit: int | None = None, batch_size: int = 32) -> CachedOutputs:
    """Run the network once over a protocol dataset whose images are ``input_size`` squares.

    Raises:
        ValueError: an image of another size (use ``calibrate``, which runs the full inference path).
    """
    names = tuple(dataset.class_names)
    seen_names = set(dataset.seen_classes)
    seen = np.array([n in seen_names for n in names], dtype=bool)
    model, size = segmenter.model, segmenter.config.input_size
    vocabulary = segmenter.encode_vocabulary(list(names)).to(segmenter.device)
    seen_mask = torch.from_numpy(seen).to(segmenter.device)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("class", "mask", "unseen", "readout")}
    labels = []
    model.eval()
    for start in range(0, count, batch_size):
        items = [dataset[i] for i in range(start, min(count, start + batch_size))]
        images = torch.stack([item["image"] for item in items])
        if tuple(images.shape[-2:]) != (size, size):
            raise ValueError(f"cache_outputs needs images of the model's input size {size}x{size}, got "
                             f"{tuple(images.shape[-2:])}; use alignzeg.train.calibrate.calibrate")
        with torch.inference_mode():
            out = model(images.to(segmenter.device), vocabulary, deep_supervision=False, seen_mask=seen_mask)
        parts["class"].append(out.class_logits.float().cpu())
        parts["mask"].append(out.mask_logits.float().cpu())
        parts["unseen"].append(out.unseen_logits.float().cpu())
        if out.readout_logits is not None:
            parts["readout"].append(out.readout_logits.float().cpu())
        labels += [np.asarray(item["label"]) for item in items]
    return CachedOutputs(torch.cat(parts["class"]), torch.cat(parts["mask"]), torch.cat(parts["unseen"]),
                         torch.cat(parts["readout"]) if parts["readout"] else None, np.stack(labels), seen, names)


def upsampled_argmax(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(probs, size, mode="bilinear").argmax(1)``, computed channels-last (the same values;
    about 3x faster on a CPU, where the argmax over a strided channel axis dominates).

    Args:
        probs: (I, K, h, w) float class probabilities (background dropped).
        size: (H, W) output size.

    Returns:
        (I, H, W) int64 class indices in [0, K).
    """
    up = F.interpolate(probs.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear",
                       align_corners=False)
    return up.permute(0, 2, 3, 1).argmax(dim=-1)


def evaluate_cached(cached: CachedOutputs, config: Any, bias_correction: bool = True, chunk: int = 64) -> EvalResult:
    """Metrics of the cached outputs post-processed with ``config``'s settings (as ``segment`` does).

    Args:
        cached: from ``cache_outputs``.
        config: an ``AlignZegConfig`` (``pbc_threshold``, ``seen_score_offset``, ``pbc_soft``,
            ``readout_weight_seen`` / ``readout_weight_unseen``).
        bias_correction: apply PBC.
        chunk: images post-processed at once.
    """
    seen_mask = torch.from_numpy(cached.seen)
    size = tuple(cached.labels.shape[-2:])
    confusion = ConfusionMatrix(len(cached.class_names))
    for start in range(0, cached.class_logits.shape[0], chunk):
        part = slice(start, start + chunk)
        readout = None if cached.readout_logits is None else cached.readout_logits[part]
        probs = semantic_probabilities(cached.class_logits[part], cached.mask_logits[part], cached.unseen_logits[part],
                                       seen_mask, bias_correction, config.pbc_threshold, config.seen_score_offset,
                                       readout, (config.readout_weight_seen, config.readout_weight_unseen),
                                       config.pbc_soft)
        confusion.update(upsampled_argmax(probs[:, :-1], size).numpy(), cached.labels[part])
    return compute_metrics(confusion.matrix, cached.seen, cached.class_names)


def search(cached: CachedOutputs, config: Any, pbc: Sequence[float | str] = (1.0,), offsets: Sequence[float] = (0.0,),
           readout_weights: Sequence[tuple[float, float]] = ((0.0, 0.0),), bias_correction: bool = True
           ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The grid point with the highest hIoU (ties: the first), and every point's metrics.

    Args:
        cached: outputs of a validation split (never the test split).
        config: the model's ``AlignZegConfig`` (other settings are kept).
        pbc: thresholds in [0, 1] (1.0 flags no proposal: the offset alone) and/or ``"soft"``.
        offsets: seen-score offsets (logits), >= 0.
        readout_weights: (seen, unseen) ensemble weights; only with cached readout logits.
        bias_correction: ``False`` searches the readout weights alone (give one ``pbc`` and one offset).

    Returns:
        (best, grid): each a dict with ``pbc_threshold``, ``pbc_soft``, ``seen_score_offset``,
        ``readout_weight_seen``, ``readout_weight_unseen`` (config fields) and ``mIoU_S``, ``mIoU_U``, ``hIoU``.

    Raises:
        ValueError: readout weights other than (0, 0) without readout logits, or hIoU undefined everywhere.
    """
    if cached.readout_logits is None and any(tuple(w) != (0.0, 0.0) for w in readout_weights):
        raise ValueError("readout_weights need a model with clip_readout (no readout logits were cached)")
    grid = []
    for mode, offset, (ws, wu) in itertools.product(pbc, offsets, readout_weights):
        soft = mode == "soft"
        point = {"pbc_threshold": config.pbc_threshold if soft else float(mode), "pbc_soft": soft,
                 "seen_score_offset": float(offset), "readout_weight_seen": float(ws),
                 "readout_weight_unseen": float(wu)}
        result = evaluate_cached(cached, config.replace(**point), bias_correction)
        grid.append(dict(point, mIoU_S=result.miou_seen, mIoU_U=result.miou_unseen, hIoU=result.hiou))
    scored = [g for g in grid if not math.isnan(g["hIoU"])]
    if not scored:
        raise ValueError("hIoU is undefined on the calibration split (it needs both seen and unseen classes)")
    return max(scored, key=lambda g: g["hIoU"]), grid


SETTINGS = ("pbc_threshold", "pbc_soft", "seen_score_offset", "readout_weight_seen", "readout_weight_unseen")
"""The config fields that ``search`` chooses."""


def choose_world_settings(segmenter: Any, val: Any, pbc: bool = True) -> dict[str, Any]:
    """The zero-shot worlds' calibration: the post-processing settings with the best hIoU on ``val``.

    The grid is ``WORLD_CALIB_PBC`` x ``WORLD_CALIB_OFFSETS`` x ``WORLD_CALIB_READOUT`` (readout weights
    only for a model with ``clip_readout``).

    Args:
        segmenter: a trained ``AlignZegSegmenter``.
        val: a validation split of the world (never its test split).
        pbc: also search PBC (a model whose class indicator was trained).

    Returns:
        ``no_pbc`` (the best readout weights without PBC) and, with ``pbc``, ``best`` (the grid's best
        point) and ``offset_only`` (the best with threshold 1.0: no proposal flagged, ZegCLIP's calibration
        without the class indicator): dicts of config fields; ``*_val_hIoU`` their val hIoU in %;
        ``val_images``.
    """
    config = segmenter.model.config
    cached = cache_outputs(segmenter, val)
    weights = WORLD_CALIB_READOUT if config.clip_readout else ((0.0, 0.0),)
    no_pbc, _ = search(cached, config, (1.0,), (0.0,), weights, bias_correction=False)
    out: dict[str, Any] = {"no_pbc": _pick(no_pbc), "no_pbc_val_hIoU": round(100 * no_pbc["hIoU"], 2),
                           "val_images": len(val)}
    if pbc:
        best, grid = search(cached, config, WORLD_CALIB_PBC, WORLD_CALIB_OFFSETS, weights)
        offset_only = max((g for g in grid if g["pbc_threshold"] == 1.0 and not g["pbc_soft"]),
                          key=lambda g: -1.0 if math.isnan(g["hIoU"]) else g["hIoU"])
        out.update(best=_pick(best), val_hIoU=round(100 * best["hIoU"], 2), offset_only=_pick(offset_only),
                   offset_only_val_hIoU=round(100 * offset_only["hIoU"], 2))
    return out


def _pick(point: dict[str, Any]) -> dict[str, Any]:
    return {k: point[k] for k in SETTINGS}
