"""Loaders for the zero-shot benchmarks in their usual on-disk layouts, and a generic folder loader.

Every loader follows the protocol of ``alignzeg.train.datasets``: items ``{"image": (H, W, 3) uint8,
"label": (H, W) int64}`` with label values indexing ``class_names`` and 255 = ignore, plus
``class_names`` and ``seen_classes`` (the standard split of ``splits.py`` unless told otherwise).
With ``ignore_unseen=True`` (the default for training splits: the inductive setting) pixels of unseen
classes become 255 as well.

Layouts (``root`` is the folder named first):

- PASCAL VOC 2012: ``VOC2012/{JPEGImages/<id>.jpg, SegmentationClass/<id>.png,
  ImageSets/Segmentation/<split>.txt}`` (``root`` may also be ``VOCdevkit`` holding ``VOC2012``).
  Label 0 (background) is ignored, 1..20 -> 0..19, 255 stays.
  The augmented training set (10,582 images: VOC ``train`` + SBD, minus VOC ``val``) with
  ``label_dir="SegmentationClassAug"`` (or ``"auto"``: the augmented set when that folder exists) and a
  ``train`` split, in either of the two common layouts (see ``voc_augmented_pairs``).
- PASCAL Context (59): ``VOC2010/{JPEGImages, SegmentationClassContext, ImageSets/SegmentationContext/
  <split>.txt}`` (the mmsegmentation conversion). Label 0 is ignored, 1..59 -> 0..58.
- COCO-Stuff 164k: ``coco_stuff164k/{images/<split>2017/*.jpg, annotations/<split>2017/*.png}`` with
  either ``<stem>_labelTrainIds.png`` (0..170, the mmsegmentation conversion) or the raw
  ``stuffthingmaps`` ``<stem>.png`` (COCO id - 1, remapped to 0..170).
- Folder: ``root/{images/*.jpg|png, labels/<stem>.png, classes.txt}``; ``classes.txt`` holds one class
  name per line and label value k means line k. With split subfolders, ``root/<split>/{images, labels}``
  and one ``classes.txt`` at the top. An optional ``seen.txt`` at the top lists the seen classes.

A split that is asked for by name must exist: a folder without a ``<split>/`` subfolder is an error naming
the layout, never a silent fall-back to ``root/images`` (two splits read from one folder would be the same
images). ``build_dataset(split=None)`` picks the dataset's default (see there).
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .augmentation import IGNORE_INDEX
from .splits import COCO_STUFF_RAW_IDS, SPLITS

logger = logging.getLogger(__name__)

__all__ = ["LabelledImageDataset", "voc_dataset", "context_dataset", "coco_stuff_dataset", "folder_dataset",
           "build_dataset", "default_split", "DATASETS", "voc_augmented_pairs", "VOC_AUG_DIR", "check_label_files"]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class LabelledImageDataset(Dataset):
    """Image/label file pairs with a label lookup table.

    Args:
        images: image paths.
        labels: label PNG paths, one per image.
        class_names: the K class names.
        seen_classes: the seen subset of ``class_names``.
        lut: (256,) int64 array mapping stored label values to class indices (255 = ignore).
        ignore_unseen: map pixels of unseen classes to 255 (inductive training).
    """

    def __init__(self, images: Sequence[Path], labels: Sequence[Path], class_names: Sequence[str],
                 seen_classes: Sequence[str], lut: np.ndarray, ignore_unseen: bool = False) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} label files")
        self.images, self.labels = list(images), list(labels)
        self.class_names = tuple(class_names)
        unknown = [s for s in seen_classes if s not in self.class_names]
        if unknown:
            raise ValueError(f"seen classes {unknown} are not among the classes {list(self.class_names)}")
        self.seen_classes = tuple(c for c in self.class_names if c in set(seen_classes))
        self.ignore_unseen = ignore_unseen
        self.lut = np.asarray(lut, dtype=np.int64).copy()
        if ignore_unseen:
            unseen = [k for k, n in enumerate(self.class_names) if n not in set(self.seen_classes)]
            self.lut[np.isin(self.lut, unseen)] = IGNORE_INDEX

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        with Image.open(self.images[index]) as img:
            image = np.asarray(img.convert("RGB"), dtype=np.uint8)
        with Image.open(self.labels[index]) as lab:
            if lab.mode not in ("P", "L", "I", "I;16"):
                raise ValueError(f"label {self.labels[index]} has mode {lab.mode}; expected a single-channel PNG")
            raw = np.asarray(lab)
        if raw.shape != image.shape[:2]:
            raise ValueError(f"label {self.labels[index]} is {raw.shape}, its image {self.images[index]} is "
                             f"{image.shape[:2]}")
        if raw.max(initial=0) > 255 or raw.min(initial=0) < 0:
            raise ValueError(f"label {self.labels[index]} has values outside [0, 255]")
        return {"image": image, "label": self.lut[raw.astype(np.int64)], "name": self.images[index].stem}


def _require_dir(path: Path, what: str, layout: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder {str(path)!r} does not exist; expected layout: {layout}")
    return path


def _pairs_from_ids(ids: Sequence[str], image_dir: Path, label_dir: Path, image_suffix: str,
                    label_name: str = "{}.png") -> tuple[list[Path], list[Path]]:
    images = [image_dir / f"{i}{image_suffix}" for i in ids]
    labels = [label_dir / label_name.format(i) for i in ids]
    missing = [str(p) for p in images + labels if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} listed files are missing, e.g. {missing[:3]}")
    return images, labels


def _read_ids(path: Path, layout: str) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"split list {str(path)!r} does not exist; expected layout: {layout}")
    ids = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"split list {path} is empty")
    return ids


def _reduce_zero_lut(num_classes: int) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lut[1:num_classes + 1] = np.arange(num_classes)
    return lut


def _voc_like(root: Path, sub: str, label_dir: str, list_dir: str, split: str, name: str,
              seen_classes: Sequence[str] | None, ignore_unseen: bool | None) -> LabelledImageDataset:
    layout = f"{sub}/JPEGImages/<id>.jpg, {sub}/{label_dir}/<id>.png, {sub}/ImageSets/{list_dir}/<split>.txt"
    root = Path(root)
    _require_dir(root, "dataset root", layout)
    base = root / sub if (root / sub).is_dir() else root
    image_dir = _require_dir(base / "JPEGImages", "image", layout)
    labels = _require_dir(base / label_dir, "label", layout)
    ids = _read_ids(base / "ImageSets" / list_dir / f"{split}.txt", layout)
    images, label_paths = _pairs_from_ids(ids, image_dir, labels, ".jpg")
    spec = SPLITS[name]
    seen = spec.seen if seen_classes is None else tuple(seen_classes)
    return LabelledImageDataset(images, label_paths, spec.classes, seen, _reduce_zero_lut(len(spec.classes)),
                                split.startswith("train") if ignore_unseen is None else ignore_unseen)


VOC_AUG_DIR = "SegmentationClassAug"
_VOC_AUG_LISTS = ("trainaug.txt", "train_aug.txt")


def voc_augmented_pairs(base: Path) -> tuple[list[Path], list[Path]]:
    """Image and label paths of VOC's augmented training set under ``base`` (the ``VOC2012`` folder).

    Two layouts are read (checked in this order):

    - mmsegmentation / ZegCLIP (``tools/convert_datasets/voc_aug.py``): ``ImageSets/Segmentation/aug.txt``
      lists the SBD images that are neither in VOC ``train`` nor ``val`` (9,118), labelled in
      ``SegmentationClassAug/``; they are joined with ``train.txt`` labelled in ``SegmentationClass/``
      (1,464), which is what ZegCLIP's ``ann_dir=['SegmentationClass', 'SegmentationClassAug']`` does.
    - DeepLab: ``ImageSets/Segmentation/trainaug.txt`` or ``train_aug.txt`` lists all 10,582 ids, every
      label in ``SegmentationClassAug/``.

    Raises:
        FileNotFoundError: no list of either layout, or listed files missing.
        ValueError: an id is also in ``val.txt`` (the evaluation split must stay out of training).
    """
    lists = base / "ImageSets" / "Segmentation"
    layout = (f"VOC2012/{VOC_AUG_DIR}/<id>.png with ImageSets/Segmentation/aug.txt + train.txt (mmseg) "
              f"or ImageSets/Segmentation/trainaug.txt|train_aug.txt (DeepLab)")
    image_dir = _require_dir(base / "JPEGImages", "image", layout)
    aug_dir = _require_dir(base / VOC_AUG_DIR, "label", layout)
    if (lists / "aug.txt").is_file():
        train_ids = _read_ids(lists / "train.txt", layout)
        aug_ids = _read_ids(lists / "aug.txt", layout)
        images, labels = _pairs_from_ids(train_ids, image_dir, _require_dir(base / "SegmentationClass", "label",
                                                                             layout), ".jpg")
        in_train = set(train_ids)
        more_images, more_labels = _pairs_from_ids([i for i in aug_ids if i not in in_train], image_dir,
                                                   aug_dir, ".jpg")
        images, labels, ids = images + more_images, labels + more_labels, train_ids + aug_ids
    else:
        found = [lists / name for name in _VOC_AUG_LISTS if (lists / name).is_file()]
        if not found:
            raise FileNotFoundError(f"no list of VOC's augmented training set in {lists}; expected layout: {layout}")
        ids = _read_ids(found[0], layout)
        images, labels = _pairs_from_ids(ids, image_dir, aug_dir, ".jpg")
    if (lists / "val.txt").is_file():
        leaked = sorted(set(ids) & set(_read_ids(lists / "val.txt", layout)))
        if leaked:
            raise ValueError(f"{len(leaked)} ids of the augmented training list are in val.txt (the evaluation "
                             f"split), e.g. {leaked[:3]}; remove them from the list")
    logger.info("VOC augmented training set: %d images", len(images))
    return images, labels


def voc_dataset(root: str | os.PathLike, split: str = "train", seen_classes: Sequence[str] | None = None,
                ignore_unseen: bool | None = None, label_dir: str = "SegmentationClass") -> LabelledImageDataset:
    """PASCAL VOC 2012, 20 classes (background ignored); ``ignore_unseen`` defaults to ``split == "train*"``.

    Args:
        label_dir: the label folder. ``"SegmentationClassAug"`` with ``split="train"`` reads the 10,582-image
            augmented set (``voc_augmented_pairs``); ``"auto"`` does that when ``VOC2012/SegmentationClassAug``
            exists and the split is ``train``, else reads ``SegmentationClass``. Other splits read
            ``ImageSets/Segmentation/<split>.txt`` with labels from ``label_dir``.
    """
    root = Path(root)
    base = root / "VOC2012" if (root / "VOC2012").is_dir() else root
    if label_dir == "auto":
        label_dir = VOC_AUG_DIR if split == "train" and (base / VOC_AUG_DIR).is_dir() else "SegmentationClass"
        if split == "train" and label_dir != VOC_AUG_DIR:
            logger.warning("no %s folder in %s: training on VOC's own %s split, not the 10,582-image augmented "
                           "set that the ZegCLIP family trains on", VOC_AUG_DIR, base, split)
    if label_dir != VOC_AUG_DIR or split != "train":
        return _voc_like(root, "VOC2012", label_dir, "Segmentation", split, "voc", seen_classes, ignore_unseen)
    _require_dir(root, "dataset root", f"VOC2012/{VOC_AUG_DIR}")
    images, labels = voc_augmented_pairs(base)
    spec = SPLITS["voc"]
    seen = spec.seen if seen_classes is None else tuple(seen_classes)
    return LabelledImageDataset(images, labels, spec.classes, seen, _reduce_zero_lut(len(spec.classes)),
                                True if ignore_unseen is None else ignore_unseen)


def context_dataset(root: str | os.PathLike, split: str = "train", seen_classes: Sequence[str] | None = None,
                    ignore_unseen: bool | None = None) -> LabelledImageDataset:
    """PASCAL Context, 59 classes (label 0 ignored)."""
    return _voc_like(Path(root), "VOC2010", "SegmentationClassContext", "SegmentationContext", split, "context",
                     seen_classes, ignore_unseen)


def coco_stuff_dataset(root: str | os.PathLike, split: str = "train", seen_classes: Sequence[str] | None = None,
                       ignore_unseen: bool | None = None) -> LabelledImageDataset:
    """COCO-Stuff 164k, 171 classes; ``split`` is ``train`` or ``val`` (the 2017 folders)."""
    layout = "images/<split>2017/*.jpg, annotations/<split>2017/<stem>_labelTrainIds.png (or raw <stem>.png)"
    root = Path(root)
    _require_dir(root, "dataset root", layout)
    folder = split if split.endswith("2017") else f"{split}2017"
    image_dir = _require_dir(root / "images" / folder, "image", layout)
    label_dir = _require_dir(root / "annotations" / folder, "label", layout)
    stems = sorted(p.stem for p in image_dir.glob("*.jpg"))
    if not stems:
        raise FileNotFoundError(f"no .jpg images in {image_dir}; expected layout: {layout}")
    train_ids = (label_dir / f"{stems[0]}_labelTrainIds.png").is_file()
    images, labels = _pairs_from_ids(stems, image_dir, label_dir, ".jpg",
                                     "{}_labelTrainIds.png" if train_ids else "{}.png")
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    if train_ids:
        lut[:171] = np.arange(171)
    else:
        lut[list(COCO_STUFF_RAW_IDS)] = np.arange(171)
    spec = SPLITS["coco-stuff"]
    seen = spec.seen if seen_classes is None else tuple(seen_classes)
    return LabelledImageDataset(images, labels, spec.classes, seen, lut,
                                split.startswith("train") if ignore_unseen is None else ignore_unseen)


def _read_names(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def folder_dataset(root: str | os.PathLike, seen_classes: Sequence[str] | None = None,
                   ignore_unseen: bool = False, images: str = "images", labels: str = "labels",
                   classes_file: str = "classes.txt", split: str | None = None,
                   seen_file: str = "seen.txt") -> LabelledImageDataset:
    """Any folder of images + label PNGs + a class-names file.

    ``split`` reads ``root/<split>/{images, labels}`` (``classes.txt`` and ``seen.txt`` stay at the top);
    without it ``root/{images, labels}``. ``seen_classes`` defaults to the names in ``root/seen.txt`` when
    it exists, else to all classes.

    Every label file is read once here (``check_label_files``), so that a label of the wrong mode or size, or
    with a value that is no class (``K..254`` for K class names), is an error before any step.

    Raises:
        FileNotFoundError: a missing class-names file, image or label folder, or ``split`` given and
            ``root/<split>`` missing (the message names the layout and the splits the folder has).
        ValueError: unusable label files, all named in one message (``check_label_files``).
    """
    layout = (f"[<split>/]{images}/<stem>.jpg|png, [<split>/]{labels}/<stem>.png, {classes_file} (one class "
              f"name per line), optional {seen_file}")
    root = Path(root)
    _require_dir(root, "dataset root", layout)
    names_path = root / classes_file
    if not names_path.is_file():
        raise FileNotFoundError(f"class-names file {str(names_path)!r} does not exist; expected layout: {layout}")
    names = _read_names(names_path)
    if not names or len(names) > 255 or len(set(names)) != len(names):
        raise ValueError(f"{names_path} must list 1..255 distinct class names, got {len(names)} "
                         f"({len(set(names))} distinct)")
    if seen_classes is None and (root / seen_file).is_file():
        seen_classes = _read_names(root / seen_file)
    if split is not None and not (root / split).is_dir():
        raise FileNotFoundError(f"split {split!r} does not exist: no folder {str(root / split)!r} "
                                f"({_splits_found(root, images)}); expected layout: {layout}")
    base = root / split if split is not None else root
    image_dir = _require_dir(base / images, "image", layout)
    label_dir = _require_dir(base / labels, "label", layout)
    image_paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not image_paths:
        raise FileNotFoundError(f"no images in {image_dir}; expected layout: {layout}")
    label_paths = [label_dir / f"{p.stem}.png" for p in image_paths]
    missing = [str(p) for p in label_paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images have no label PNG, e.g. {missing[:3]}")
    check_label_files(image_paths, label_paths, len(names), f"{classes_file} has {len(names)} classes")
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lut[:len(names)] = np.arange(len(names))
    return LabelledImageDataset(image_paths, label_paths, names, names if seen_classes is None else seen_classes,
                                lut, ignore_unseen)


_LABEL_MODES = ("P", "L", "I", "I;16")
_MAX_LISTED = 20


def check_label_files(images: Sequence[Path], labels: Sequence[Path], num_classes: int, source: str) -> None:
    """Read every label file once, before any training or evaluation step, and report all problems at once.

    A label must be a single-channel image (mode P, L, I or I;16) of its image's size whose values are class
    indices ``0..num_classes-1`` or 255 (ignore). A value ``num_classes..254`` would otherwise be read as
    "ignore" without a word (a 1-based labelling, or a ``classes.txt`` that lists too few names).

    Args:
        images, labels: paired image and label paths.
        num_classes: K, the number of class names.
        source: where K comes from, for the message (``"classes.txt has 48 classes"``).

    Raises:
        ValueError: one message naming every bad file (the first 20, and how many more) with its problem.
    """
    problems = [f"{label}: {problem}" for image, label in zip(images, labels)
                if (problem := _label_problem(image, label, num_classes))]
    if problems:
        more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise ValueError(f"{len(problems)} of {len(labels)} label files are unusable (values must be class "
                         f"indices 0..{num_classes - 1}, as {source}, or {IGNORE_INDEX} = ignore): "
                         f"{'; '.join(problems[:_MAX_LISTED])}{more}")


def _label_problem(image: Path, label: Path, num_classes: int) -> str | None:
    """What is wrong with one label file (``None``: nothing)."""
    try:
        with Image.open(image) as img:
            size = img.size
        with Image.open(label) as lab:
            if lab.mode not in _LABEL_MODES:
                return f"mode {lab.mode}, expected a single-channel image ({', '.join(_LABEL_MODES)})"
            if lab.size != size:
                return f"size {lab.size[0]}x{lab.size[1]}, its image {image.name} is {size[0]}x{size[1]}"
            values = np.unique(np.asarray(lab))
    except (OSError, ValueError) as err:  # unreadable or truncated image or label
        return f"cannot be read ({err})"
    bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:5]) + (", ..." if bad.size > 5 else "")
        return f"value{'s' if bad.size > 1 else ''} {shown} (no such class)"
    return None


def _splits_found(root: Path, images: str) -> str:
    """What a folder dataset's root holds: its split subfolders, or the flat layout."""
    splits = sorted(p.name for p in root.iterdir() if (p / images).is_dir())
    if splits:
        return f"its splits are {', '.join(splits)}"
    if (root / images).is_dir():
        return f"it has the flat layout {images}/ without splits: leave the split out"
    return "it has no split subfolders"


