"""The attribute world for training: a torch dataset of its images and its export to a folder dataset.

The world itself (classes, split, renderer) is ``alignzeg.demo.world``; its mini-CLIP is
``alignzeg.train.miniclip``.

    world = AttributeWorld(world_config(0))
    train = WorldDataset(world, "train", 2000)   # protocol dataset: class names, no class embeddings

``python -m alignzeg.train.world export --world 0 --out data/world0`` writes a world to disk in the
folder-dataset layout (``classes.txt``, ``seen.txt``, ``{train,val,test}/{images,labels}``) into a new
or empty folder (``--overwrite`` replaces an earlier export),
pre-trains its mini-CLIP into ``clip.safetensors`` and writes a ``train_config.json`` for ``alignzeg-train``
whose ``clip_pretrained`` is an absolute path (the config works from any folder). ``--clip FILE`` reuses a
mini-CLIP instead of pre-training one (``--clip alignzeg:demo/assets/clip.safetensors``: the one shipped
with the package, pre-trained on world 0's captions; the 48 class names are the same in every world).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..demo.world import _SPLITS, IGNORE, AttributeWorld, WorldConfig, world_config
from .config import TrainConfig

__all__ = ["AttributeWorld", "WorldConfig", "world_config", "IGNORE", "WorldDataset", "export_world", "main",
           "world_train_config", "WORLD_DECODER_DIM"]

logger = logging.getLogger(__name__)

WORLD_DECODER_DIM = 64
"""Decoder width of the attribute-world models (the ``tiny`` preset has 32; see ``world_train_config``)."""


class WorldDataset(Dataset):
    """Images of one split as tensors; train labels have unseen pixels set to ``IGNORE``.

    Follows the dataset protocol of ``alignzeg.train.data``: items ``image`` (3, S, S) float32 in [0, 1]
    and ``label`` (S, S) int64; ``class_names`` and ``seen_classes`` describe the classes. There are no
    ``class_embeddings``: the trainer and ``evaluate`` encode the names with the model's text tower.

    Args:
        world: the world to draw from.
        split: ``"train"``, ``"val"`` (drawn like test: for calibration) or ``"test"``.
        size: number of images (indices ``0 .. size - 1``).
    """

    def __init__(self, world: AttributeWorld, split: str, size: int) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self.world, self.split, self.size = world, split, size
        self.class_names = world.class_names
        self.seen_classes = world.seen_classes

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} images")
        image, labels = self.world.sample(self.split, index)
        if self.split == "train":
            labels = self.world.train_labels(labels)
        return {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(), "label": torch.from_numpy(labels)}


# Export to the folder-dataset layout ----------------------------------------------------------------------
def check_export_dir(out: str | Path, overwrite: bool = False, option: str = "--out") -> None:
    """Refuse an output folder that holds files, unless ``overwrite`` and it holds an earlier export.

    A folder written over keeps no file of what was there (``export_world`` empties it first), so it never
    mixes two exports (8 train images then 4 leaving 8; another family's labels beside new classes).

    Raises:
        ValueError: ``out`` is a file; or a non-empty folder without ``overwrite``; or, with ``overwrite``,
            a non-empty folder without ``classes.txt`` (not an export: nothing is deleted). The message
            names the folder and what it holds.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} {str(out)!r} is a file, not a folder")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not held:
        return
    shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
    if not overwrite:
        raise ValueError(f"{option} {str(out)!r} is not empty (it holds {shown}); give a new or empty folder, "
                         "or --overwrite to replace its contents")
    if "classes.txt" not in held:
        raise ValueError(f"{option} {str(out)!r} holds {shown} but no classes.txt: it is not a world export, "
                         "so --overwrite does not delete it; give a new or empty folder")


def _empty_folder(out: Path) -> None:
    """Delete everything inside ``out`` (the folder itself stays)."""
    import shutil

    for path in out.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    logger.warning("--overwrite: deleted the earlier contents of %s", out)


