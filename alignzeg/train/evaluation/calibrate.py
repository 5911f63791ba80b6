"""Calibration of the post-processing settings on a validation split: PBC's ``pbc_threshold`` or soft mode
(``pbc_soft``), the ``seen_score_offset`` and the CLIP readout's ensemble weights (``readout_weight_seen``,
``readout_weight_unseen``).

PBC flags a proposal when the class indicator's unseen score is above ``pbc_threshold`` (soft PBC weighs the
masked softmax by the score instead); ZegCLIP-style calibration subtracts ``seen_score_offset`` from the
seen-class logits; the geometric ensemble weighs the CLIP readout's log-probabilities against the decoder's.
Every setting that applies to the model is chosen by one grid search that maximises hIoU on a labelled
**validation** split, never on the split the model is evaluated on (the paper's family: thresholds are set
on validation data): PBC's settings only when the class indicator was trained (``config.indicator_trained``;
PBC never runs otherwise), the readout weights only with ``config.clip_readout``. The network runs once per
crop of each image and every grid point re-runs only the post-processing
(``alignzeg.train.evaluation.calibration_grid``: ``cache_outputs``, then ``search``, the search the zero-shot worlds'
benchmark uses too). Ties keep the first grid point in the grid's order (thresholds, then ``"soft"``, in the
outer loop; offsets; readout weights in the inner loop).

``alignzeg-eval --calibrate --out DIR`` writes the calibrated model to a new folder (``save_calibrated``:
the model's files copied, ``config.json`` with the chosen values changed and every other key unchanged);
the model it read is never modified. ``write_calibration`` changes a folder's ``config.json`` in place, for
folders the caller owns. The calibration and evaluation images must differ (``check_disjoint``).

    alignzeg-eval runs/voc --dataset voc --data-root data/VOCdevkit --split val \\
        --calibrate --calib-split calib --out runs/voc-calibrated   # calib.txt: held-out training images
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...config import AlignZegConfig, write_json
from .calibration_grid import SETTINGS, applicable_grid, cache_outputs, check_grid, search

__all__ = ["DEFAULT_THRESHOLDS", "DEFAULT_PBC", "DEFAULT_OFFSETS", "DEFAULT_READOUT_WEIGHTS", "CalibrationResult",
           "calibrate", "calibrate_inductive", "CalibrationView", "pick_validation_classes", "validation_classes",
           "labelled_classes", "check_calibration_model", "apply_calibration", "write_calibration", "save_calibrated", "check_calibration_out",
           "check_calibration_split", "check_disjoint", "image_files",
           "is_training_split"]

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""PBC thresholds searched by default."""
DEFAULT_PBC = DEFAULT_THRESHOLDS + ("soft",)
"""PBC settings searched by default: the thresholds, then soft PBC (``pbc_soft``)."""
DEFAULT_OFFSETS = (0.0, 0.5, 1.0, 2.0, 4.0)
"""Offsets in logit units (the classifier's scaled cosine similarities)."""
DEFAULT_READOUT_WEIGHTS = ((0.0, 0.0), (0.0, 0.8), (0.3, 0.5), (0.3, 0.8), (0.4, 0.8), (0.3, 1.0), (0.6, 0.8),
                           (0.6, 1.0))
"""(seen, unseen) weights of the CLIP readout in the geometric ensemble searched by default: the zero-shot
worlds' grid (``calibration_grid.WORLD_CALIB_READOUT``) and FC-CLIP's (0.4, 0.8), the presets' values."""

