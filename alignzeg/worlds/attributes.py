"""A zero-shot world of attribute classes: "red striped", "blue dotted", ... rendered from their words.

Zero-shot segmentation rests on a CLIP that saw *every* class in image-text pre-training, while the
segmentation training withholds the masks of some. This world reproduces that: its classes are
compositions of a colour word and a pattern word (8 x 6 = 48 classes), every class is rendered from its
two attributes, a mini-CLIP is pre-trained on captions of all 48 (``alignzeg.worlds.miniclip``), and the
unseen classes are held-out *combinations* whose words all occur in seen classes ("red dotted" is unseen
while "red striped" and "blue dotted" are seen).

- **Textures.** A class's colour word fixes an RGB colour; its pattern word a binary pattern (plain,
  striped, checkered, dotted, grid, wavy) with period ~8 px; pattern pixels are the colour darkened by a
  contrast in [0.45, 0.65]. Every instance jitters the colour, period, angle, phase and contrast, and
  pixel noise is added.
- **Segmentation images.** 2-5 Voronoi cells of different classes; the label map is the cell
  assignment of each pixel centre, exactly the masks the cells were painted through. Train images hold
  seen classes, and with ``train_unseen_prob`` some unseen cells whose pixels are labelled ``IGNORE``
  (the inductive setting: present, never supervised). Test images mix seen and unseen classes; ``val``
  images are drawn like test images from their own stream (for choosing PBC's threshold and offset,
  never on the test images).
- **Worlds.** ``world_config(k)`` is world ``k``: its seed draws the images and its split seed the held-out
  combinations (``num_unseen`` classes, at most one per colour word and two per pattern word).

Every image is a pure function of ``(seed, split, index)``; nothing touches the global RNGs. This module
needs numpy only (the demo renders its image with it); the training side (a torch dataset, the export to
disk, the mini-CLIP) is beside it in ``alignzeg.worlds.export`` and ``alignzeg.worlds.miniclip``.

    world = AttributeWorld(world_config(0))
    world.class_names[:2]                    # ('red plain', 'red striped')
    image, labels = world.sample("test", 7)  # (64, 64, 3) float32 in [0, 1], (64, 64) int64 class ids
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from ..config import check_field_types

__all__ = ["COLOURS", "PATTERNS", "IGNORE", "SPLIT_NAMES", "WorldConfig", "ClassSplit", "World", "AttributeWorld",
           "world_config", "pattern_mask", "voronoi_labels", "keyed_rng"]

IGNORE = 255
"""Label of pixels that carry no supervision (unseen-class cells in train images)."""

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.12), "orange": (0.95, 0.55, 0.08), "yellow": (0.92, 0.88, 0.15),
    "green": (0.15, 0.68, 0.2), "cyan": (0.12, 0.78, 0.85), "blue": (0.15, 0.25, 0.9),
    "purple": (0.55, 0.18, 0.72), "pink": (0.98, 0.6, 0.78),
}
"""Colour words and their RGB in [0, 1]."""

PATTERNS = ("plain", "striped", "checkered", "dotted", "grid", "wavy")
"""Pattern words (see ``pattern_mask``)."""

SPLIT_NAMES = ("train", "val", "test")
"""The splits every world draws images of (``val`` is drawn like ``test``, from its own stream)."""


@dataclass(frozen=True)
class WorldConfig:
    """Settings of one attribute world.

    Attributes:
        seed: draws every image (and nothing else).
        split_seed: draws which combinations are unseen.
        num_unseen: held-out classes (at most one per colour word and two per pattern word).
        image_size: side of the square images in pixels (the tiny preset's 64).
        min_regions / max_regions: Voronoi cells per segmentation image, each a different class.
        min_unseen_test: at least this many cells of a test image are unseen classes (at most half of
            the cells, rounded down, or this many).
        train_unseen_prob: probability that a train-image cell is an unseen class (labelled ``IGNORE``).
        period: mean pattern period in pixels.
        pixel_noise: std of the i.i.d. Gaussian pixel noise.
    """

    seed: int = 0
    split_seed: int = 0
    num_unseen: int = 8
    image_size: int = 64
    min_regions: int = 2
    max_regions: int = 5
    min_unseen_test: int = 1
    train_unseen_prob: float = 0.1
    period: float = 8.0
    pixel_noise: float = 0.03

    def __post_init__(self) -> None:
        check_field_types(self, "world config")  # types from the annotations, as every config of the package
        if not 1 <= self.num_unseen <= min(len(COLOURS), 2 * len(PATTERNS)):
            raise ValueError(f"num_unseen must be in [1, {min(len(COLOURS), 2 * len(PATTERNS))}], got {self.num_unseen}")
        if not 1 <= self.min_regions <= self.max_regions <= 8:
            raise ValueError(f"need 1 <= min_regions <= max_regions <= 8, got {self.min_regions}, {self.max_regions}")
        if not 0 <= self.min_unseen_test <= min(self.min_regions, self.num_unseen):
            raise ValueError(f"min_unseen_test {self.min_unseen_test} must be in [0, min(min_regions, num_unseen)]")
        if not 0.0 <= self.train_unseen_prob <= 1.0:
            raise ValueError(f"train_unseen_prob must be in [0, 1], got {self.train_unseen_prob}")
        if self.image_size < 16 or not 3.0 <= self.period <= self.image_size / 2:
            raise ValueError(f"need image_size >= 16 and period in [3, image_size / 2], got {self.image_size}, "
                             f"{self.period}")


def world_config(world: int, **changes) -> WorldConfig:
    """World ``world``: images drawn with seed ``world`` and unseen combinations with split seed ``world``."""
    if not isinstance(world, (int, np.integer)) or isinstance(world, bool) or world < 0:
        raise ValueError(f"world must be a non-negative integer, got {world!r}")
    return WorldConfig(**{"seed": int(world), "split_seed": int(world), **changes})


def keyed_rng(*keys: int | str) -> np.random.Generator:
    """A generator keyed by a tuple (strings hashed with crc32), independent of every global RNG."""
    entropy = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def pattern_mask(pattern: str, x: np.ndarray, y: np.ndarray, period: float, angle: float,
                 phase: tuple[float, float]) -> np.ndarray:
    """Where a pattern is drawn: float64 array of 0/1 at pixel-centre coordinates (x, y).

    Args:
        pattern: one of ``PATTERNS``. plain: nothing; striped: bands half a period wide; checkered:
            squares of half a period; dotted: discs of radius 0.3 periods on a square lattice; grid:
            lines a quarter period wide in both directions; wavy: stripes displaced by a sine along them.
        x, y: pixel coordinates of the same shape.
        period: pattern period in pixels.
        angle: rotation of the pattern in radians.
        phase: (u, v) offsets in pixels.
    """
    u = x * np.cos(angle) + y * np.sin(angle) + phase[0]
    v = -x * np.sin(angle) + y * np.cos(angle) + phase[1]
    fu, fv = np.mod(u / period, 1.0), np.mod(v / period, 1.0)
    if pattern == "plain":
        mask = np.zeros_like(u, dtype=bool)
    elif pattern == "striped":
        mask = fu < 0.5
    elif pattern == "checkered":
        mask = (np.floor(2 * u / period) + np.floor(2 * v / period)) % 2 == 0
    elif pattern == "dotted":
        mask = (fu - 0.5) ** 2 + (fv - 0.5) ** 2 < 0.3 ** 2
    elif pattern == "grid":
        mask = (fu < 0.25) | (fv < 0.25)
    elif pattern == "wavy":
        mask = np.mod((u + 0.3 * period * np.sin(np.pi * v / period)) / period, 1.0) < 0.5
    else:
        raise ValueError(f"unknown pattern {pattern!r}; patterns are {PATTERNS}")
    return mask.astype(np.float64)


def voronoi_labels(points: np.ndarray, size: int) -> np.ndarray:
    """(size, size) int64: index of the nearest point (pixel centres, ties to the lower index).

    Args:
        points: (K, 2) float (x, y) in pixel units, origin at the top-left corner of pixel (0, 0).
        size: image side in pixels.
    """
    centres = np.arange(size) + 0.5
    dx = centres[None, None, :] - points[:, 0, None, None]
    dy = centres[None, :, None] - points[:, 1, None, None]
    return np.argmin(dx * dx + dy * dy, axis=0)


def _pick_unseen(split_seed: int, num_unseen: int) -> np.ndarray:
    """Unseen class ids: distinct colours, each pattern at most twice, so every word stays in seen classes."""
    rng = keyed_rng(split_seed, "split")
    colours = rng.permutation(len(COLOURS))[:num_unseen]
    patterns = np.concatenate([rng.permutation(len(PATTERNS)), rng.permutation(len(PATTERNS))])[:num_unseen]
    return np.sort(colours * len(PATTERNS) + patterns)


def pick_classes(rng: np.random.Generator, split: str, count: int, seen_ids: np.ndarray, unseen_ids: np.ndarray,
                 train_unseen_prob: float, min_unseen_test: int) -> np.ndarray:
    """The ``count`` distinct classes of one image, in random order: (count,) int64 class ids.

    Train images draw each class as unseen with probability ``train_unseen_prob``; val and test images hold
    between ``min_unseen_test`` and half of ``count`` (at least ``min_unseen_test``) unseen classes.
    """
    if split == "train":
        num_unseen = int(rng.binomial(count, train_unseen_prob)) if train_unseen_prob else 0
    else:  # val and test: the same mix
        high = min(max(min_unseen_test, count // 2), len(unseen_ids))
        num_unseen = int(rng.integers(min_unseen_test, high + 1))
    num_unseen = min(num_unseen, len(unseen_ids))
    unseen = rng.choice(unseen_ids, num_unseen, replace=False)
    seen = rng.choice(seen_ids, count - num_unseen, replace=False)
    return rng.permutation(np.concatenate([seen, unseen])).astype(np.int64)


class ClassSplit:
    """The seen/unseen views of a world's classes, from its ``class_names`` (K names) and ``seen`` ((K,) bool),
    and the classes of one image (``pick_classes`` with the world's ``config.train_unseen_prob`` and
    ``config.min_unseen_test``)."""

    class_names: tuple[str, ...]
    seen: np.ndarray
    config: Any  # the world's config: a WorldConfig, or a subclass's own (train_unseen_prob, min_unseen_test)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def seen_ids(self) -> np.ndarray:
        return np.flatnonzero(self.seen)

    @property
    def unseen_ids(self) -> np.ndarray:
        return np.flatnonzero(~self.seen)

    @property
    def seen_classes(self) -> tuple[str, ...]:
        return tuple(n for n, s in zip(self.class_names, self.seen) if s)

    @property
    def unseen_classes(self) -> tuple[str, ...]:
        return tuple(n for n, s in zip(self.class_names, self.seen) if not s)

    def _pick_classes(self, rng: np.random.Generator, split: str, count: int) -> np.ndarray:
        return pick_classes(rng, split, count, self.seen_ids, self.unseen_ids, self.config.train_unseen_prob,
                            self.config.min_unseen_test)


class World(Protocol):
    """What the training side (``alignzeg.worlds.export``, ``alignzeg.worlds.miniclip``) reads of a zero-shot
    world: ``AttributeWorld`` and ``alignzeg.worlds.objects.ObjectWorld`` both are one."""

    @property
    def class_names(self) -> tuple[str, ...]: ...

    @property
    def seen(self) -> np.ndarray: ...  # (K,) bool

    @property
    def config(self) -> Any: ...  # the world's config (image_size, seed, split_seed, ...)

    @property
    def num_classes(self) -> int: ...

    @property
    def seen_classes(self) -> tuple[str, ...]: ...

    def render(self, rng: np.random.Generator, classes: Sequence[int] | np.ndarray, cells: np.ndarray
               ) -> np.ndarray: ...

    def closeup(self, rng: np.random.Generator, class_id: int) -> np.ndarray: ...

    def sample(self, split: str, index: int) -> tuple[np.ndarray, np.ndarray]: ...

    def train_labels(self, labels: np.ndarray) -> np.ndarray: ...


class AttributeWorld(ClassSplit):
    """The 48 attribute classes, one seen/unseen split and a deterministic image sampler.

    Args:
        config: world settings.

    Attributes:
        class_names: ``("red plain", "red striped", ...)``: colour-major, 48 names.
        attributes: (C, 2) int64, the colour and pattern index of each class.
        seen: (C,) bool, True for seen (training) classes.
    """

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        colours = list(COLOURS)
        self.attributes = np.array([(c, p) for c in range(len(colours)) for p in range(len(PATTERNS))], dtype=np.int64)
        self.class_names = tuple(f"{colours[c]} {PATTERNS[p]}" for c, p in self.attributes)
        self.seen = np.ones(len(self.class_names), dtype=bool)
        self.seen[_pick_unseen(self.config.split_seed, self.config.num_unseen)] = False


    def paint(self, rng: np.random.Generator, class_id: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """One jittered instance of class ``class_id`` at pixel centres (x, y): (..., 3) float64, unclipped."""
        colour_id, pattern_id = self.attributes[class_id]
        colour = np.asarray(COLOURS[list(COLOURS)[colour_id]]) + rng.normal(0, 0.04, 3)
        period = self.config.period * float(np.exp(rng.normal(0, 0.12)))
        angle = float(rng.normal(0, 0.15))
        phase = (float(rng.uniform(0, period)), float(rng.uniform(0, period)))
        contrast = float(rng.uniform(0.45, 0.65))
        mask = pattern_mask(PATTERNS[pattern_id], x, y, period, angle, phase)
        return colour * (1.0 - contrast * mask[..., None])

    def render(self, rng: np.random.Generator, classes: Sequence[int] | np.ndarray, cells: np.ndarray) -> np.ndarray:
        """Paint cell k of ``cells`` ((S, S) int64) with ``classes[k]``; noise added, clipped: (S, S, 3) float32."""
        image = np.zeros(cells.shape + (3,))
        for k, class_id in enumerate(classes):
            ys, xs = np.nonzero(cells == k)
            image[ys, xs] = self.paint(rng, int(class_id), xs + 0.5, ys + 0.5)
        image += rng.normal(0, self.config.pixel_noise, image.shape)
        return np.clip(image, 0, 1).astype(np.float32)

    def closeup(self, rng: np.random.Generator, class_id: int) -> np.ndarray:
        """Class ``class_id``'s texture filling the frame: ``render`` of one class, (S, S, 3) float32."""
        return self.render(rng, [int(class_id)], np.zeros((self.config.image_size,) * 2, dtype=np.int64))

    def sample(self, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Segmentation image ``index`` of ``split``, the same on every call.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"`` (val is drawn like test, from its own stream).
            index: non-negative image index.

        Returns:
            image (S, S, 3) float32 RGB in [0, 1] and labels (S, S) int64: the class id of every pixel
            (unseen cells of train images included; ``train_labels`` hides them).
        """
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or index < 0:
            raise ValueError(f"index must be a non-negative integer, got {index!r}")
        cfg = self.config
        rng = keyed_rng(cfg.seed, split, int(index))
        count = int(rng.integers(cfg.min_regions, cfg.max_regions + 1))
        classes = self._pick_classes(rng, split, count)
        cells = voronoi_labels(rng.uniform(0, cfg.image_size, (count, 2)), cfg.image_size)
        return self.render(rng, classes, cells), classes[cells]

    def train_labels(self, labels: np.ndarray) -> np.ndarray:
        """Training targets: unseen-class pixels become ``IGNORE``. (H, W) int64 -> (H, W) int64."""
        return np.where(self.seen[labels], labels, IGNORE)
