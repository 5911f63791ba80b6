"""A synthetic zero-shot world: classes with latent appearances, embeddings that follow them, tiled images.

Real CLIP weights cannot be had everywhere, so zero-shot transfer cannot always be measured on photos.
This world makes the transfer possible *by construction*, the way CLIP makes it possible for words:

- Each of C classes has a latent **appearance vector** (``APPEARANCE_FIELDS``: RGB colour, the spatial
  frequency, orientation and contrast of a sinusoidal texture).
- Each class has a **class embedding** in the model's text-embedding space: a fixed random linear map of
  its standardised appearance, plus small noise, L2-normalised. A mapping appearance -> embedding that
  a model learns on the seen classes therefore carries over to the unseen ones.
- **Images** tile random Voronoi cells, each rendered from one class's appearance with per-instance
  jitter (colour, frequency, orientation, contrast, phase) and pixel noise. The label map is exact: it is
  the Voronoi assignment of each pixel centre, which is also the mask the pixels were painted through.
- **Splits**: a split seed picks the seen classes (default 18 of 24). Train images hold seen classes only
  (optionally some unseen cells, labelled ``IGNORE``); test images mix seen and unseen classes.

Every sample is a pure function of ``(seed, split, index)``: nothing is stored and nothing touches the
global RNGs.

    world = ZeroShotWorld(WorldConfig(seed=0, split_seed=0, embed_dim=64))
    train = world.dataset("train", 2000)          # torch Dataset of {"image", "label"}
    image, labels = world.sample("test", 7)      # (H, W, 3) float32 in [0, 1], (H, W) int64
    segmenter.segment(image, world.class_embeddings, seen=world.seen.tolist())
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["APPEARANCE_FIELDS", "IGNORE", "WorldConfig", "ZeroShotWorld", "WorldDataset"]

IGNORE = 255
"""Label of pixels that carry no supervision (unseen-class cells in train images)."""

APPEARANCE_FIELDS = ("red", "green", "blue", "frequency", "orientation", "contrast")
"""Meaning of the columns of ``ZeroShotWorld.appearance``: colour in [0, 1]; texture frequency in cycles
per pixel; orientation in radians, in [0, pi); texture amplitude (contrast) in [0, 1]."""

_RANGES = {"colour": (0.1, 0.9), "frequency": (0.04, 0.22), "contrast": (0.05, 0.3)}
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class WorldConfig:
    """Settings of one synthetic world (all defaults are the documented benchmark's).

    Attributes:
        num_classes: C, the number of classes.
        num_seen: how many of them are seen (training) classes; the rest are unseen.
        embed_dim: E, the width of the class embeddings (the model's ``config.embed_dim``).
        image_size: side of the square images, in pixels.
        min_regions / max_regions: number of Voronoi cells per image (each a different class).
        min_unseen_test: at least this many of a test image's cells are unseen classes; at most
            ``max(min_unseen_test, cells // 2)`` are, so test images with two or more cells mix seen and unseen.
        train_unseen_prob: probability that a train-image cell is an unseen class (its pixels are
            ``IGNORE``); 0 keeps unseen classes out of train images entirely.
        embedding_noise: norm of the isotropic noise added to each class's unit signal embedding
            before the final L2 normalisation.
        min_separation: classes' standardised appearance vectors are at least this far apart.
        colour_jitter / frequency_jitter / orientation_jitter / contrast_jitter: per-instance jitter
            (colour: absolute std per channel; frequency and contrast: relative std; orientation: radians).
        pixel_noise: std of the i.i.d. Gaussian pixel noise.
        seed: seeds the class appearances, the embedding map and every image.
        split_seed: seeds which classes are seen.
    """

    num_classes: int = 24
    num_seen: int = 18
    embed_dim: int = 64
    image_size: int = 64
    min_regions: int = 2
    max_regions: int = 5
    min_unseen_test: int = 1
    train_unseen_prob: float = 0.0
    embedding_noise: float = 0.1
    min_separation: float = 0.9
    colour_jitter: float = 0.03
    frequency_jitter: float = 0.08
    orientation_jitter: float = 0.12
    contrast_jitter: float = 0.15
    pixel_noise: float = 0.02
    seed: int = 0
    split_seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.num_seen < self.num_classes:
            raise ValueError(f"num_seen must be in [1, num_classes - 1], got {self.num_seen} of {self.num_classes}")
        if not 1 <= self.min_regions <= self.max_regions:
            raise ValueError(f"need 1 <= min_regions <= max_regions, got {self.min_regions}, {self.max_regions}")
        if self.max_regions > self.num_seen:
            raise ValueError(f"max_regions {self.max_regions} exceeds the {self.num_seen} seen classes")
        if not 0 <= self.min_unseen_test <= min(self.min_regions, self.num_classes - self.num_seen):
            raise ValueError(f"min_unseen_test {self.min_unseen_test} must be in [0, min(min_regions, unseen)]")
        if not 0.0 <= self.train_unseen_prob <= 1.0:
            raise ValueError(f"train_unseen_prob must be in [0, 1], got {self.train_unseen_prob}")
        if self.embed_dim < 1 or self.image_size < 8:
            raise ValueError(f"embed_dim must be >= 1 and image_size >= 8, got {self.embed_dim}, {self.image_size}")


def _rng(*keys: int | str) -> np.random.Generator:
    """A generator keyed by a tuple (strings hashed with crc32), independent of every global RNG."""
    entropy = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def standardise(appearance: np.ndarray) -> np.ndarray:
    """Appearance rows (..., 6) -> features (..., 7) with each coordinate spanning about [-1, 1].

    Orientation (period pi) becomes (cos 2t, sin 2t) so that nearby angles give nearby features.
    """
    lo, hi = _RANGES["colour"]
    colour = (appearance[..., :3] - (lo + hi) / 2) / ((hi - lo) / 2)
    feats = [colour]
    for i, name in ((3, "frequency"), (5, "contrast")):
        lo, hi = _RANGES[name]
        feats.append(((appearance[..., i] - (lo + hi) / 2) / ((hi - lo) / 2))[..., None])
    angle = 2 * appearance[..., 4]
    feats.append(np.stack([np.cos(angle), np.sin(angle)], axis=-1))
    return np.concatenate(feats, axis=-1)


def _sample_appearances(cfg: WorldConfig) -> np.ndarray:
    """(C, 6) float64 appearances, pairwise at least ``min_separation`` apart after standardisation."""
    rng = _rng(cfg.seed, "appearance")
    rows: list[np.ndarray] = []
    for _ in range(100_000):
        row = np.array([*rng.uniform(*_RANGES["colour"], 3), rng.uniform(*_RANGES["frequency"]),
                        rng.uniform(0, np.pi), rng.uniform(*_RANGES["contrast"])])
        if all(np.linalg.norm(standardise(row) - standardise(r)) >= cfg.min_separation for r in rows):
            rows.append(row)
            if len(rows) == cfg.num_classes:
                return np.stack(rows)
    raise ValueError(f"cannot place {cfg.num_classes} classes {cfg.min_separation} apart; lower min_separation")


def _embed(cfg: WorldConfig, appearance: np.ndarray) -> np.ndarray:
    """(C, E) float64 unit rows: normalise(normalise(W @ standardise(a)) + noise)."""
    rng = _rng(cfg.seed, "embedding")
    feats = standardise(appearance)
    weight = rng.standard_normal((feats.shape[1], cfg.embed_dim)) / np.sqrt(feats.shape[1])
    signal = feats @ weight
    signal /= np.linalg.norm(signal, axis=1, keepdims=True)
    noise = rng.standard_normal(signal.shape) * cfg.embedding_noise / np.sqrt(cfg.embed_dim)
    out = signal + noise
    return out / np.linalg.norm(out, axis=1, keepdims=True)


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


def render_texture(appearance: np.ndarray, size: int, phase: float) -> np.ndarray:
    """(size, size, 3) float64: colour plus a luminance grating, before clipping and noise.

    Args:
        appearance: (6,) one instance's appearance (see ``APPEARANCE_FIELDS``).
        size: image side in pixels.
        phase: grating phase in radians.
    """
    y, x = np.mgrid[0:size, 0:size] + 0.5
    return _texture_at(appearance, x, y, phase)


def _texture_at(appearance: np.ndarray, x: np.ndarray, y: np.ndarray, phase: float) -> np.ndarray:
    """``render_texture`` at the pixel centres (x, y) only: (...) coordinates -> (..., 3) float64."""
    colour, freq, angle, contrast = appearance[:3], appearance[3], appearance[4], appearance[5]
    wave = np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    return colour + contrast * wave[..., None]


class ZeroShotWorld:
    """The classes, their embeddings, the seen/unseen split, and a deterministic image sampler.

    Args:
        config: world settings.

    Attributes:
        appearance: (C, 6) float64, see ``APPEARANCE_FIELDS``.
        class_embeddings: (C, E) float32 tensor, L2-normalised rows: the model's vocabulary.
        seen: (C,) bool array, True for seen (training) classes; ``seen.sum() == num_seen``.
        class_names: ``("class_00", ...)``, C names (seen and unseen alike).
    """

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        cfg = self.config
        self.appearance = _sample_appearances(cfg)
        self.class_embeddings = torch.from_numpy(_embed(cfg, self.appearance)).float()
        order = _rng(cfg.split_seed, "split").permutation(cfg.num_classes)
        self.seen = np.zeros(cfg.num_classes, dtype=bool)
        self.seen[order[:cfg.num_seen]] = True
        self.class_names = tuple(f"class_{i:02d}" for i in range(cfg.num_classes))

    @property
    def seen_ids(self) -> np.ndarray:
        return np.flatnonzero(self.seen)

    @property
    def unseen_ids(self) -> np.ndarray:
        return np.flatnonzero(~self.seen)

    def _pick_classes(self, rng: np.random.Generator, split: str, count: int) -> np.ndarray:
        cfg = self.config
        if split == "train":
            num_unseen = int(rng.binomial(count, cfg.train_unseen_prob)) if cfg.train_unseen_prob else 0
        else:
            high = min(max(cfg.min_unseen_test, count // 2), len(self.unseen_ids))
            num_unseen = int(rng.integers(cfg.min_unseen_test, high + 1))
        unseen = rng.choice(self.unseen_ids, num_unseen, replace=False)
        seen = rng.choice(self.seen_ids, count - num_unseen, replace=False)
        return rng.permutation(np.concatenate([seen, unseen])).astype(np.int64)

    def _jitter(self, rng: np.random.Generator, class_id: int) -> np.ndarray:
        cfg = self.config
        a = self.appearance[class_id].copy()
        a[:3] += rng.normal(0, cfg.colour_jitter, 3)
        a[3] *= np.exp(rng.normal(0, cfg.frequency_jitter))
        a[4] += rng.normal(0, cfg.orientation_jitter)
        a[5] *= np.exp(rng.normal(0, cfg.contrast_jitter))
        return a

    def sample(self, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``index`` of ``split``, the same on every call.

        Args:
            split: ``"train"`` or ``"test"``.
            index: non-negative image index.

        Returns:
            image (H, W, 3) float32 RGB in [0, 1] and labels (H, W) int64: class ids in [0, C), the
            ground truth of every pixel (train cells of unseen classes included; see ``train_labels``).
        """
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        if not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"index must be a non-negative integer, got {index!r}")
        cfg = self.config
        rng = _rng(cfg.seed, split, int(index))
        count = int(rng.integers(cfg.min_regions, cfg.max_regions + 1))
        classes = self._pick_classes(rng, split, count)
        cells = voronoi_labels(rng.uniform(0, cfg.image_size, (count, 2)), cfg.image_size)
        image = np.zeros((cfg.image_size, cfg.image_size, 3))
        for k, class_id in enumerate(classes):
            # The texture is computed at the cell's own pixels only (the same values render_texture gives there).
            ys, xs = np.nonzero(cells == k)
            image[ys, xs] = _texture_at(self._jitter(rng, class_id), xs + 0.5, ys + 0.5, rng.uniform(0, 2 * np.pi))
        image += rng.normal(0, cfg.pixel_noise, image.shape)
        return np.clip(image, 0, 1).astype(np.float32), classes[cells]

    def train_labels(self, labels: np.ndarray) -> np.ndarray:
        """Training targets: unseen-class pixels become ``IGNORE``. (H, W) int64 -> (H, W) int64."""
        return np.where(self.seen[labels], labels, IGNORE)

    def dataset(self, split: str, size: int) -> "WorldDataset":
        """A torch Dataset of the first ``size`` images of ``split``."""
        return WorldDataset(self, split, size)


class WorldDataset(Dataset):
    """Images of one split as tensors; train labels have unseen pixels set to ``IGNORE``.

    Follows the dataset protocol of ``alignzeg.train.data`` (what ``Trainer`` and ``evaluate`` take): items
    are dicts ``image`` (3, H, W) float32 in [0, 1] and ``label`` (H, W) int64 (class ids, or ``IGNORE``);
    ``class_names`` (C names), ``seen_classes`` (the seen names) and ``class_embeddings`` (C, E), the fixed
    vocabulary, describe the classes; ``seen`` is the (C,) bool mask.

    Do not train with horizontal flips: a flip turns texture orientation t into pi - t, which is another
    appearance (and another embedding).

    Args:
        world: the world to draw from.
        split: ``"train"`` or ``"test"``.
        size: number of images (indices ``0 .. size - 1``).
    """

    def __init__(self, world: ZeroShotWorld, split: str, size: int) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.world, self.split, self.size = world, split, size
        self.class_embeddings = world.class_embeddings
        self.class_names = world.class_names
        self.seen = torch.from_numpy(world.seen)
        self.seen_classes = tuple(n for n, s in zip(world.class_names, world.seen) if s)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} images")
        image, labels = self.world.sample(self.split, index)
        if self.split == "train":
            labels = self.world.train_labels(labels)
        return {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(), "label": torch.from_numpy(labels)}