@dataclass
class CalibrationResult:
    """The chosen post-processing settings and the whole grid.

    Attributes:
        pbc_threshold / seen_score_offset: the grid point with the highest hIoU (the model's own values when
            PBC was not searched: a class indicator that was never trained).
        hiou: its hIoU on the calibration split (fraction in [0, 1]).
        grid: one dict per grid point: the config fields ``pbc_threshold``, ``pbc_soft``,
            ``seen_score_offset``, ``readout_weight_seen``, ``readout_weight_unseen``, the metrics ``mIoU(S)``,
            ``mIoU(U)``, ``hIoU``, and ``threshold`` / ``offset`` (the first two under their earlier names).
        pbc_soft: the chosen PBC mode; ``None``: not searched (left as the model has it).
        readout_weight_seen / readout_weight_unseen: the chosen ensemble weights; ``None``: not searched (a
            model without ``clip_readout``).
        protocol: ``"inductive"`` (chosen on validation classes of a calibration model: no label of a class
            outside ``calibration_classes`` was read) or ``"transductive"`` (chosen on labels that may include
            classes unseen in the model's training).
        calibration_classes: the class names whose labels chose the settings.
    """

    pbc_threshold: float
    seen_score_offset: float
    hiou: float
    grid: list[dict[str, Any]] = field(default_factory=list)
    pbc_soft: bool | None = None
    readout_weight_seen: float | None = None
    readout_weight_unseen: float | None = None
    protocol: str = "transductive"
    calibration_classes: tuple[str, ...] = ()

    @property
    def settings(self) -> dict[str, Any]:
        """The config fields this result sets: ``pbc_threshold``, ``seen_score_offset``, those of
        ``pbc_soft``, ``readout_weight_seen``, ``readout_weight_unseen`` that were chosen (not ``None``), and
        the provenance ``calibration_protocol`` and ``calibration_classes``."""
        chosen = {k: getattr(self, k) for k in SETTINGS if getattr(self, k) is not None}
        return dict(chosen, calibration_protocol=self.protocol, calibration_classes=tuple(self.calibration_classes))

    def describe(self) -> str:
        """One line: the chosen values, e.g. ``pbc_threshold 0.5, seen_score_offset 1, pbc_soft off, readout
        weights 0.3 (seen) / 0.8 (unseen)``; with soft PBC chosen ``soft PBC (no threshold), ...`` (its
        threshold is not used)."""
        pbc = "soft PBC (no threshold)" if self.pbc_soft else f"pbc_threshold {self.pbc_threshold:g}"
        parts = [f"{pbc}, seen_score_offset {self.seen_score_offset:g}"]
        if self.pbc_soft is False:
            parts.append("pbc_soft off")
        if self.readout_weight_seen is not None and self.readout_weight_unseen is not None:
            parts.append(f"readout weights {self.readout_weight_seen:g} (seen) / {self.readout_weight_unseen:g} "
                         "(unseen)")
        return ", ".join(parts) + f" ({self.protocol})"


