"""Train the world model from scratch: mini-CLIP pre-training, then AlignZeg on the seen classes, then zero-shot.

    python examples/train_world.py --out runs/world0                      # the shipped model's budget (its
                                                                          # recipe now warms up and clips)
    python examples/train_world.py --out /tmp/w --clip-steps 50 --iterations 50 --test-images 20   # a smoke run
    python examples/train_world.py --out runs/world0 --package   # also replace the model the package ships

1. A mini-CLIP (the ``tiny`` preset's image and text towers, open_clip's tokenizer) is pre-trained
   contrastively on captioned images of ALL 48 classes of the world, seen and unseen (no masks).
2. AlignZeg (the ``full`` variant) is trained on the seen classes only, the mini-CLIP frozen; the class
   names go through templates -> tokenizer -> text tower, as they do for any user.
3. The post-processing settings (PBC's threshold or soft mode and seen-score offset, the CLIP readout's
   ensemble weights) are chosen inductively, as a user with new class names can: a calibration model is
   trained the same way with 20 % of the seen classes held out (their pixels ignored), the settings with the
   best hIoU of those validation classes against the other seen classes on the world's val images (every
   other class's pixels ignored) are chosen on the benchmark's grid and saved with the model trained on all
   seen classes (``calibrate_inductive``; the benchmark's calibration models use training seed 100).
4. The model is evaluated on test images holding seen and unseen classes, and segments one image from
   class names typed as text.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from alignzeg import AlignZegSegmenter
from alignzeg.worlds.attributes import AttributeWorld, world_config
from alignzeg.train import Trainer, evaluate
from alignzeg.train.evaluation.calibrate import apply_calibration, calibrate_inductive, pick_validation_classes
from alignzeg.train.evaluation.calibration_grid import WORLD_CALIB_OFFSETS, WORLD_CALIB_PBC, WORLD_CALIB_READOUT
from alignzeg.worlds.miniclip import MiniClipConfig, pretrain_clip, save_clip, zero_shot_accuracy
from alignzeg.train.training.registry import apply_variant
from alignzeg.train.training.world_recipe import world_train_config
from alignzeg.worlds.export import WorldDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (clip.safetensors, model/)")
    parser.add_argument("--world", type=int, default=0)
    parser.add_argument("--clip-steps", type=int, default=600, help="mini-CLIP pre-training steps (batch 96)")
    parser.add_argument("--iterations", type=int, default=1500, help="AlignZeg training steps (batch 8)")
    parser.add_argument("--variant", default="full", help="ablation row (alignzeg-train --list-variants)")
    parser.add_argument("--val-images", type=int, default=500, help="val images to calibrate on")
    parser.add_argument("--calibration-seed", type=int, default=100,
                        help="training seed of the calibration model (the benchmark's: 100)")
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--clip", type=Path, default=None, help="use this mini-CLIP file instead of pre-training")
    parser.add_argument("--overwrite", action="store_true",
                        help="train afresh into an --out that holds an earlier run (its model/ is replaced)")
    parser.add_argument("--package", action="store_true",
                        help="write the mini-CLIP and the slim model into alignzeg/demo/assets (the demo's model)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    world = AttributeWorld(world_config(args.world))
    print(f"world {args.world}: {len(world.seen_classes)} seen classes, unseen: {', '.join(world.unseen_classes)}")

    if args.clip is None:
        clip = pretrain_clip(world, MiniClipConfig(steps=args.clip_steps, seed=args.world, progress=True))
        clip_path = save_clip(clip, args.out / "clip.safetensors")
    else:
        clip_path = args.clip
    # Measured on the saved (float16) file's values: what the segmenter is trained on.
    clip = AlignZegSegmenter.from_preset("tiny", clip_pretrained=clip_path).model.backbone.clip
    accuracy = zero_shot_accuracy(clip, world, 960)
    print(f"mini-CLIP zero-shot top-1 over all 48 classes: {100 * accuracy['all']:.1f} % "
          f"(unseen-class images {100 * accuracy['unseen']:.1f} %)")

    config = apply_variant(world_train_config(world, clip_path, iterations=args.iterations), args.variant)
    segmenter = Trainer(config, None, WorldDataset(world, "train", 4000), out_dir=args.out / "model",
                        overwrite=args.overwrite).train()

    held_out = pick_validation_classes(world.seen_classes, round(0.2 * len(world.seen_classes)), args.world)
    calibration = Trainer(config.replace(validation_classes=held_out, seed=args.calibration_seed), None,
                          WorldDataset(world, "train", 4000), out_dir=args.out / "calibration_model",
                          overwrite=args.overwrite).train()
    grid = dict(thresholds=WORLD_CALIB_PBC if segmenter.config.indicator_trained else None,
                offsets=WORLD_CALIB_OFFSETS, readout_weights=WORLD_CALIB_READOUT if segmenter.config.clip_readout
                else None)
    chosen = calibrate_inductive(calibration, WorldDataset(world, "val", args.val_images), **grid)
    apply_calibration(segmenter, chosen)
    segmenter.save_pretrained(args.out / "model")
    print(f"calibrated on {args.val_images} val images, validation classes {list(held_out)}: {chosen.describe()}")
    result = evaluate(segmenter, WorldDataset(world, "test", args.test_images))
    print(result.table())
    if args.package:
        package(segmenter, clip_path, {"hIoU": 100 * result.hiou, "mIoU_seen": 100 * result.miou_seen,
                                       "mIoU_unseen": 100 * result.miou_unseen})

    image, labels = world.sample("test", 0)
    present = [world.class_names[c] for c in sorted(set(labels.ravel().tolist()))]
    vocabulary = present + [n for n in ("red striped", "blue dotted") if n not in present]  # + 2 absent names
    seg = AlignZegSegmenter.from_pretrained(args.out / "model").segment(image, vocabulary)
    print("typed vocabulary:", vocabulary, "->", seg.pixel_counts())


def package(segmenter: AlignZegSegmenter, clip_path: Path, metrics: dict) -> None:
    """Ship the model: its mini-CLIP file and a slim checkpoint that names it by its place in the package."""
    import shutil

    from alignzeg.demo import CLIP_SOURCE, model_path

    assets = model_path().parent
    assets.mkdir(parents=True, exist_ok=True)
    if Path(clip_path).resolve() != (assets / "clip.safetensors").resolve():
        shutil.copyfile(clip_path, assets / "clip.safetensors")
    model = segmenter.model
    model.config = model.config.replace(clip_pretrained=CLIP_SOURCE)
    segmenter.save_pretrained(assets / "model", include_clip=False, recipe="examples/train_world.py (full, world 0)",
                              metrics={k: round(v, 2) for k, v in metrics.items()})
    print(f"packaged into {assets}")


if __name__ == "__main__":
    main()
