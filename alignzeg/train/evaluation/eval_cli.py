"""``alignzeg-eval``: zero-shot evaluation of a model on a dataset, with optional calibration of the
post-processing settings (PBC's threshold or soft mode, the seen-score offset, the CLIP readout's weights).

    alignzeg-eval MODEL --dataset voc --data-root data/VOCdevkit --split val [--json metrics.json]
    alignzeg-eval MODEL --dataset folder --data-root data/world0 --split test \\
        --calibrate --calibration-model runs/calib --calib-split val --out runs/calibrated
        [--thresholds 0.3,0.5,soft] [--offsets 0,1] [--readout-weights 0:0,0.3:0.8]
    alignzeg-eval MODEL ... --calibrate --transductive --calib-split val --out runs/calibrated-transductive
    alignzeg-eval MODEL ... --pbc-threshold 0.7 --seen-score-offset 0.5   # evaluate at given values

Rules the command enforces before any model is loaded:

- a split named with ``--split`` / ``--calib-split`` must exist (``build_dataset``);
- ``--calib-split`` is never the test split nor ``--split``, and a training split (``train*``) only with
  ``--allow-training-split`` (then with a warning);
- calibration and evaluation never share an image (compared by path: ``calibrate.check_disjoint``);
- ``--calibrate`` writes the calibrated model to ``--out DIR`` (new or empty), never into MODEL;
- ``--calibrate`` is inductive by default: the settings are chosen on the validation classes of
  ``--calibration-model`` (MODEL's training repeated with ``--validation-classes`` held out), and no label
  of a class outside them is read. Calibrating MODEL itself on labels of classes outside its seen classes
  is transductive: refused, naming those classes, unless ``--transductive`` is given (then the output, the
  JSON and the written config say so);
- contradictory options are refused (``--bias-correction on --no-bias-correction``, ``--calibrate`` with
  fixed values, calibration options without ``--calibrate``).

It prints which images it evaluated (and calibrated on), the per-class table and the summary; ``--json``
also writes the metrics (in percent, as printed, under the model card's keys ``hIoU``, ``mIoU_seen``,
``mIoU_unseen``), the confusion matrix, the share of unseen pixels predicted as a seen class and the image
lists.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Literal, Sequence, overload

from .calibrate import (DEFAULT_OFFSETS, DEFAULT_PBC, DEFAULT_READOUT_WEIGHTS, CalibrationResult,
                        apply_calibration, calibrate, calibrate_inductive, check_calibration_model,
                        check_calibration_out, check_calibration_split, check_disjoint, image_files,
                        is_training_split, labelled_classes, save_calibrated)
from .calibration_grid import SETTINGS, check_grid
from ..datasets.loaders import build_dataset, default_split
from .evaluate import bias_correction_for_config, dataset_vocabulary, evaluate

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    from ..._version import __version__

    parser = argparse.ArgumentParser(prog="alignzeg-eval", description="Zero-shot evaluation: mIoU(S), mIoU(U), hIoU.")
    parser.add_argument("--version", action="version", version=f"alignzeg-eval {__version__}")
    parser.add_argument("model", help="a folder written by save_pretrained / alignzeg-train, a Hub repo id, an "
                                      ".onnx file written by export_onnx (evaluation only: its vocabulary must hold "
                                      "the dataset's classes), or 'demo' (the shipped demo model)")
    parser.add_argument("--dataset", required=True, help="voc, coco-stuff, context or folder")
    parser.add_argument("--data-root", required=True, help="the dataset's root folder")
    parser.add_argument("--split", default=None,
                        help="dataset split; it must exist (default: val; folder: the flat images/ layout)")
    parser.add_argument("--seen", nargs="*", default=None,
                        help="seen class names (default: the dataset's standard split; folder: seen.txt or all)")
    parser.add_argument("--bias-correction", choices=("auto", "on", "off"), default=None,
                        help="PBC: auto (default) = on when the class indicator was trained")
    parser.add_argument("--no-bias-correction", action="store_true", help="evaluate without PBC (= off)")
    fixed = parser.add_argument_group("fixed bias-correction values (nothing is written)")
    fixed.add_argument("--pbc-threshold", type=float, default=None, help="evaluate at this pbc_threshold")
    fixed.add_argument("--seen-score-offset", type=float, default=None, help="evaluate at this seen_score_offset")
    calib = parser.add_argument_group("calibration")
    calib.add_argument("--calibrate", action="store_true",
                       help="first choose every post-processing setting that applies to the model on --calib-split "
                            "(max hIoU): pbc_threshold or pbc_soft and seen_score_offset when the class indicator "
                            "was trained, readout_weight_seen / readout_weight_unseen with the CLIP readout; write "
                            "the calibrated model to --out, then evaluate it")
    calib.add_argument("--calibration-model", default=None, metavar="DIR",
                       help="inductive calibration (the default protocol): a calibration model, trained like MODEL "
                            "with some seen classes held out (alignzeg-train --validation-classes); the settings "
                            "are chosen on those validation classes and written into the copy of MODEL")
    calib.add_argument("--transductive", action="store_true",
                       help="calibrate MODEL itself on --calib-split's labels, classes unseen in its training "
                            "included (transductive: not what a user with new class names can do; reported as "
                            "such)")
    calib.add_argument("--calib-split", default=None,
                       help="the labelled validation split to calibrate on; never the test split, never --split, "
                            "and a training split (train*) only with --allow-training-split")
    calib.add_argument("--allow-training-split", action="store_true",
                       help="calibrate on a split named train* anyway (for a model that was not trained on it; "
                            "a warning is printed)")
    calib.add_argument("--out", default=None, metavar="DIR",
                       help="new or empty folder for the calibrated model (MODEL itself is never modified)")
    calib.add_argument("--calib-limit", type=int, default=None, help="calibrate on the first N images only")
    calib.add_argument("--thresholds", default=None,
                       help="comma-separated pbc_threshold grid in [0, 1], 'soft' for soft PBC (default: "
                            f"{_text(DEFAULT_PBC)})")
    calib.add_argument("--offsets", default=None,
                       help=f"comma-separated seen_score_offset grid, logits >= 0 (default: {_text(DEFAULT_OFFSETS)})")
    calib.add_argument("--readout-weights", default=None, metavar="SEEN:UNSEEN,...",
                       help="comma-separated readout_weight_seen:readout_weight_unseen pairs in [0, 1] (default: "
                            f"{_pairs_text(DEFAULT_READOUT_WEIGHTS)})")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write the metrics (in percent, as printed; keys hIoU, mIoU_seen, mIoU_unseen as "
                             "on a model card), confusion matrix and image lists to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _text(values: Sequence[Any]) -> str:
    return ",".join(v if isinstance(v, str) else f"{v:g}" for v in values)


def _pairs_text(pairs: Sequence[tuple[float, float]]) -> str:
    return ",".join(f"{s:g}:{u:g}" for s, u in pairs)


@overload
def _grid(text: str | None, what: str, soft: Literal[False] = False) -> list[float] | None: ...
@overload
def _grid(text: str | None, what: str, soft: Literal[True]) -> list[float | str] | None: ...
def _grid(text: str | None, what: str, soft: bool = False) -> list[float] | list[float | str] | None:
    """A comma-separated grid (``None``: the option was not given); ``soft``: the word ``soft`` is allowed."""
    if text is None:
        return None
    values: list[float | str] = []
    for item in (v.strip() for v in text.split(",")):
        if not item:
            continue
        if soft and item == "soft":
            values.append(item)
            continue
        try:
            values.append(float(item))
        except ValueError as err:
            kind = "numbers or 'soft'" if soft else "numbers"
            raise ValueError(f"--{what} must be comma-separated {kind}, got {item!r} in {text!r}") from err
    return values


def _pairs(text: str | None) -> list[tuple[float, float]] | None:
    """``--readout-weights 0:0,0.3:0.8`` -> [(0.0, 0.0), (0.3, 0.8)] (``None``: not given)."""
    if text is None:
        return None
    pairs = []
    for item in (v.strip() for v in text.split(",")):
        if not item:
            continue
        try:
            seen, unseen = (float(v) for v in item.split(":"))
        except ValueError as err:
            raise ValueError(f"--readout-weights must be comma-separated SEEN:UNSEEN pairs of numbers, got {item!r} "
                             f"in {text!r}") from err
        pairs.append((seen, unseen))
    return pairs


def _grids(args: argparse.Namespace
           ) -> tuple[list[float | str] | None, list[float] | None, list[tuple[float, float]] | None]:
    """The calibration grids given on the command line, checked (``None``: the default grid): the PBC
    thresholds (numbers or ``"soft"``), the seen-score offsets and the readout weight pairs."""
    thresholds = _grid(args.thresholds, "thresholds", soft=True)
    offsets = _grid(args.offsets, "offsets")
    weights = _pairs(args.readout_weights)
    for option, grid in (("--thresholds", thresholds), ("--offsets", offsets), ("--readout-weights", weights)):
        if grid is not None and not grid:
            raise ValueError(f"{option} is empty; give at least one value")
    check_grid(thresholds, offsets, weights)
    return thresholds, offsets, weights


def _bias_mode(args: argparse.Namespace) -> str:
    """``auto``, ``on`` or ``off``; contradictory options are refused (``ValueError``)."""
    if args.no_bias_correction and args.bias_correction not in (None, "off"):
        raise ValueError(f"--no-bias-correction contradicts --bias-correction {args.bias_correction}; give one")
    mode = "off" if args.no_bias_correction else (args.bias_correction or "auto")
    fixed = [o for o, v in (("--pbc-threshold", args.pbc_threshold), ("--seen-score-offset", args.seen_score_offset))
             if v is not None]
    if fixed and args.calibrate:
        raise ValueError(f"--calibrate chooses the bias-correction values itself, so it cannot be combined with "
                         f"{' and '.join(fixed)}; give one or the other")
    if fixed and mode == "off":
        raise ValueError(f"with bias correction off, {' and '.join(fixed)} would change nothing; drop "
                         f"{'it' if len(fixed) == 1 else 'them'} or turn bias correction on")
    if not args.calibrate:
        extra = [o for o, v in (("--calib-split", args.calib_split), ("--out", args.out),
                                ("--calib-limit", args.calib_limit), ("--thresholds", args.thresholds),
                                ("--offsets", args.offsets), ("--readout-weights", args.readout_weights),
                                ("--calibration-model", args.calibration_model),
                                ("--transductive", args.transductive or None),
                                ("--allow-training-split", args.allow_training_split or None))
                 if v is not None]
        if extra:
            raise ValueError(f"calibration options without --calibrate: {', '.join(extra)}; add --calibrate or drop "
                             f"{'it' if len(extra) == 1 else 'them'}")
    if args.calibration_model is not None and args.transductive:
        raise ValueError("--calibration-model calibrates inductively and --transductive calibrates MODEL on unseen "
                         "classes' labels; give one")
    return mode


def _check_onnx(args: argparse.Namespace) -> None:
    """An ``.onnx`` MODEL is evaluated as it is: its post-processing settings are part of its graph."""
    from ...loader import is_onnx_file

    changes = [flag for flag, value in (("--calibrate", args.calibrate), ("--pbc-threshold", args.pbc_threshold),
                                        ("--seen-score-offset", args.seen_score_offset))
               if value is not None and value is not False]
    if is_onnx_file(args.model) and changes:
        raise ValueError(f"{' and '.join(changes)} cannot change an .onnx file (its bias-correction settings are "
                         "in its graph): calibrate the PyTorch model's folder, then export it again")


def _check_outputs(args: argparse.Namespace) -> None:
    """Before any data or model is read: the calibration folder and the JSON file can be written."""
    from ...cli import check_model_argument, check_output_path

    check_model_argument(args.model, "MODEL")
    _check_onnx(args)
    if args.calibrate:
        check_calibration_split(args.calib_split or "", args.split, allow_training=args.allow_training_split)
        if is_training_split(args.calib_split):
            print(f"alignzeg-eval: warning: calibrating on training split {args.calib_split!r} "
                  "(--allow-training-split): if the model was trained on these images, the chosen settings suit "
                  "them better than new images", file=sys.stderr)
        if args.out is None:
            raise ValueError("--calibrate needs --out DIR: the calibrated model is written to a new folder "
                             "(the model read is never modified)")
        check_calibration_out(args.model, args.out)
    if args.json:
        check_output_path(args.json, "--json")


def _images_used(dataset: Any, split: str | None, limit: int | None) -> dict[str, Any]:
    """Which images a pass used: split, count, their folder and file names (when the dataset lists files)."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    info: dict[str, Any] = {"split": split, "count": count}
    files = image_files(dataset)
    if files is not None:
        used = files[:count]
        info["folder"] = os.path.commonpath([str(p.parent.resolve()) for p in used]) if used else None
        info["files"] = [p.name for p in used]
    return info


