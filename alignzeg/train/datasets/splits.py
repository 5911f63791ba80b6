"""The standard zero-shot benchmarks' class lists and seen/unseen splits, as data.

Class orders follow the common (mmsegmentation / ZegCLIP) label conventions, so label value k means
``CLASSES[k]``; the unseen lists are the spec's (``docs/training.md``).
"""

from __future__ import annotations

__all__ = ["SPLITS", "ZeroShotSplit", "COCO_STUFF_CLASSES", "VOC_CLASSES", "CONTEXT_CLASSES",
           "COCO_STUFF_RAW_IDS"]

from dataclasses import dataclass

COCO_STUFF_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard",
    "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard",
    "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone",
    "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass",
    "gravel", "ground-other", "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss",
    "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic",
    "platform", "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad",
    "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick",
    "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other",
    "waterdrops", "window-blind", "window-other", "wood",
)

# Values in the raw ``stuffthingmaps`` PNGs are COCO ids - 1 (0..181); 11 thing ids are unused.
_UNUSED_RAW = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
COCO_STUFF_RAW_IDS = tuple(v for v in range(182) if v not in _UNUSED_RAW)
"""Raw stuffthingmaps value of each of the 171 classes, in ``COCO_STUFF_CLASSES`` order."""

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

CONTEXT_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup",
    "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard",
    "light", "motorbike", "mountain", "mouse", "person", "plate", "platform", "pottedplant", "road", "rock",
    "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree",
    "truck", "tvmonitor", "wall", "water", "window", "wood",
)


@dataclass(frozen=True)
class ZeroShotSplit:
    """A benchmark's classes and its unseen subset; ``seen`` keeps the class order."""

    name: str
    classes: tuple[str, ...]
    unseen: tuple[str, ...]

    @property
    def seen(self) -> tuple[str, ...]:
        return tuple(c for c in self.classes if c not in self.unseen)


SPLITS = {
    "coco-stuff": ZeroShotSplit("coco-stuff", COCO_STUFF_CLASSES, (
        "frisbee", "skateboard", "cardboard", "carrot", "scissors", "suitcase", "giraffe", "cow", "road",
        "wall-concrete", "tree", "grass", "river", "clouds", "playingfield")),
    "voc": ZeroShotSplit("voc", VOC_CLASSES, ("pottedplant", "sheep", "sofa", "train", "tvmonitor")),
    "context": ZeroShotSplit("context", CONTEXT_CLASSES, (
        "cow", "motorbike", "sofa", "cat", "boat", "fence", "bird", "tvmonitor", "keyboard", "aeroplane")),
}
