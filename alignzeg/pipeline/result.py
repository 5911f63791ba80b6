"""The typed, validated result of ``AlignZegSegmenter.segment``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .labels import UNLABELLED, upsample_plane

__all__ = ["SegmentationResult", "UNLABELLED", "RESERVED_NAMES"]

RESERVED_NAMES = ("<unlabelled>",)
"""Keys the result uses next to the class names (``pixel_counts``); no class may be named so."""


@dataclass(frozen=True)
class SegmentationResult:
    """A segmentation of one image.

    Attributes:
        label_map: (H, W) int32 at the input's size; ``label_map[y, x]`` indexes ``class_names``, or is
            ``UNLABELLED`` (-1) where ``unlabelled_threshold`` was given and no class reached it.
        scores: (H, W) float32 in [0, 1], per-pixel confidence: the probability of the chosen class,
            against all vocabulary classes plus the model's background prototypes.
        class_names: the vocabulary, in the order given.
        class_probs: (C + 1, h, w) float32 low-resolution probability maps (channel C = background),
            at the model's mask stride over the resized image; ``probability_map`` upsamples one class.
        seen: (C,) bool, which vocabulary entries were treated as seen classes by bias correction.
        bias_correction: whether bias correction was applied.
        image: (H, W, 3) uint8 RGB input, kept for ``overlay`` (``None`` when not kept).
    """

    label_map: np.ndarray
    scores: np.ndarray
    class_names: tuple[str, ...]
    class_probs: np.ndarray
    seen: np.ndarray
    bias_correction: bool
    image: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        lm, sc, cp = self.label_map, self.scores, self.class_probs
        if lm.ndim != 2 or lm.dtype != np.int32:
            raise ValueError(f"label_map must be (H, W) int32, got shape {lm.shape} dtype {lm.dtype}")
        if sc.shape != lm.shape:
            raise ValueError(f"scores shape {sc.shape} differs from label_map shape {lm.shape}")
        num = len(self.class_names)
        if cp.ndim != 3 or cp.shape[0] != num + 1:
            raise ValueError(f"class_probs must be ({num} + 1, h, w), got {cp.shape}")
        if self.seen.shape != (num,):
            raise ValueError(f"seen must have shape ({num},), got {self.seen.shape}")
        if self.image is not None and self.image.shape[:2] != lm.shape:
            raise ValueError(f"image shape {self.image.shape} does not match label_map shape {lm.shape}")
        if lm.size and (lm.min() < UNLABELLED or lm.max() >= num):
            raise ValueError(f"label_map values must be in [-1, {num}), got [{lm.min()}, {lm.max()}]")

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return self.label_map.shape  # type: ignore[return-value]

    def pixel_counts(self, include_zero: bool = True) -> dict[str, int]:
        """Pixels per class name, in vocabulary order, plus ``"<unlabelled>"`` when any pixel is unlabelled.

        Every vocabulary class is listed, classes with no pixel as 0: the same rule in ``to_dict``, the
        CLI's ``--json`` and the batch CLI's ``results.jsonl``. ``include_zero=False`` leaves them out.
        """
        counts = np.bincount(self.label_map.ravel() + 1, minlength=len(self.class_names) + 1)
        out = {name: int(c) for name, c in zip(self.class_names, counts[1:]) if include_zero or c}
        if counts[0]:
            out[RESERVED_NAMES[0]] = int(counts[0])
        return out

    def index(self, name: str) -> int:
        """Index of class ``name`` in ``class_names``, matched as vocabularies match names: case and
        surrounding space ignored (``alignzeg.pipeline.name_keys.class_name_key``), so ``"red striped"`` finds
        ``"Red Striped"``.

        Raises:
            KeyError: no class of that name, listing the vocabulary.
        """
        from .name_keys import class_name_key

        key = class_name_key(name) if isinstance(name, str) else None
        for i, known in enumerate(self.class_names):
            if class_name_key(known) == key:
                return i
        raise KeyError(f"{name!r} is not in the vocabulary {list(self.class_names)}")

    def mask(self, name: str) -> np.ndarray:
        """(H, W) bool mask of class ``name`` (matched as ``index`` does)."""
        return self.label_map == self.index(name)

    def probability_map(self, name: str) -> np.ndarray:
        """(H, W) float32 probability of class ``name`` at every pixel (bilinear upsample; ``name`` matched
        as ``index`` does)."""
        return upsample_plane(self.class_probs[self.index(name)], self.size)

    def overlay(self, alpha: float = 0.5, legend: bool = True, image: Any = None, outline: bool = True) -> Image.Image:
        """A PIL image: class colours over the input, region outlines and a legend of the classes present
        (``alignzeg.visualize.draw_overlay``)."""
        from ..visualize import draw_overlay

        base = self.image if image is None else image
        return draw_overlay(self.label_map, self.class_names, base, alpha=alpha, legend=legend, outline=outline)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: size, vocabulary, per-class pixel counts (every class, zeros included)."""
        return {
            "height": int(self.size[0]),
            "width": int(self.size[1]),
            "class_names": list(self.class_names),
            "seen": [bool(s) for s in self.seen],
            "bias_correction": self.bias_correction,
            "pixel_counts": self.pixel_counts(),
        }
