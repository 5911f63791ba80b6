"""Calibration of bias correction on a validation split: ``pbc_threshold`` and ``seen_score_offset``.

PBC flags a proposal when the class indicator's unseen score is above ``pbc_threshold``; ZegCLIP-style
calibration subtracts ``seen_score_offset`` from the seen-class logits. Both are chosen by a grid search
that maximises hIoU on a labelled **validation** split, never on the split the model is evaluated on
(the paper's family: thresholds are set on validation data). The search runs ``evaluate`` (the exact
inference path) once per grid point, so it costs ``len(thresholds) * len(offsets)`` passes over the
split: use a few hundred images (``limit``). Ties keep the first grid point (smallest threshold, then
smallest offset).

``alignzeg-eval --calibrate --out DIR`` writes the calibrated model to a new folder (``save_calibrated``:
the model's files copied, ``config.json`` with the two values changed and every other key unchanged); the
model it read is never modified. ``write_calibration`` changes a folder's ``config.json`` in place, for
folders the caller owns. The calibration and evaluation images must differ (``check_disjoint``).

    alignzeg-eval runs/voc --dataset voc --data-root data/VOCdevkit --split val \\
        --calibrate --calib-split calib --out runs/voc-calibrated   # calib.txt: held-out training images
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..config import AlignZegConfig, write_json
from .evaluate import evaluate

__all__ = ["DEFAULT_THRESHOLDS", "DEFAULT_OFFSETS", "CalibrationResult", "calibrate", "apply_calibration",
           "write_calibration", "save_calibrated", "check_calibration_out", "check_calibration_split",
           "check_disjoint", "image_files"]

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_OFFSETS = (0.0, 0.5, 1.0, 2.0, 4.0)
"""Offsets in logit units (the classifier's scaled cosine similarities)."""


@dataclass
class CalibrationResult:
    """The chosen bias-correction settings and the whole grid.

    Attributes:
        pbc_threshold / seen_score_offset: the grid point with the highest hIoU.
        hiou: its hIoU on the calibration split (fraction in [0, 1]).
        grid: one dict per grid point: ``threshold``, ``offset``, ``mIoU(S)``, ``mIoU(U)``, ``hIoU``.
    """

    pbc_threshold: float
    seen_score_offset: float
    hiou: float
    grid: list[dict[str, Any]] = field(default_factory=list)


def check_calibration_split(calib_split: str, eval_split: str | None) -> None:
    """Refuse a calibration split named ``test`` or equal to the evaluation split.

    Raises:
        ValueError: naming the split.
    """
    if not calib_split:
        raise ValueError("a calibration split is required (a labelled validation split, never the test split)")
    if calib_split.lower().startswith("test"):
        raise ValueError(f"calibration split {calib_split!r} looks like a test split; calibrate on validation data")
    if eval_split is not None and calib_split == eval_split:
        raise ValueError(f"calibration split {calib_split!r} is the evaluation split; choose a held-out "
                         "validation split (thresholds chosen on the evaluation split inflate its numbers)")


def image_files(dataset: Any) -> list[Path] | None:
    """The dataset's image paths (``dataset.images``, as the loaders of ``datasets.py`` have), or ``None``."""
    images = getattr(dataset, "images", None)
    return None if images is None else [Path(p) for p in images]


def check_disjoint(calibration: Any, evaluation: Any) -> None:
    """Refuse calibration and evaluation datasets that share an image file (compared by resolved path).

    Datasets without image paths (``image_files`` is ``None``) cannot be compared and pass with a warning.

    Raises:
        ValueError: naming how many images are shared and a few of them.
    """
    calib, evaluated = image_files(calibration), image_files(evaluation)
    if calib is None or evaluated is None:
        logger.warning("cannot check that the calibration and evaluation images differ: a dataset lists no "
                       "image files")
        return
    shared = sorted({p.resolve() for p in calib} & {p.resolve() for p in evaluated})
    if shared:
        raise ValueError(f"the calibration and evaluation data share {len(shared)} of their images "
                         f"(e.g. {[str(p) for p in shared[:3]]}); PBC's threshold and offset must be chosen on "
                         "held-out validation images, never on the images reported")


def calibrate(segmenter: Any, dataset: Any, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
              offsets: Sequence[float] = DEFAULT_OFFSETS, limit: int | None = None,
              progress: bool = False) -> CalibrationResult:
    """Grid search of ``pbc_threshold`` x ``seen_score_offset`` maximising hIoU with PBC on.

    The segmenter's config is restored afterwards (apply the result with ``write_calibration`` or
    ``config.replace``).

    Args:
        segmenter: an ``AlignZegSegmenter`` whose class indicator was trained.
        dataset: the calibration split (a protocol dataset with unseen pixels kept and both seen and unseen
            classes present), never the test split.
        thresholds: values in [0, 1].
        offsets: values >= 0 (logits).
        limit: use only the first ``limit`` images.
        progress: show progress bars.

    Raises:
        ValueError: empty or out-of-range grids, an untrained indicator (``config.indicator_trained`` False:
            PBC, and with it the offset, never runs on such a model), or a split without seen or unseen
            classes (hIoU undefined everywhere).
    """
    thresholds, offsets = [float(t) for t in thresholds], [float(o) for o in offsets]
    if not thresholds or not offsets:
        raise ValueError(f"thresholds and offsets must be non-empty, got {thresholds} and {offsets}")
    if any(not 0.0 <= t <= 1.0 for t in thresholds):
        raise ValueError(f"thresholds must be in [0, 1], got {thresholds}")
    if any(o < 0 or not math.isfinite(o) for o in offsets):
        raise ValueError(f"offsets must be finite and >= 0, got {offsets}")
    original = segmenter.model.config
    grid = []
    try:
        for threshold in thresholds:
            for offset in offsets:
                segmenter.model.config = original.replace(pbc_threshold=threshold, seen_score_offset=offset)
                r = evaluate(segmenter, dataset, bias_correction=True, limit=limit, progress=progress)
                grid.append({"threshold": threshold, "offset": offset, "mIoU(S)": r.miou_seen,
                             "mIoU(U)": r.miou_unseen, "hIoU": r.hiou})
                logger.info("threshold %.3f offset %.3f: hIoU %.4f", threshold, offset, r.hiou)
    finally:
        segmenter.model.config = original
    scored = [g for g in grid if not math.isnan(g["hIoU"])]
    if not scored:
        raise ValueError("hIoU is undefined on the calibration split (it needs both seen and unseen classes)")
    best = max(scored, key=lambda g: g["hIoU"])  # max keeps the first of equal values
    return CalibrationResult(best["threshold"], best["offset"], best["hIoU"], grid)


def apply_calibration(segmenter: Any, result: CalibrationResult) -> None:
    """Set the chosen ``pbc_threshold`` and ``seen_score_offset`` on the segmenter's config (in memory;
    ``write_calibration`` writes them into a checkpoint folder)."""
    segmenter.model.config = segmenter.model.config.replace(pbc_threshold=result.pbc_threshold,
                                                            seen_score_offset=result.seen_score_offset)


def save_calibrated(source: str | os.PathLike, out: str | os.PathLike, result: CalibrationResult,
                    segmenter: Any = None) -> Path:
    """Write a calibrated copy of a model to the new folder ``out``; ``source`` is never modified.

    A local ``source`` folder has its files (not its subfolders, e.g. training checkpoints) copied, then
    ``write_calibration`` changes the copy's ``config.json``; any other source (a Hub id) is written with
    ``segmenter.save_pretrained(out)`` (a self-contained checkpoint) before the same change.

    Raises:
        ValueError: ``out`` is a file, a non-empty folder or ``source`` itself, or a Hub source without a
            segmenter.
    """
    out = Path(out)
    check_calibration_out(source, out)
    if Path(source).is_dir():
        out.mkdir(parents=True, exist_ok=True)
        for path in sorted(Path(source).iterdir()):
            if path.is_file():
                shutil.copy2(path, out / path.name)
    elif segmenter is None:
        raise ValueError(f"{str(source)!r} is not a local folder: pass the loaded segmenter to save it")
    else:
        segmenter.save_pretrained(out)
    return write_calibration(out, result)


def check_calibration_out(source: str | os.PathLike, out: str | os.PathLike) -> None:
    """Check the output folder of a calibrated model: absent or empty, and not the model's own folder.

    Raises:
        ValueError: naming the folder.
    """
    out = Path(out)
    if Path(source).is_dir() and out.resolve() == Path(source).resolve():
        raise ValueError(f"--out {str(out)!r} is the model's own folder; the calibrated model goes to a new folder "
                         "(the input model is never modified)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {str(out)!r} {'is not a folder' if not out.is_dir() else 'is not empty'}; "
                         "give a new or empty folder for the calibrated model")


def write_calibration(folder: str | os.PathLike, result: CalibrationResult) -> Path:
    """Write the chosen values into ``folder/config.json`` in place: a new file moved over the old one
    (atomic), every other key and the key order unchanged. For a model you did not make (the package's demo
    model, a download) use ``save_calibrated``, which leaves its input alone.

    Raises:
        FileNotFoundError: ``folder`` has no ``config.json`` (a Hub id cannot be written; download it first).
    """
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist: calibration is written into a local checkpoint folder")
    data = json.loads(path.read_text(encoding="utf-8"))
    data["pbc_threshold"] = result.pbc_threshold
    data["seen_score_offset"] = result.seen_score_offset
    AlignZegConfig.from_dict(dict(data))  # refuse to write a config that would not load
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_json(tmp, data)
    os.replace(tmp, path)
    logger.info("wrote pbc_threshold=%s seen_score_offset=%s into %s", result.pbc_threshold,
                result.seen_score_offset, path)
    return path
