"""The demo: the shipped world model, the synthetic world it was trained on, and the ``alignzeg demo`` run.

    from alignzeg.demo import run_demo
    result = run_demo(["red striped", "pink dotted"])   # world 0 test image 0, typed class names
    print(result.report())                              # per-class IoU against the ground truth

- the attribute world it renders is ``alignzeg.worlds.attributes`` (48 colour x pattern classes rendered from their
  words, with held-out unseen combinations; numpy only), the home of the synthetic worlds (``alignzeg.worlds``).
- ``alignzeg.demo.shipped_model``: the trained model the package ships (``assets/``) and its loader.
- ``alignzeg.demo.run``: the demo run: segment world test images with a typed vocabulary and score them.

The names below are imported on first use (PEP 562), so ``import alignzeg.demo`` imports nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

_LAZY = {
    "DEMO_WORLD": ".shipped_model", "CLIP_SOURCE": ".shipped_model", "DISCLAIMER": ".shipped_model",
    "model_path": ".shipped_model", "load_demo_model": ".shipped_model",
    "DemoResult": ".run", "run_demo": ".run", "class_iou": ".run",
}

__all__ = ["DEMO_WORLD", "CLIP_SOURCE", "DISCLAIMER", "model_path", "load_demo_model", "DemoResult", "run_demo",
           "class_iou"]

if TYPE_CHECKING:  # pragma: no cover
    from .run import DemoResult, class_iou, run_demo
    from .shipped_model import CLIP_SOURCE, DEMO_WORLD, DISCLAIMER, load_demo_model, model_path


__getattr__, __dir__ = attach(__name__, _LAZY)
