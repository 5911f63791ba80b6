"""Bias correction in evaluation: 'auto' follows config.indicator_trained, and ``alignzeg-eval --calibrate``
picks pbc_threshold / seen_score_offset on a validation split and writes a calibrated copy of the model to
``--out`` (the model read is never modified); calibration and evaluation never share images."""

import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from alignzeg import AlignZegSegmenter
from alignzeg.train.calibrate import (CalibrationResult, apply_calibration, calibrate, check_calibration_split,
                                      write_calibration)
from alignzeg.train.eval_cli import main
from alignzeg.train.evaluate import evaluate, resolve_bias_correction


@pytest.fixture
def trained_indicator(tiny_segmenter):
    """``tiny_segmenter`` with ``indicator_trained=True`` for the test (restored afterwards)."""
    original = tiny_segmenter.model.config
    tiny_segmenter.model.config = original.replace(indicator_trained=True)
    yield tiny_segmenter
    tiny_segmenter.model.config = original


def test_resolve_bias_correction(tiny_segmenter):
    untrained = tiny_segmenter.config
    trained = untrained.replace(indicator_trained=True)
    assert untrained.indicator_trained is False  # the default of a model that was never trained
    assert resolve_bias_correction(trained, "auto") is True and resolve_bias_correction(trained, None) is True
    assert resolve_bias_correction(trained, False) is False
    with pytest.warns(UserWarning, match=r"class indicator was never trained .*bias correction \(PBC\) is off"):
        assert resolve_bias_correction(untrained, "auto") is False
    assert resolve_bias_correction(untrained, False) is False
    with pytest.raises(ValueError, match="bias_correction=True needs a trained class indicator"):
        resolve_bias_correction(untrained, True)
    with pytest.raises(TypeError, match="bias_correction must be True, False, None or 'auto', got str 'yes'"):
        resolve_bias_correction(trained, "yes")


def test_evaluate_auto_turns_pbc_off_for_an_untrained_indicator(tiny_segmenter, trained_indicator, shapes_factory):
    ds = shapes_factory(num=1)
    untrained = tiny_segmenter.config.replace(indicator_trained=False)
    tiny_segmenter.model.config = untrained
    off = evaluate(tiny_segmenter, ds, bias_correction=False)
    with pytest.warns(UserWarning, match="class indicator was never trained") as caught:
        assert np.array_equal(evaluate(tiny_segmenter, ds).confusion, off.confusion)  # auto = off
    assert len(caught) == 1  # once for the evaluation, not once per image
    with pytest.raises(ValueError, match="needs a trained class indicator"):
        evaluate(tiny_segmenter, ds, bias_correction=True)
    tiny_segmenter.model.config = untrained.replace(indicator_trained=True, pbc_threshold=0.0)
    on = evaluate(tiny_segmenter, ds, bias_correction=True)
    assert np.array_equal(evaluate(tiny_segmenter, ds).confusion, on.confusion)  # auto = on once trained
    assert not np.array_equal(on.confusion, off.confusion)  # threshold 0 flags every proposal


def test_calibration_split_rules():
    check_calibration_split("calib", "val")
    with pytest.raises(ValueError, match="'val' is the evaluation split"):
        check_calibration_split("val", "val")
    with pytest.raises(ValueError, match="'test' looks like a test split"):
        check_calibration_split("test", "val")
    with pytest.raises(ValueError, match="a calibration split is required"):
        check_calibration_split("", "val")


def test_calibrate_picks_the_best_grid_point(trained_indicator, shapes_factory):
    tiny_segmenter = trained_indicator
    ds = shapes_factory(num=2)
    before = tiny_segmenter.config
    result = calibrate(tiny_segmenter, ds, thresholds=(0.0, 0.5, 1.0), offsets=(0.0, 3.0))
    assert tiny_segmenter.config == before  # restored
    assert [(g["threshold"], g["offset"]) for g in result.grid] == [
        (0.0, 0.0), (0.0, 3.0), (0.5, 0.0), (0.5, 3.0), (1.0, 0.0), (1.0, 3.0)]
    for g in result.grid:  # each grid point is evaluate() with those settings (same code path: exact)
        tiny_segmenter.model.config = before.replace(pbc_threshold=g["threshold"], seen_score_offset=g["offset"])
        try:
            assert evaluate(tiny_segmenter, ds, bias_correction=True).hiou == g["hIoU"]
        finally:
            tiny_segmenter.model.config = before
    best = max(result.grid, key=lambda g: g["hIoU"])
    assert (result.pbc_threshold, result.hiou) == (best["threshold"], best["hIoU"])
    # both knobs take effect: flagging every proposal (0) vs none (1), and the offset at threshold 1
    assert result.grid[0]["mIoU(U)"] != result.grid[4]["mIoU(U)"]
    assert (result.grid[4]["mIoU(S)"], result.grid[4]["mIoU(U)"]) != (result.grid[5]["mIoU(S)"], result.grid[5]["mIoU(U)"])
    with pytest.raises(ValueError, match=r"thresholds must be in \[0, 1\], got \[1.5\]"):
        calibrate(tiny_segmenter, ds, thresholds=(1.5,), offsets=(0.0,))
    with pytest.raises(ValueError, match="hIoU is undefined"):
        only_seen = shapes_factory(num=1, seen=("red", "green", "blue", "yellow"))
        calibrate(tiny_segmenter, only_seen, thresholds=(0.5,), offsets=(0.0,))
    tiny_segmenter.model.config = before.replace(indicator_trained=False)
    try:
        with pytest.raises(ValueError, match="needs a trained class indicator"):
            calibrate(tiny_segmenter, ds, thresholds=(0.5,), offsets=(0.0,))
    finally:
        tiny_segmenter.model.config = before


