"""A zero-shot world of objects on a background that is no class: "red striped", "blue dotted", ... objects.

The attribute world (``alignzeg.worlds.attributes``) tiles every pixel with a class. Photos are different: objects
of a few classes, of varied size, shape and pose, cover part of the picture, hide each other, and the
rest is clutter that belongs to no class. This world has that structure and is a drop-in for
``AttributeWorld`` wherever the training side uses a world (``WorldDataset``, ``export_world``, the
mini-CLIP pre-training of ``alignzeg.worlds.miniclip``, ``benchmarks/zeroshot_world.py --family objects``):

- **Classes.** Colour x pattern: 6 colours (red, yellow, green, cyan, blue, purple) x the attribute
  world's 6 patterns = 36 classes, named ``"<colour> <pattern>"``. ``num_unseen`` (6) are held out, no
  word in more than ``ceil(num_unseen / words of its kind)`` of them (one per colour and per pattern), so
  every word stays in seen classes. ``ObjectWorldConfig.shapes`` can make the shape a third word
  ("red striped disc"; then every *word pair* of an unseen class also stays in a seen class); it is off
  because the ``tiny`` mini-CLIP does not learn shapes: 4 colours x 3 patterns x 3 shapes with radius
  8-16 px and patterns at any angle reached 32.7 % zero-shot top-1 (world 0, 600 steps, batch 96), colour
  right in 99.1 % of images, pattern in 73.8 %, shape in 41.8 % (chance 33 %).
- **Objects.** 1-4 objects per image, each of a different class and of a random shape: a disc (an
  ellipse of aspect 0.7-1), a square (a rectangle of aspect 0.8-1) or a triangle (equilateral), of
  radius 9-18 px at 64 px, rotated freely, centred at least ``min_radius`` from the border; the pattern
  has period ~7 px and, as in the attribute world, an angle near 0 and jittered colour, period, phase and
  contrast. Objects are drawn in order and a later object covers an earlier one (occlusion); a
  placement is re-drawn (up to 30 times) while an earlier object keeps less than ``min_visible`` (half)
  of its own area.
- **Background.** Smooth coloured noise of low saturation (a random grey-ish tint), half the time with
  faint grey stripes at a random angle: texture and edges, but no class. Background pixels are labelled
  ``IGNORE`` (255) in the labels of *every* split, as returned by ``sample``: they are neither trained
  nor scored (the model predicts a class everywhere; only object pixels count). ``train_labels``
  additionally sets unseen-class pixels to ``IGNORE``.
- **Splits.** Train images hold seen classes and, with probability ``train_unseen_prob`` per object,
  unseen objects (present, never supervised). Test and ``val`` images hold at least
  ``min_unseen_test`` unseen objects (at most half of the objects, rounded down, or that many).

``render(rng, classes, cells)`` is the mini-CLIP's captioned image: the objects ``classes`` on a
background, object ``k`` centred at a random pixel of region ``k`` of the region map ``cells`` (the
attribute world paints region ``k`` with ``classes[k]``; here the regions only spread the objects out),
so ``alignzeg.worlds.miniclip`` works unchanged. Every image is a pure function of ``(seed, split,
index)``; nothing touches the global RNGs; numpy only.

    world = make_world("objects", 0)
    world.class_names[:2]                    # ('red plain', 'red striped')
    image, labels = world.sample("test", 7)  # (64, 64, 3) float32 in [0, 1]; (64, 64) int64, 255 = background
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import numpy as np

from ..config import check_field_types
from .attributes import (SPLIT_NAMES, COLOURS, IGNORE, PATTERNS, AttributeWorld, ClassSplit, keyed_rng, pattern_mask,
                     world_config)

__all__ = ["OBJECT_COLOURS", "OBJECT_PATTERNS", "SHAPES", "FAMILIES", "ObjectWorldConfig", "ObjectWorld",
           "object_world_config", "shape_mask", "make_world"]

OBJECT_COLOURS = ("red", "yellow", "green", "cyan", "blue", "purple")
"""Colour words of the object world (their RGB: ``alignzeg.worlds.attributes.COLOURS``)."""

OBJECT_PATTERNS = PATTERNS
"""Pattern words: the attribute world's six (drawn by ``alignzeg.worlds.attributes.pattern_mask``)."""

