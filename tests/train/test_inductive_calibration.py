"""Inductive calibration: a calibration model holds validation classes out of training, the settings are
chosen on them, and no label of any other class (a class unseen at test time) is ever read."""

import json
import shutil

import numpy as np
import pytest

from alignzeg import AlignZegSegmenter
from alignzeg.train import TrainConfig, Trainer
from alignzeg.train.evaluation.calibrate import (CalibrationView, calibrate_inductive, check_calibration_model,
                                      labelled_classes, pick_validation_classes, validation_classes)
from alignzeg.train.training.train_cli import validation_choice
from alignzeg.train.evaluation.eval_cli import main as eval_main

WORLD_GRID = dict(thresholds=(0.5, 1.0, "soft"), offsets=(0.0, 1.0), readout_weights=((0.0, 0.0), (0.4, 0.8)))


@pytest.fixture(scope="module")
def world():
    from alignzeg.worlds.attributes import AttributeWorld, world_config

    return AttributeWorld(world_config(0))


@pytest.fixture(scope="module")
def calibration_model(world):
    """The shipped demo model dressed as a calibration model: 8 of its 40 seen classes recorded as held out
    (the choice then means nothing about quality, but every label it reads is checked)."""
    from alignzeg.demo import model_path

    segmenter = AlignZegSegmenter.from_pretrained(model_path(), device="cpu", local_files_only=True)
    held_out = pick_validation_classes(world.seen_classes, 8, seed=0)
    config = segmenter.model.config
    segmenter.model.config = config.replace(
        seen_classes=tuple(c for c in config.seen_classes if c not in held_out),
        extra={**config.extra, "validation_classes": held_out})
    return segmenter, held_out


class Relabelled:
    """A dataset whose pixels of ``classes`` get the label ``value(k)`` instead (every other pixel kept)."""

    def __init__(self, dataset, classes, value):
        self.dataset, self.class_names, self.seen_classes = dataset, dataset.class_names, dataset.seen_classes
        self.ids = [dataset.class_names.index(c) for c in classes]
        self.value = value

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = dict(self.dataset[i])
        label = np.asarray(item["label"]).copy()
        for k in self.ids:
            label[np.asarray(item["label"]) == k] = self.value(k)
        item["label"] = label
        return item


def test_inductive_calibration_reads_no_label_of_a_test_unseen_class(world, calibration_model):
    from alignzeg.worlds.export import WorldDataset

    segmenter, held_out = calibration_model
    val = WorldDataset(world, "val", 6)
    unseen = list(world.unseen_classes)
    assert set(unseen) & set(labelled_classes(val))  # the split does label test-unseen pixels
    result = calibrate_inductive(segmenter, val, **WORLD_GRID)
    assert result.protocol == "inductive" and set(result.calibration_classes) == set(world.seen_classes)
    assert not set(result.calibration_classes) & set(unseen)
    assert result.settings["calibration_protocol"] == "inductive"
    # Every test-unseen pixel relabelled (ignored, or as another unseen class): the same grid, point for point.
    unseen_ids = [world.class_names.index(c) for c in unseen]
    for value in (lambda k: 255, lambda k: unseen_ids[(unseen_ids.index(k) + 1) % len(unseen_ids)]):
        again = calibrate_inductive(segmenter, Relabelled(val, unseen, value), **WORLD_GRID)
        assert [g["hIoU"] for g in again.grid] == [g["hIoU"] for g in result.grid]
        assert again.settings == result.settings
    # The same relabelling into a validation class is read: the grid changes (the check above can fail).
    target = world.class_names.index(held_out[0])
    moved = calibrate_inductive(segmenter, Relabelled(val, unseen, lambda k: target), **WORLD_GRID)
    assert [g["hIoU"] for g in moved.grid] != [g["hIoU"] for g in result.grid]


def test_calibration_view_keeps_only_the_calibration_classes(world):
    from alignzeg.worlds.export import WorldDataset

    val = WorldDataset(world, "val", 2)
    keep = world.seen_classes[:5]
    view = CalibrationView(val, keep, keep[:3])
    assert view.class_names == keep and view.seen_classes == keep[:3] and len(view) == 2
    raw, seen_label = np.asarray(val[1]["label"]), np.asarray(view[1]["label"])
    for k, name in enumerate(val.class_names):  # each kept class moves to its index in the view; the rest is 255
        expected = keep.index(name) if name in keep else 255
        assert (seen_label[raw == k] == expected).all()
    with pytest.raises(ValueError, match=r"calibration classes \['sky'\] are not classes of the calibration split"):
        CalibrationView(val, ("sky",), ())
    with pytest.raises(ValueError, match=r"seen classes \['red grid'\] are not calibration classes"):
        CalibrationView(val, keep, ("red grid",))


def test_validation_classes_are_drawn_from_the_seen_classes():
    seen = ("a", "b", "c", "d", "e")
    picked = pick_validation_classes(seen, 2, seed=3)
    assert len(picked) == 2 and set(picked) <= set(seen) and picked == pick_validation_classes(seen, 2, seed=3)
    assert list(picked) == [s for s in seen if s in picked]  # in the seen classes' order
    assert {pick_validation_classes(seen, 2, seed=s) for s in range(20)} != {picked}  # the seed matters
    for bad in (0, 5, 2.0, True):
        with pytest.raises(ValueError, match=r"an integer in \[1, 4\]"):
            pick_validation_classes(seen, bad)
    assert validation_choice("2", seen) == pick_validation_classes(seen, 2, seed=0)
    assert validation_choice("c, a", seen) == ("c", "a")
    with pytest.raises(ValueError, match=r"--validation-classes must be a count or seen class names, got 'a,z' "
                                         r"\(\['z'\] are not seen classes\)"):
        validation_choice("a,z", seen)


