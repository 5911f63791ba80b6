"""Bias correction in evaluation: 'auto' follows config.indicator_trained, and ``alignzeg-eval --calibrate``
picks pbc_threshold / seen_score_offset on a validation split and writes a calibrated copy of the model to
``--out`` (the model read is never modified); calibration and evaluation never share images."""

import hashlib
import itertools
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from alignzeg import AlignZegSegmenter
from alignzeg.train.evaluation.calibrate import (DEFAULT_OFFSETS, DEFAULT_PBC, DEFAULT_THRESHOLDS, CalibrationResult,
                                      apply_calibration, calibrate, check_calibration_split, write_calibration)
from alignzeg.train.evaluation.calibration_grid import cache_outputs, evaluate_cached
from alignzeg.train.datasets.loaders import build_dataset
from alignzeg.train.evaluation.eval_cli import main
from alignzeg.train.evaluation.evaluate import bias_correction_for_config, evaluate


@pytest.fixture
def trained_indicator(tiny_segmenter):
    """``tiny_segmenter`` with ``indicator_trained=True`` for the test (restored afterwards)."""
    original = tiny_segmenter.model.config
    tiny_segmenter.model.config = original.replace(indicator_trained=True)
    yield tiny_segmenter
    tiny_segmenter.model.config = original


def test_bias_correction_for_config(tiny_segmenter):
    untrained = tiny_segmenter.config
    trained = untrained.replace(indicator_trained=True)
    assert untrained.indicator_trained is False  # the default of a model that was never trained
    assert bias_correction_for_config(trained, "auto") is True and bias_correction_for_config(trained, None) is True
    assert bias_correction_for_config(trained, False) is False
    with pytest.warns(UserWarning, match=r"class indicator was never trained .*bias correction \(PBC\) is off"):
        assert bias_correction_for_config(untrained, "auto") is False
    assert bias_correction_for_config(untrained, False) is False
    with pytest.raises(ValueError, match="bias_correction=True needs a trained class indicator or a seen-score "
                                         "offset"):
        bias_correction_for_config(untrained, True)
    offset = untrained.replace(seen_score_offset=0.5)  # the offset needs no indicator: auto runs it, no warning
    assert bias_correction_for_config(offset, "auto") is True and bias_correction_for_config(offset, True) is True
    with pytest.raises(TypeError, match="bias_correction must be True, False, None or 'auto', got str 'yes'"):
        bias_correction_for_config(trained, "yes")


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
    for training in ("train", "trainaug", "Train_aug"):
        with pytest.raises(ValueError, match=f"calibration split '{training}' is a training split.*"
                                             "--allow-training-split"):
            check_calibration_split(training, "val")
        check_calibration_split(training, "val", allow_training=True)
    check_calibration_split("calib_from_train", "val")  # a held-out list of training images: not a training split