SHAPES = ("disc", "square", "triangle")
"""Object shapes (see ``shape_mask``); a word of the class names only when ``ObjectWorldConfig.shapes`` says so."""

FAMILIES = ("attribute", "objects")
"""World families ``make_world`` builds."""


@dataclass(frozen=True)
class ObjectWorldConfig:
    """Settings of one object world.

    Attributes:
        seed: draws every image (and nothing else).
        split_seed: draws which classes are unseen.
        num_unseen: held-out classes (1-9; every word of an unseen class stays in a seen class, and every
            word pair for three-word classes).
        image_size: side of the square images in pixels (the tiny preset's 64).
        min_objects / max_objects: objects per segmentation image, each of a different class.
        min_unseen_test: at least this many objects of a test image are unseen classes (at most half of
            the objects, rounded down, or this many).
        train_unseen_prob: probability that a train-image object is of an unseen class (its pixels become
            ``IGNORE`` through ``train_labels``).
        min_radius / max_radius: object radius range in pixels (disc semi-axis, half the square's
            diagonal, the triangle's circumradius, before the aspect).
        min_visible: a placement is re-drawn while an earlier object keeps less than this share of its area.
        period: mean pattern period in pixels.
        pattern_angle_std: std of the pattern's angle in radians around 0 (as in the attribute world);
            ``None``: any angle.
        pixel_noise: std of the i.i.d. Gaussian pixel noise.
        colours: colour words (of ``alignzeg.worlds.attributes.COLOURS``), the first word of every class name.
        patterns: pattern words (of ``alignzeg.worlds.attributes.PATTERNS``), the second word.
        shapes: shape words (of ``SHAPES``) as a third word of the class names; empty (the default): the
            shape is not part of the class, every object takes one of ``SHAPES`` at random.
    """

    seed: int = 0
    split_seed: int = 0
    num_unseen: int = 6
    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 4
    min_unseen_test: int = 1
    train_unseen_prob: float = 0.1
    min_radius: float = 9.0
    max_radius: float = 18.0
    min_visible: float = 0.5
    period: float = 7.0
    pattern_angle_std: float | None = 0.15
    pixel_noise: float = 0.03
    colours: tuple[str, ...] = OBJECT_COLOURS
    patterns: tuple[str, ...] = OBJECT_PATTERNS
    shapes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_field_types(self, "object world config")
        if not 1 <= self.num_unseen <= 9:
            raise ValueError(f"num_unseen must be in [1, 9], got {self.num_unseen}")
        if not 1 <= self.min_objects <= self.max_objects <= 6:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= 6, got {self.min_objects}, {self.max_objects}")
        if not 0 <= self.min_unseen_test <= min(self.min_objects, self.num_unseen):
            raise ValueError(f"min_unseen_test {self.min_unseen_test} must be in [0, min(min_objects, num_unseen)]")
        if not 0.0 <= self.train_unseen_prob <= 1.0:
            raise ValueError(f"train_unseen_prob must be in [0, 1], got {self.train_unseen_prob}")
        if not 0.0 <= self.min_visible < 1.0:
            raise ValueError(f"min_visible must be in [0, 1), got {self.min_visible}")
        if self.image_size < 16 or not 2.0 <= self.min_radius <= self.max_radius <= self.image_size / 2:
            raise ValueError(f"need image_size >= 16 and 2 <= min_radius <= max_radius <= image_size / 2, got "
                             f"{self.image_size}, {self.min_radius}, {self.max_radius}")
        for name, words, known in (("colours", self.colours, COLOURS), ("patterns", self.patterns, PATTERNS),
                                   ("shapes", self.shapes, SHAPES)):
            if len(set(words)) != len(words) or not set(words) <= set(known) or (name != "shapes" and not words):
                raise ValueError(f"{name} must be distinct words of {tuple(known)}, got {words}")
        if not 3.0 <= self.period <= self.image_size / 2:
            raise ValueError(f"period must be in [3, image_size / 2], got {self.period}")


def object_world_config(world: int, **changes) -> ObjectWorldConfig:
    """Object world ``world``: images drawn with seed ``world`` and unseen classes with split seed ``world``."""
    if not isinstance(world, (int, np.integer)) or isinstance(world, bool) or world < 0:
        raise ValueError(f"world must be a non-negative integer, got {world!r}")
    return ObjectWorldConfig(**{"seed": int(world), "split_seed": int(world), **changes})


