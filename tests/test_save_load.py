"""save_pretrained -> from_pretrained: exact round trips and strictness."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from alignzeg import AlignZegSegmenter, WeightsError
from alignzeg.checkpoint import clip_fingerprint
from alignzeg.config import FORMAT_VERSION


def test_round_trip_is_bit_identical(tiny_segmenter, tiny_checkpoint, voc):
    loaded = AlignZegSegmenter.from_pretrained(tiny_checkpoint)
    # save_pretrained records the SHA-256 of the CLIP tensors; everything else round-trips unchanged
    assert loaded.config == tiny_segmenter.config.replace(clip_fingerprint=loaded.config.clip_fingerprint)
    assert loaded.config.clip_fingerprint == clip_fingerprint(tiny_segmenter.model.state_dict())
    for (name, a), (_, b) in zip(tiny_segmenter.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), name
    vocab = ["person", "sofa", "bottle"]
    a, b = tiny_segmenter.segment(voc["rgb"], vocab), loaded.segment(voc["rgb"], vocab, bias_correction=False)
    assert np.array_equal(a.label_map, b.label_map) and np.array_equal(a.scores, b.scores)


def test_saving_twice_writes_identical_bytes(tiny_segmenter, tmp_path):
    blobs = {(tiny_segmenter.save_pretrained(tmp_path / str(i)) and
              (tmp_path / str(i) / "model.safetensors").read_bytes()) for i in range(4)}
    assert len(blobs) == 1


def test_folder_contents_and_model_card(tiny_checkpoint):
    names = sorted(p.name for p in tiny_checkpoint.iterdir())
    assert names == ["README.md", "config.json", "model.safetensors"]
    card = (tiny_checkpoint / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: alignzeg\n")
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION == 5 and config["clip_model"] == "tiny"
    assert "person" in config["seen_classes"]


def test_missing_key_is_named(tiny_checkpoint, tmp_path):
    state = load_file(str(tiny_checkpoint / "model.safetensors"))
    del state["classifier.bg_prototypes"]
    (tmp_path / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError, match="missing keys: classifier.bg_prototypes"):
        AlignZegSegmenter.from_pretrained(tmp_path)


def test_wrong_shape_is_named(tiny_checkpoint, tmp_path):
    state = load_file(str(tiny_checkpoint / "model.safetensors"))
    state["classifier.bg_prototypes"] = torch.zeros(5, 64)
    (tmp_path / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError, match=r"classifier.bg_prototypes \(checkpoint \(5, 64\), model \(3, 64\)\)"):
        AlignZegSegmenter.from_pretrained(tmp_path)


def test_truncated_file_is_reported(tiny_checkpoint, tmp_path):
    data = (tiny_checkpoint / "model.safetensors").read_bytes()
    (tmp_path / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        AlignZegSegmenter.from_pretrained(tmp_path)
