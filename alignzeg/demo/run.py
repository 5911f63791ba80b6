"""The ``alignzeg demo`` run: the shipped world model segments world test images from typed names, scored.

    result = run_demo()                     # world 0 test image 0, vocabulary = the 48 class names
    print(result.report())                  # per-class IoU against the ground truth, mIoU(S/U), hIoU
    result.save_overlay("demo.png")         # input | prediction | ground truth, titled, with legends

The vocabulary is text, encoded by the mini-CLIP's text tower like any user vocabulary; names outside
the model's training classes (its config's ``seen_classes``) are unseen. Typed names are matched to the
world's classes as vocabularies match names (case and surrounding space ignored). Every pixel is scored:
a pixel whose true class was not typed counts against whatever class the model put there (a false
positive of that class), so a typed subset cannot score higher by leaving classes out. A vocabulary that
names no world class is an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .. import metrics
from ..metrics import ConfusionMatrix, harmonic_iou, nanmean
from ..pipeline.result import SegmentationResult
from ..visualize import draw_overlay
from .shipped_model import DEMO_WORLD, load_demo_model
from ..worlds.attributes import AttributeWorld, world_config

__all__ = ["DemoResult", "run_demo", "class_iou", "PANEL_TITLES"]

_SCALE = 6  # the 64 px world image is drawn 6x larger in the overlay so the legend is readable

PANEL_TITLES = ("input", "prediction", "ground truth")
"""The titles above the three panels of ``DemoResult.save_overlay``."""

TITLE_HEIGHT = 28
"""Height in px of the white strip holding a panel's title."""


def _titled(panel: np.ndarray, title: str) -> np.ndarray:
    """``panel`` (H, W, 3) uint8 under a white strip of ``TITLE_HEIGHT`` px with ``title`` in black."""
    import imgviz

    strip = np.full((TITLE_HEIGHT, panel.shape[1], 3), 255, dtype=np.uint8)
    strip = imgviz.draw.text(strip, yx=(4, 6), text=title, size=TITLE_HEIGHT - 8, color=(0, 0, 0))
    return np.concatenate([strip, panel], axis=0)


def class_iou(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore: int = 255) -> np.ndarray:
    """Per-class IoU over one or more label maps: (K,) float64, NaN where a class is in neither map.

    Args:
        pred: (..., H, W) int predictions in [0, K) (anything else counts as wrong).
        label: (..., H, W) int ground truth in [0, K), ``ignore`` elsewhere.
        num_classes: K.
    """
    confusion = ConfusionMatrix(num_classes)
    confusion.update(pred, label, ignore_index=ignore)
    return metrics.class_iou(confusion.matrix)


@dataclass
class DemoResult:
    """What the demo measured.

    Attributes:
        vocabulary: the classes typed (a class typed with synonyms under its first name).
        seen: (C,) bool, True for the model's training classes.
        iou: (C,) per-class IoU in [0, 1] over the demo images (NaN: class in neither prediction nor truth).
        miou_seen / miou_unseen / hiou: means over the seen / unseen classes with an IoU, and their
            harmonic mean.
        num_images: how many world test images were segmented.
        first: the first image's segmentation result; ``truth`` its ground truth in vocabulary indices
            (-1: a class that was not typed).
        untyped_pixels: pixels (over all images) whose true class was not typed; they count as errors.
        unknown: typed names that are no class of the world.
    """

    vocabulary: tuple[str, ...]
    seen: np.ndarray
    iou: np.ndarray
    miou_seen: float
    miou_unseen: float
    hiou: float
    num_images: int
    first: SegmentationResult
    truth: np.ndarray
    indices: list[int] = field(default_factory=list)
    untyped_pixels: int = 0
    unknown: tuple[str, ...] = ()

    def report(self) -> str:
        """Per-class IoU table (classes with an IoU) and the summary, in percent."""
        width = max(len(n) for n in self.vocabulary)
        lines = [f"{'class':<{width}}  split    IoU"]
        for name, s, v in zip(self.vocabulary, self.seen, self.iou):
            if not math.isnan(v):
                lines.append(f"{name:<{width}}  {'seen  ' if s else 'UNSEEN'}  {100 * v:5.1f}")
        lines.append(f"mIoU(S) {100 * self.miou_seen:.1f}  mIoU(U) {100 * self.miou_unseen:.1f}  "
                     f"hIoU {100 * self.hiou:.1f}  over {self.num_images} image(s)")
        total = self.num_images * self.first.label_map.size
        if self.untyped_pixels:
            lines.append(f"all {total} pixels scored; {self.untyped_pixels} of them belong to classes not typed and "
                         "count against the class predicted there")
        if self.unknown:
            lines.append(f"not classes of the world: {', '.join(self.unknown)}")
        return "\n".join(lines)

    def panels(self) -> np.ndarray:
        """(T + 6h, 3 * 6w, 3) uint8: input | prediction | ground truth of the first image, drawn 6x larger,
        with class legends, each under a title strip ``PANEL_TITLES`` of T = ``TITLE_HEIGHT`` px."""
        image = np.kron(self.first.image, np.ones((_SCALE, _SCALE, 1), dtype=np.uint8))
        big = lambda m: np.kron(m, np.ones((_SCALE, _SCALE), dtype=np.int64))  # noqa: E731
        names = self.vocabulary
        panels = [image, np.asarray(draw_overlay(big(self.first.label_map), names, image, alpha=0.6)),
                  np.asarray(draw_overlay(big(self.truth), names, image, alpha=0.6))]
        return np.concatenate([_titled(panel, title) for panel, title in zip(panels, PANEL_TITLES)], axis=1)

    def save_overlay(self, path: str | Path) -> None:
        """Write ``panels()`` (input | prediction | ground truth, titled, with class legends) as PNG."""
        Image.fromarray(self.panels()).save(path)


