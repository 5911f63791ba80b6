"""Zero-shot evaluation: confusion matrix -> mIoU(S), mIoU(U), hIoU, pixel accuracy, per-class IoU.

Protocol (also in docs/training.md):

- The vocabulary is the dataset's full class list (seen + unseen); a class counts in S if it is one of
  the dataset's ``seen_classes``, else in U.
- Ground-truth pixels labelled 255 are ignored. A prediction outside [0, K) (the segmenter's
  "unlabelled" -1) counts as wrong for the pixel's true class.
- IoU_k = TP_k / (TP_k + FP_k + FN_k); a class with an empty union (absent from both ground truth and
  predictions) is NaN and left out of the means. mIoU(S) / mIoU(U) are the means over S / U,
  hIoU = 2 * S * U / (S + U) (0 when S + U = 0), pixel accuracy = correct / valid pixels.
- Predictions come from ``AlignZegSegmenter.segment`` (sliding window), i.e. evaluation runs exactly the
  inference path. Bias correction (PBC) is ``"auto"`` by default: on when the checkpoint's class indicator
  was trained (``config.indicator_trained``), off with a warning when it was not (an untrained indicator
  flags proposals at random); asking for it explicitly on such a model is an error.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..pipeline.options import resolve_bias_correction as resolve_pbc
from ..metrics import ConfusionMatrix, class_iou, harmonic_iou, nanmean

__all__ = ["ConfusionMatrix", "EvalResult", "compute_metrics", "evaluate", "resolve_bias_correction", "main"]

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Metrics as fractions in [0, 1] (``table()`` prints percentages).

    Attributes:
        miou_seen / miou_unseen / hiou / miou / pixel_accuracy: floats (NaN when undefined).
        class_names: the K names.
        seen: (K,) bool.
        iou: (K,) float per-class IoU, NaN for classes with an empty union.
        confusion: (K, K + 1) int64 matrix.
    """

    miou_seen: float
    miou_unseen: float
    hiou: float
    miou: float
    pixel_accuracy: float
    class_names: tuple[str, ...]
    seen: np.ndarray
    iou: np.ndarray
    confusion: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return {
            "mIoU(S)": num(self.miou_seen), "mIoU(U)": num(self.miou_unseen), "hIoU": num(self.hiou),
            "mIoU": num(self.miou), "pixel_accuracy": num(self.pixel_accuracy),
            "per_class": [{"class": n, "seen": bool(s), "IoU": num(v)}
                          for n, s, v in zip(self.class_names, self.seen, self.iou)],
        }

    def table(self) -> str:
        """Per-class IoU table and the summary, in percent."""
        width = max(len("class"), *(len(n) for n in self.class_names))
        lines = [f"{'class':<{width}}  split   IoU"]
        for name, s, v in zip(self.class_names, self.seen, self.iou):
            lines.append(f"{name:<{width}}  {'seen ' if s else 'UNSEEN'}  {'  n/a' if math.isnan(v) else f'{100 * v:5.1f}'}")
        lines.append(f"mIoU(S) {100 * self.miou_seen:.2f}  mIoU(U) {100 * self.miou_unseen:.2f}  "
                     f"hIoU {100 * self.hiou:.2f}  mIoU {100 * self.miou:.2f}  pAcc {100 * self.pixel_accuracy:.2f}")
        return "\n".join(lines)


