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


def test_version_and_verbose_after_the_subcommand(capsys):
    import pytest

    from alignzeg import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"alignzeg {__version__}"
    assert main(["models", "-v"]) == 0 and main(["-v", "models"]) == 0
    assert "tiny" in capsys.readouterr().out


def test_preset_names_and_missing_folders_are_named_before_loading(tmp_path, capsys):
    image = str(example_image_path())
    assert main(["segment", image, "--classes", "a", "--model", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "'tiny' is a preset name" in err and "from_preset('tiny')" in err and "alignzeg models" in err
    assert main(["segment", image, "--classes", "a", "--model", str(tmp_path / "runs" / "tny")]) == 2
    assert "no such model folder" in capsys.readouterr().err
    assert main(["segment", image, "--classes", "a", "--model", str(example_image_path())]) == 2
    assert "is a file" in capsys.readouterr().err


def test_export_checks_its_output_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from alignzeg import AlignZegSegmenter

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(AlignZegSegmenter, "from_pretrained", refuse)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["export", "--model", "org/name", "--out", str(blocker / "dir" / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "m.onnx" in err and "cannot be created or written to" in err
    (tmp_path / "d.onnx").mkdir()
    assert main(["export", "--model", "org/name", "--out", str(tmp_path / "d.onnx")]) == 2
    assert "is a folder" in capsys.readouterr().err
    # A folder that does not exist yet, named with a trailing slash: it exported, then failed with a traceback.
    assert main(["export", "--model", "org/name", "--out", f"{tmp_path / 'newdir'}/"]) == 2
    assert capsys.readouterr().err == f"alignzeg: error: --out '{tmp_path / 'newdir'}/' is a folder; give a file name\n"
    assert not (tmp_path / "newdir").exists()


def test_zero_pixel_classes_and_case_in_lookups():
    """One rule: every vocabulary class is counted, zeros included (as results.jsonl does); lookups by name
    ignore case and surrounding space, as vocabulary matching does."""
    import pytest

    from alignzeg.result import SegmentationResult

    label_map = np.zeros((4, 5), np.int32)
    label_map[0, :2] = 2
    label_map[3, 4] = -1
    probs = np.random.default_rng(0).random((4, 2, 3)).astype(np.float32)
    result = SegmentationResult(label_map, np.ones((4, 5), np.float32), ("Red Striped", "sky", "Cat"), probs,
                                np.array([True, True, False]), False)
    assert result.pixel_counts() == {"Red Striped": 17, "sky": 0, "Cat": 2, "<unlabelled>": 1}
    assert result.to_dict()["pixel_counts"] == result.pixel_counts()
    assert result.pixel_counts(include_zero=False) == {"Red Striped": 17, "Cat": 2, "<unlabelled>": 1}
    assert np.array_equal(result.mask("red striped"), label_map == 0)
    assert np.array_equal(result.mask(" CAT "), label_map == 2)
    np.testing.assert_array_equal(result.probability_map("SKY"), result.probability_map("sky"))
    with pytest.raises(KeyError, match="'sofa' is not in the vocabulary"):
        result.mask("sofa")


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


def test_device_errors_name_the_option_on_one_line(voc, tmp_path, capsys):
    """The CLI printed the Python argument ("use device='cpu'"); the option is --device."""
    import torch

    from alignzeg.train.evaluation.eval_cli import main as eval_main

    image = tmp_path / "x.png"
    Image.fromarray(voc["rgb"]).save(image)
    assert main(["segment", str(image), "--classes", "a,b", "--model", "demo", "--device", "cuda:x"]) == 2
    assert capsys.readouterr().err == ("alignzeg: error: --device 'cuda:x' is not a device (expected cpu, cuda or "
                                       "cuda:N): Invalid device string: 'cuda:x'\n")
    if torch.cuda.is_available():
        return
    assert main(["segment", str(image), "--classes", "a,b", "--model", "demo", "--device", "cuda"]) == 2
    assert capsys.readouterr().err == ("alignzeg: error: --device 'cuda' requested but CUDA is not available; use "
                                       "--device cpu\n")
    assert main(["demo", "--device", "cuda:1"]) == 2
    assert capsys.readouterr().err == ("alignzeg: error: --device 'cuda:1' requested but CUDA is not available; use "
                                       "--device cpu\n")
    from alignzeg.demo import model_path

    assert eval_main([str(model_path()), "--dataset", "folder", "--data-root", str(tmp_path), "--device", "cuda"]) == 2
    assert capsys.readouterr().err == ("alignzeg-eval: error: --device 'cuda' requested but CUDA is not available; "
                                       "use --device cpu\n")


def test_error_line_is_one_line():
    from alignzeg.cli import error_line

    assert error_line("alignzeg", ValueError("first line\n  second line")) == "alignzeg: error: first line second line"
    assert error_line("alignzeg-eval", RuntimeError()) == "alignzeg-eval: error: RuntimeError"



@pytest.mark.parametrize("command", ["segment", "demo", "models", "export", "app"])
def test_every_subcommand_has_a_description_and_every_optional_value_its_default(command):
    """world export, demo, models had --help without defaults or a description."""
    import argparse

    from alignzeg.cli import _build_parser

    sub = next(a for a in _build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    assert parser.description and len(parser.description) > 60, command
    for action in parser._actions:
        assert action.help, (command, action.dest)
        if action.option_strings and action.nargs != 0 and not action.required:
            assert "default" in action.help, (command, action.option_strings, action.help)