def test_a_calibration_model_is_trained_without_its_validation_classes():
    from shapes_data import ShapesDataset

    data = ShapesDataset(num=4)
    config = TrainConfig(preset="tiny", iterations=1, batch_size=2, progress=False, checkpoint_every=0,
                         device="cpu", validation_classes=("green",))
    trainer = Trainer(config, None, data)
    assert trainer.class_names == ("red", "blue")  # green's pixels are ignored, like an unseen class's
    lut = trainer._label_lut()
    assert (lut[0], lut[1], lut[2], lut[3]) == (0, 255, 1, 255)
    assert trainer.model.config.seen_classes == ("red", "blue")
    assert validation_classes(trainer.model.config) == ("green",)
    with pytest.raises(ValueError, match=r"validation_classes \['yellow'\] are not seen classes"):
        TrainConfig(seen_classes=("red", "green"), validation_classes=("yellow",))
    with pytest.raises(ValueError, match="validation_classes holds out all 1 seen classes"):
        TrainConfig(seen_classes=("red",), validation_classes=("red",))
    with pytest.raises(ValueError, match=r"validation classes \['yellow'\] are not among the seen classes"):
        Trainer(config.replace(validation_classes=("yellow",)), None, data)


def test_check_calibration_model(calibration_model):
    segmenter, held_out = calibration_model
    from alignzeg.demo import model_path

    final = AlignZegSegmenter.from_pretrained(model_path(), device="cpu", local_files_only=True).config
    check_calibration_model(final, segmenter.config)
    with pytest.raises(ValueError, match="records no validation classes"):
        check_calibration_model(final, final)
    narrower = final.replace(seen_classes=tuple(c for c in final.seen_classes if c != held_out[0]))
    with pytest.raises(ValueError, match=rf"classes \['{held_out[0]}'\] are not seen classes of the model"):
        check_calibration_model(narrower, segmenter.config)
    with pytest.raises(ValueError, match="inductive calibration needs a calibration model"):
        calibrate_inductive(AlignZegSegmenter.from_pretrained(model_path(), device="cpu", local_files_only=True),
                            None)


def test_alignzeg_eval_calibrates_inductively_and_refuses_unseen_labels(world, calibration_model, tmp_path, capsys):
    from alignzeg.demo import model_path
    from alignzeg.worlds.export import export_world

    segmenter, held_out = calibration_model
    calib_dir = tmp_path / "calibration_model"
    segmenter.save_pretrained(calib_dir)
    data = export_world(world, tmp_path / "w", train_images=1, test_images=2, val_images=3)
    base = [str(model_path()), "--dataset", "folder", "--data-root", str(data), "--split", "test", "--device", "cpu",
            "--quiet", "--calibrate", "--calib-split", "val", "--thresholds", "0.5,1", "--offsets", "0,1",
            "--readout-weights", "0:0,0.4:0.8"]
    # Without a calibration model the model's own unseen labels would choose: refused, naming them and the flag.
    assert eval_main(base + ["--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    labelled = [c for c in labelled_classes(_folder(data, "val")) if c in world.unseen_classes]
    assert f"split 'val' labels classes outside the model's seen classes: {labelled}" in err
    assert "--transductive" in err and "--calibration-model" in err and not (tmp_path / "refused").exists()
    out = tmp_path / "inductive"
    assert eval_main(base + ["--calibration-model", str(calib_dir), "--out", str(out), "--json",
                             str(tmp_path / "i.json")]) == 0
    printed = capsys.readouterr().out
    assert "(inductive)" in printed
    written = json.loads((out / "config.json").read_text())
    assert written["calibration_protocol"] == "inductive"
    assert set(written["calibration_classes"]) == set(world.seen_classes)
    assert json.loads((tmp_path / "i.json").read_text())["calibration"]["protocol"] == "inductive"
    out = tmp_path / "transductive"
    assert eval_main(base + ["--transductive", "--out", str(out)]) == 0
    assert "(transductive)" in capsys.readouterr().out
    written = json.loads((out / "config.json").read_text())
    assert written["calibration_protocol"] == "transductive" and set(labelled) <= set(written["calibration_classes"])


def _folder(root, split):
    from alignzeg.train.datasets.loaders import build_dataset

    return build_dataset("folder", root, split=split, train=False)


def test_a_format_3_config_loads_uncalibrated_with_the_joint_void(tmp_path):
    from alignzeg.demo import model_path

    folder = tmp_path / "m"
    shutil.copytree(model_path(), folder)
    data = json.loads((folder / "config.json").read_text())
    for key in ("ensemble_void", "calibration_protocol", "calibration_classes"):
        data.pop(key, None)
    data["format_version"] = 3
    (folder / "config.json").write_text(json.dumps(data))
    config = AlignZegSegmenter.from_pretrained(folder, device="cpu", local_files_only=True).config
    assert (config.ensemble_void, config.calibration_protocol, config.calibration_classes) == ("joint", "none", ())
    # Calibrating it writes today's format: every field, the chosen values and their provenance.
    from alignzeg.train.evaluation.calibrate import CalibrationResult, write_calibration

    write_calibration(folder, CalibrationResult(0.5, 1.0, 0.6, protocol="inductive", calibration_classes=("a", "b")))
    written = json.loads((folder / "config.json").read_text())
    assert written["format_version"] == 5 and written["ensemble_void"] == "joint"
    assert (written["seen_score_offset"], written["calibration_protocol"], written["calibration_classes"]) == (
        1.0, "inductive", ["a", "b"])
    assert AlignZegSegmenter.from_pretrained(folder, device="cpu", local_files_only=True).config.seen_score_offset == 1.0