def test_calibrate_picks_the_best_grid_point(trained_indicator, shapes_factory):
    tiny_segmenter = trained_indicator
    ds = shapes_factory(num=2)
    before = tiny_segmenter.config
    weights = [(before.readout_weight_seen, before.readout_weight_unseen)]  # the readout's weights kept fixed
    result = calibrate(tiny_segmenter, ds, thresholds=(0.0, 0.5, 1.0), offsets=(0.0, 3.0), readout_weights=weights)
    assert tiny_segmenter.config == before  # unchanged
    assert [(g["threshold"], g["offset"]) for g in result.grid] == [
        (0.0, 0.0), (0.0, 3.0), (0.5, 0.0), (0.5, 3.0), (1.0, 0.0), (1.0, 3.0)]
    for g in result.grid:  # each grid point is evaluate() (the full segment path) with those settings, to
        # float rounding of the upsampling: the cached outputs are post-processed by the same functions
        tiny_segmenter.model.config = before.replace(pbc_threshold=g["threshold"], seen_score_offset=g["offset"])
        try:
            assert abs(evaluate(tiny_segmenter, ds, bias_correction=True).hiou - g["hIoU"]) < 2e-3
        finally:
            tiny_segmenter.model.config = before
    best = max(result.grid, key=lambda g: g["hIoU"])
    assert (result.pbc_threshold, result.seen_score_offset, result.hiou) == (best["threshold"], best["offset"],
                                                                             best["hIoU"])
    assert result.pbc_soft is False and (result.readout_weight_seen, result.readout_weight_unseen) == weights[0]
    # both knobs take effect: flagging every proposal (0) vs none (1), and the offset at threshold 1
    assert result.grid[0]["mIoU(U)"] != result.grid[4]["mIoU(U)"]
    assert ((result.grid[4]["mIoU(S)"], result.grid[4]["mIoU(U)"])
            != (result.grid[5]["mIoU(S)"], result.grid[5]["mIoU(U)"]))
    with pytest.raises(ValueError, match=r"pbc thresholds must be in \[0, 1\] \(1.0: no proposal flagged\), got 1.5"):
        calibrate(tiny_segmenter, ds, thresholds=(1.5,), offsets=(0.0,))
    with pytest.raises(ValueError, match="hIoU is undefined"):
        only_seen = shapes_factory(num=1, seen=("red", "green", "blue", "yellow"))
        calibrate(tiny_segmenter, only_seen, thresholds=(0.5,), offsets=(0.0,), readout_weights=weights)
    assert result.protocol == "transductive" and result.calibration_classes == tuple(ds.class_names)
    tiny_segmenter.model.config = before.replace(indicator_trained=False)
    try:
        with pytest.raises(ValueError, match="thresholds were given, but PBC's flags need a trained class indicator"):
            calibrate(tiny_segmenter, ds, thresholds=(0.5,), offsets=(0.0,))
        tiny_segmenter.model.config = before.replace(indicator_trained=False, clip_readout=False)
        offsets = calibrate(tiny_segmenter, ds, offsets=(0.0, 3.0))  # the offset alone: no indicator needed
        assert [g["offset"] for g in offsets.grid] == [0.0, 3.0] and offsets.pbc_soft is None
        with pytest.raises(ValueError, match="protocol must be 'transductive' or 'inductive', got 'fixed'"):
            calibrate(tiny_segmenter, ds, protocol="fixed")
    finally:
        tiny_segmenter.model.config = before


def test_apply_calibration_sets_only_the_two_values(tiny_segmenter):
    before = tiny_segmenter.config
    apply_calibration(tiny_segmenter, CalibrationResult(pbc_threshold=0.7, seen_score_offset=1.5, hiou=0.5))
    try:
        assert tiny_segmenter.config == before.replace(pbc_threshold=0.7, seen_score_offset=1.5,
                                                       calibration_protocol="transductive")
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
    assert after["calibration_protocol"] == "transductive" and after["calibration_classes"] == []
    changed = ("pbc_threshold", "seen_score_offset", "calibration_protocol")
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
    (lists / "train.txt").write_text("c0\nc1\n")
    (lists / "val.txt").write_text("v0\n")


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _by_hand(segmenter, dataset, pbc, offsets, weights):
    """The best grid point of ``evaluate_cached`` over pbc x offsets x weights (first of equal hIoUs), and the grid."""
    cached = cache_outputs(segmenter, dataset)
    config = segmenter.config
    grid = []
    for mode, offset, (ws, wu) in itertools.product(pbc, offsets, weights):
        point = {"pbc_threshold": config.pbc_threshold if mode == "soft" else float(mode), "pbc_soft": mode == "soft",
                 "seen_score_offset": float(offset), "readout_weight_seen": float(ws),
                 "readout_weight_unseen": float(wu)}
        grid.append((point, evaluate_cached(cached, config.replace(**point), bias_correction=True).hiou))
    best = grid[0]
    for point, hiou in grid[1:]:
        if hiou > best[1]:
            best = (point, hiou)
    return best, grid


