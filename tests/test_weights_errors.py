"""Damaged or mismatched checkpoints: every failure is a WeightsError that says what and where."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from alignzeg import AlignZegSegmenter
from alignzeg.config import FORMAT_VERSION
from alignzeg.hub import WeightsError

CONFIG, WEIGHTS = "config.json", "model.safetensors"


@pytest.fixture
def ckpt(tiny_checkpoint, tmp_path) -> Path:
    """A private copy of the tiny checkpoint folder, free to damage."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))


@pytest.fixture(scope="module")
def image(voc):
    return voc["rgb"][::4, ::4].copy()


def _edit_state(folder: Path, edit) -> None:
    state = load_file(str(folder / WEIGHTS))
    edit(state)
    save_file(state, str(folder / WEIGHTS))


def _edit_config(folder: Path, edit) -> None:
    data = json.loads((folder / CONFIG).read_text())
    edit(data)
    (folder / CONFIG).write_text(json.dumps(data))


def test_intact_checkpoint_round_trips_bit_identically(tiny_segmenter, ckpt, image):
    loaded = AlignZegSegmenter.from_pretrained(ckpt, device="cpu")
    for name, tensor in tiny_segmenter.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    vocabulary = ["person", "sofa", "tvmonitor"]
    a, b = tiny_segmenter.segment(image, vocabulary), loaded.segment(image, vocabulary, bias_correction=False)
    np.testing.assert_array_equal(a.class_probs, b.class_probs)
    np.testing.assert_array_equal(a.label_map, b.label_map)


# Damaged safetensors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0.5, 0.999, 5 / 10**9])
def test_truncated_safetensors_is_reported_with_the_file(ckpt, keep):
    path = ckpt / WEIGHTS
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    with pytest.raises(WeightsError, match=re.escape(str(path)) + r".*is not a readable safetensors file "
                                           r"\(truncated or corrupt download\?\).*Delete it and download again"):
        AlignZegSegmenter.from_pretrained(ckpt)


@pytest.mark.parametrize("damage", ["garbage", "header_length", "header_json"])
def test_corrupt_safetensors_is_reported(ckpt, damage):
    path = ckpt / WEIGHTS
    data = bytearray(path.read_bytes())
    if damage == "garbage":
        data = bytearray(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif damage == "header_length":
        data[:8] = (2**62).to_bytes(8, "little")
    else:
        data[8:40] = b"{" * 32
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="is not a readable safetensors file"):
        AlignZegSegmenter.from_pretrained(ckpt)


def test_empty_weights_file_is_reported(ckpt):
    (ckpt / WEIGHTS).write_bytes(b"")
    with pytest.raises(WeightsError, match="is not a readable safetensors file"):
        AlignZegSegmenter.from_pretrained(ckpt)


# Keys, shapes, dtypes --------------------------------------------------------------------------------
def test_missing_key_is_named(ckpt):
    _edit_state(ckpt, lambda s: s.pop("classifier.bg_prototypes"))
    with pytest.raises(WeightsError, match=r"does not match the model architecture in config.json: "
                                           r"missing keys: classifier.bg_prototypes$"):
        AlignZegSegmenter.from_pretrained(ckpt)


def test_many_missing_keys_are_listed_with_a_count(ckpt):
    def drop_indicator(state):
        for key in [k for k in state if k.startswith(("indicator.", "classifier."))]:
            del state[key]
    _edit_state(ckpt, drop_indicator)
    with pytest.raises(WeightsError, match=r"missing keys: classifier\..*, \.\.\. \(\d+ in all\)"):
        AlignZegSegmenter.from_pretrained(ckpt)


def test_unexpected_key_is_named(ckpt):
    _edit_state(ckpt, lambda s: s.update({"decoder.extra_head.weight": torch.zeros(2, 2)}))
    with pytest.raises(WeightsError, match=r"unexpected keys: decoder.extra_head.weight$"):
        AlignZegSegmenter.from_pretrained(ckpt)


def test_wrong_shape_names_both_shapes(ckpt):
    _edit_state(ckpt, lambda s: s.update({"classifier.bg_prototypes": torch.zeros(5, 64)}))
    with pytest.raises(WeightsError, match=re.escape(
            "shape mismatches: classifier.bg_prototypes (checkpoint (5, 64), model (3, 64))")):
        AlignZegSegmenter.from_pretrained(ckpt)


def test_config_that_disagrees_with_the_weights_is_a_shape_mismatch(ckpt):
    _edit_config(ckpt, lambda d: d.update(num_bg_prototypes=7))
    with pytest.raises(WeightsError, match=re.escape("classifier.bg_prototypes (checkpoint (3, 64), model (7, 64))")):
        AlignZegSegmenter.from_pretrained(ckpt)


def test_integer_tensor_in_a_float_slot_is_refused(ckpt):
    _edit_state(ckpt, lambda s: s.update({"indicator.net.0.bias": torch.zeros(32, dtype=torch.int32)}))
    with pytest.raises(WeightsError, match=re.escape(
            "dtype mismatches: indicator.net.0.bias (checkpoint torch.int32, model torch.float32)")):
        AlignZegSegmenter.from_pretrained(ckpt)


