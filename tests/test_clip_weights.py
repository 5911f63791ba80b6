"""clip_pretrained: local open_clip files, hf-hub: repos and open_clip tags, all offline from files the tests write.

Hub repos are served from a huggingface_hub cache folder laid out by the test (refs/main -> snapshot), so the
real ``hf_hub_download`` resolves them in offline mode (conftest sets HF_HUB_OFFLINE=1).
"""

import copy
import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from alignzeg import AlignZegSegmenter, WeightsError
from alignzeg.clip_weights import clip_hub_repo, load_clip_weights, normalize_clip_pretrained
from alignzeg.modeling.clip_backbone import interpolate_pos_embed
from alignzeg.presets import get_preset_config

POS = "visual.positional_embedding"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny_clip_cfg(image_size: int) -> dict:
    cfg = get_preset_config("tiny").clip_cfg.to_dict()
    cfg["vision_cfg"]["image_size"] = image_size
    return cfg


def write_clip(path, image_size=32, seed=1):
    """An open_clip CLIP with the tiny preset's architecture, saved as safetensors; returns its state."""
    torch.manual_seed(seed)
    cfg = tiny_clip_cfg(image_size)
    clip = open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"])
    state = {k: v.contiguous() for k, v in clip.state_dict().items()}
    save_file(state, str(path))
    return state


