"""``alignzeg-train``: train from a recipe and/or a JSON config, with ``--set key=value`` overrides.

    alignzeg-train --list-recipes          # and --list-variants
    alignzeg-train --recipe voc-vitb16 --data-root data/VOCdevkit --out runs/voc
    alignzeg-train --config cfg.json --set lr=1e-4 --set model_overrides.num_queries=50 \\
        --dataset folder --data-root data/mine --out runs/mine
    alignzeg-train --recipe voc-vitb16 --set data.label_dir=SegmentationClassAug --data-root data/VOCdevkit ...
    alignzeg-train --config data/world0/train_config.json --variant +MRPE --seeds 0,1,2 \\
        --dataset folder --data-root data/world0 --out runs/world0-mrpe     # runs/world0-mrpe/seed_0 ...
    torchrun --nproc_per_node 8 -m alignzeg.train.training.train_cli --recipe coco-stuff-vitb16 ...

The fully resolved config is logged at the start and saved as ``train_config.json`` in ``--out``, with
``run.json`` (the run's settings, data description and fingerprint). ``--resume`` refuses a checkpoint of a
different run, naming what differs; a fresh run refuses a non-empty ``--out`` unless ``--overwrite``.
``--recipe`` and ``--variant`` name entries of one registry (``alignzeg.train.training.registry``); the variant, an
ablation row, is applied after the ``--set`` overrides;
``--seeds`` trains once per seed, each into ``--out/seed_<seed>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from .config import TrainConfig, assign_fields
from .registry import lookup, names

__all__ = ["main", "resolve_config"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    from ..._version import __version__

    parser = argparse.ArgumentParser(prog="alignzeg-train", description="Train an AlignZeg model.")
    parser.add_argument("--version", action="version", version=f"alignzeg-train {__version__}")
    parser.add_argument("--config", help="a JSON file of TrainConfig fields")
    parser.add_argument("--recipe", help="a named recipe (see --list-recipes); --config fields override it")
    parser.add_argument("--list-recipes", action="store_true", help="list the recipes and exit")
    parser.add_argument("--list-variants", action="store_true", help="list the variants (ablation rows) and exit")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field (JSON value), repeatable")
    parser.add_argument("--dataset", help="voc, coco-stuff, context or folder (default: the config's)")
    parser.add_argument("--data-root", help="the dataset's root folder")
    parser.add_argument("--split", default=None,
                        help="dataset split; it must exist (default: train; folder: the flat images/ layout, "
                             "else train/)")
    parser.add_argument("--out", help="output folder (checkpoints, train_config.json, the final model)")
    parser.add_argument("--resume", default=None,
                        help="a checkpoint folder, or 'auto' for the latest in --out; it must be of the same run "
                             "(settings and data, recorded in run.json)")
    parser.add_argument("--overwrite", action="store_true",
                        help="let a fresh run write into a non-empty --out (its old checkpoints are deleted)")
    parser.add_argument("--variant", default=None,
                        help="an ablation row applied on top of the config (see --list-variants)")
    parser.add_argument("--seeds", type=_parse_seeds, default=None, metavar="S1,S2,...",
                        help="train once per seed (comma-separated), each into OUT/seed_<seed>")
    parser.add_argument("--validation-classes", default=None, metavar="N|NAME,NAME,...",
                        help="make a calibration model: hold N seen classes (drawn with seed 0) or the named ones "
                             "out of training (their pixels ignored); alignzeg-eval --calibrate --calibration-model "
                             "chooses the post-processing on them for the model trained on all seen classes")
    return parser


def validation_choice(text: str, seen: Sequence[str]) -> tuple[str, ...]:
    """``--validation-classes``: a count (that many seen classes drawn with seed 0) or comma-separated names.

    Raises:
        ValueError: a count out of range, or a name that is not a seen class.
    """
    from ..evaluation.calibrate import pick_validation_classes

    if text.strip().isdigit():
        return pick_validation_classes(seen, int(text), seed=0)
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    outside = [n for n in names if n not in set(seen)]
    if not names or outside:
        raise ValueError(f"--validation-classes must be a count or seen class names, got {text!r}"
                         + (f" ({outside} are not seen classes)" if outside else ""))
    return names


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds needs distinct non-negative integers like 0,1,2, got {text!r}")
    return seeds


def resolve_config(recipe: str | None, config_path: str | None, overrides: Sequence[str],
                   variant: str | None = None) -> TrainConfig:
    """The recipe's fields, updated by the JSON file's, then by the ``--set`` assignments, then the variant's;
    the config (and its model config) is made and checked once, from the result."""
    base, row = (lookup(recipe, "recipe") if recipe else None), (lookup(variant, "variant") if variant else None)
    data = base.fields() if base else {}
    if config_path:
        try:
            given = json.loads(Path(config_path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_path} is not valid JSON: {err}") from err
        if not isinstance(given, dict):
            raise ValueError(f"{config_path} must hold a JSON object of TrainConfig fields")
        data.update(given)
    data = assign_fields(data, overrides)
    return TrainConfig.from_dict(row.fields(data) if row else data)


def main(argv: Sequence[str] | None = None) -> int:
    from ...cli import CLI_ERRORS, error_line

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    listed = [kind for kind, wanted in (("recipe", args.list_recipes), ("variant", args.list_variants)) if wanted]
    for kind in listed:
        for name in names(kind):
            print(f"{name}: {lookup(name, kind).description}")
    if listed:
        return 0
    try:
        config = resolve_config(args.recipe, args.config, args.overrides, args.variant)
        dataset_name = args.dataset or config.dataset
        if not dataset_name or not args.data_root or not args.out:
            raise ValueError("--data-root, --out and a dataset (--dataset or the config's 'dataset') are required")
        from ..datasets.loaders import build_dataset

        dataset = build_dataset(dataset_name, args.data_root, split=args.split,
                                seen_classes=config.seen_classes, train=True, **config.data)
        if args.validation_classes is not None:
            seen = config.seen_classes or tuple(getattr(dataset, "seen_classes", None) or dataset.class_names)
            config = config.replace(validation_classes=validation_choice(args.validation_classes, seen))
            logger.info("calibration model: validation classes %s held out", list(config.validation_classes))
        runs = [(config, args.out)] if args.seeds is None else [
            (config.replace(seed=s), str(Path(args.out) / f"seed_{s}")) for s in args.seeds]
        for run_config, out in runs:
            _train(run_config, dataset, out, args.resume, args.overwrite)
    except CLI_ERRORS as err:
        print(error_line("alignzeg-train", err), file=sys.stderr)
        return 2
    return 0


def _train(config: TrainConfig, dataset, out: str, resume: str | None, overwrite: bool) -> None:
    from .trainer import Trainer

    logger.info("training seed %d into %s", config.seed, out)
    Trainer(config, None, dataset, out_dir=out, resume=resume, overwrite=overwrite).train()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