def test_half_precision_head_tensor_is_cast_exactly(tiny_segmenter, ckpt):
    half = tiny_segmenter.model.state_dict()["classifier.bg_prototypes"].half()
    _edit_state(ckpt, lambda s: s.update({"classifier.bg_prototypes": half}))
    loaded = AlignZegSegmenter.from_pretrained(ckpt)
    assert torch.equal(loaded.model.state_dict()["classifier.bg_prototypes"], half.float())


# config.json: every problem is a WeightsError naming the file and the key -------------------------------
def _config_error(ckpt, pattern: str):
    return pytest.raises(WeightsError, match=re.escape(str(ckpt / CONFIG)) + ": " + pattern)


def test_newer_format_version_is_refused(ckpt):
    _edit_config(ckpt, lambda d: d.update(format_version=99))
    with _config_error(ckpt, f"config format_version 99 is newer than this alignzeg supports "
                             rf"\({FORMAT_VERSION}\); upgrade alignzeg"):
        AlignZegSegmenter.from_pretrained(ckpt)


def test_format_version_1_is_refused_saying_what_changed(ckpt):
    """No checkpoint of format 1 was published, so there is no migration: the error says what changed."""
    def to_v1(d):
        d.update(format_version=1, pbc_factor=0.0)
        for name in ("clip_prompt_tokens", "clip_prompt_depth", "side_fusion_stride", "clip_grounding",
                     "bg_temperature", "seen_score_offset", "indicator_trained"):
            d.pop(name)

    _edit_config(ckpt, to_v1)
    with _config_error(ckpt, rf"config format_version 1 is no longer supported \(this alignzeg reads "
                                         rf"{FORMAT_VERSION}\): format 2 replaced the multiplicative PBC "
                                         r"\(pbc_factor, removed\) by a masked softmax.*No migration exists"):
        AlignZegSegmenter.from_pretrained(ckpt)


@pytest.mark.parametrize("version", [0, -1])
def test_invalid_format_version_is_refused(ckpt, version):
    _edit_config(ckpt, lambda d: d.update(format_version=version))
    with _config_error(ckpt, f"config format_version {version} is not supported"):
        AlignZegSegmenter.from_pretrained(ckpt)


@pytest.mark.parametrize("version", ["1", 1.0, None, True])
def test_format_version_of_the_wrong_type_is_refused(ckpt, version):
    _edit_config(ckpt, lambda d: d.update(format_version=version))
    with _config_error(ckpt, f"config format_version must be an integer, got {type(version).__name__} "
                             + re.escape(repr(version))):
        AlignZegSegmenter.from_pretrained(ckpt)


def test_unknown_config_fields_are_named(ckpt):
    _edit_config(ckpt, lambda d: d.update(surprise=1, another_one="x"))
    with _config_error(ckpt, re.escape("config has unknown fields ['another_one', 'surprise']")):
        AlignZegSegmenter.from_pretrained(ckpt)


@pytest.mark.parametrize("key", ["clip_cfg", "templates", "seen_classes", "pbc_threshold", "extra"])
def test_config_missing_keys_are_errors_not_defaults(ckpt, key):
    _edit_config(ckpt, lambda d: d.pop(key))
    with _config_error(ckpt, re.escape(f"config lacks required fields ['{key}']")):
        AlignZegSegmenter.from_pretrained(ckpt)


@pytest.mark.parametrize("key,value,expected", [
    ("templates", "a photo of a {}.", "config templates must be a list of strings, got str 'a photo of a {}.'"),
    ("seen_classes", "cat", "config seen_classes must be a list of strings, got str 'cat'"),
    ("mean", [0.5, "0.5", 0.5], "config mean must be a list of finite numbers, got list [0.5, '0.5', 0.5]"),
    ("input_size", "64", "config input_size must be an integer, got str '64'"),
    ("pbc_threshold", "0.5", "config pbc_threshold must be a finite number, got str '0.5'"),
    ("mutual_refinement", 1, "config mutual_refinement must be true or false, got int 1"),
    ("clip_pretrained", 3, "config clip_pretrained must be a string or null, got int 3"),
    ("clip_cfg", [1], "config clip_cfg must be a JSON object, got list [1]"),
])
def test_config_values_of_the_wrong_type_are_named(ckpt, key, value, expected):
    _edit_config(ckpt, lambda d: d.update({key: value}))
    with _config_error(ckpt, re.escape(expected)):
        AlignZegSegmenter.from_pretrained(ckpt)