def _describe(what: str, info: dict[str, Any]) -> str:
    split = "the flat layout" if info["split"] is None else f"split {info['split']!r}"
    where = f" in {info['folder']}" if info.get("folder") else ""
    return f"{what}: {info['count']} images of {split}{where}"


def _calibrate(args: argparse.Namespace, segmenter: Any, calib: Any) -> CalibrationResult:
    """Choose the settings (inductively on ``--calibration-model``, or transductively on MODEL), write the
    calibrated copy of MODEL and set the choice on ``segmenter``."""
    thresholds, offsets, weights = _grids(args)
    if args.calibration_model is not None:
        from ...segmenter import AlignZegSegmenter

        calibration_model = AlignZegSegmenter.from_pretrained(args.calibration_model, device=args.device)
        check_calibration_model(segmenter.config, calibration_model.config)
        result = calibrate_inductive(calibration_model, calib, thresholds, offsets, limit=args.calib_limit,
                                     progress=not args.quiet, readout_weights=weights)
    else:
        _check_transductive(args, segmenter, calib)
        result = calibrate(segmenter, calib, thresholds, offsets, limit=args.calib_limit, progress=not args.quiet,
                           readout_weights=weights, protocol="transductive")
    path = save_calibrated(args.model, args.out, result, segmenter)
    apply_calibration(segmenter, result)
    print(f"calibrated on {args.calib_split!r} ({len(result.grid)} grid points): {result.describe()} "
          f"(hIoU {100 * result.hiou:.2f}); calibrated model written to {path.parent}")
    return result


