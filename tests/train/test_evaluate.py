"""Evaluation: exact metrics on hand-made confusion matrices, evaluate() = the inference path, alignzeg-eval."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from alignzeg.train.evaluation.eval_cli import main
from alignzeg.train.evaluation.evaluate import ConfusionMatrix, compute_metrics, evaluate
from shapes_data import write_folder_dataset

LABEL = np.array([[0, 0, 1, 1], [2, 2, 255, 0]])
PRED = np.array([[0, 1, 1, 1], [2, 0, 2, -1]])


def test_confusion_matrix_by_hand():
    cm = ConfusionMatrix(3)
    cm.update(PRED, LABEL)
    # rows: true class; columns: predicted 0, 1, 2, other (-1)
    assert cm.matrix.tolist() == [[1, 1, 0, 1], [0, 2, 0, 0], [1, 0, 1, 0]]
    with pytest.raises(ValueError, match=r"label values must be in \[0, 3\) or 255, got range \[0, 7\]"):
        cm.update(np.zeros((1, 2)), np.array([[0, 7]]))
    with pytest.raises(ValueError, match="does not match label shape"):
        cm.update(np.zeros((1, 2)), np.zeros((2, 2)))


def test_metrics_by_hand():
    cm = ConfusionMatrix(3)
    cm.update(PRED, LABEL)
    r = compute_metrics(cm.matrix, [True, True, False], ["a", "b", "c"])
    # IoU0 = 1 / (3 + 2 - 1), IoU1 = 2 / (2 + 3 - 2), IoU2 = 1 / (2 + 1 - 1)
    assert r.iou.tolist() == pytest.approx([0.25, 2 / 3, 0.5])
    s, u = (0.25 + 2 / 3) / 2, 0.5
    assert r.miou_seen == pytest.approx(s) and r.miou_unseen == pytest.approx(u)
    assert r.hiou == pytest.approx(2 * s * u / (s + u))
    assert r.miou == pytest.approx((0.25 + 2 / 3 + 0.5) / 3)
    assert r.pixel_accuracy == pytest.approx(4 / 7)
    table = r.table()
    assert "UNSEEN   50.0" in table and "hIoU 47.83" in table
    data = r.to_dict()  # percent, as printed, under the model card's keys
    assert data["unit"] == "percent"
    assert data["hIoU"] == pytest.approx(100 * 2 * s * u / (s + u))
    assert (data["mIoU_seen"], data["mIoU_unseen"]) == pytest.approx((100 * s, 100 * u))
    assert data["mIoU"] == pytest.approx(100 * (0.25 + 2 / 3 + 0.5) / 3)
    assert data["pixel_accuracy"] == pytest.approx(100 * 4 / 7)
    assert [c["IoU"] for c in data["per_class"]] == pytest.approx([25.0, 200 / 3, 50.0])
    assert f"hIoU {data['hIoU']:.2f}" in table


def test_the_json_uses_the_model_cards_metric_keys():
    from alignzeg.demo import model_path

    card = Path(model_path(), "README.md").read_text()
    front = card.split("---")[1]
    card_keys = [line.split(":")[0].strip() for line in front.split("metrics:")[1].splitlines() if line.strip()]
    assert card_keys == ["hIoU", "mIoU_seen", "mIoU_unseen"]
    cm = ConfusionMatrix(3)
    cm.update(PRED, LABEL)
    assert set(card_keys) <= set(compute_metrics(cm.matrix, [True, True, False], ["a", "b", "c"]).to_dict())


def test_unseen_as_seen_and_the_confusion_matrix_in_the_json_by_hand():
    cm = ConfusionMatrix(3)
    cm.update(PRED, LABEL)
    r = compute_metrics(cm.matrix, [True, True, False], ["a", "b", "c"])
    # row c (unseen) = [1, 0, 1, 0]: one of its 2 pixels went to a seen class; seen rows never predict c
    assert r.unseen_as_seen == 0.5 and r.seen_as_unseen == 0.0
    data = r.to_dict()
    assert data["unseen_as_seen"] == 50.0 and data["confusion"]["matrix"] == [[1, 1, 0, 1], [0, 2, 0, 0], [1, 0, 1, 0]]
    assert math.isnan(compute_metrics(cm.matrix, [True, True, True], ["a", "b", "c"]).unseen_as_seen)


def test_absent_classes_are_left_out():
    # class 2 never appears in labels or predictions: NaN, not a zero in the mean
    matrix = np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]])
    r = compute_metrics(matrix, [True, False, False], ["a", "b", "c"])
    assert math.isnan(r.iou[2])
    assert r.miou_seen == pytest.approx(0.75) and r.miou_unseen == pytest.approx(0.8)
    assert r.hiou == pytest.approx(2 * 0.75 * 0.8 / 1.55)
    only_seen = compute_metrics(matrix, [True, True, True], ["a", "b", "c"])
    assert math.isnan(only_seen.miou_unseen) and math.isnan(only_seen.hiou)
    assert compute_metrics(np.zeros((2, 2), int), [True, False], ["a", "b"]).to_dict()["hIoU"] is None
    with pytest.raises(ValueError, match="need 3 seen flags and class names, got 2 and 3"):
        compute_metrics(matrix, [True, False], ["a", "b", "c"])


def test_evaluate_runs_the_segment_path(tiny_segmenter, shapes_factory):
    ds = shapes_factory(num=2)
    result = evaluate(tiny_segmenter, ds, bias_correction=False)
    expected = ConfusionMatrix(4)
    seen = [n in ds.seen_classes for n in ds.class_names]
    for item in ds.items:
        pred = tiny_segmenter.segment(item["image"], ds.class_embeddings, seen=seen, class_names=ds.class_names,
                                      bias_correction=False)  # evaluate's auto: the indicator was never trained
        expected.update(pred.label_map, item["label"])
    assert np.array_equal(result.confusion, expected.matrix)
    assert result.confusion.sum() == sum(int((it["label"] != 255).sum()) for it in ds.items)
    assert result.seen.tolist() == [True, True, True, False]


def test_alignzeg_eval_cli(tiny_checkpoint, tmp_path, capsys):
    label = np.zeros((32, 40), np.uint8)
    label[:, 20:] = 1
    label[:4] = 255
    root = write_folder_dataset(tmp_path / "data", ["cat", "dog"], {"a.jpg": (np.full((32, 40, 3), 90, np.uint8), label)})
    out = tmp_path / "m.json"
    rc = main([str(tiny_checkpoint), "--bias-correction", "off",  # untrained indicator: PBC off, no warning
               "--dataset", "folder", "--data-root", str(root), "--seen", "cat",
               "--device", "cpu", "--quiet", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mIoU(S)" in printed and "dog" in printed
    metrics = json.loads(out.read_text())
    summary = printed.strip().splitlines()[-1].split()  # mIoU(S) x  mIoU(U) y  hIoU z  mIoU w  pAcc v
    printed_values = dict(zip(summary[::2], summary[1::2]))
    for shown, key in (("hIoU", "hIoU"), ("mIoU(S)", "mIoU_seen"), ("mIoU(U)", "mIoU_unseen"), ("mIoU", "mIoU"),
                       ("pAcc", "pixel_accuracy")):
        value = metrics[key]
        assert printed_values[shown] == ("nan" if value is None else f"{value:.2f}"), (shown, printed_values)
    assert metrics["pixel_accuracy"] is not None and 0 < metrics["pixel_accuracy"] <= 100
    assert [c["class"] for c in metrics["per_class"]] == ["cat", "dog"]
    assert [c["seen"] for c in metrics["per_class"]] == [True, False]
    matrix = np.array(metrics["confusion"]["matrix"])
    assert matrix.shape == (2, 3) and matrix.sum() == 28 * 40  # every valid pixel (4 rows ignored)
    assert metrics["unseen_as_seen"] == pytest.approx(100 * matrix[1, 0] / matrix[1].sum())
    assert metrics["images"]["evaluated"] == {"split": None, "count": 1, "folder": str(root.resolve() / "images"),
                                              "files": ["a.jpg"]}
    assert main([str(tiny_checkpoint), "--dataset", "voc", "--data-root", str(tmp_path / "nope")]) == 2
    assert "expected layout" in capsys.readouterr().err


def test_fixed_bias_correction_values_are_evaluated_without_writing(tiny_checkpoint, tmp_path):
    import hashlib
    import shutil

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "indicator_trained": True}))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    label = np.zeros((32, 40), np.uint8)
    label[:, 20:] = 1
    pixels = np.random.default_rng(0).integers(0, 255, (32, 40, 3), dtype=np.uint8)
    root = write_folder_dataset(tmp_path / "data", ["cat", "dog"], {"a.png": (pixels, label)})
    base = [str(folder), "--dataset", "folder", "--data-root", str(root), "--seen", "cat", "--device", "cpu", "--quiet"]
    assert (config["pbc_threshold"], config["seen_score_offset"]) != (0.0, 10.0)
    out = tmp_path / "m.json"
    assert main(base + ["--pbc-threshold", "0", "--seen-score-offset", "10", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["pbc_threshold"], report["seen_score_offset"], report["bias_correction"]) == (0.0, 10.0, True)
    # the same numbers as evaluate() with a segmenter configured in memory
    from alignzeg import AlignZegSegmenter
    from alignzeg.train.datasets.loaders import folder_dataset

    segmenter = AlignZegSegmenter.from_pretrained(folder, device="cpu")
    segmenter.model.config = segmenter.config.replace(pbc_threshold=0.0, seen_score_offset=10.0)
    expected = evaluate(segmenter, folder_dataset(root, seen_classes=["cat"]), bias_correction=True)
    assert report["confusion"]["matrix"] == expected.confusion.tolist()
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()} == before


def test_an_error_while_evaluating_is_one_line_without_a_traceback(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    """alignzeg-eval's evaluation ran outside its error handling: a failure there printed a traceback."""
    import alignzeg.train.evaluation.eval_cli as eval_cli

    def fail(*args, **kwargs):
        raise OSError("cannot read labels/a.png:\nunexpected end of file")

    monkeypatch.setattr(eval_cli, "evaluate", fail)
    label = np.zeros((8, 8), np.uint8)
    root = write_folder_dataset(tmp_path / "data", ["cat", "dog"], {"a.png": (np.zeros((8, 8, 3), np.uint8), label)})
    assert main([str(tiny_checkpoint), "--dataset", "folder", "--data-root", str(root), "--device", "cpu",
                 "--no-bias-correction", "--quiet"]) == 2
    assert capsys.readouterr().err == "alignzeg-eval: error: cannot read labels/a.png: unexpected end of file\n"