@pytest.mark.parametrize("where,key,expected", [
    ((), "surprise", "clip_cfg has unknown keys ['surprise']"),
    (("vision_cfg",), "patch_sise", "clip_cfg vision_cfg has keys open_clip does not accept: ['patch_sise']"),
    (("text_cfg",), "hieght", "clip_cfg text_cfg has keys open_clip does not accept: ['hieght']"),
])
def test_unknown_keys_in_the_nested_clip_config_are_named(ckpt, where, key, expected):
    def edit(data):
        target = data["clip_cfg"]
        for name in where:
            target = target[name]
        target[key] = 1
    _edit_config(ckpt, edit)
    with _config_error(ckpt, re.escape(expected)):
        AlignZegSegmenter.from_pretrained(ckpt)


def test_config_that_is_not_json(ckpt):
    (ckpt / CONFIG).write_text("{ this is not json")
    with pytest.raises(WeightsError, match=re.escape(str(ckpt / CONFIG)) + " is not valid JSON"):
        AlignZegSegmenter.from_pretrained(ckpt)


def test_config_that_is_not_an_object(ckpt):
    (ckpt / CONFIG).write_text("[1, 2]")
    with _config_error(ckpt, "config must be a JSON object, got list"):
        AlignZegSegmenter.from_pretrained(ckpt)


# Non-finite weights ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load_naming_the_tensor(ckpt, bad):
    def edit(state):
        state["classifier.bg_prototypes"][0, 0] = bad
    _edit_state(ckpt, edit)
    with pytest.raises(WeightsError, match=re.escape(repr(str(ckpt / WEIGHTS))) + r" holds NaN or infinite values "
                                           r"in 1 tensor\(s\): classifier\.bg_prototypes;"):
        AlignZegSegmenter.from_pretrained(ckpt)


def test_folder_without_config_or_weights(ckpt, tmp_path):
    (ckpt / WEIGHTS).unlink()
    with pytest.raises(WeightsError, match=f"has no {WEIGHTS}"):
        AlignZegSegmenter.from_pretrained(ckpt)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="has no config.json; is it a folder written by save_pretrained"):
        AlignZegSegmenter.from_pretrained(empty)


def test_a_file_or_a_bad_name_is_not_a_checkpoint(ckpt, tmp_path):
    with pytest.raises(WeightsError, match="is a file; from_pretrained takes a folder or a Hub repo id"):
        AlignZegSegmenter.from_pretrained(ckpt / WEIGHTS)
    with pytest.raises(WeightsError, match="neither an existing local folder nor a valid Hub repo id"):
        AlignZegSegmenter.from_pretrained(str(tmp_path / "no" / "such" / "folder"))


# Pickles ---------------------------------------------------------------------------------------------
def _to_pickle(folder: Path, name: str = "pytorch_model.bin", obj=None) -> Path:
    state = load_file(str(folder / WEIGHTS))
    (folder / WEIGHTS).unlink()
    torch.save(state if obj is None else obj, folder / name)
    return folder / name


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt"])
def test_pickle_is_refused_by_default_with_how_to_opt_in(ckpt, name):
    _to_pickle(ckpt, name)
    with pytest.raises(WeightsError, match=f"holds a pickle checkpoint \\({re.escape(name)}\\) but no {WEIGHTS}.*"
                                           "allow_pickle=True.*weights_only=True"):
        AlignZegSegmenter.from_pretrained(ckpt)


def test_pickle_loads_when_allowed_and_matches(tiny_segmenter, ckpt, image, caplog):
    _to_pickle(ckpt)
    with caplog.at_level("WARNING", logger="alignzeg.hub"):
        loaded = AlignZegSegmenter.from_pretrained(ckpt, allow_pickle=True)
    assert "weights_only=True" in caplog.text
    vocabulary = ["cat", "sofa"]
    np.testing.assert_array_equal(loaded.segment(image, vocabulary, bias_correction=False).class_probs,
                                  tiny_segmenter.segment(image, vocabulary).class_probs)


def test_safetensors_wins_over_a_pickle(ckpt, monkeypatch):
    torch.save({"junk": torch.zeros(1)}, ckpt / "pytorch_model.bin")
    AlignZegSegmenter.from_pretrained(ckpt, allow_pickle=True)  # would fail on the junk pickle


class _CodeRunner:
    """Unpickling this runs code: it opens (creates) a marker file."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_allowed_pickle_is_still_read_with_weights_only(ckpt, tmp_path):
    marker = tmp_path / "pwned"
    _CodeRunner.marker = str(marker)
    _to_pickle(ckpt, obj={"extractor.query_embed": _CodeRunner()})
    with pytest.raises(WeightsError, match="cannot read pickle checkpoint .*pytorch_model.bin.* with weights_only=True"):
        AlignZegSegmenter.from_pretrained(ckpt, allow_pickle=True)
    assert not marker.exists()


def test_pickle_that_is_not_a_flat_state_dict(ckpt):
    state = load_file(str(ckpt / WEIGHTS))
    _to_pickle(ckpt, obj={"state_dict": state, "epoch": 3})
    with pytest.raises(WeightsError, match="does not hold a flat name -> tensor state dict"):
        AlignZegSegmenter.from_pretrained(ckpt, allow_pickle=True)