def compute_metrics(confusion: np.ndarray, seen: Sequence[bool], class_names: Sequence[str]) -> EvalResult:
    """Metrics of a (K, K + 1) or (K, K) confusion matrix (rows true, columns predicted).

    Args:
        confusion: integer counts.
        seen: K flags, True for seen classes.
        class_names: K names.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    k = confusion.shape[0]
    if confusion.ndim != 2 or confusion.shape[1] not in (k, k + 1):
        raise ValueError(f"confusion matrix must be (K, K) or (K, K + 1), got {confusion.shape}")
    seen = np.asarray(seen, dtype=bool)
    if seen.shape != (k,) or len(class_names) != k:
        raise ValueError(f"need {k} seen flags and class names, got {seen.shape[0]} and {len(class_names)}")
    tp = np.diag(confusion[:, :k]).astype(np.float64)
    iou = class_iou(confusion)
    s, u = nanmean(iou[seen]), nanmean(iou[~seen])
    total = confusion.sum()
    return EvalResult(miou_seen=s, miou_unseen=u, hiou=harmonic_iou(s, u), miou=nanmean(iou),
                      pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
                      class_names=tuple(class_names), seen=seen, iou=iou, confusion=confusion)


def _image_array(image: Any) -> Any:
    """Protocol images are (H, W, 3) uint8 arrays or (3, H, W) float tensors; both go to ``segment`` as is."""
    return image


def resolve_bias_correction(config: Any, bias_correction: bool | str | None = None) -> bool:
    """Whether to apply PBC for a model config: ``alignzeg.pipeline.options.resolve_bias_correction``, the rule
    of ``segment`` (``None`` / ``"auto"`` follow ``config.indicator_trained``; one warning when that turns PBC
    off), resolved once here so that an evaluation warns once, not once per image.

    Raises:
        ValueError: ``bias_correction=True`` for a model whose class indicator was not trained.
        TypeError: a value other than True, False, None and ``"auto"``.
    """
    return resolve_pbc(bias_correction, bool(config.indicator_trained), stacklevel=3)


def evaluate(segmenter: Any, dataset: Any, bias_correction: bool | str | None = None, limit: int | None = None,
             progress: bool = False) -> EvalResult:
    """Evaluate a segmenter on a dataset through ``AlignZegSegmenter.segment``.

    Args:
        segmenter: an ``AlignZegSegmenter``.
        dataset: a protocol dataset (``alignzeg.train.data``) built for evaluation (unseen pixels kept).
            Its ``class_embeddings`` are used as the vocabulary when present, else its ``class_names``.
        bias_correction: apply PBC (the paper's setting); ``None`` or ``"auto"`` (default): when the class
            indicator was trained, as ``segment`` (``resolve_bias_correction``).
        limit: evaluate only the first ``limit`` images.
        progress: show a progress bar.

    Returns:
        EvalResult.
    """
    bias_correction = resolve_bias_correction(segmenter.config, bias_correction)
    names = tuple(dataset.class_names)
    seen_names = set(getattr(dataset, "seen_classes", ()) or ())
    seen = [n in seen_names for n in names]
    fixed = getattr(dataset, "class_embeddings", None)
    vocabulary, class_names = (fixed, names) if fixed is not None else (list(names), None)
    matrix = ConfusionMatrix(len(names))
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for i in tqdm(range(count), disable=not progress, desc="alignzeg-eval"):
        item = dataset[i]
        result = segmenter.segment(_image_array(item["image"]), vocabulary, seen=seen, class_names=class_names,
                                   bias_correction=bias_correction, keep_image=False)
        matrix.update(result.label_map, np.asarray(item["label"]))
    return compute_metrics(matrix.matrix, seen, names)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignzeg-eval", description="Zero-shot evaluation: mIoU(S), mIoU(U), hIoU.")
    parser.add_argument("model", help="a folder written by save_pretrained / alignzeg-train, or a Hub repo id")
    parser.add_argument("--dataset", required=True, help="voc, coco-stuff, context or folder")
    parser.add_argument("--data-root", required=True, help="the dataset's root folder")
    parser.add_argument("--split", default="val", help="dataset split (default: val)")
    parser.add_argument("--seen", nargs="*", default=None,
                        help="seen class names (default: the dataset's standard split; folder: all classes)")
    parser.add_argument("--bias-correction", choices=("auto", "on", "off"), default="auto",
                        help="PBC: auto (default) = on when the class indicator was trained")
    parser.add_argument("--no-bias-correction", action="store_true", help="evaluate without PBC (= off)")
    parser.add_argument("--calibrate", action="store_true",
                        help="first choose pbc_threshold and seen_score_offset on --calib-split (max hIoU) and "
                             "write them into MODEL/config.json")
    parser.add_argument("--calib-split", default=None,
                        help="the labelled validation split to calibrate on; never the test split, never --split")
    parser.add_argument("--calib-limit", type=int, default=None, help="calibrate on the first N images only")
    parser.add_argument("--thresholds", default=None, help="comma-separated pbc_threshold grid")
    parser.add_argument("--offsets", default=None, help="comma-separated seen_score_offset grid (logits)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    parser.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _grid(text: str | None, default: Sequence[float], what: str) -> list[float]:
    if text is None:
        return list(default)
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ValueError(f"--{what} must be comma-separated numbers, got {text!r}") from err


def _run_calibration(args: argparse.Namespace, segmenter: Any) -> None:
    from .calibrate import (DEFAULT_OFFSETS, DEFAULT_THRESHOLDS, apply_calibration, calibrate, check_calibration_split,
                            write_calibration)
    from .datasets import build_dataset

    check_calibration_split(args.calib_split, args.split)
    grids = _grid(args.thresholds, DEFAULT_THRESHOLDS, "thresholds"), _grid(args.offsets, DEFAULT_OFFSETS, "offsets")
    calib = build_dataset(args.dataset, args.data_root, split=args.calib_split, seen_classes=args.seen, train=False)
    result = calibrate(segmenter, calib, *grids, limit=args.calib_limit, progress=not args.quiet)
    path = write_calibration(args.model, result)
    apply_calibration(segmenter, result)
    print(f"calibrated on {args.calib_split!r}: pbc_threshold {result.pbc_threshold:g}, seen_score_offset "
          f"{result.seen_score_offset:g} (hIoU {100 * result.hiou:.2f}); written to {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """``alignzeg-eval MODEL --dataset NAME --data-root DIR``: prints the per-class table and the summary."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from ..segmenter import AlignZegSegmenter
    from .datasets import build_dataset

    mode = "off" if args.no_bias_correction else args.bias_correction
    try:
        if args.calibrate:
            from .calibrate import check_calibration_split

            check_calibration_split(args.calib_split or "", args.split)
        dataset = build_dataset(args.dataset, args.data_root, split=args.split, seen_classes=args.seen, train=False)
        segmenter = AlignZegSegmenter.from_pretrained(args.model, device=args.device)
        bias_correction = resolve_bias_correction(segmenter.config, {"on": True, "off": False}.get(mode, "auto"))
        if args.calibrate:
            _run_calibration(args, segmenter)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"alignzeg-eval: error: {err}", file=sys.stderr)
        return 2
    result = evaluate(segmenter, dataset, bias_correction=bias_correction, limit=args.limit,
                      progress=not args.quiet)
    print(result.table())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result.to_dict(), f, indent=2)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