def make_world(family: str, world: int) -> AttributeWorld | ObjectWorld:
    """World ``world`` of ``family`` (``"attribute"``: ``alignzeg.worlds.attributes``; ``"objects"``: this module)."""
    if family == "attribute":
        return AttributeWorld(world_config(world))
    if family == "objects":
        return ObjectWorld(object_world_config(world))
    raise ValueError(f"unknown world family {family!r}; families are {FAMILIES}")


def shape_mask(shape: str, x: np.ndarray, y: np.ndarray, centre: tuple[float, float], radius: float,
               angle: float, aspect: float) -> np.ndarray:
    """Where a shape lies: bool array at pixel-centre coordinates (x, y).

    Args:
        shape: one of ``SHAPES``. disc: an ellipse of semi-axes ``radius`` and ``radius * aspect``; square: a
            rectangle of half-sides ``radius / sqrt(2)`` and that times ``aspect``; triangle: equilateral of
            circumradius ``radius`` (``aspect`` unused).
        x, y: pixel coordinates of the same shape, origin at the top-left corner of pixel (0, 0).
        centre: (x, y) of the shape's centre in pixels.
        radius: size in pixels.
        angle: rotation in radians.
        aspect: minor / major axis in (0, 1].
    """
    dx, dy = x - centre[0], y - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    if shape == "disc":
        return (u / radius) ** 2 + (v / (radius * aspect)) ** 2 <= 1.0
    if shape == "square":
        half = radius / math.sqrt(2.0)
        return (np.abs(u) <= half) & (np.abs(v) <= half * aspect)
    if shape == "triangle":  # inside all three edges, each at the inradius radius / 2 from the centre
        inside = np.ones(np.broadcast(u, v).shape, dtype=bool)
        for k in range(3):
            a = 2.0 * math.pi * k / 3.0
            inside &= u * math.cos(a) + v * math.sin(a) <= radius / 2.0
        return inside
    raise ValueError(f"unknown shape {shape!r}; shapes are {SHAPES}")


def _word_groups(words: np.ndarray) -> set[tuple[int, ...]]:
    """Every word of every class in ``words`` ((N, K) word indices), and every word pair when K >= 3."""
    k = words.shape[1]
    size = 2 if k >= 3 else 1
    return {(*kinds, *(int(row[i]) for i in kinds)) for row in words for kinds in combinations(range(k), size)}


def _pick_unseen(words: np.ndarray, sizes: Sequence[int], split_seed: int, num_unseen: int) -> np.ndarray:
    """Unseen class ids: every word (and word pair, for three-word classes) of an unseen class occurs in a
    seen class; no word is in more than ``ceil(num_unseen / words of its kind)`` unseen classes."""
    rng = keyed_rng(split_seed, "objects-split")
    for _ in range(10000):
        unseen = np.sort(rng.choice(len(words), num_unseen, replace=False))
        spread = all(np.bincount(words[unseen, k], minlength=n).max() <= math.ceil(num_unseen / n)
                     for k, n in enumerate(sizes))
        seen = np.setdiff1d(np.arange(len(words)), unseen)
        if spread and _word_groups(words[unseen]) <= _word_groups(words[seen]):
            return unseen
    raise ValueError(f"no split of {num_unseen} unseen classes keeps every word pair seen")  # pragma: no cover


