"""The attribute-world recipe: the training settings of the world ablation, and the command that sets a world
up for ``alignzeg-train``.

``world_train_config(world, clip)`` is the ``TrainConfig`` of the world experiments (``docs/zeroshot_world.md``;
``benchmarks/zeroshot_world.py`` applies a variant on top).

``python -m alignzeg.train.training.world_recipe export --world 0 --out data/world0`` writes a world to disk in
the folder-dataset layout (``alignzeg.worlds.export.export_world``: ``classes.txt``, ``seen.txt``,
``{train,val,test}/{images,labels}``) into a new or empty folder (``--overwrite`` replaces an earlier export),
pre-trains its mini-CLIP into ``clip.safetensors`` (``alignzeg.worlds.miniclip``) and writes a
``train_config.json`` for ``alignzeg-train`` whose ``clip_pretrained`` is an absolute path (the config works
from any folder). ``--clip FILE`` reuses a mini-CLIP instead of pre-training one (``--clip
alignzeg:demo/assets/clip.safetensors``: the one shipped with the package, pre-trained on world 0's captions;
the 48 class names are the same in every world).

The worlds live in ``alignzeg.worlds`` (which the demo imports and so must not import this package); this
module is the bridge from a world to training.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from ...worlds.export import check_export_dir, export_world
from ...config import FrozenDict
from .config import TrainConfig

__all__ = ["world_train_config", "WORLD_DECODER_DIM", "WORLD_RECIPE", "main"]

WORLD_DECODER_DIM = 64
"""Decoder width of the attribute-world models (the ``tiny`` preset has 32; see ``world_train_config``)."""

WORLD_RECIPE = FrozenDict(dict(
    preset="tiny", dataset="folder", iterations=1500, batch_size=8, lr=1e-3, warmup_iters=150, grad_clip=0.01,
    crop_scale=(1.0, 1.0), flip=True, checkpoint_every=0, log_every=100, negative_topk=1,
    progress=False,  # runs of this config go to log files: the loss is logged every log_every steps
    model_overrides=dict(num_bg_prototypes=1, decoder_dim=WORLD_DECODER_DIM)))
"""The ``TrainConfig`` fields that ``world_train_config`` sets on every world (see its docstring for why);
read-only; ``benchmarks/zeroshot_world.py`` records them in its JSON and resumes only a file made with the same."""


def world_train_config(world: Any, clip_pretrained: str | os.PathLike | None, **changes: Any) -> TrainConfig:
    """The training settings of the attribute-world ablation (before a variant is applied).

    The ``tiny`` preset on the world's mini-CLIP with a decoder twice as wide (``decoder_dim=64``: the
    preset's 32 learns the seen patterns poorly: world 0, seed 0, 1500 steps, baseline hIoU 22.5 at width
    32, 45.4 at 64, 51.2 at 128, which trains 1.8x slower in the full model), trained on the world's seen
    classes: 1500 AdamW steps, batch 8, lr 1e-3 (poly) after a linear warm-up of 150 steps, gradients clipped
    at a global norm of 0.01 (as every recipe, after Mask2Former; fixed post-processing, paired runs: on the
    attribute worlds, 12 runs, they lifted +MRPE by +7.4 hIoU, +MRPE with the readout by +3.5 and the
    baseline by +2.1; on the object worlds, 6 runs, +5.5, +1.5 and +1.3; in the attribute inductive table
    +MRPE - baseline is +8.3 hIoU [+2.1, +14.5] with them, +2.2 [-2.6, +7.0] without; docs/zeroshot_world.md),
    no rescaling (the patterns' period is part of what CLIP learned), flips on (every pattern is a pattern of
    the same class when mirrored), one background prototype (as every recipe: GEPC's parts did not pay on
    the worlds, and the ``+GEPC`` and ``full`` variants set the paper's M = 10 themselves), and negative
    proposals (when a variant trains them) from the top-1 (not 5) by loss: the paper's K = 5 is 5 % of 100
    queries, and 5 of the tiny preset's 8 queries made most proposals negatives (world 0, seed 0, 1500
    steps: full hIoU 25.2 with K = 5, 33.5 with K = 1). No progress bar (``progress=False``): its runs are
    logged to files. The fields are ``WORLD_RECIPE``.

    Args:
        world: a zero-shot world (``AttributeWorld``, or ``alignzeg.worlds.objects.make_world``'s): its ``seen_classes``
            are recorded.
        clip_pretrained: the world's mini-CLIP file (``alignzeg.worlds.miniclip.save_clip``); ``None`` keeps
            a random CLIP (tests).
        changes: ``TrainConfig`` fields to change.
    """
    clip = os.fspath(clip_pretrained) if clip_pretrained is not None else None
    base = dict(WORLD_RECIPE, clip_pretrained=clip, seen_classes=tuple(world.seen_classes))
    return TrainConfig(**{**base, **changes})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alignzeg.train.training.world_recipe",
                                     description="The attribute zero-shot world: export it, pre-train its mini-CLIP.")
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="write a world as a folder dataset (+ its mini-CLIP and a train config)")
    exp.add_argument("--world", type=int, default=0, help="world id (seed and split seed; default 0)")
    exp.add_argument("--family", default="attribute", choices=("attribute", "objects"),
                     help="attribute textures (alignzeg.worlds.attributes; the default) or objects on a background "
                     "that is no class (alignzeg.worlds.objects; background labelled 255)")
    exp.add_argument("--out", required=True, help="output folder (new or empty; see --overwrite)")
    exp.add_argument("--overwrite", action="store_true",
                     help="delete an earlier export in --out first, so that it holds exactly this one")
    exp.add_argument("--train-images", type=int, default=4000, help="images of the train split (default 4000)")
    exp.add_argument("--val-images", type=int, default=100,
                     help="images of the val split, the calibration split, drawn like test (default 100; 0: none)")
    exp.add_argument("--test-images", type=int, default=200, help="images of the test split (default 200)")
    exp.add_argument("--clip-steps", type=int, default=None,
                     help="pre-train the world's mini-CLIP for this many steps into OUT/clip.safetensors "
                          "(default 600; not with --clip; 0: the data only, no train_config.json)")
    exp.add_argument("--clip", default=None, metavar="FILE",
                     help="reuse this mini-CLIP instead of pre-training one (a save_clip file, or "
                          "alignzeg:demo/assets/clip.safetensors for the package's)")
    return parser


def _check_clip(source: str) -> str:
    """The ``clip_pretrained`` value for a reused mini-CLIP (an absolute path, or the package reference),
    after checking that it loads into the ``tiny`` preset's CLIP.

    Raises:
        ValueError: a missing file, or weights of another architecture.
    """
    from ...clip_weights import PACKAGE_PREFIX, load_clip_weights
    from ...errors import WeightsError
    from ...presets import get_preset_config

    value = source if source.startswith(PACKAGE_PREFIX) else str(Path(source).expanduser().resolve())
    if not source.startswith(PACKAGE_PREFIX) and not Path(value).is_file():
        raise ValueError(f"--clip {source!r}: no such file (a mini-CLIP written by save_clip, or "
                         f"{PACKAGE_PREFIX}demo/assets/clip.safetensors)")
    try:
        weights = load_clip_weights(get_preset_config("tiny"), value)
    except WeightsError as err:
        raise ValueError(f"--clip {source!r} is not a mini-CLIP of the tiny preset: {err}") from err
    return weights.source if value.startswith(PACKAGE_PREFIX) else value  # a moved package file: its new name


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m alignzeg.train.training.world_recipe export --world 0 --out data/world0``."""
    from ...cli import CLI_ERRORS, error_line

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.clip is not None and args.clip_steps is not None:
            raise ValueError("--clip reuses a mini-CLIP and --clip-steps pre-trains one; give one of them")
        if args.clip_steps is not None and args.clip_steps < 0:
            raise ValueError(f"--clip-steps must be >= 0, got {args.clip_steps}")
        clip_source = _check_clip(args.clip) if args.clip is not None else None
        check_export_dir(args.out, args.overwrite)
        return _export(args, clip_source)
    except CLI_ERRORS as err:
        print(error_line("python -m alignzeg.train.training.world_recipe", err), file=sys.stderr)
        return 2


def _export(args: Any, clip_source: str | None) -> int:
    """``export``'s work once its options are checked: the data, the mini-CLIP, the train config."""
    from ...worlds.objects import make_world

    world = make_world(args.family, args.world)
    out = export_world(world, args.out, args.train_images, args.test_images, args.val_images,
                       overwrite=args.overwrite).resolve()
    if args.clip_steps == 0:
        print(f"wrote the data of {out} only: --clip-steps 0 makes no mini-CLIP and so no train_config.json; "
              "reuse one with --clip FILE (e.g. --clip alignzeg:demo/assets/clip.safetensors) to get a config")
        return 0
    if clip_source is None:
        from ...worlds.miniclip import MiniClipConfig, pretrain_clip, save_clip

        clip = pretrain_clip(world, MiniClipConfig(steps=args.clip_steps or 600, seed=args.world))
        clip_source = str(save_clip(clip, out / "clip.safetensors"))
    world_train_config(world, clip_source).to_json(out / "train_config.json")
    print(f"wrote {out}: train with\n  alignzeg-train --config {out / 'train_config.json'} --variant full "
          f"--dataset folder --data-root {out} --out runs/world{args.world}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