def write_hub_repo(cache, repo_id, files):
    """Lay out ``files`` (name -> bytes) as huggingface_hub's cache of ``repo_id`` at revision main."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def open_clip_repo(cache, repo_id, tmp_path, model_cfg=None, preprocess=None, image_size=32, seed=1):
    weights = tmp_path / f"{seed}.safetensors"
    state = write_clip(weights, image_size=image_size, seed=seed)
    hub_cfg = {"model_cfg": model_cfg or tiny_clip_cfg(image_size),
               "preprocess_cfg": preprocess or {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    write_hub_repo(cache, repo_id, {"open_clip_config.json": json.dumps(hub_cfg).encode(),
                                    "open_clip_model.safetensors": weights.read_bytes()})
    return state


def assert_loaded(segmenter, file_state, grid=(8, 8)):
    loaded = segmenter.model.backbone.clip.state_dict()
    assert sorted(loaded) == sorted(file_state)
    for name, tensor in file_state.items():
        expected = interpolate_pos_embed(tensor, grid) if name == POS else tensor
        assert torch.equal(loaded[name], expected), name


# Local files -------------------------------------------------------------------------------------------
def test_local_file_tensors_equal_the_file_after_interpolation(tmp_path):
    path = tmp_path / "clip.safetensors"
    state = write_clip(path, image_size=32)  # 4x4 grid, interpolated to the tiny preset's 8x8
    seg = AlignZegSegmenter.from_preset("tiny", clip_pretrained=str(path), seed=0)
    assert_loaded(seg, state)
    assert seg.model.backbone.clip.state_dict()[POS].shape == (65, 64)
    assert seg.config.clip_pretrained == str(path.resolve())
    random = AlignZegSegmenter.from_preset("tiny", seed=0).model.backbone.clip.state_dict()
    assert not torch.equal(random["visual.conv1.weight"], state["visual.conv1.weight"])


def test_local_file_at_the_target_grid_is_copied_exactly(tmp_path):
    path = tmp_path / "clip64.safetensors"
    state = write_clip(path, image_size=64)
    seg = AlignZegSegmenter.from_preset("tiny", clip_pretrained=path, seed=0)  # a Path works too
    for name, tensor in state.items():
        assert torch.equal(seg.model.backbone.clip.state_dict()[name], tensor), name


def test_file_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "clip.safetensors"
    write_clip(path)
    with pytest.raises(WeightsError, match=r"do not fit the ViT-B-16 architecture.*shape mismatches"):
        load_clip_weights(get_preset_config("vitb16"), str(path))


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope" / "clip.safetensors"
    with pytest.raises(ValueError, match=r"clip_pretrained file .*nope/clip\.safetensors' does not exist"):
        AlignZegSegmenter.from_preset("tiny", clip_pretrained=str(missing))


# hf-hub: repos -----------------------------------------------------------------------------------------
def test_hf_hub_repo_from_the_cache(tmp_path):
    cache = tmp_path / "hub"
    state = open_clip_repo(cache, "org/tiny", tmp_path)
    seg = AlignZegSegmenter.from_preset("tiny", clip_pretrained="hf-hub:org/tiny", cache_dir=str(cache), seed=0)
    assert_loaded(seg, state)
    assert seg.config.clip_pretrained == "hf-hub:org/tiny"
    assert seg.config.mean == (0.5, 0.5, 0.5) and seg.config.std == (0.25, 0.25, 0.25)  # the repo's preprocessing
    assert clip_hub_repo(seg.config) == "org/tiny"


def test_hf_hub_quick_gelu_follows_the_repo(tmp_path):
    cache = tmp_path / "hub"
    open_clip_repo(cache, "org/tiny", tmp_path, model_cfg=dict(tiny_clip_cfg(32), quick_gelu=True))
    seg = AlignZegSegmenter.from_preset("tiny", clip_pretrained="hf-hub:org/tiny", cache_dir=str(cache))
    assert seg.config.clip_cfg["quick_gelu"] is True
    assert get_preset_config("tiny").clip_cfg["quick_gelu"] is False


def test_hf_hub_repo_of_another_architecture_is_refused(tmp_path):
    cache = tmp_path / "hub"
    other = tiny_clip_cfg(32)
    other["vision_cfg"]["layers"] = 3
    open_clip_repo(cache, "org/deeper", tmp_path, model_cfg=other)
    with pytest.raises(WeightsError, match=r"another CLIP architecture than tiny: vision_cfg\.layers 3 != 2"):
        AlignZegSegmenter.from_preset("tiny", clip_pretrained="hf-hub:org/deeper", cache_dir=str(cache))


def test_offline_and_not_cached_says_what_to_download(tmp_path):
    with pytest.raises(WeightsError, match=r"not in the local Hugging Face cache and HF_HUB_OFFLINE=1 is set.*"
                                           r"`hf download org/missing open_clip_config\.json`"):
        AlignZegSegmenter.from_preset("tiny", clip_pretrained="hf-hub:org/missing", cache_dir=str(tmp_path))


def test_preset_tag_offline_names_its_hub_repo(tmp_path):
    # True means the preset's own tag; it fails (offline, empty cache) before the big model is built
    with pytest.raises(WeightsError, match=r"CLIP weights 'openai' .*"
                                           r"`hf download timm/vit_base_patch16_clip_224\.openai open_clip_model"):
        AlignZegSegmenter.from_preset("vitb16", clip_pretrained=True, cache_dir=str(tmp_path))


# open_clip tags ----------------------------------------------------------------------------------------
def test_tag_resolves_through_open_clip_to_the_cached_file(tmp_path):
    # A config that calls its (tiny) CLIP "ViT-B-16": the tag 'openai' resolves through open_clip's pretrained
    # table to the Hub repo timm/vit_base_patch16_clip_224.openai, served from the test's cache.
    cache = tmp_path / "hub"
    weights = tmp_path / "w.safetensors"
    state = write_clip(weights)
    write_hub_repo(cache, "timm/vit_base_patch16_clip_224.openai",
                   {"open_clip_model.safetensors": weights.read_bytes()})
    config = get_preset_config("tiny").replace(clip_model="ViT-B-16")
    loaded = load_clip_weights(config, "openai", cache_dir=str(cache))
    assert loaded.source == "openai"
    assert torch.equal(loaded.state["visual.conv1.weight"], state["visual.conv1.weight"])
    assert torch.equal(loaded.state[POS], interpolate_pos_embed(state[POS], (8, 8)))
    new_config = loaded.apply_to(config)
    assert new_config.clip_pretrained == "openai" and new_config.clip_cfg["quick_gelu"] is True  # OpenAI's GELU


def test_unknown_tag_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown open_clip pretrained tag 'laion9000' for ViT-B-16; "
                                         r"valid tags: openai, laion400m_e31, .*laion2b_s34b_b88k"):
        AlignZegSegmenter.from_preset("vitb16", clip_pretrained="laion9000")


def test_tiny_preset_has_no_tag():
    with pytest.raises(ValueError, match=r"preset 'tiny' names no public CLIP weights"):
        AlignZegSegmenter.from_preset("tiny", clip_pretrained=True)
    with pytest.raises(ValueError, match=r"'tiny' is not an open_clip architecture"):
        AlignZegSegmenter.from_preset("tiny", clip_pretrained="openai")


@pytest.mark.parametrize("value, error, message", [
    (3, TypeError, r"clip_pretrained must be False, True, .* got int 3"),
    (["openai"], TypeError, r"got list \['openai'\]"),
    ("  ", ValueError, r"must not be an empty string"),
])
def test_bad_values(value, error, message):
    with pytest.raises(error, match=message):
        normalize_clip_pretrained(value, "openai", "vitb16")


def test_normalize():
    assert normalize_clip_pretrained(False, "openai") is None
    assert normalize_clip_pretrained(None, "openai") is None
    assert normalize_clip_pretrained(True, "openai") == "openai"
    assert normalize_clip_pretrained("hf-hub:org/x", None) == "hf-hub:org/x"


def test_hf_hub_repo_over_the_loopback_hub_then_offline(monkeypatch, tmp_path):
    from hub_server import FakeHub, hub_env, set_offline

    weights = tmp_path / "w.safetensors"
    state = write_clip(weights, seed=3)
    hub_cfg = {"model_cfg": tiny_clip_cfg(32), "preprocess_cfg": {}}
    with FakeHub() as hub:
        hub_env(monkeypatch, hub.url, tmp_path / "hf")
        hub.add_file("org/tiny", "main", "open_clip_config.json", json.dumps(hub_cfg).encode())
        hub.add_file("org/tiny", "main", "open_clip_model.safetensors", weights.read_bytes())
        seg = AlignZegSegmenter.from_preset("tiny", clip_pretrained="hf-hub:org/tiny", seed=0)
        assert_loaded(seg, state)
        fetched = {path for method, path in hub.requests if method == "GET"}
        assert any(p.endswith("/open_clip_model.safetensors") for p in fetched)
        assert "/org/tiny/resolve/main/open_clip_config.json" in fetched
    set_offline(monkeypatch, True)  # the server is gone: huggingface_hub's cache answers
    again = AlignZegSegmenter.from_preset("tiny", clip_pretrained="hf-hub:org/tiny", seed=0)
    assert_loaded(again, state)
    assert again.config.mean == get_preset_config("tiny").mean  # the repo gave no preprocessing