def export_world(world: AttributeWorld, out: str | Path, train_images: int, test_images: int,
                 val_images: int = 0, overwrite: bool = False) -> Path:
    """Write ``world`` as a folder dataset: ``classes.txt``, ``seen.txt``, ``{train,val,test}/{images,labels}``.

    ``out`` must be new or empty; with ``overwrite`` an earlier export in it is deleted first (see
    ``check_export_dir``), so the folder holds exactly this export.

    ``val`` (written when ``val_images > 0``) is drawn like ``test`` from its own stream: the split that
    ``alignzeg-eval --calibrate --calib-split val`` chooses the post-processing settings on.

    Images are 8-bit RGB PNGs (``<index:06d>.png``); labels are 8-bit PNGs of class ids with every pixel's
    true class (train labels included: the folder dataset drops unseen pixels when training).

    Returns:
        The output folder.

    Raises:
        ValueError: from ``check_export_dir``.
    """
    from PIL import Image

    out = Path(out)
    check_export_dir(out, overwrite)
    if out.is_dir() and any(out.iterdir()):
        _empty_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(world.class_names) + "\n", encoding="utf-8")
    (out / "seen.txt").write_text("\n".join(world.seen_classes) + "\n", encoding="utf-8")
    for split, count in (("train", train_images), ("val", val_images), ("test", test_images)):
        if not count:
            continue
        for sub in ("images", "labels"):
            (out / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, labels = world.sample(split, i)
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(out / split / "images" / f"{i:06d}.png")
            Image.fromarray(labels.astype(np.uint8), mode="L").save(out / split / "labels" / f"{i:06d}.png")
    logger.info("wrote world (seed %d, split seed %d) to %s", world.config.seed, world.config.split_seed, out)
    return out


def world_train_config(world: Any, clip_pretrained: str | os.PathLike | None, **changes: Any) -> TrainConfig:
    """The training settings of the attribute-world ablation (before a variant is applied).

    The ``tiny`` preset on the world's mini-CLIP with a decoder twice as wide (``decoder_dim=64``: the
    preset's 32 learns the seen patterns poorly: world 0, seed 0, 1500 steps, baseline hIoU 22.5 at width
    32, 45.4 at 64, 51.2 at 128, which trains 1.8x slower in the full model), trained on the world's seen
    classes: 1500 AdamW steps, batch 8, lr 1e-3 (poly), no rescaling (the patterns' period is part of what
    CLIP learned), flips on (every pattern is a pattern of the same class when mirrored), 10 background
    prototypes, and negative
    proposals from the top-1 (not 5) by loss: the paper's K = 5 is 5 % of 100 queries, and 5 of the tiny
    preset's 8 queries made most proposals negatives (world 0, seed 0, 1500 steps: full hIoU 25.2 with
    K = 5, 33.5 with K = 1). No progress bar (``progress=False``): its runs are logged to files.

    Args:
        world: a zero-shot world (``AttributeWorld``, or ``object_world.make_world``'s): its ``seen_classes``
            are recorded.
        clip_pretrained: the world's mini-CLIP file (``alignzeg.train.miniclip.save_clip``); ``None`` keeps
            a random CLIP (tests).
        changes: ``TrainConfig`` fields to change.
    """
    clip = os.fspath(clip_pretrained) if clip_pretrained is not None else None
    base = dict(preset="tiny", clip_pretrained=clip, dataset="folder",
                seen_classes=tuple(world.seen_classes), iterations=1500, batch_size=8, lr=1e-3,
                crop_scale=(1.0, 1.0), flip=True, checkpoint_every=0, log_every=100, negative_topk=1,
                progress=False,  # runs of this config go to log files: the loss is logged every log_every steps
                model_overrides=dict(num_bg_prototypes=10, decoder_dim=WORLD_DECODER_DIM))
    return TrainConfig(**{**base, **changes})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alignzeg.train.world",
                                     description="The attribute zero-shot world: export it, pre-train its mini-CLIP.")
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="write a world as a folder dataset (+ its mini-CLIP and a train config)")
    exp.add_argument("--world", type=int, default=0, help="world id (seed and split seed; default 0)")
    exp.add_argument("--family", default="attribute", choices=("attribute", "objects"),
                     help="attribute textures (alignzeg.demo.world; the default) or objects on a background that is "
                     "no class (alignzeg.train.object_world; background labelled 255)")
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
    from ..clip_weights import PACKAGE_PREFIX, load_clip_weights
    from ..errors import WeightsError
    from ..presets import get_preset_config

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
    """``python -m alignzeg.train.world export --world 0 --out data/world0``."""
    from ..cli import CLI_ERRORS, error_line

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
        print(error_line("python -m alignzeg.train.world", err), file=sys.stderr)
        return 2


def _export(args: Any, clip_source: str | None) -> int:
    """``export``'s work once its options are checked: the data, the mini-CLIP, the train config."""
    from .object_world import make_world

    world = make_world(args.family, args.world)
    out = export_world(world, args.out, args.train_images, args.test_images, args.val_images,
                       overwrite=args.overwrite).resolve()
    if args.clip_steps == 0:
        print(f"wrote the data of {out} only: --clip-steps 0 makes no mini-CLIP and so no train_config.json; "
              "reuse one with --clip FILE (e.g. --clip alignzeg:demo/assets/clip.safetensors) to get a config")
        return 0
    if clip_source is None:
        from .miniclip import MiniClipConfig, pretrain_clip, save_clip

        clip = pretrain_clip(world, MiniClipConfig(steps=args.clip_steps or 600, seed=args.world))
        clip_source = str(save_clip(clip, out / "clip.safetensors"))
    world_train_config(world, clip_source).to_json(out / "train_config.json")
    print(f"wrote {out}: train with\n  alignzeg-train --config {out / 'train_config.json'} --variant full "
          f"--dataset folder --data-root {out} --out runs/world{args.world}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