def _check_transductive(args: argparse.Namespace, segmenter: Any, calib: Any) -> None:
    """Without ``--calibration-model``, calibrating MODEL reads the labels of classes it was not trained on:
    refused unless ``--transductive`` says so."""
    if args.transductive:
        return
    seen = set(segmenter.config.seen_classes)
    outside = [c for c in labelled_classes(calib, args.calib_limit) if c not in seen]
    what = (f"split {args.calib_split!r} labels classes outside the model's seen classes: {outside}; choosing "
            "settings with their labels is transductive calibration" if outside else
            f"split {args.calib_split!r} labels none of the model's unseen classes, so calibrating the model "
            "itself has nothing to score the unseen side with")
    raise ValueError(f"{what}. Calibrate inductively with --calibration-model DIR (a model trained with "
                     "alignzeg-train --validation-classes), or pass --transductive to calibrate on those labels "
                     "(reported as transductive)")


def main(argv: Sequence[str] | None = None) -> int:
    """``alignzeg-eval MODEL --dataset NAME --data-root DIR``: prints the per-class table and the summary."""
    from ...cli import CLI_ERRORS, check_device_option, error_line

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        mode = _bias_mode(args)
        check_device_option(args.device)
        for name in ("limit", "calib_limit"):
            value = getattr(args, name, None)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if args.calibrate:
            _grids(args)
        split = args.split if args.split is not None else default_split(args.dataset, args.data_root, train=False)
        args.split = split
        _check_outputs(args)
        dataset = build_dataset(args.dataset, args.data_root, split=split, seen_classes=args.seen, train=False)
        used = {"evaluated": _images_used(dataset, split, args.limit)}
        calib = calibration = None
        if args.calibrate:
            calib = build_dataset(args.dataset, args.data_root, split=args.calib_split, seen_classes=args.seen,
                                  train=False)
            check_disjoint(calib, dataset)
            used["calibration"] = _images_used(calib, args.calib_split, args.calib_limit)
        from ...loader import load_segmenter

        segmenter = load_segmenter(args.model, device=args.device)
        dataset_vocabulary(dataset).prepare(segmenter)  # a class an .onnx file's vocabulary lacks fails here
        bias_correction = bias_correction_for_config(segmenter.config, {"on": True, "off": False}.get(mode, "auto"))
        if args.pbc_threshold is not None or args.seen_score_offset is not None:
            config = segmenter.config
            apply_calibration(segmenter, CalibrationResult(
                config.pbc_threshold if args.pbc_threshold is None else args.pbc_threshold,
                config.seen_score_offset if args.seen_score_offset is None else args.seen_score_offset,
                float("nan")))
        if calib is not None:
            print(_describe("calibration", used["calibration"]))
            calibration = _calibrate(args, segmenter, calib)
        print(_describe("evaluation", used["evaluated"]))
        result = evaluate(segmenter, dataset, bias_correction=bias_correction, limit=args.limit,
                          progress=not args.quiet)
    except CLI_ERRORS as err:
        print(error_line("alignzeg-eval", err), file=sys.stderr)
        return 2
    print(result.table())
    if args.json:
        config = segmenter.config
        data = {**result.to_dict(), "bias_correction": bias_correction,
                **{k: getattr(config, k) for k in SETTINGS}, "images": used}
        if calibration is not None:
            data["calibration"] = {"chosen": calibration.settings, "hIoU": 100 * calibration.hiou,
                                   "grid_points": len(calibration.grid), "protocol": calibration.protocol,
                                   "calibration_classes": list(calibration.calibration_classes)}
        Path(args.json).write_text(json.dumps(data, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
