"""Every shipped recipe parses and, overridden down to the tiny preset, trains 2 steps on a fake dataset tree
of its benchmark's on-disk layout and writes a folder that ``from_pretrained`` loads (issue 8)."""

import json

import numpy as np
import pytest
from PIL import Image

from alignzeg import AlignZegSegmenter
from alignzeg.train.training.train_cli import main as train_main
from alignzeg.train.training.registry import get_recipe, list_recipes
from alignzeg.train.datasets.splits import SPLITS


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _label(values, h=40, w=48):
    """Vertical stripes of the given raw label values."""
    return np.repeat(np.array(values, dtype=np.uint8), -(-w // len(values)))[:w][None].repeat(h, 0)


def _image(seed, h=40, w=48):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _voc_like(root, sub, label_dir, list_dir, values):
    for i in range(2):
        _save(root / sub / "JPEGImages" / f"{i}.jpg", _image(i))
        _save(root / sub / label_dir / f"{i}.png", _label(values), "L")
    (root / sub / "ImageSets" / list_dir).mkdir(parents=True)
    (root / sub / "ImageSets" / list_dir / "train.txt").write_text("0\n1\n")


def _coco(root):
    for i in range(2):
        _save(root / "images" / "train2017" / f"{i:06d}.jpg", _image(i))
        _save(root / "annotations" / "train2017" / f"{i:06d}_labelTrainIds.png", _label([0, 2, 120, 255]), "L")


TREES = {
    "voc": lambda root: _voc_like(root, "VOC2012", "SegmentationClass", "Segmentation", [0, 1, 15, 8, 255]),
    "context": lambda root: _voc_like(root, "VOC2010", "SegmentationClassContext", "SegmentationContext",
                                      [0, 2, 30, 59]),
    "coco-stuff": _coco,
}


def test_six_recipes_ship():
    assert list_recipes() == ["coco-stuff-vitb16", "coco-stuff-vitl14", "context-vitb16", "context-vitl14",
                              "voc-vitb16", "voc-vitl14"]


@pytest.mark.parametrize("recipe", list_recipes())
def test_recipe_trains_two_steps_on_its_layout(recipe, tmp_path):
    config = get_recipe(recipe)
    assert config.clip_pretrained == "openai" and config.preset in ("vitb16", "vitl14")
    TREES[config.dataset](tmp_path / "data")
    out = tmp_path / "run"
    overrides = ['preset="tiny"', "clip_pretrained=null", "iterations=2", "batch_size=2", "checkpoint_every=1",
                 "model_overrides.num_queries=8", "progress=false", 'device="cpu"']
    args = ["--recipe", recipe, "--data-root", str(tmp_path / "data"), "--out", str(out)]
    assert train_main(args + [a for o in overrides for a in ("--set", o)]) == 0
    saved = json.loads((out / "train_config.json").read_text())
    assert (saved["preset"], saved["iterations"], saved["dataset"]) == ("tiny", 2, config.dataset)
    assert saved["lr"] == config.lr and saved["schedule"] == config.schedule  # the recipe's own settings stay
    assert (out / "checkpoints" / "step_000001" / "model.safetensors").is_file()
    segmenter = AlignZegSegmenter.from_pretrained(out, device="cpu")
    assert segmenter.config.seen_classes == SPLITS[config.dataset].seen
    step = json.loads((out / "checkpoints" / "step_000001" / "config.json").read_text())
    assert step["clip_fingerprint"] == segmenter.config.clip_fingerprint  # CLIP is frozen: same fingerprint
    AlignZegSegmenter.from_pretrained(out / "checkpoints" / "step_000001", device="cpu")
