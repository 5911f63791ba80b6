"""The synthetic zero-shot world: determinism, splits, embedding construction, exact label maps."""

import numpy as np
import pytest
import torch

from alignzeg.train.synthetic import (
    IGNORE, WorldConfig, ZeroShotWorld, render_texture, standardise, voronoi_labels,
)


@pytest.fixture(scope="module")
def world():
    return ZeroShotWorld(WorldConfig())


def test_same_seed_same_world(world):
    other = ZeroShotWorld(WorldConfig())
    np.testing.assert_array_equal(world.appearance, other.appearance)
    assert torch.equal(world.class_embeddings, other.class_embeddings)
    np.testing.assert_array_equal(world.seen, other.seen)
    for split in ("train", "test"):
        for a, b in zip(world.sample(split, 3), other.sample(split, 3)):
            np.testing.assert_array_equal(a, b)


def test_sampling_leaves_global_rngs_alone(world):
    torch.manual_seed(123)
    np.random.seed(123)
    expected = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(123)
    np.random.seed(123)
    world.sample("test", 1)
    ZeroShotWorld(WorldConfig(seed=5))
    assert torch.equal(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])


def test_seed_changes_world_split_seed_changes_only_split(world):
    other_seed = ZeroShotWorld(WorldConfig(seed=1))
    assert not np.allclose(world.appearance, other_seed.appearance)
    other_split = ZeroShotWorld(WorldConfig(split_seed=1))
    np.testing.assert_array_equal(world.appearance, other_split.appearance)
    assert torch.equal(world.class_embeddings, other_split.class_embeddings)
    assert not np.array_equal(world.seen, other_split.seen)


@pytest.mark.parametrize("num_classes,num_seen", [(24, 18), (10, 7)])
def test_split_sizes(num_classes, num_seen):
    w = ZeroShotWorld(WorldConfig(num_classes=num_classes, num_seen=num_seen, max_regions=4))
    assert w.seen.shape == (num_classes,) and w.seen.dtype == bool
    assert w.seen.sum() == num_seen and len(w.unseen_ids) == num_classes - num_seen
    assert len(w.class_names) == num_classes


def test_embeddings_are_unit_and_follow_a_linear_map(world):
    emb = world.class_embeddings
    assert emb.shape == (24, 64) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(24))
    clean = ZeroShotWorld(WorldConfig(embedding_noise=0.0)).class_embeddings.double()
    feats = torch.from_numpy(standardise(world.appearance))  # (C, 7)
    # Noise-free: every embedding is a positive multiple of W @ feats, so rank(embeddings) = 7.
    assert torch.linalg.matrix_rank(clean, rtol=1e-5).item() == feats.shape[1]
    assert torch.linalg.matrix_rank(emb.double(), rtol=1e-5).item() > feats.shape[1]


def test_linear_map_fitted_on_seen_transfers_to_unseen(world):
    feats = torch.from_numpy(standardise(world.appearance))
    emb = world.class_embeddings.double()
    seen, unseen = torch.from_numpy(world.seen), torch.from_numpy(~world.seen)
    weight = torch.linalg.lstsq(feats[seen], emb[seen]).solution  # (7, E)
    pred = torch.nn.functional.normalize(feats[unseen] @ weight, dim=1)
    cos = pred @ emb.t()  # (U, C)
    assert torch.equal(cos.argmax(dim=1), torch.from_numpy(world.unseen_ids))
    assert (cos[torch.arange(len(world.unseen_ids)), torch.from_numpy(world.unseen_ids)] > 0.95).all()


def test_classes_are_separated(world):
    feats = standardise(world.appearance)
    dist = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
    assert dist[~np.eye(24, dtype=bool)].min() >= world.config.min_separation


def test_voronoi_labels_exact():
    labels = voronoi_labels(np.array([[16.0, 32.0], [48.0, 32.0]]), 64)
    expected = np.zeros((64, 64), dtype=np.int64)
    expected[:, 32:] = 1
    np.testing.assert_array_equal(labels, expected)
    quad = voronoi_labels(np.array([[8.0, 8.0], [24.0, 8.0], [8.0, 24.0], [24.0, 24.0]]), 32)
    np.testing.assert_array_equal(quad[:16, :16], 0)
    np.testing.assert_array_equal(quad[:16, 16:], 1)
    np.testing.assert_array_equal(quad[16:, :16], 2)
    np.testing.assert_array_equal(quad[16:, 16:], 3)


