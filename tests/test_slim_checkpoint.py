"""Slim checkpoints (``include_clip=False``): no CLIP tensor on disk, CLIP fetched by its source and fingerprint-checked."""

import json
import re
import shutil

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

from alignzeg import AlignZegSegmenter, WeightsError
from alignzeg.checkpoint import clip_fingerprint
from test_clip_weights import write_clip  # tests/ is on sys.path (pytest rootdir import)

CLIP = "backbone.clip."
VOC_SEEN = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
            "diningtable", "dog", "horse", "motorbike", "person")


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.safetensors"
    write_clip(path, image_size=32, seed=1)
    return path


@pytest.fixture(scope="module")
def trained(clip_file):
    """A tiny segmenter whose CLIP comes from ``clip_file`` (read-only)."""
    return AlignZegSegmenter.from_preset("tiny", seen_classes=VOC_SEEN, seed=0, clip_pretrained=clip_file)


@pytest.fixture(scope="module")
def folders(trained, tmp_path_factory):
    full, slim = tmp_path_factory.mktemp("full"), tmp_path_factory.mktemp("slim")
    trained.save_pretrained(full)
    trained.save_pretrained(slim, include_clip=False)
    return full, slim


def test_slim_file_holds_no_clip_tensor(folders, trained):
    full, slim = folders
    full_keys, slim_keys = set(load_file(full / "model.safetensors")), set(load_file(slim / "model.safetensors"))
    assert not any(k.startswith(CLIP) for k in slim_keys)
    assert slim_keys == {k for k in full_keys if not k.startswith(CLIP)}
    assert any(k.startswith(CLIP) for k in full_keys)
    assert (slim / "model.safetensors").stat().st_size < (full / "model.safetensors").stat().st_size


def test_both_record_arch_tag_and_fingerprint(folders, trained, clip_file):
    expected = clip_fingerprint(trained.model.state_dict())
    for folder in folders:
        config = json.loads((folder / "config.json").read_text())
        assert config["clip_model"] == "tiny"
        assert config["clip_pretrained"] == str(clip_file.resolve())
        assert config["clip_fingerprint"] == expected and re.fullmatch(r"[0-9a-f]{64}", expected)
    assert "checkpoint: slim" in (folders[1] / "README.md").read_text()
    assert "checkpoint: full" in (folders[0] / "README.md").read_text()


def test_slim_load_is_bit_identical_to_full(folders, voc):
    full = AlignZegSegmenter.from_pretrained(folders[0])
    slim = AlignZegSegmenter.from_pretrained(folders[1])
    full_state, slim_state = full.model.state_dict(), slim.model.state_dict()
    assert list(full_state) == list(slim_state)
    for name in full_state:
        assert torch.equal(full_state[name], slim_state[name]), name
    vocab = ["person", "sofa", "bottle", "tvmonitor"]
    a, b = full.segment(voc["rgb"], vocab, bias_correction=False), \
        slim.segment(voc["rgb"], vocab, bias_correction=False)
    assert np.array_equal(a.label_map, b.label_map)
    assert np.array_equal(a.scores, b.scores) and np.array_equal(a.class_probs, b.class_probs)
    assert slim.config == full.config


def test_slim_file_holds_the_deep_prompts_and_reloads_to_identical_outputs(folders, trained, voc):
    """The prompts are trained parameters outside backbone.clip.: a slim checkpoint keeps them."""
    slim_keys = set(load_file(folders[1] / "model.safetensors"))
    assert "backbone.prompts.tokens" in slim_keys and not any(k.startswith(CLIP) for k in slim_keys)
    reloaded = AlignZegSegmenter.from_pretrained(folders[1])
    assert torch.equal(reloaded.model.backbone.prompts.tokens, trained.model.backbone.prompts.tokens)
    vocab = ["person", "sofa", "bottle"]
    a, b = trained.segment(voc["rgb"], vocab, bias_correction=False), \
        reloaded.segment(voc["rgb"], vocab, bias_correction=False)
    assert np.array_equal(a.label_map, b.label_map) and np.array_equal(a.class_probs, b.class_probs)


def test_other_clip_is_refused_naming_both_fingerprints(folders, trained, tmp_path):
    other = tmp_path / "other.safetensors"
    write_clip(other, image_size=32, seed=2)
    recorded = clip_fingerprint(trained.model.state_dict())
    theirs = clip_fingerprint(AlignZegSegmenter.from_preset("tiny", clip_pretrained=other).model.state_dict())
    assert theirs != recorded
    with pytest.raises(WeightsError, match=rf"fingerprint {theirs}, but .* fingerprint {recorded}"):
        AlignZegSegmenter.from_pretrained(folders[1], clip_pretrained=other)


def test_moved_clip_file_can_be_named_again(trained, clip_file, tmp_path):
    source = tmp_path / "src.safetensors"
    shutil.copy(clip_file, source)
    seg = AlignZegSegmenter.from_preset("tiny", seen_classes=VOC_SEEN, seed=0, clip_pretrained=source)
    seg.save_pretrained(tmp_path / "slim", include_clip=False)
    moved = tmp_path / "moved.safetensors"
    source.rename(moved)
    with pytest.raises(ValueError, match=r"clip_pretrained file .*src\.safetensors' does not exist"):
        AlignZegSegmenter.from_pretrained(tmp_path / "slim")
    loaded = AlignZegSegmenter.from_pretrained(tmp_path / "slim", clip_pretrained=moved)
    assert torch.equal(loaded.model.backbone.clip.visual.conv1.weight, trained.model.backbone.clip.visual.conv1.weight)