def default_split(name: str, root: str | os.PathLike, train: bool) -> str | None:
    """The split ``build_dataset`` reads when none is named.

    ``train`` or ``val`` (by ``train``) for the named benchmarks; for a folder dataset the flat layout
    (``None``) when ``root/images`` exists, else ``root/train`` for training.

    Raises:
        FileNotFoundError: a folder dataset with split subfolders evaluated without a named split.
    """
    if name != "folder":
        return "train" if train else "val"
    root = Path(root)
    if (root / "images").is_dir() or not root.is_dir():
        return None  # the flat layout (or a missing root, reported by the loader)
    if train and (root / "train").is_dir():
        return "train"
    raise FileNotFoundError(f"folder dataset {str(root)!r} has no flat images/ folder; name a split "
                            f"({_splits_found(root, 'images')})")


DATASETS: dict[str, Callable[..., LabelledImageDataset]] = {  # the loaders' options differ
    "voc": voc_dataset, "context": context_dataset, "coco-stuff": coco_stuff_dataset,
    "folder": folder_dataset}


_RESERVED = ("root", "split", "seen_classes", "ignore_unseen")


def build_dataset(name: str, root: str | os.PathLike, split: str | None = None,
                  seen_classes: Sequence[str] | None = None, train: bool = True,
                  **options: Any) -> LabelledImageDataset:
    """A dataset by name (``voc``, ``context``, ``coco-stuff``, ``folder``); ``train`` drops unseen pixels.

    Args:
        split: the split to read; it must exist. ``None``: ``default_split(name, root, train)``.
        options: further keyword arguments of the loader (``voc_dataset(label_dir=...)``,
            ``folder_dataset(images=..., labels=...)``): ``TrainConfig.data`` / ``--set data.KEY=VALUE``.

    Raises:
        ValueError: an unknown dataset name or an option the loader does not take.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    loader = DATASETS[name]
    accepted = [p for p in inspect.signature(loader).parameters if p not in _RESERVED]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"dataset {name!r} takes no option {unknown}; its options are {accepted}")
    if split is None:
        split = default_split(name, root, train)
    if name == "folder":
        return folder_dataset(root, seen_classes=seen_classes, ignore_unseen=train, split=split, **options)
    return loader(root, split=split, seen_classes=seen_classes, ignore_unseen=train, **options)