class ObjectWorld(ClassSplit):
    """The object classes (36 by default), one seen/unseen split and a deterministic image sampler.

    Same interface as ``alignzeg.worlds.attributes.AttributeWorld`` (``class_names``, ``seen``, ``seen_classes``,
    ``unseen_classes``, ``num_classes``, ``config.image_size``, ``sample``, ``train_labels``, ``render``,
    ``closeup``): both are an ``alignzeg.worlds.attributes.World``.

    Args:
        config: world settings.

    Attributes:
        class_names: ``("red plain", "red striped", ...)``: colour-major (then pattern, then shape when
            shapes are class words).
        attributes: (C, 3) int64, the colour, pattern and shape index of each class (shape -1 when the
            shape is not a class word).
        seen: (C,) bool, True for seen (training) classes.
    """

    def __init__(self, config: ObjectWorldConfig | None = None) -> None:
        self.config = config or ObjectWorldConfig()
        cfg = self.config
        kinds = [cfg.colours, cfg.patterns] + ([cfg.shapes] if cfg.shapes else [])
        words = np.array(np.meshgrid(*[np.arange(len(k)) for k in kinds], indexing="ij")).reshape(len(kinds), -1).T
        self.attributes = np.concatenate([words, np.full((len(words), 3 - len(kinds)), -1)], 1).astype(np.int64)
        self.class_names = tuple(" ".join(k[i] for k, i in zip(kinds, row)) for row in words)
        self.seen = np.ones(len(self.class_names), dtype=bool)
        self.seen[_pick_unseen(words, [len(k) for k in kinds], cfg.split_seed, cfg.num_unseen)] = False
        centres = np.arange(self.config.image_size) + 0.5
        self._x, self._y = np.meshgrid(centres, centres)


    # Drawing -------------------------------------------------------------------------------------------
    def background(self, rng: np.random.Generator) -> np.ndarray:
        """A background texture: (S, S, 3) float64, low-saturation smooth noise, half the time faint stripes."""
        s = self.config.image_size
        tint = rng.uniform(0.3, 0.7) + rng.normal(0, 0.05, 3)
        image = np.broadcast_to(tint, (s, s, 3)).copy()
        for cells, amplitude in ((4, 0.12), (9, 0.06)):
            grid = rng.normal(0, amplitude, (cells + 1, cells + 1, 1)) + rng.normal(0, amplitude / 3, (cells + 1, cells + 1, 3))
            image += _upsample(grid, s)
        if rng.random() < 0.5:
            mask = pattern_mask("striped", self._x, self._y, float(rng.uniform(4, 12)), float(rng.uniform(0, np.pi)),
                                (float(rng.uniform(0, 12)), 0.0))
            image -= float(rng.uniform(0.05, 0.15)) * mask[..., None]
        return image

    def _paint(self, rng: np.random.Generator, class_id: int) -> np.ndarray:
        """One jittered full-frame texture of class ``class_id``'s colour and pattern: (S, S, 3) float64."""
        colour_id, pattern_id, _ = self.attributes[class_id]
        cfg = self.config
        colour = np.asarray(COLOURS[cfg.colours[colour_id]]) + rng.normal(0, 0.04, 3)
        period = cfg.period * float(np.exp(rng.normal(0, 0.12)))
        std = cfg.pattern_angle_std
        angle = float(rng.uniform(0, np.pi) if std is None else rng.normal(0, std))
        phase = (float(rng.uniform(0, period)), float(rng.uniform(0, period)))
        contrast = float(rng.uniform(0.45, 0.65))
        mask = pattern_mask(cfg.patterns[pattern_id], self._x, self._y, period, angle, phase)
        return colour * (1.0 - contrast * mask[..., None])

    def _shape(self, rng: np.random.Generator, class_id: int, centre: tuple[float, float]) -> np.ndarray:
        cfg = self.config
        radius = float(rng.uniform(cfg.min_radius, cfg.max_radius))
        angle = float(rng.uniform(0, 2 * np.pi))
        shape_id = int(self.attributes[class_id, 2])
        shape = cfg.shapes[shape_id] if shape_id >= 0 else SHAPES[int(rng.integers(len(SHAPES)))]
        aspect = float(rng.uniform(0.7, 1.0) if shape == "disc" else rng.uniform(0.8, 1.0))
        return shape_mask(shape, self._x, self._y, centre, radius, angle, aspect)

    def _layout(self, rng: np.random.Generator, classes: Sequence[int] | np.ndarray, centre_of) -> np.ndarray:
        """Object index per pixel ((S, S) int64, -1 = background); later objects cover earlier ones.

        ``centre_of(k)`` draws object k's centre. A placement is re-drawn while an earlier object keeps
        less than ``min_visible`` of its area (after 30 tries the last one stays).
        """
        owner = np.full(self._x.shape, -1, dtype=np.int64)
        areas: list[int] = []
        for k, class_id in enumerate(classes):
            for _ in range(30):
                mask = self._shape(rng, int(class_id), centre_of(k))
                if not mask.any():
                    continue
                trial = np.where(mask, k, owner)
                if all(np.count_nonzero(trial == j) >= self.config.min_visible * areas[j] for j in range(k)):
                    break
            owner = np.where(mask, k, owner)
            areas.append(int(np.count_nonzero(mask)))
        return owner

    def _compose(self, rng: np.random.Generator, classes: Sequence[int] | np.ndarray, owner: np.ndarray) -> np.ndarray:
        image = self.background(rng)
        for k, class_id in enumerate(classes):
            texture = self._paint(rng, int(class_id))
            image = np.where((owner == k)[..., None], texture, image)
        image += rng.normal(0, self.config.pixel_noise, image.shape)
        return np.clip(image, 0, 1).astype(np.float32)

    def closeup(self, rng: np.random.Generator, class_id: int) -> np.ndarray:
        """A close-up of class ``class_id``: its texture filling the frame, pixel noise added: (S, S, 3) float32
        in [0, 1] (the mini-CLIP's close-up images, ``MiniClipConfig.closeup_prob``)."""
        image = self._paint(rng, int(class_id)) + rng.normal(0, self.config.pixel_noise, self._x.shape + (3,))
        return np.clip(image, 0, 1).astype(np.float32)

    def render(self, rng: np.random.Generator, classes: Sequence[int] | np.ndarray, cells: np.ndarray
               ) -> np.ndarray:
        """The objects ``classes`` on a background: (S, S, 3) float32 in [0, 1] (the mini-CLIP's images).

        Args:
            rng: draws everything.
            classes: class ids, drawn in this order (later ones cover earlier ones).
            cells: (S, S) int64 region map: object ``k`` is centred at a random pixel of region ``k`` (a
                single object: pass zeros, any pixel), moved to at least ``min_radius`` from the border.
        """
        cells = np.asarray(cells)
        s, margin = self.config.image_size, self.config.min_radius
        if cells.shape != self._x.shape:
            raise ValueError(f"cells must be ({self.config.image_size}, {self.config.image_size}), got {cells.shape}")

        def centre_of(k: int) -> tuple[float, float]:
            ys, xs = np.nonzero(cells == k)
            if len(xs) == 0:
                raise ValueError(f"cells has no region {k} for classes[{k}]")
            i = int(rng.integers(len(xs)))
            return float(np.clip(xs[i] + 0.5, margin, s - margin)), float(np.clip(ys[i] + 0.5, margin, s - margin))

        return self._compose(rng, classes, self._layout(rng, classes, centre_of))

    def sample(self, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Segmentation image ``index`` of ``split``, the same on every call.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"`` (val is drawn like test, from its own stream).
            index: non-negative image index.

        Returns:
            image (S, S, 3) float32 RGB in [0, 1] and labels (S, S) int64: the class id of every object pixel
            (the visible, frontmost object) and ``IGNORE`` on the background, in every split (unseen objects
            of train images keep their class; ``train_labels`` hides them).
        """
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or index < 0:
            raise ValueError(f"index must be a non-negative integer, got {index!r}")
        cfg = self.config
        rng = keyed_rng(cfg.seed, "objects", split, int(index))
        count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        classes = self._pick_classes(rng, split, count)
        low, high = cfg.min_radius, cfg.image_size - cfg.min_radius
        owner = self._layout(rng, classes, lambda k: tuple(rng.uniform(low, high, 2)))
        image = self._compose(rng, classes, owner)
        return image, np.where(owner >= 0, classes[np.maximum(owner, 0)], IGNORE).astype(np.int64)

    def train_labels(self, labels: np.ndarray) -> np.ndarray:
        """Training targets: unseen-class pixels become ``IGNORE`` (background stays ``IGNORE``). (H, W) int64."""
        known = labels != IGNORE
        seen = np.zeros(labels.shape, dtype=bool)
        seen[known] = self.seen[labels[known]]
        return np.where(seen, labels, IGNORE).astype(np.int64)


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a (G, G, C) grid to (size, size, C), corners on the image corners."""
    g = grid.shape[0]
    t = np.linspace(0, g - 1, size)
    i = np.minimum(t.astype(int), g - 2)
    f = (t - i)[:, None]
    rows = grid[i] * (1 - f[..., None]) + grid[i + 1] * f[..., None]              # (size, G, C)
    return rows[:, i] * (1 - f.T[..., None]) + rows[:, i + 1] * f.T[..., None]    # (size, size, C)