def _names(entry: str | Sequence[str]) -> tuple[str, ...]:
    """A vocabulary entry's names: ``"red grid"`` -> ``("red grid",)``; synonyms ``("red grid", "red
    lattice")`` stay as they are (one class, reported under the first name)."""
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _vocabulary_lut(world: AttributeWorld, vocabulary: Sequence[str | Sequence[str]]
                    ) -> tuple[np.ndarray, tuple[str, ...]]:
    """(world class id -> vocabulary index or -1 when not typed, typed classes that are no world class).

    Names match as ``class_name_key`` says (case and surrounding space ignored), as seen classes do; a class
    typed with synonyms is the world class that any of its names is (the first such entry wins).

    Raises:
        ValueError: no typed name is a class of the world (nothing could be scored).
    """
    from ..pipeline.vocabulary import class_name_key

    typed: dict[str, int] = {}
    for i, entry in enumerate(vocabulary):
        for name in _names(entry):
            typed.setdefault(class_name_key(name), i)
    lut = np.array([typed.get(class_name_key(n), -1) for n in world.class_names])
    known = {class_name_key(n) for n in world.class_names}
    unknown = tuple(_names(e)[0] for e in vocabulary if not known & {class_name_key(n) for n in _names(e)})
    if (lut < 0).all():
        raise ValueError(f"none of the typed classes {[_names(e)[0] for e in vocabulary]} is a class of the demo "
                         "world, so nothing "
                         f"can be scored; its classes are colour + pattern names such as "
                         f"{', '.join(repr(n) for n in world.class_names[:4])} (48 in all: alignzeg.worlds.attributes)")
    return lut, unknown


def run_demo(vocabulary: Sequence[str | Sequence[str]] | None = None, index: int = 0, num_images: int = 1, segmenter=None,
             bias_correction: bool = True) -> DemoResult:
    """Segment world test images ``index .. index + num_images - 1`` with a typed vocabulary.

    Args:
        vocabulary: class names as text, a tuple of synonyms for a class (``("red grid", "red lattice")``,
            reported under the first name); default: all 48 names of the world (8 of them unseen).
        index: first world test image.
        num_images: how many consecutive test images to score (the overlay shows the first).
        segmenter: a segmenter to use instead of the shipped model.
        bias_correction: apply PBC.

    Returns:
        DemoResult with per-class IoUs against the rendered ground truth.
    """
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
    world = AttributeWorld(world_config(DEMO_WORLD))
    segmenter = segmenter if segmenter is not None else load_demo_model()
    vocabulary = tuple(world.class_names if vocabulary is None else vocabulary)
    lut, unknown = _vocabulary_lut(world, vocabulary)
    preds, truths, first = [], [], None
    for i in range(index, index + num_images):
        image, labels = world.sample("test", i)
        result = segmenter.segment(image, list(vocabulary), bias_correction=bias_correction)
        first = first or result
        preds.append(result.label_map)
        truths.append(lut[labels])
    truth = np.stack(truths)
    k = len(vocabulary)
    # Untyped pixels are class K ("other"), which is never predicted: each is a false positive of its prediction.
    iou = class_iou(np.stack(preds), np.where(truth < 0, k, truth), k + 1)[:k]
    seen = np.asarray(first.seen, dtype=bool)
    s, u = nanmean(iou[seen]), nanmean(iou[~seen])
    return DemoResult(tuple(_names(e)[0] for e in vocabulary), seen, iou, s, u, harmonic_iou(s, u), num_images, first, truths[0],
                      list(range(index, index + num_images)), int((truth < 0).sum()), unknown)
