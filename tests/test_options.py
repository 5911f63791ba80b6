"""Options of the public API: each bad type or value is refused with an error naming it; the config is a value."""

from __future__ import annotations

import os
import re
import stat

import numpy as np
import pytest

from alignzeg import AlignZegConfig, AlignZegSegmenter
from alignzeg.config import FrozenDict
from alignzeg.presets import get_preset_config

VOCAB = ["person", "sofa", "tvmonitor"]


@pytest.fixture(scope="module")
def image(voc):
    return voc["rgb"][::8, ::8].copy()


# segment / segment_batch options ----------------------------------------------------------------------
@pytest.mark.parametrize("value", ["yes", 1, 0.0])
def test_bias_correction_must_be_a_bool(tiny_segmenter, image, value):
    with pytest.raises(TypeError, match=f"bias_correction must be True, False, None or 'auto', got {type(value).__name__} "
                                        + re.escape(repr(value))):
        tiny_segmenter.segment(image, VOCAB, bias_correction=value)


def test_numpy_bool_is_stored_as_a_python_bool(tiny_segmenter, image):
    result = tiny_segmenter.segment(image, VOCAB, bias_correction=np.bool_(False))
    assert result.bias_correction is False


@pytest.mark.parametrize("value", ["no", 0, None])
def test_keep_image_must_be_a_bool(tiny_segmenter, image, value):
    with pytest.raises(TypeError, match=f"keep_image must be True or False, got {type(value).__name__}"):
        tiny_segmenter.segment_batch([image], VOCAB, keep_image=value)


@pytest.mark.parametrize("value,error,message", [
    ("0.5", TypeError, "unlabelled_threshold must be a number in [0, 1] or None, got str '0.5'"),
    (True, TypeError, "unlabelled_threshold must be a number in [0, 1] or None, got bool True"),
    ([0.5], TypeError, "unlabelled_threshold must be a number in [0, 1] or None, got list [0.5]"),
    (1.5, ValueError, "unlabelled_threshold must be in [0, 1] or None, got 1.5"),
    (-0.1, ValueError, "unlabelled_threshold must be in [0, 1] or None, got -0.1"),
    (float("nan"), ValueError, "unlabelled_threshold must be in [0, 1] or None, got nan"),
])
def test_unlabelled_threshold_type_and_range(tiny_segmenter, image, value, error, message):
    with pytest.raises(error, match=re.escape(message)):
        tiny_segmenter.segment(image, VOCAB, unlabelled_threshold=value)


@pytest.mark.parametrize("seen,message", [
    ("person", "seen must be a list of class names or a list of booleans, one per class, got str 'person'"),
    ({"person"}, "seen must be a list of class names or a list of booleans, one per class, got set {'person'}"),
    ([1, 0, 1], "seen must be a list of class names or a list of booleans, one per class, got [1, 0, 1]"),
])
def test_seen_must_be_an_ordered_list_of_names_or_bools(tiny_segmenter, image, seen, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        tiny_segmenter.segment(image, VOCAB, seen=seen)


def test_class_names_for_embeddings_are_validated(tiny_segmenter, image):
    embeddings = tiny_segmenter.encode_vocabulary(VOCAB)
    with pytest.raises(TypeError, match="class_names must be a list of class names, got the single string 'abc'"):
        tiny_segmenter.segment(image, embeddings, class_names="abc")
    with pytest.raises(TypeError, match=r"got set"):
        tiny_segmenter.segment(image, embeddings, class_names={"a", "b", "c"})


@pytest.mark.parametrize("kwargs,message", [
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"batch_size": True}, "batch_size must be a positive integer, got True"),
    ({"max_pixels": 0}, "max_pixels must be a positive integer or None, got 0"),
    ({"max_pixels": 1.5e6}, "max_pixels must be a positive integer or None, got 1500000.0"),
])
def test_segmenter_settings_are_checked(tiny_segmenter, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AlignZegSegmenter(tiny_segmenter.model, **kwargs)


@pytest.mark.parametrize("name", ["progress", "autocast"])
def test_segmenter_switches_must_be_bools(tiny_segmenter, name):
    with pytest.raises(TypeError, match=f"{name} must be True or False, got str 'yes'"):
        AlignZegSegmenter(tiny_segmenter.model, **{name: "yes"})


# Saved files ------------------------------------------------------------------------------------------
def test_checkpoint_files_share_one_mode(tiny_segmenter, tmp_path):
    folder = tiny_segmenter.save_pretrained(tmp_path / "ckpt")
    modes = {name: stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode)
             for name in ("config.json", "model.safetensors", "README.md")}
    umask = os.umask(0)
    os.umask(umask)
    assert set(modes.values()) == {0o666 & ~umask}, modes  # 0644 under the usual umask 022


# The config is a value --------------------------------------------------------------------------------
def test_config_is_immutable_all_the_way_down_and_hashes_like_a_value():
    config = get_preset_config("tiny", seen_classes=("cat", "dog"))
    twin = AlignZegConfig.from_dict(config.to_dict())
    assert twin == config and hash(twin) == hash(config)
    assert len({config, twin, config.replace(pbc_threshold=0.25)}) == 2
    assert isinstance(config.clip_cfg, FrozenDict) and isinstance(config.clip_cfg["vision_cfg"], FrozenDict)
    with pytest.raises(TypeError, match="does not support item assignment"):
        config.clip_cfg["vision_cfg"]["layers"] = 3
    with pytest.raises(TypeError, match="does not support item assignment"):
        config.extra["recipe"] = "x"
    with pytest.raises(AttributeError):
        config.clip_cfg["vision_cfg"].update(layers=3)
    plain = config.to_dict()
    assert type(plain["clip_cfg"]) is dict and type(plain["clip_cfg"]["vision_cfg"]) is dict
    plain["clip_cfg"]["vision_cfg"]["layers"] = 99  # the plain copy is the caller's to edit
    assert config.clip_cfg["vision_cfg"]["layers"] == 2


def test_config_built_from_a_dict_does_not_alias_it():
    source = get_preset_config("tiny").to_dict()
    config = AlignZegConfig.from_dict(source)
    source["clip_cfg"]["vision_cfg"]["layers"] = 5
    assert config.clip_cfg["vision_cfg"]["layers"] == 2


@pytest.mark.parametrize("field,value,message", [
    ("templates", "a {}", "config templates must be a list of strings, got str 'a {}'"),
    ("num_queries", 2.0, "config num_queries must be an integer, got float 2.0"),
    ("logit_scale", float("inf"), "config logit_scale must be a finite number, got float inf"),
    ("side_encoder", "false", "config side_encoder must be true or false, got str 'false'"),
])
def test_config_fields_are_type_checked_in_code_too(field, value, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        get_preset_config("tiny", **{field: value})