def test_alignzeg_eval_calibrate_writes_a_new_folder_and_never_its_input(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["clip_readout"] is True  # the tiny preset has the CLIP readout
    (folder / "config.json").write_text(json.dumps({**config, "indicator_trained": True}))
    before = _hashes(folder)
    _voc_tree(tmp_path / "data")
    out = tmp_path / "calibrated"
    base = [str(folder), "--dataset", "voc", "--data-root", str(tmp_path / "data"), "--device", "cpu", "--quiet"]
    calib = ["--calibrate", "--transductive", "--calib-split", "calib", "--thresholds", "0,1,soft", "--offsets", "0,2",
             "--readout-weights", "0:0,0.6:1"]
    assert main(base + calib + ["--out", str(out), "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "calibrated on 'calib' (12 grid points): pbc_threshold" in printed and "mIoU(S)" in printed
    assert "calibration: 2 images of split 'calib'" in printed and "evaluation: 1 images of split 'val'" in printed
    assert _hashes(folder) == before  # the input model is untouched, byte for byte
    written = json.loads((out / "config.json").read_text())
    assert written["pbc_threshold"] in (0.0, 1.0, config["pbc_threshold"])  # soft PBC keeps the model's threshold
    assert written["seen_score_offset"] in (0.0, 2.0)
    assert isinstance(written["pbc_soft"], bool)
    assert (written["readout_weight_seen"], written["readout_weight_unseen"]) in ((0.0, 0.0), (0.6, 1.0))
    report = json.loads((tmp_path / "m.json").read_text())
    soft = "on" if written["pbc_soft"] else "off"
    assert (f"pbc_threshold {written['pbc_threshold']:g}, seen_score_offset {written['seen_score_offset']:g}, "
            f"pbc_soft {soft}, readout weights {written['readout_weight_seen']:g} (seen) / "
            f"{written['readout_weight_unseen']:g} (unseen) "
            f"(transductive) (hIoU {report['calibration']['hIoU']:.2f})") in printed  # percent in both
    assert written["calibration_protocol"] == "transductive" and report["calibration"]["protocol"] == "transductive"
    assert written["calibration_classes"] == report["calibration"]["calibration_classes"]  # every VOC class
    assert len(written["calibration_classes"]) == 20 and "pottedplant" in written["calibration_classes"]
    changed = ("pbc_threshold", "seen_score_offset", "pbc_soft", "readout_weight_seen", "readout_weight_unseen",
               "calibration_protocol", "calibration_classes")
    assert {k: v for k, v in written.items() if k not in changed} == {
        k: v for k, v in json.loads((folder / "config.json").read_text()).items() if k not in changed}
    assert list(written) == list(json.loads((folder / "config.json").read_text()))  # key order kept
    assert _hashes(out)["model.safetensors"] == before["model.safetensors"]
    card = (out / "README.md").read_text()  # the copy's model card states the chosen settings, not the input's
    assert (f"threshold {written['pbc_threshold']}" in card and f"seen-score offset {written['seen_score_offset']}"
            in card and "chosen transductively" in card)
    assert report["images"]["calibration"]["files"] == ["c0.jpg", "c1.jpg"]
    assert report["images"]["evaluated"]["files"] == ["v0.jpg"]
    assert report["calibration"]["chosen"] == {k: written[k] for k in changed}
    settings = changed[:5]
    assert report["calibration"]["grid_points"] == 12
    assert {k: report[k] for k in settings} == {k: written[k] for k in settings}  # the evaluated config's values
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
    bad = {("--thresholds", "a,b"): "--thresholds must be comma-separated numbers or 'soft', got 'a' in 'a,b'",
           ("--thresholds", "0.5,1.5"): "pbc thresholds must be in [0, 1] (1.0: no proposal flagged), got 1.5",
           ("--thresholds", "hard"): "got 'hard' in 'hard'",
           ("--offsets", "0,-1"): "seen-score offsets must be finite and >= 0 (logits), got -1.0",
           ("--offsets", "nan"): "seen-score offsets must be finite and >= 0 (logits), got nan",
           ("--offsets", ","): "--offsets is empty; give at least one value",
           ("--readout-weights", "0.3"): "SEEN:UNSEEN pairs of numbers, got '0.3' in '0.3'",
           ("--readout-weights", "0:0,0.3:1.2"): "readout weights must be in [0, 1], got 1.2 in (0.3, 1.2)"}
    for (option, value), message in bad.items():
        assert main(base + calib[:4] + [option, value, "--out", str(tmp_path / "o")]) == 2, (option, value)
        assert message in capsys.readouterr().err, (option, value)
    assert not (tmp_path / "o").exists()
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
            "--calibrate chooses the bias-correction values itself, so it cannot be combined with --pbc-threshold; "
            "give one or the other",
        ("--no-bias-correction", "--seen-score-offset", "1"):
            "with bias correction off, --seen-score-offset would change nothing; drop it or turn bias correction on",
        ("--no-bias-correction", "--seen-score-offset", "1", "--pbc-threshold", "0.5"):
            "with bias correction off, --pbc-threshold and --seen-score-offset would change nothing; drop them",
        ("--calib-split", "calib"): "calibration options without --calibrate: --calib-split; add --calibrate or drop it",
        ("--readout-weights", "0:0", "--transductive"):
            "calibration options without --calibrate: --readout-weights, --transductive; add --calibrate or drop them",
        ("--allow-training-split",): "calibration options without --calibrate: --allow-training-split",
        # a training split: refused unless said explicitly
        ("--calibrate", "--calib-split", "train", "--out", str(tmp_path / "o")):
            "calibration split 'train' is a training split: settings chosen on images the model was trained on "
            "suit those images, not new ones;",
        ("--calibrate", "--calib-split", "calib", "--out", str(tmp_path / "o"), "--transductive",
         "--calibration-model", str(tmp_path)): "--calibration-model calibrates inductively and --transductive",
        # tiny_checkpoint's class indicator was never trained: PBC's thresholds do not apply to it
        ("--device", "cpu", "--no-bias-correction", "--calibrate", "--transductive", "--calib-split", "calib",
         "--out", str(tmp_path / "o"), "--thresholds", "0,1"):
            "thresholds were given, but PBC's flags need a trained class indicator",
        # calibrating the model on labels of its unseen classes without saying so
        ("--device", "cpu", "--no-bias-correction", "--calibrate", "--calib-split", "calib", "--out",
         str(tmp_path / "o")):
            "split 'calib' labels classes outside the model's seen classes: ['pottedplant']; choosing settings with "
            "their labels is transductive calibration. Calibrate inductively with --calibration-model DIR",
    }
    for extra, message in cases.items():
        assert main(base + list(extra)) == 2, extra
        assert message in capsys.readouterr().err


def test_calibrating_the_shipped_demo_model_leaves_the_package_alone(tmp_path, capsys):
    from alignzeg.demo import model_path
    from alignzeg.worlds.export import export_world
    from alignzeg.worlds.attributes import AttributeWorld, world_config

    before = _hashes(model_path())
    export_world(AttributeWorld(world_config(0)), tmp_path / "w", train_images=1, test_images=2, val_images=2)
    out = tmp_path / "calibrated"
    assert main([str(model_path()), "--dataset", "folder", "--data-root", str(tmp_path / "w"), "--split", "test",
                 "--calibrate", "--transductive", "--calib-split", "val", "--thresholds", "0.5", "--offsets", "0.5",
                 "--out", str(out),
                 "--device", "cpu", "--quiet"]) == 0
    assert _hashes(model_path()) == before
    calibrated = AlignZegSegmenter.from_pretrained(out, device="cpu", local_files_only=True).config
    assert (calibrated.pbc_threshold, calibrated.seen_score_offset) == (0.5, 0.5)


def _wide_world(root, val=3, test=1):
    """The attribute world as a folder dataset whose val/test images are 64 x 96 (two world images side by
    side, cut): two overlapping windows of the 64 px model each, averaged where they overlap."""
    from alignzeg.worlds.attributes import AttributeWorld, world_config
    from alignzeg.worlds.export import export_world

    export_world(AttributeWorld(world_config(0)), root, train_images=1, test_images=2 * test, val_images=2 * val)
    for split, count in (("val", val), ("test", test)):
        for sub in ("images", "labels"):
            files = sorted((root / split / sub).iterdir())
            planes = [np.asarray(Image.open(f)) for f in files]
            for f in files:
                f.unlink()
            for i in range(count):
                joined = np.concatenate([planes[2 * i], planes[2 * i + 1][:, :32]], axis=1)
                Image.fromarray(joined).save(root / split / sub / f"w{i}.png")
    return root


def test_calibrated_demo_model_gets_the_best_readout_weights_of_the_grid(tmp_path, capsys):
    """The shipped demo model (CLIP readout, trained class indicator) on images that need two windows: the
    written choice is the best grid point computed by hand with ``evaluate_cached``, and the cached
    post-processing gives ``evaluate``'s (the full segment path's) hIoU to float rounding."""
    from alignzeg.demo import model_path

    folder = tmp_path / "demo"
    shutil.copytree(model_path(), folder)
    before = _hashes(folder)
    data = _wide_world(tmp_path / "w")
    out = tmp_path / "calibrated"
    pbc, offsets, weights = (0.5, 1.0, "soft"), (0.0, 1.0), ((0.0, 0.0), (0.3, 0.5), (0.6, 1.0))
    assert main([str(folder), "--dataset", "folder", "--data-root", str(data), "--split", "test", "--calibrate",
                 "--transductive", "--calib-split", "val", "--thresholds", "0.5,1,soft", "--offsets", "0,1", "--readout-weights",
                 "0:0,0.3:0.5,0.6:1", "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    assert "(18 grid points)" in capsys.readouterr().out
    assert _hashes(folder) == before
    written = json.loads((out / "config.json").read_text())
    segmenter = AlignZegSegmenter.from_pretrained(folder, device="cpu", local_files_only=True)
    val = build_dataset("folder", data, split="val", train=False)
    assert [tuple(val[i]["image"].shape[:2]) for i in range(len(val))] == [(64, 96)] * 3
    (best, hiou), grid = _by_hand(segmenter, val, pbc, offsets, weights)
    assert {k: written[k] for k in best} == best
    by_weights = {}
    for point, h in grid:
        by_weights.setdefault((point["pbc_threshold"], point["pbc_soft"], point["seen_score_offset"]), set()).add(h)
    assert any(len(v) > 1 for v in by_weights.values())  # the readout weights change hIoU: the choice means something
    result = calibrate(segmenter, val, pbc, offsets, readout_weights=weights)  # the Python function: same choice
    assert {k: result.settings[k] for k in best} == best and result.hiou == pytest.approx(hiou, abs=1e-6) and len(result.grid) == 18
    original = segmenter.model.config
    for point in (best, grid[0][0]):  # the cached path against the full segment path, two windows per image
        segmenter.model.config = original.replace(**point)
        try:
            full = evaluate(segmenter, val, bias_correction=True).hiou
        finally:
            segmenter.model.config = original
        fast = [h for p, h in grid if p == point][0]
        assert abs(full - fast) < 2e-3, (point, full, fast)


def test_calibrate_chooses_only_the_settings_that_apply(trained_indicator, shapes_factory):
    """Without a trained indicator the offsets and the readout weights are searched (PBC's threshold and mode
    stay the model's); without the readout PBC's and the offsets; the result sets exactly those
    (``settings``, with the provenance)."""
    seg, ds = trained_indicator, shapes_factory(num=2)
    before = seg.config
    weights = ((0.0, 0.0), (0.6, 1.0))
    seg.model.config = before.replace(indicator_trained=False, pbc_threshold=0.7, seen_score_offset=0.25)
    try:
        result = calibrate(seg, ds, offsets=(0.0,), readout_weights=weights)
        assert len(result.grid) == 2 and result.pbc_soft is None
        assert (result.pbc_threshold, result.seen_score_offset) == (0.7, 0.0)
        assert set(result.settings) == {"pbc_threshold", "seen_score_offset", "readout_weight_seen",
                                        "readout_weight_unseen", "calibration_protocol", "calibration_classes"}
        cached = cache_outputs(seg, ds)
        hand = [evaluate_cached(cached, seg.config.replace(readout_weight_seen=s, readout_weight_unseen=u,
                                                           seen_score_offset=0.0), bias_correction=False).hiou
                for s, u in weights]
        assert [g["hIoU"] for g in result.grid] == pytest.approx(hand, abs=1e-6)
        assert (result.readout_weight_seen, result.readout_weight_unseen) == weights[int(hand[1] > hand[0])]
        assert len(calibrate(seg, ds, readout_weights=weights).grid) == 2 * len(DEFAULT_OFFSETS)
        seg.model.config = before.replace(clip_readout=False)
        with pytest.raises(ValueError, match=r"readout_weights \[\(0.0, 0.0\), \(0.6, 1.0\)\] were given, but the "
                                             r"model has no CLIP readout"):
            calibrate(seg, ds, readout_weights=weights)
        for bad, message in (({"readout_weights": [(0.3, 1.2)]}, r"readout weights must be in \[0, 1\], got 1.2 in "
                                                                 r"\(0.3, 1.2\)"),
                             ({"offsets": [-1.0]}, "seen-score offsets must be finite and >= 0 \\(logits\\), got -1.0"),
                             ({"thresholds": ["sof"]}, "must be a threshold in \\[0, 1\\] or 'soft', got 'sof'"),
                             ({"thresholds": []}, r"pbc must be a non-empty sequence .*got \[\]")):
            with pytest.raises(ValueError, match=message):
                calibrate(seg, ds, **bad)
        with pytest.raises(TypeError, match=r"a readout_weights point must be a \(seen, unseen\) pair, got 0.3"):
            calibrate(seg, ds, readout_weights=[0.3])
    finally:
        seg.model.config = before


def test_a_model_without_the_readout_gets_the_choice_of_the_full_path_search(shapes_factory):
    """The search before this calibration ran ``evaluate`` (the full segment path) per threshold x offset;
    on a model without the CLIP readout and the same grid, the cached search makes the same choice. Soft
    PBC, searched by default after the thresholds, is chosen only when strictly better."""
    seg = AlignZegSegmenter.from_preset("tiny", seen_classes=("red", "green", "blue"), seed=0,
                                        config_overrides={"clip_readout": False, "indicator_trained": True})
    ds = shapes_factory(num=3)
    config = seg.config
    old = []
    for threshold, offset in itertools.product(DEFAULT_THRESHOLDS, DEFAULT_OFFSETS):
        seg.model.config = config.replace(pbc_threshold=threshold, seen_score_offset=offset)
        old.append(((threshold, offset), evaluate(seg, ds, bias_correction=True).hiou))
    seg.model.config = config
    assert len({h for _, h in old}) > 1  # the grid points differ: the choice means something
    (old_choice, old_hiou) = max(old, key=lambda g: g[1])  # the first of equal values, as before
    new = calibrate(seg, ds, thresholds=DEFAULT_THRESHOLDS)
    assert (new.pbc_threshold, new.seen_score_offset) == old_choice and new.pbc_soft is False
    assert abs(new.hiou - old_hiou) < 2e-3
    assert new.readout_weight_seen is None and set(new.settings) == {
        "pbc_threshold", "seen_score_offset", "pbc_soft", "calibration_protocol", "calibration_classes"}
    default = calibrate(seg, ds)
    assert len(default.grid) == len(DEFAULT_PBC) * len(DEFAULT_OFFSETS)
    if default.pbc_soft:
        assert default.hiou > new.hiou
    else:
        assert (default.pbc_threshold, default.seen_score_offset) == old_choice


def test_describe_names_only_the_settings_that_act():
    from alignzeg.train.evaluation.calibrate import CalibrationResult

    hard = CalibrationResult(0.7, 1.0, 0.5, pbc_soft=False, readout_weight_seen=0.3, readout_weight_unseen=0.8)
    assert hard.describe() == ("pbc_threshold 0.7, seen_score_offset 1, pbc_soft off, "
                               "readout weights 0.3 (seen) / 0.8 (unseen) (transductive)")
    soft = CalibrationResult(0.5, 0.25, 0.5, pbc_soft=True, protocol="inductive")
    assert soft.describe() == "soft PBC (no threshold), seen_score_offset 0.25 (inductive)"
    assert CalibrationResult(0.5, 0.0, 0.5).describe() == "pbc_threshold 0.5, seen_score_offset 0 (transductive)"


def test_calibrating_on_the_training_split_needs_saying_so_and_warns(tiny_checkpoint, tmp_path, capsys):
    _voc_tree(tmp_path / "data")
    args = [str(tiny_checkpoint), "--dataset", "voc", "--data-root", str(tmp_path / "data"), "--quiet", "--device",
            "cpu", "--no-bias-correction", "--calibrate", "--transductive", "--calib-split", "train", "--offsets",
            "0,1", "--readout-weights", "0:0"]
    assert main(args + ["--out", str(tmp_path / "refused")]) == 2
    assert "calibration split 'train' is a training split" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
    assert main(args + ["--allow-training-split", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert ("alignzeg-eval: warning: calibrating on training split 'train' (--allow-training-split): if the model "
            "was trained on these images, the chosen settings suit them better than new images") in err
    assert (tmp_path / "o" / "config.json").is_file()
