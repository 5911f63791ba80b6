"""The one trained model the package ships: where its files are, how to load it, what it is.

``alignzeg/demo/assets/`` holds it: ``model/`` (a slim checkpoint: ``config.json``, ``model.safetensors``, a
model card) of the ``tiny`` preset trained on world ``DEMO_WORLD`` of the attribute world
(``alignzeg.worlds.attributes``: 48 classes "red striped", "blue dotted", ... of which 8 combinations are unseen),
and ``clip.safetensors``, the mini-CLIP pre-trained on captions of all 48 classes, which the checkpoint's
``clip_pretrained`` names as ``CLIP_SOURCE``. It is a small model trained on a synthetic world, NOT a photo
model: it knows colours and patterns, nothing else.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["DEMO_WORLD", "CLIP_SOURCE", "DISCLAIMER", "model_path", "load_demo_model"]

DEMO_WORLD = 0
"""The world the shipped model was trained on."""

CLIP_SOURCE = "alignzeg:demo/assets/clip.safetensors"
"""The shipped mini-CLIP as a ``clip_pretrained`` value (a file of the installed package)."""

DISCLAIMER = ("alignzeg demo: a SMALL model (the 'tiny' preset, 64 px) trained on a SYNTHETIC world of 48 "
              "colour-pattern classes ('red striped', 'blue dotted', ...), 8 of them unseen in its segmentation "
              "training, on top of a mini-CLIP pre-trained on captions of all 48. It is not a photo model: real "
              "photos need a real CLIP (see README).")
"""What the shipped model is, printed before the demo's numbers and shown on the web page."""


def model_path() -> Path:
    """Folder of the shipped world model (``config.json``, ``model.safetensors``; its CLIP is ``clip.safetensors``
    one level up)."""
    return Path(str(resources.files(__package__) / "assets" / "model"))


def load_demo_model(device: str | None = None):
    """The shipped world model through ``AlignZegSegmenter.from_pretrained`` (its mini-CLIP from the package)."""
    from ..segmenter import AlignZegSegmenter

    return AlignZegSegmenter.from_pretrained(model_path(), device=device, local_files_only=True)