def test_alignzeg_eval_takes_demo(tmp_path, capsys):
    """``alignzeg-eval demo`` names the shipped demo model, as ``alignzeg segment`` takes it (it was refused)."""
    label = np.zeros((64, 64), np.uint8)
    label[32:] = 1
    image = np.zeros((64, 64, 3), np.uint8)
    image[:32] = (220, 30, 30)
    image[32:] = (30, 70, 225)
    root = write_folder_dataset(tmp_path / "data", ["red plain", "blue plain"], {"a.png": (image, label)})
    assert main(["demo", "--dataset", "folder", "--data-root", str(root), "--device", "cpu", "--quiet",
                 "--bias-correction", "off"]) == 0
    assert "red plain" in capsys.readouterr().out


def test_alignzeg_eval_runs_an_onnx_file_and_refuses_what_it_cannot_change(tiny_checkpoint, tiny_onnx, voc,
                                                                          tmp_path, capsys):
    """An ``.onnx`` MODEL is evaluated as the PyTorch model is (the same pixels but where onnxruntime's kernels
    move a near tie: under 0.5 %); calibrating it, or a class its stored vocabulary lacks, is one clear line."""
    from compare import assert_same_pixels

    label = np.zeros(voc["rgb"].shape[:2], np.uint8)
    label[:, 250:] = 1
    root = write_folder_dataset(tmp_path / "data", ["person", "sofa"], {"a.jpg": (voc["rgb"], label)})
    data = ["--dataset", "folder", "--data-root", str(root), "--seen", "person", "--device", "cpu", "--quiet"]
    common = ["--bias-correction", "off", *data]
    matrices = {}
    for name, model in (("torch", tiny_checkpoint), ("onnx", tiny_onnx)):
        assert main([str(model), *common, "--json", str(tmp_path / f"{name}.json")]) == 0
        matrices[name] = np.array(json.loads((tmp_path / f"{name}.json").read_text())["confusion"]["matrix"])
    assert matrices["torch"].shape == (2, 3) and matrices["torch"].sum() == 375 * 500
    assert_same_pixels(matrices["torch"], matrices["onnx"], share=5e-3)
    capsys.readouterr()
    for extra, message in ((["--pbc-threshold", "0"], "--pbc-threshold cannot change an .onnx file (its "
                                                      "bias-correction settings are in its graph)"),
                           (["--seen-score-offset", "1", "--pbc-threshold", "0.5"],
                            "--pbc-threshold and --seen-score-offset cannot change an .onnx file"),
                           (["--calibrate", "--out", str(tmp_path / "out")], "--calibrate cannot change")):
        assert main([str(tiny_onnx), *data, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"alignzeg-eval: error: {message}") and err.count("\n") == 1
    other = write_folder_dataset(tmp_path / "other", ["person", "zebra"], {"a.jpg": (voc["rgb"], label)})
    assert main([str(tiny_onnx), *common[:5], str(other), *common[6:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alignzeg-eval: error: class names ['zebra'] are not in the vocabulary stored in this "
                          "ONNX file") and err.count("\n") == 1
