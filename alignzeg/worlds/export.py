"""A zero-shot world as training data: a torch dataset of its images and its export to a folder dataset.

The worlds themselves are ``alignzeg.worlds.attributes`` (the attribute world, also the demo's) and
``alignzeg.worlds.objects``; their mini-CLIP is ``alignzeg.worlds.miniclip``.

    world = AttributeWorld(world_config(0))
    train = WorldDataset(world, "train", 2000)   # protocol dataset: class names, no class embeddings
    export_world(world, "data/world0", train_images=4000, test_images=200, val_images=100)

``export_world`` writes the folder-dataset layout (``classes.txt``, ``seen.txt``,
``{train,val,test}/{images,labels}``) into a new or empty folder (``overwrite=True`` replaces an earlier
export). The command that also pre-trains the world's mini-CLIP and writes a ``train_config.json`` for
``alignzeg-train`` is ``python -m alignzeg.train.training.world_recipe export --world 0 --out data/world0``
(``alignzeg.train.training.world_recipe``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .attributes import SPLIT_NAMES, World

__all__ = ["WorldDataset", "check_export_dir", "export_world"]

logger = logging.getLogger(__name__)

class WorldDataset(Dataset):
    """Images of one split as tensors; train labels have unseen pixels set to ``IGNORE``.

    Follows the dataset protocol of ``alignzeg.train.datasets``: items ``image`` (3, S, S) float32 in [0, 1]
    and ``label`` (S, S) int64; ``class_names`` and ``seen_classes`` describe the classes. There are no
    ``class_embeddings``: the trainer and ``evaluate`` encode the names with the model's text tower.

    Args:
        world: the world to draw from.
        split: ``"train"``, ``"val"`` (drawn like test: for calibration) or ``"test"``.
        size: number of images (indices ``0 .. size - 1``).
    """

    def __init__(self, world: World, split: str, size: int) -> None:
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
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


def export_world(world: World, out: str | Path, train_images: int, test_images: int,
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
