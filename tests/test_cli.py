"""The ``alignzeg`` command line, on the real VOC photo."""

import json

import numpy as np
import pytest
from PIL import Image

from alignzeg.cli import _parse_classes, example_image_path, main
from alignzeg.errors import AlignZegWarning


def test_segment_writes_overlay_and_json(tiny_checkpoint, voc, tmp_path, capsys):
    image = tmp_path / "voc.jpg"
    Image.fromarray(voc["rgb"]).save(image)
    out = tmp_path / "overlay.png"
    labels = tmp_path / "labels.png"
    with pytest.warns(AlignZegWarning, match="class indicator was never trained"):  # the tiny model's
        code = main(["segment", str(image), "--classes", "person, chair,sofa", "--model", str(tiny_checkpoint),
                     "--out", str(out), "--labels-out", str(labels), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_names"] == ["person", "chair", "sofa"]
    assert (report["height"], report["width"]) == (375, 500)
    assert sum(report["pixel_counts"].values()) == 375 * 500
    assert Image.open(out).size == (500, 375)
    label_png = np.asarray(Image.open(labels))
    assert label_png.shape == (375, 500) and label_png.min() >= 1 and label_png.max() <= 3


def test_bad_model_path_is_a_clean_error(tmp_path, capsys):
    code = main(["segment", str(example_image_path()), "--classes", "a,b", "--model", str(tmp_path)])
    assert code == 2
    assert "has no config.json" in capsys.readouterr().err


def test_classes_with_synonyms(tiny_checkpoint, tmp_path, capsys):
    assert _parse_classes("person| man |woman, car,sky") == [("person", "man", "woman"), "car", "sky"]
    assert _parse_classes("cat") == ["cat"]
    code = main(["segment", str(example_image_path()), "--classes", "person|man|woman,chair", "--model",
                 str(tiny_checkpoint), "--json", "--no-bias-correction"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["class_names"] == ["person", "chair"]  # the first name reports
    assert main(["segment", str(example_image_path()), "--classes", "person|chair,chair", "--model",
                 str(tiny_checkpoint)]) == 2
    assert "duplicate class name 'chair' at index 1" in capsys.readouterr().err
