"""Mini-CLIP pre-training: determinism, the multi-positive contrastive loss, captions, the saved file's loading."""

import re
import math
import os
import stat

import numpy as np
import pytest
import torch

from alignzeg import AlignZegSegmenter
from alignzeg.worlds.attributes import AttributeWorld, world_config
from alignzeg.worlds.miniclip import (
    MiniClipConfig, _contrastive_loss, pretrain_clip, render_captioned_batch, save_clip, zero_shot_accuracy,
)

TINY = dict(steps=2, batch_size=6, warmup=1)


@pytest.fixture(scope="module")
def world():
    return AttributeWorld(world_config(0))


@pytest.fixture(scope="module")
def trained(world):
    return pretrain_clip(world, MiniClipConfig(seed=3, **TINY))


def test_same_seed_identical_tensors_and_global_rng_untouched(world, trained):
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    again = pretrain_clip(world, MiniClipConfig(seed=3, **TINY))
    assert torch.equal(torch.rand(2), expected)
    a, b = trained.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = pretrain_clip(world, MiniClipConfig(seed=4, **TINY)).state_dict()
    assert not torch.equal(a["visual.conv1.weight"], other["visual.conv1.weight"])


def test_contrastive_loss_by_hand():
    emb = torch.eye(3)
    keys = [frozenset({0}), frozenset({1}), frozenset({0})]
    loss = _contrastive_loss(emb, emb, torch.tensor(1.0), keys)
    # logits = identity; row 0's targets are items 0 and 2 (0.5 each); rows are symmetric.
    lse = math.log(math.e + 2)
    row0 = 0.5 * (lse - 1) + 0.5 * lse   # -0.5 log p(0) - 0.5 log p(2)
    row1 = lse - 1
    expected = (row0 + row1 + row0) / 3  # both directions equal (symmetric logits and targets)
    torch.testing.assert_close(loss, torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_captions_name_every_texture_of_their_image(world):
    images, captions, keys = render_captioned_batch(world, 40, 0.5, np.random.default_rng(0))
    assert images.shape == (40, 3, 64, 64) and images.dtype == torch.float32
    for caption, key in zip(captions, keys):
        named = {i for i, n in enumerate(world.class_names) if f"a {n}" in caption}
        assert named == set(key), caption
    assert {len(k) for k in keys} == {1, 2, 3}
    covered = set().union(*keys)
    assert covered & set(world.unseen_ids.tolist())  # pre-training sees unseen classes too


def test_saved_file_loads_through_clip_pretrained(tmp_path, trained):
    path = save_clip(trained, tmp_path / "clip.safetensors")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # as open() makes files (0644), not 0600
    seg = AlignZegSegmenter.from_preset("tiny", clip_pretrained=path)
    assert seg.config.clip_pretrained == os.path.abspath(path)
    loaded = seg.model.backbone.clip.state_dict()
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(loaded[key], value.half().float(), rtol=0, atol=0)


def test_zero_shot_accuracy_counts(world, trained):
    acc = zero_shot_accuracy(trained, world, 48)
    assert set(acc) == {"all", "seen", "unseen"}
    # 48 images, one per class: 8 unseen and 40 seen images, so the overall rate is their weighted mean.
    assert acc["all"] == pytest.approx((8 * acc["unseen"] + 40 * acc["seen"]) / 48)


def test_bad_config():
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        MiniClipConfig(steps=0)


def test_any_caption_source_and_its_own_image_size():
    """A source of (image, caption) pairs that is not the package's world, at 32 px: solid colours."""
    colours = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}
    names = list(colours)

    def solid(rng, size):
        picks = rng.integers(len(names), size=size)
        images = torch.tensor([colours[names[i]] for i in picks]).view(size, 3, 1, 1).expand(size, 3, 32, 32)
        return images.contiguous(), [f"a {names[i]} square." for i in picks]

    config = MiniClipConfig(seed=1, steps=2, batch_size=4, warmup=1)
    clip = pretrain_clip(solid, config)
    assert clip.encode_image(torch.zeros(1, 3, 32, 32)).shape == (1, 64)  # built for the source's 32 px
    again = pretrain_clip(solid, config)
    assert all(torch.equal(a, b) for a, b in zip(clip.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="templates apply to a world source"):
        pretrain_clip(solid, config, templates=("{}",))
    with pytest.raises(ValueError, match=r"asked for 4 pairs returned 4 images, 3 captions"):
        pretrain_clip(lambda rng, size: (solid(rng, size)[0], ["a"] * 3), config)


def test_world_captions_use_the_templates_given(world):
    from alignzeg.worlds.miniclip import world_captions

    source = world_captions(world, templates=("an image of {}",), multi_prob=0.0)
    images, captions, keys = source(np.random.default_rng(0), 5)
    assert images.shape == (5, 3, 64, 64)
    assert all(c == f"an image of {world.class_names[next(iter(k))]}" for c, k in zip(captions, keys))
    with pytest.raises(ValueError, match="one '\\{\\}' each"):
        world_captions(world, templates=("no slot",))


@pytest.mark.parametrize("make,message", [
    (lambda: MiniClipConfig(steps=2.5), "mini-CLIP config steps must be an integer, got float 2.5"),
    (lambda: MiniClipConfig(progress="yes"), "mini-CLIP config progress must be true or false, got str 'yes'"),
])
def test_config_types_are_checked_from_the_annotations(make, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        make()


def test_closeups_fill_the_frame_with_one_class_and_zero_keeps_the_old_draws(world):
    from alignzeg.worlds.objects import make_world

    objects = make_world("objects", 0)
    plain = render_captioned_batch(objects, 12, 0.3, np.random.default_rng(5))
    same = render_captioned_batch(objects, 12, 0.3, np.random.default_rng(5), closeup_prob=0.0)
    assert torch.equal(plain[0], same[0]) and plain[1] == same[1]  # 0 draws no extra number: old files reproduce
    images, captions, keys = render_captioned_batch(objects, 6, 0.3, np.random.default_rng(1), closeup_prob=1.0)
    rng = np.random.default_rng(1)
    for image, caption, key in zip(images, captions, keys):
        rng.random()  # the close-up draw
        (cls,) = rng.choice(objects.num_classes, 1)
        expected = torch.from_numpy(objects.closeup(rng, int(cls))).permute(2, 0, 1)
        rng.integers(4)  # the template
        assert torch.equal(image, expected) and key == {int(cls)} and caption.count(objects.class_names[cls]) == 1
    # a close-up is the class's colour everywhere: no background pixel (low saturation) is left
    saturation = images.amax(1) - images.amin(1)
    assert float(saturation.mean()) > 0.3
    with pytest.raises(ValueError, match=re.escape("mini-CLIP closeup_prob must be in [0, 1], got 1.5")):
        MiniClipConfig(closeup_prob=1.5)
    attribute = render_captioned_batch(world, 2, 0.3, np.random.default_rng(2), closeup_prob=1.0)
    assert attribute[0].shape == (2, 3, 64, 64) and all(len(k) == 1 for k in attribute[2])