def test_render_texture_is_the_grating():
    a = np.array([0.5, 0.4, 0.3, 0.125, 0.0, 0.2])  # period 8 px along x
    tex = render_texture(a, 16, phase=0.0)
    assert tex.shape == (16, 16, 3)
    np.testing.assert_allclose(tex[:, :, 0] - tex[:, :, 1], 0.1)
    np.testing.assert_allclose(tex[0], tex[5])  # constant along y
    np.testing.assert_allclose(tex[:, 0], tex[:, 8])  # periodic along x
    np.testing.assert_allclose(tex.mean(axis=(0, 1)), a[:3], atol=1e-12)


def test_sample_regions_are_painted_from_their_class():
    cfg = WorldConfig(colour_jitter=0.0, frequency_jitter=0.0, orientation_jitter=0.0, contrast_jitter=0.0,
                      pixel_noise=0.0)
    w = ZeroShotWorld(cfg)
    for index in range(6):
        image, labels = w.sample("test", index)
        assert image.shape == (64, 64, 3) and image.dtype == np.float32
        assert labels.shape == (64, 64) and labels.dtype == np.int64
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert cfg.min_regions <= len(np.unique(labels)) <= cfg.max_regions
        for c in np.unique(labels):
            region = image[labels == c]
            a = w.appearance[c]
            # No jitter or noise: every pixel is colour + contrast * sin(...) (clipped), the same offset
            # in all three channels.
            offset = region - a[:3]
            inside = (region > 0.0).all(axis=1) & (region < 1.0).all(axis=1)
            np.testing.assert_allclose(offset[inside] - offset[inside, :1], 0.0, atol=1e-6)
            assert np.abs(offset[inside]).max() <= a[5] + 1e-6


def test_train_images_hold_seen_classes_only(world):
    for index in range(20):
        _, labels = world.sample("train", index)
        assert world.seen[np.unique(labels)].all()
        item = world.dataset("train", 20)[index]
        np.testing.assert_array_equal(item["label"].numpy(), labels)


def test_test_images_mix_seen_and_unseen(world):
    unseen_pixels = 0
    for index in range(30):
        _, labels = world.sample("test", index)
        present = np.unique(labels)
        assert (~world.seen[present]).sum() >= world.config.min_unseen_test
        assert world.seen[present].any()
        unseen_pixels += (~world.seen[labels]).sum()
    assert 0.2 < unseen_pixels / (30 * 64 * 64) < 0.6


def test_unseen_cells_in_train_images_are_ignored():
    w = ZeroShotWorld(WorldConfig(train_unseen_prob=0.5))
    ds = w.dataset("train", 30)
    found = 0
    for index in range(30):
        _, truth = w.sample("train", index)
        labels = ds[index]["label"].numpy()
        unseen = ~w.seen[truth]
        np.testing.assert_array_equal(labels[unseen], IGNORE)
        np.testing.assert_array_equal(labels[~unseen], truth[~unseen])
        found += unseen.any()
    assert found > 0


def test_dataset_items(world):
    ds = world.dataset("test", 5)
    assert len(ds) == 5
    item = ds[4]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["label"].shape == (64, 64) and item["label"].dtype == torch.int64
    assert ds.class_embeddings.shape == (24, 64) and ds.seen.dtype == torch.bool
    assert ds.seen_classes == tuple(n for n, s in zip(world.class_names, world.seen) if s)
    assert len(ds.seen_classes) == 18
    with pytest.raises(IndexError):
        ds[5]


@pytest.mark.parametrize("kwargs", [dict(num_seen=24), dict(num_seen=0), dict(min_regions=4, max_regions=3),
                                    dict(max_regions=19), dict(train_unseen_prob=1.5), dict(min_unseen_test=3)])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        WorldConfig(**kwargs)


def test_bad_split_and_index(world):
    with pytest.raises(ValueError, match="split"):
        world.sample("val", 0)
    with pytest.raises(ValueError, match="index"):
        world.sample("train", -1)