def check_calibration_split(calib_split: str, eval_split: str | None, allow_training: bool = False) -> None:
    """Refuse a calibration split named ``test``, equal to the evaluation split, or (unless ``allow_training``)
    a training split (``is_training_split``).

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
    if is_training_split(calib_split) and not allow_training:
        raise ValueError(f"calibration split {calib_split!r} is a training split: settings chosen on images the "
                         "model was trained on suit those images, not new ones; calibrate on a split held out of "
                         "training (e.g. a 'calib' list of training images left out of both models' training), or "
                         "pass --allow-training-split if this model never saw these images")


def is_training_split(split: str | None) -> bool:
    """Whether a split's name says it is a training split (``train``, ``trainaug``, ``train_aug``..., any case):
    the split ``alignzeg-train`` reads by default (``datasets.default_split``)."""
    return split is not None and split.lower().startswith("train")


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
                         f"(e.g. {[str(p) for p in shared[:3]]}); the post-processing settings must be chosen "
                         "on held-out validation images, never on the images reported")


def calibrate(segmenter: Any, dataset: Any, thresholds: Sequence[float | str] | None = None,
              offsets: Sequence[float] | None = None, limit: int | None = None, progress: bool = False,
              readout_weights: Sequence[tuple[float, float]] | None = None,
              protocol: str = "transductive") -> CalibrationResult:
    """Grid search of every post-processing setting that applies to the model, maximising hIoU.

    The grid is ``thresholds`` x ``offsets`` x ``readout_weights`` (nested in that order): the seen-score
    offsets always, PBC's thresholds only when the class indicator was trained and the readout weights only
    with ``config.clip_readout``. The network runs once per crop (``calibration_grid.cache_outputs``), each
    grid point re-runs the post-processing only (``calibration_grid.search``). The segmenter's config is not
    changed (apply the result with ``apply_calibration`` / ``save_calibrated``).

    hIoU is computed between the dataset's seen classes (``dataset.seen_classes``, default the model's) and
    its other classes, so the labels of every class of ``dataset.class_names`` choose the settings: on a
    split that labels classes unseen in the model's training this is *transductive* calibration (the
    default ``protocol``); ``calibrate_inductive`` is the inductive protocol (validation classes of a
    calibration model).

    Args:
        segmenter: an ``AlignZegSegmenter``.
        dataset: the calibration split (a protocol dataset with both seen and unseen classes present), never
            the test split.
        thresholds: PBC thresholds in [0, 1] and/or ``"soft"`` (soft PBC); default ``DEFAULT_PBC``.
        offsets: seen-score offsets >= 0 (logits); default ``DEFAULT_OFFSETS``.
        limit: use only the first ``limit`` images.
        progress: show a progress bar.
        readout_weights: (seen, unseen) pairs in [0, 1]; default ``DEFAULT_READOUT_WEIGHTS``.
        protocol: ``"transductive"`` or ``"inductive"``, recorded in the result.

    Raises:
        ValueError: an empty grid or a value out of range (the message names it); ``thresholds`` given for a
            model whose indicator was not trained, or ``readout_weights`` for one without the readout; a split
            without seen or unseen classes (hIoU undefined everywhere); an unknown protocol.
    """
    config = segmenter.model.config
    if protocol not in ("transductive", "inductive"):
        raise ValueError(f"protocol must be 'transductive' or 'inductive', got {protocol!r}")
    check_grid(thresholds, offsets, readout_weights)
    if thresholds is not None and not config.indicator_trained:
        raise ValueError("thresholds were given, but PBC's flags need a trained class indicator: "
                         "config.indicator_trained is False, so no proposal is ever flagged on this model "
                         "(its bias correction is the seen-score offset alone: give offsets only)")
    if readout_weights is not None and not config.clip_readout:
        raise ValueError(f"readout_weights {list(map(tuple, readout_weights))} were given, but the model has no "
                         "CLIP readout (config.clip_readout is False)")
    pbc, offsets, weights, bias_correction = applicable_grid(
        config, DEFAULT_PBC if thresholds is None else thresholds, DEFAULT_OFFSETS if offsets is None else offsets,
        DEFAULT_READOUT_WEIGHTS if readout_weights is None else readout_weights)
    cached = cache_outputs(segmenter, dataset, limit, batch_size=segmenter.batch_size, progress=progress)
    best, grid = search(cached, config, pbc, offsets, weights, bias_correction)
    logger.info("calibrated on %d images, %d grid points: %s (hIoU %.4f)", cached.num_images, len(grid),
                {k: best[k] for k in SETTINGS}, best["hIoU"])
    return CalibrationResult(
        best["pbc_threshold"], best["seen_score_offset"], best["hIoU"],
        [dict(g, threshold=g["pbc_threshold"], offset=g["seen_score_offset"], **{"mIoU(S)": g["mIoU_S"],
                                                                                "mIoU(U)": g["mIoU_U"]})
         for g in grid],
        pbc_soft=best["pbc_soft"] if pbc is not None else None,
        readout_weight_seen=best["readout_weight_seen"] if weights is not None else None,
        readout_weight_unseen=best["readout_weight_unseen"] if weights is not None else None,
        protocol=protocol, calibration_classes=tuple(cached.class_names))


def pick_validation_classes(seen_classes: Sequence[str], count: int, seed: int = 0) -> tuple[str, ...]:
    """``count`` of the seen classes drawn at random with ``seed``, in the seen classes' order: the
    validation classes a calibration model holds out (``TrainConfig.validation_classes``).

    Raises:
        ValueError: ``count`` not in [1, number of seen classes - 1].
    """
    seen = list(dict.fromkeys(seen_classes))
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count < len(seen):
        raise ValueError(f"the number of validation classes must be an integer in [1, {len(seen) - 1}] (some "
                         f"of the {len(seen)} seen classes must stay in training), got {count!r}")
    chosen = set(np.random.default_rng(seed).choice(len(seen), count, replace=False).tolist())
    return tuple(name for i, name in enumerate(seen) if i in chosen)


def validation_classes(config: Any) -> tuple[str, ...]:
    """The validation classes a calibration model was trained without (``config.extra["validation_classes"]``,
    recorded by the trainer); ``()`` for a model trained on all its seen classes."""
    return tuple(config.extra.get("validation_classes", ()))


class CalibrationView:
    """A labelled split as inductive calibration sees it: the calibration classes and nothing else.

    Label values of classes outside ``calibration_classes`` become 255 (ignored) through a lookup table before
    anything else reads the label, so no label of another class (a class unseen at test time) can choose a
    setting. ``class_names`` are the calibration classes in the dataset's order; ``seen_classes`` the
    calibration model's seen classes (the validation classes play unseen).

    Args:
        dataset: a protocol dataset (``alignzeg.train.datasets``) with ``class_names``.
        calibration_classes: names of ``dataset.class_names`` whose labels are kept.
        seen_classes: the calibration model's seen classes (a subset of ``calibration_classes``).

    Raises:
        ValueError: a calibration or seen class the dataset does not have.
    """

    def __init__(self, dataset: Any, calibration_classes: Sequence[str], seen_classes: Sequence[str]) -> None:
        names = [str(n) for n in dataset.class_names]
        missing = [c for c in calibration_classes if c not in names]
        if missing:
            raise ValueError(f"calibration classes {missing} are not classes of the calibration split {names}")
        outside = [c for c in seen_classes if c not in calibration_classes]
        if outside:
            raise ValueError(f"the calibration model's seen classes {outside} are not calibration classes")
        keep = [k for k, n in enumerate(names) if n in set(calibration_classes)]
        self.dataset = dataset
        self.class_names = tuple(names[k] for k in keep)
        self.seen_classes = tuple(n for n in self.class_names if n in set(seen_classes))
        self.lut = np.full(256, 255, dtype=np.int64)
        self.lut[keep] = np.arange(len(keep))
        self.images = getattr(dataset, "images", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index])
        label = np.asarray(item["label"])
        if label.size and (label.min() < 0 or label.max() > 255):
            raise ValueError(f"calibration item {index} has label values outside [0, 255]")
        item["label"] = self.lut[label.astype(np.int64)]
        return item


def calibrate_inductive(calibration_segmenter: Any, dataset: Any, thresholds: Sequence[float | str] | None = None,
                        offsets: Sequence[float] | None = None, limit: int | None = None, progress: bool = False,
                        readout_weights: Sequence[tuple[float, float]] | None = None) -> CalibrationResult:
    """Inductive calibration: choose the post-processing settings on the validation classes of a calibration
    model, to be applied to the model trained on all seen classes (the validation-class protocol of
    GZSL benchmarks).

    The calibration model (trained with ``TrainConfig.validation_classes`` held out) segments the split with
    the calibration classes as the vocabulary (its seen classes + its validation classes: the seen classes
    of the model the settings are for); hIoU is scored between its seen classes and the validation classes,
    which play unseen. Pixels of every other class (a test split's unseen classes) are ignored before
    anything reads them (``CalibrationView``). The result records ``protocol="inductive"`` and the calibration
    classes; ``save_calibrated`` / ``write_calibration`` write it into the final model's config.

    Args:
        calibration_segmenter: the calibration model (``config.extra["validation_classes"]`` recorded).
        dataset: a labelled validation split with every calibration class in ``class_names``.
        thresholds, offsets, limit, progress, readout_weights: as ``calibrate``.

    Raises:
        ValueError: a model trained without validation classes; the errors of ``calibrate``.
    """
    config = calibration_segmenter.model.config
    held_out = validation_classes(config)
    if not held_out:
        raise ValueError("inductive calibration needs a calibration model: a model trained with validation "
                         "classes held out (TrainConfig.validation_classes / alignzeg-train --validation-classes); "
                         "this model records none (config.extra['validation_classes'])")
    classes = tuple(config.seen_classes) + held_out
    view = CalibrationView(dataset, classes, config.seen_classes)
    return calibrate(calibration_segmenter, view, thresholds, offsets, limit, progress, readout_weights,
                     protocol="inductive")  # calibration_classes: the view's, the only labels it reads


def check_calibration_model(model: Any, calibration_model: Any) -> None:
    """Refuse a calibration model that does not fit ``model`` (both ``AlignZegConfig``): it must hold
    validation classes out, and its seen and validation classes must be seen classes of ``model`` (else
    choosing on them would read labels of ``model``'s unseen classes).

    Raises:
        ValueError: naming the classes.
    """
    held_out = validation_classes(calibration_model)
    if not held_out:
        raise ValueError("the calibration model records no validation classes: train it with "
                         "alignzeg-train --validation-classes (TrainConfig.validation_classes)")
    outside = [c for c in tuple(calibration_model.seen_classes) + held_out if c not in set(model.seen_classes)]
    if outside:
        raise ValueError(f"the calibration model's classes {outside} are not seen classes of the model calibrated; "
                         "a calibration model holds out some of that model's own seen classes")


def labelled_classes(dataset: Any, limit: int | None = None) -> list[str]:
    """The class names whose label values occur in the first ``limit`` images of ``dataset`` (255 ignored),
    in the dataset's class order."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    present = np.zeros(256, dtype=bool)
    for i in range(count):
        label = np.asarray(dataset[i]["label"]).astype(np.int64).ravel()
        present[np.unique(label[(label >= 0) & (label < 255)])] = True
    return [name for k, name in enumerate(dataset.class_names) if k < 255 and present[k]]


def apply_calibration(segmenter: Any, result: CalibrationResult) -> None:
    """Set the chosen settings (``result.settings``) on the segmenter's config (in memory;
    ``write_calibration`` writes them into a checkpoint folder)."""
    segmenter.model.config = segmenter.model.config.replace(**result.settings)


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
    """Write the chosen values (``result.settings``) into ``folder/config.json`` in place: a new file moved
    over the old one (atomic), every other key and the key order unchanged; a file of an older format is
    written in today's (``AlignZegConfig.to_dict``, the fields it lacked at the values that keep its model).
    A model card (``README.md``) beside it is rewritten to state the new settings. For a model you did not make (the package's demo
    model, a download) use ``save_calibrated``, which leaves its input alone.

    Raises:
        FileNotFoundError: ``folder`` has no ``config.json`` (a Hub id cannot be written; download it first).
    """
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist: calibration is written into a local checkpoint folder")
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(result.settings)
    config = AlignZegConfig.from_dict(dict(data))  # refuse to write a config that would not load
    if data.get("format_version") != config.format_version:  # an older file: written in today's format
        data = config.to_dict()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_json(tmp, data)
    os.replace(tmp, path)
    if (path.parent / "README.md").is_file() and (path.parent / "model.safetensors").is_file():
        from ...checkpoint import refresh_model_card

        refresh_model_card(path.parent)  # the card states the new settings, not the old ones
    logger.info("wrote %s into %s", result.settings, path)
    return path