def test_fp16_slim_equals_fp16_full(clip_file, tmp_path):
    seg = AlignZegSegmenter.from_preset("tiny", seed=0, clip_pretrained=clip_file, dtype=torch.float16)
    seg.save_pretrained(tmp_path / "full")
    seg.save_pretrained(tmp_path / "slim", include_clip=False)
    assert all(v.dtype == torch.float16 for v in load_file(tmp_path / "slim" / "model.safetensors").values()
               if v.is_floating_point())
    full = AlignZegSegmenter.from_pretrained(tmp_path / "full").model.state_dict()
    slim = AlignZegSegmenter.from_pretrained(tmp_path / "slim").model.state_dict()
    for name in full:
        assert torch.equal(full[name], slim[name]), name


def test_tampered_full_checkpoint_is_refused(folders, tmp_path):
    shutil.copytree(folders[0], tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    state = load_file(weights)
    state[CLIP + "ln_final.weight"] = state[CLIP + "ln_final.weight"] + 1
    save_file(state, str(weights))
    recorded = json.loads((tmp_path / "ckpt" / "config.json").read_text())["clip_fingerprint"]
    with pytest.raises(WeightsError, match=rf"have fingerprint [0-9a-f]{{64}}, but .* fingerprint {recorded}"):
        AlignZegSegmenter.from_pretrained(tmp_path / "ckpt")


def test_clip_override_on_a_full_checkpoint_is_refused(folders, clip_file):
    with pytest.raises(ValueError, match=r"is a full checkpoint with its own CLIP weights"):
        AlignZegSegmenter.from_pretrained(folders[0], clip_pretrained=clip_file)


def test_random_clip_cannot_be_saved_slim(tiny_segmenter, tmp_path):
    with pytest.raises(ValueError, match=r"include_clip=False needs CLIP weights that can be fetched again"):
        tiny_segmenter.save_pretrained(tmp_path, include_clip=False)
    assert not (tmp_path / "model.safetensors").exists()


def test_slim_without_a_source_needs_clip_pretrained(folders, clip_file, tmp_path):
    shutil.copytree(folders[1], tmp_path / "ckpt")
    config_path = tmp_path / "ckpt" / "config.json"
    config = json.loads(config_path.read_text())
    config["clip_pretrained"] = None
    config_path.write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"names no clip_pretrained source; pass clip_pretrained="):
        AlignZegSegmenter.from_pretrained(tmp_path / "ckpt")
    assert AlignZegSegmenter.from_pretrained(tmp_path / "ckpt", clip_pretrained=clip_file).config.clip_pretrained is None


def test_open_clip_module_is_the_backbone(trained):
    assert isinstance(trained.model.backbone.clip, open_clip.CLIP)


def test_slim_checkpoint_and_its_clip_from_the_loopback_hub(monkeypatch, tmp_path, voc):
    from hub_server import FakeHub, hub_env
    from test_clip_weights import tiny_clip_cfg

    weights = tmp_path / "clip.safetensors"
    write_clip(weights, seed=4)
    with FakeHub() as hub:
        hub_env(monkeypatch, hub.url, tmp_path / "hf")
        hub.add_file("org/tiny-clip", "main", "open_clip_config.json",
                     json.dumps({"model_cfg": tiny_clip_cfg(32)}).encode())
        hub.add_file("org/tiny-clip", "main", "open_clip_model.safetensors", weights.read_bytes())
        seg = AlignZegSegmenter.from_preset("tiny", seen_classes=VOC_SEEN, seed=0, clip_pretrained="hf-hub:org/tiny-clip")
        seg.save_pretrained(tmp_path / "slim", include_clip=False)
        hub.add_folder("me/alignzeg-tiny", "main", tmp_path / "slim")
        loaded = AlignZegSegmenter.from_pretrained("me/alignzeg-tiny")
    assert loaded.config.clip_pretrained == "hf-hub:org/tiny-clip"
    vocab = ["cat", "sheep", "person"]
    a, b = seg.segment(voc["rgb"], vocab, bias_correction=False), \
        loaded.segment(voc["rgb"], vocab, bias_correction=False)
    assert np.array_equal(a.label_map, b.label_map) and np.array_equal(a.scores, b.scores)


@pytest.fixture
def clip_builds(monkeypatch):
    """Every open_clip CLIP built while the test runs (the config's clip_model, and whether on meta)."""
    from alignzeg import clip_weights
    from alignzeg.modeling import clip_backbone

    built, real = [], clip_backbone.build_open_clip

    def counting(config):
        clip = real(config)
        built.append((config.clip_model, next(clip.parameters()).device.type))
        return clip

    monkeypatch.setattr(clip_backbone, "build_open_clip", counting)
    monkeypatch.setattr(clip_weights, "build_open_clip", counting)
    return built


def test_preset_with_clip_weights_builds_clip_once(clip_file, clip_builds):
    seg = AlignZegSegmenter.from_preset("tiny", seen_classes=VOC_SEEN, seed=0, clip_pretrained=clip_file)
    assert clip_builds == [("tiny", "cpu")]
    from safetensors.torch import load_file as read

    on_disk = read(str(clip_file))
    loaded = seg.model.backbone.clip.state_dict()
    assert torch.equal(loaded["transformer.resblocks.0.attn.in_proj_weight"],
                       on_disk["transformer.resblocks.0.attn.in_proj_weight"])


def test_slim_load_builds_clip_once(folders, clip_builds):
    AlignZegSegmenter.from_pretrained(folders[1])
    assert clip_builds == [("tiny", "cpu")]
