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

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ...pipeline.options import resolve_bias_correction
from ...metrics import ConfusionMatrix, class_iou, harmonic_iou, nanmean
from ...progress import track

__all__ = ["ConfusionMatrix", "DatasetVocabulary", "EvalResult", "METRIC_KEYS", "compute_metrics", "dataset_vocabulary",
           "evaluate", "bias_correction_for_config"]

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Metrics as fractions in [0, 1] (``table()`` prints them and ``to_dict()`` writes them in percent).

    Attributes:
        miou_seen / miou_unseen / hiou / miou / pixel_accuracy: floats (NaN when undefined).
        class_names: the K names.
        seen: (K,) bool.
        iou: (K,) float per-class IoU, NaN for classes with an empty union.
        confusion: (K, K + 1) int64 matrix: rows true classes, columns predictions (column K: a prediction
            outside [0, K), e.g. "unlabelled").
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

    @property
    def unseen_as_seen(self) -> float:
        """Share of the valid pixels of unseen classes predicted as a seen class (the bias PBC corrects);
        NaN without unseen pixels."""
        return _share(self.confusion, ~self.seen, self.seen)

    @property
    def seen_as_unseen(self) -> float:
        """Share of the valid pixels of seen classes predicted as an unseen class; NaN without seen pixels."""
        return _share(self.confusion, self.seen, ~self.seen)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready metrics in percent (as ``table()`` prints them and the model card states them: ``hIoU``,
        ``mIoU_seen``, ``mIoU_unseen``; ``None`` for NaN), per-class IoUs in percent and the (K, K + 1)
        confusion matrix (pixel counts)."""
        return {
            "unit": "percent",
            **{key: _percent(getattr(self, attr)) for key, attr in METRIC_KEYS.items()},
            "per_class": [{"class": n, "seen": bool(s), "IoU": _percent(v)}
                          for n, s, v in zip(self.class_names, self.seen, self.iou)],
            "confusion": {"rows": "true class, in class order",
                          "columns": "predicted class, in class order, then 'other' (unlabelled)",
                          "matrix": self.confusion.tolist()},
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


METRIC_KEYS = {"hIoU": "hiou", "mIoU_seen": "miou_seen", "mIoU_unseen": "miou_unseen", "mIoU": "miou",
               "pixel_accuracy": "pixel_accuracy", "unseen_as_seen": "unseen_as_seen",
               "seen_as_unseen": "seen_as_unseen"}
"""``to_dict()``'s metric keys (the first three are the model card's ``metrics`` keys) -> ``EvalResult``
attributes."""


def _percent(value: float) -> float | None:
    """A fraction in [0, 1] -> percent; ``None`` for NaN (JSON has no NaN)."""
    return None if math.isnan(value) else 100.0 * float(value)


def _share(confusion: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> float:
    """Pixels of the ``rows`` classes predicted as a ``columns`` class, over all pixels of the ``rows`` classes."""
    k = confusion.shape[0]
    total = confusion[rows].sum()
    return float(confusion[rows][:, :k][:, columns].sum() / total) if total else float("nan")


def compute_metrics(confusion: np.ndarray, seen: Sequence[bool] | np.ndarray,
                    class_names: Sequence[str]) -> EvalResult:
    """Metrics of a (K, K + 1) or (K, K) confusion matrix (rows true, columns predicted).

    Args:
        confusion: integer counts.
        seen: K flags (a sequence or a (K,) array), True for seen classes.
        class_names: K names.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    k = confusion.shape[0]
    if confusion.ndim != 2 or confusion.shape[1] not in (k, k + 1):
        raise ValueError(f"confusion matrix must be (K, K) or (K, K + 1), got {confusion.shape}")
    flags = np.asarray(seen, dtype=bool)
    if flags.shape != (k,) or len(class_names) != k:
        raise ValueError(f"need {k} seen flags and class names, got {flags.shape[0]} and {len(class_names)}")
    tp = np.diag(confusion[:, :k]).astype(np.float64)
    iou = class_iou(confusion)
    s, u = nanmean(iou[flags]), nanmean(iou[~flags])
    total = confusion.sum()
    return EvalResult(miou_seen=s, miou_unseen=u, hiou=harmonic_iou(s, u), miou=nanmean(iou),
                      pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
                      class_names=tuple(class_names), seen=flags, iou=iou, confusion=confusion)