def test_apply_calibration_sets_only_the_two_values(tiny_segmenter):
    before = tiny_segmenter.config
    apply_calibration(tiny_segmenter, CalibrationResult(pbc_threshold=0.7, seen_score_offset=1.5, hiou=0.5))
    try:
        assert tiny_segmenter.config == before.replace(pbc_threshold=0.7, seen_score_offset=1.5)
        assert tiny_segmenter.config.pbc_threshold == 0.7 and tiny_segmenter.config.seen_score_offset == 1.5
    finally:
        tiny_segmenter.model.config = before


def test_write_calibration_replaces_only_the_two_values(tiny_checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    before = json.loads((folder / "config.json").read_text())
    write_calibration(folder, CalibrationResult(pbc_threshold=0.7, seen_score_offset=1.5, hiou=0.5))
    after = json.loads((folder / "config.json").read_text())
    assert list(after) == list(before) and (after["pbc_threshold"], after["seen_score_offset"]) == (0.7, 1.5)
    changed = ("pbc_threshold", "seen_score_offset")
    assert {k: v for k, v in after.items() if k not in changed} == {k: v for k, v in before.items() if k not in changed}
    loaded = AlignZegSegmenter.from_pretrained(folder, device="cpu").config
    assert (loaded.pbc_threshold, loaded.seen_score_offset) == (0.7, 1.5)
    assert not list(folder.glob(".config.json.*"))  # no temporary file left
    with pytest.raises(ValueError, match="pbc_threshold must be in"):
        write_calibration(folder, CalibrationResult(pbc_threshold=2.0, seen_score_offset=0.0, hiou=0.5))
    assert json.loads((folder / "config.json").read_text()) == after  # a refused value leaves the file alone
    with pytest.raises(FileNotFoundError, match="local checkpoint folder"):
        write_calibration(tmp_path / "none", CalibrationResult(0.5, 0.0, 0.5))


def _voc_tree(root):
    base = root / "VOC2012"
    rng = np.random.default_rng(0)
    label = np.zeros((48, 64), np.uint8)
    label[:, 16:32] = 1   # aeroplane (seen)
    label[:, 32:48] = 16  # pottedplant (unseen)
    label[:, 48:] = 255
    for stem in ("c0", "c1", "v0"):
        path = base / "JPEGImages" / f"{stem}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
        (base / "SegmentationClass").mkdir(exist_ok=True)
        Image.fromarray(label, "L").save(base / "SegmentationClass" / f"{stem}.png")
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "calib.txt").write_text("c0\nc1\n")
    (lists / "val.txt").write_text("v0\n")


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_alignzeg_eval_calibrate_writes_a_new_folder_and_never_its_input(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "indicator_trained": True}))
    before = _hashes(folder)
    _voc_tree(tmp_path / "data")
    out = tmp_path / "calibrated"
    base = [str(folder), "--dataset", "voc", "--data-root", str(tmp_path / "data"), "--device", "cpu", "--quiet"]
    calib = ["--calibrate", "--calib-split", "calib", "--thresholds", "0,1", "--offsets", "0,2"]
    assert main(base + calib + ["--out", str(out), "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "calibrated on 'calib': pbc_threshold" in printed and "mIoU(S)" in printed
    assert "calibration: 2 images of split 'calib'" in printed and "evaluation: 1 images of split 'val'" in printed
    assert _hashes(folder) == before  # the input model is untouched, byte for byte
    written = json.loads((out / "config.json").read_text())
    assert written["pbc_threshold"] in (0.0, 1.0) and written["seen_score_offset"] in (0.0, 2.0)
    assert f"pbc_threshold {written['pbc_threshold']:g}, seen_score_offset {written['seen_score_offset']:g}" in printed
    changed = ("pbc_threshold", "seen_score_offset")
    assert {k: v for k, v in written.items() if k not in changed} == {
        k: v for k, v in json.loads((folder / "config.json").read_text()).items() if k not in changed}
    assert _hashes(out)["model.safetensors"] == before["model.safetensors"]
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["images"]["calibration"]["files"] == ["c0.jpg", "c1.jpg"]
    assert report["images"]["evaluated"]["files"] == ["v0.jpg"]
    assert main(base + calib + ["--out", str(out)]) == 2  # not empty any more
    assert "is not empty" in capsys.readouterr().err
    assert main(base + calib + ["--out", str(folder)]) == 2
    assert "the model's own folder" in capsys.readouterr().err
    assert main(base + calib) == 2
    assert "--calibrate needs --out DIR" in capsys.readouterr().err
    assert main(base + ["--calibrate", "--calib-split", "val", "--out", str(tmp_path / "o")]) == 2
    assert "'val' is the evaluation split" in capsys.readouterr().err
    assert main(base + ["--calibrate", "--out", str(tmp_path / "o")]) == 2
    assert "a calibration split is required" in capsys.readouterr().err
    assert main(base + calib[:3] + ["--thresholds", "a,b", "--out", str(tmp_path / "o")]) == 2
    assert "--thresholds must be comma-separated numbers, got 'a,b'" in capsys.readouterr().err
    assert _hashes(folder) == before


def test_calibration_and_evaluation_never_share_images(tiny_checkpoint, tmp_path, capsys):
    _voc_tree(tmp_path / "data")
    lists = tmp_path / "data" / "VOC2012" / "ImageSets" / "Segmentation"
    (lists / "calib.txt").write_text("c0\nv0\n")  # v0 is also in val.txt
    base = [str(tiny_checkpoint), "--dataset", "voc", "--data-root", str(tmp_path / "data"), "--device", "cpu",
            "--quiet", "--calibrate", "--calib-split", "calib", "--out", str(tmp_path / "o")]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "share 1 of their images" in err and "v0.jpg" in err
    # A folder without split subfolders has no 'val' and no 'test': an error, not the same images twice.
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    (flat / "labels").mkdir()
    (flat / "classes.txt").write_text("cat\ndog\n")
    Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(flat / "images" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(flat / "labels" / "a.png")
    assert main([str(tiny_checkpoint), "--dataset", "folder", "--data-root", str(flat), "--split", "test",
                 "--calibrate", "--calib-split", "val", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "split 'test' does not exist" in err and "flat layout images/ without splits" in err
    assert not (tmp_path / "o").exists()


def test_contradictory_options_are_refused(tiny_checkpoint, tmp_path, capsys):
    _voc_tree(tmp_path / "data")
    base = [str(tiny_checkpoint), "--dataset", "voc", "--data-root", str(tmp_path / "data"), "--quiet"]
    cases = {
        ("--bias-correction", "on", "--no-bias-correction"): "--no-bias-correction contradicts --bias-correction on",
        ("--calibrate", "--calib-split", "calib", "--out", str(tmp_path / "o"), "--pbc-threshold", "0.5"):
            "--pbc-threshold fix the values that --calibrate would choose",
        ("--no-bias-correction", "--seen-score-offset", "1"): "no effect with bias correction off",
        ("--calib-split", "calib"): "--calib-split only apply with --calibrate",
    }
    for extra, message in cases.items():
        assert main(base + list(extra)) == 2, extra
        assert message in capsys.readouterr().err


def test_calibrating_the_shipped_demo_model_leaves_the_package_alone(tmp_path, capsys):
    from alignzeg.demo import model_path
    from alignzeg.train.world import export_world
    from alignzeg.demo.world import AttributeWorld, world_config

    before = _hashes(model_path())
    export_world(AttributeWorld(world_config(0)), tmp_path / "w", train_images=1, test_images=2, val_images=2)
    out = tmp_path / "calibrated"
    assert main([str(model_path()), "--dataset", "folder", "--data-root", str(tmp_path / "w"), "--split", "test",
                 "--calibrate", "--calib-split", "val", "--thresholds", "0.5", "--offsets", "0.5", "--out", str(out),
                 "--device", "cpu", "--quiet"]) == 0
    assert _hashes(model_path()) == before
    calibrated = AlignZegSegmenter.from_pretrained(out, device="cpu", local_files_only=True).config
    assert (calibrated.pbc_threshold, calibrated.seen_score_offset) == (0.5, 0.5)