@dataclass(frozen=True)
class DatasetVocabulary:
    """The vocabulary the evaluation protocol gives ``segment`` for a dataset (``dataset_vocabulary``).

    Attributes:
        names: the K class names, in label order.
        seen: K flags, True for the dataset's seen classes.
        embeddings: the dataset's fixed (K, E) float ``class_embeddings`` (tensor or array, any norm), or
            ``None``: the names are encoded by the model's text tower.
    """

    names: tuple[str, ...]
    seen: tuple[bool, ...]
    embeddings: Any = None

    def segment_arguments(self) -> Mapping[str, Any]:
        """``vocabulary``, ``class_names`` and ``seen`` as ``segment`` and ``prepare_vocabulary`` take them."""
        if self.embeddings is not None:
            return {"vocabulary": self.embeddings, "class_names": self.names, "seen": list(self.seen)}
        return {"vocabulary": list(self.names), "class_names": None, "seen": list(self.seen)}

    def prepare(self, segmenter: Any) -> tuple[Any, tuple[str, ...], np.ndarray]:
        """``segmenter.prepare_vocabulary`` of these arguments: the back-end's (K, E) unit class embeddings (a
        tensor on the device for the PyTorch back-end), the K names and the (K,) bool seen mask."""
        return segmenter.prepare_vocabulary(**self.segment_arguments())


def dataset_vocabulary(dataset: Any) -> DatasetVocabulary:
    """The protocol's vocabulary of a dataset: all of ``dataset.class_names`` (seen and unseen), seen when in
    ``dataset.seen_classes`` (absent or ``None``: none is), with ``dataset.class_embeddings`` when it has them
    (a synthetic world's fixed embeddings) instead of the text tower's."""
    names = tuple(dataset.class_names)
    seen_names = set(getattr(dataset, "seen_classes", ()) or ())
    return DatasetVocabulary(names, tuple(n in seen_names for n in names), getattr(dataset, "class_embeddings", None))


def bias_correction_for_config(config: Any, bias_correction: bool | str | None = None) -> bool:
    """Whether to apply PBC for a model config: ``alignzeg.pipeline.options.resolve_bias_correction``, the rule
    of ``segment`` (``None`` / ``"auto"`` follow ``config.indicator_trained``; one warning when that turns PBC
    off), resolved once here so that an evaluation warns once, not once per image.

    Raises:
        ValueError: ``bias_correction=True`` for a model whose class indicator was not trained.
        TypeError: a value other than True, False, None and ``"auto"``.
    """
    return resolve_bias_correction(bias_correction, bool(config.indicator_trained), stacklevel=3,
                                   seen_score_offset=config.seen_score_offset,
                                   calibrated=config.calibration_protocol != "none")


def evaluate(segmenter: Any, dataset: Any, bias_correction: bool | str | None = None, limit: int | None = None,
             progress: bool = False) -> EvalResult:
    """Evaluate a segmenter on a dataset through ``AlignZegSegmenter.segment``.

    Args:
        segmenter: an ``AlignZegSegmenter``.
        dataset: a protocol dataset (``alignzeg.train.datasets``) built for evaluation (unseen pixels kept).
            Its vocabulary is ``dataset_vocabulary``'s.
        bias_correction: apply PBC (the paper's setting); ``None`` or ``"auto"`` (default): when the class
            indicator was trained, as ``segment`` (``bias_correction_for_config``).
        limit: evaluate only the first ``limit`` images.
        progress: show a progress bar.

    Returns:
        EvalResult.
    """
    bias_correction = bias_correction_for_config(segmenter.config, bias_correction)
    vocabulary = dataset_vocabulary(dataset)
    arguments = vocabulary.segment_arguments()
    matrix = ConfusionMatrix(len(vocabulary.names))
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for i in track(range(count), disable=not progress, desc="alignzeg-eval"):
        item = dataset[i]  # the image: an (H, W, 3) uint8 array or a (3, H, W) float tensor, as segment takes it
        result = segmenter.segment(item["image"], **arguments, bias_correction=bias_correction, keep_image=False)
        matrix.update(result.label_map, np.asarray(item["label"]))
    return compute_metrics(matrix.matrix, vocabulary.seen, vocabulary.names)
