"""The object world: determinism, held-out classes, background and occlusion labels, shapes, the drop-in API."""

import math

import numpy as np
import pytest
import torch

from alignzeg.worlds.attributes import IGNORE, AttributeWorld, keyed_rng
from alignzeg.worlds.objects import (OBJECT_COLOURS, OBJECT_PATTERNS, SHAPES, ObjectWorld, ObjectWorldConfig,
                                         make_world, object_world_config, shape_mask)
from alignzeg.worlds.export import WorldDataset


@pytest.fixture(scope="module")
def world():
    return make_world("objects", 0)


def test_classes_are_colour_pattern_compositions(world):
    assert world.num_classes == len(OBJECT_COLOURS) * len(OBJECT_PATTERNS) == 36
    assert world.class_names[:3] == ("red plain", "red striped", "red checkered")
    assert world.class_names[12] == "green plain" and world.class_names[-1] == "purple wavy"
    assert world.attributes.shape == (36, 3) and world.attributes.dtype == np.int64
    np.testing.assert_array_equal(world.attributes[13], [2, 1, -1])  # green striped, any shape


@pytest.mark.parametrize("split_seed", [0, 1, 7])
def test_unseen_classes_keep_every_word_seen(split_seed):
    w = ObjectWorld(ObjectWorldConfig(split_seed=split_seed))
    assert len(w.unseen_classes) == 6 and len(w.seen_classes) == 30
    colours = [n.split()[0] for n in w.unseen_classes]
    patterns = [n.split()[1] for n in w.unseen_classes]
    assert sorted(colours) == sorted(OBJECT_COLOURS) and sorted(patterns) == sorted(OBJECT_PATTERNS)  # one each
    assert {word for n in w.seen_classes for word in n.split()} == set(OBJECT_COLOURS) | set(OBJECT_PATTERNS)


@pytest.mark.parametrize("split_seed", [0, 2])
def test_three_word_classes_keep_every_word_pair_seen(split_seed):
    w = ObjectWorld(ObjectWorldConfig(split_seed=split_seed, colours=("red", "green", "blue", "yellow"),
                                      patterns=("plain", "striped", "dotted"), shapes=SHAPES))
    assert w.class_names[:4] == ("red plain disc", "red plain square", "red plain triangle", "red striped disc")
    assert len(w.unseen_classes) == 6 and len(w.seen_classes) == 30 and w.seen.sum() == 30
    seen_words = {word for n in w.seen_classes for word in n.split()}
    assert seen_words == {"red", "green", "blue", "yellow", "plain", "striped", "dotted"} | set(SHAPES)
    seen_pairs = {(a, b) for n in w.seen_classes for a, b in [n.split()[:2], n.split()[::2], n.split()[1:]]}
    for name in w.unseen_classes:
        c, p, s = name.split()
        assert {(c, p), (c, s), (p, s)} <= seen_pairs, name
    shapes = [n.split()[2] for n in w.unseen_classes]
    assert all(shapes.count(s) == 2 for s in SHAPES)  # ceil(6 / 3) each, 6 in all


def test_worlds_differ_and_configs_validate(world):
    assert make_world("objects", 1).unseen_classes != world.unseen_classes
    assert isinstance(make_world("attribute", 0), AttributeWorld)
    with pytest.raises(ValueError, match="unknown world family 'photos'"):
        make_world("photos", 0)
    with pytest.raises(ValueError, match="world must be a non-negative integer, got -1"):
        object_world_config(-1)
    with pytest.raises(ValueError, match="min_objects <= max_objects"):
        ObjectWorldConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match=r"shapes must be distinct words of \('disc', 'square', 'triangle'\), got \('star',\)"):
        ObjectWorldConfig(shapes=("star",))


def test_sample_shapes_dtypes_and_determinism(world):
    image, labels = world.sample("test", 3)
    assert image.shape == (64, 64, 3) and image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0
    assert labels.shape == (64, 64) and labels.dtype == np.int64
    again_image, again_labels = ObjectWorld(object_world_config(0)).sample("test", 3)
    np.testing.assert_array_equal(image, again_image)
    np.testing.assert_array_equal(labels, again_labels)
    assert not np.array_equal(image, world.sample("test", 4)[0])
    assert not np.array_equal(image, world.sample("val", 3)[0])
    with pytest.raises(ValueError, match="split must be one of"):
        world.sample("dev", 0)
    with pytest.raises(ValueError, match="index must be a non-negative integer, got -2"):
        world.sample("train", -2)


def test_background_is_ignore_in_every_split_and_objects_are_a_minority(world):
    for split in ("train", "val", "test"):
        fractions = []
        for i in range(30):
            labels = world.sample(split, i)[1]
            ids = np.unique(labels)
            assert ids[-1] == IGNORE and np.all(ids[:-1] < world.num_classes)
            assert 1 <= len(ids) - 1 <= 4  # 1-4 objects (occlusion may hide none fully: min_visible)
            fractions.append(np.mean(labels != IGNORE))
        assert 0.05 < np.mean(fractions) < 0.4, (split, np.mean(fractions))


def test_unseen_objects_are_ignored_in_train_labels_and_present_in_test(world):
    found_unseen_train = False
    for i in range(60):
        _, labels = world.sample("train", i)
        target = world.train_labels(labels)
        objects = labels != IGNORE
        unseen_px = objects & ~world.seen[np.where(objects, labels, 0)]
        found_unseen_train |= bool(unseen_px.any())
        np.testing.assert_array_equal(target[unseen_px], IGNORE)
        np.testing.assert_array_equal(target[objects & ~unseen_px], labels[objects & ~unseen_px])
        assert np.all(target[~objects] == IGNORE)
    assert found_unseen_train  # train_unseen_prob 0.1: present, never supervised
    for i in range(20):
        ids = np.unique(world.sample("test", i)[1])
        assert (~world.seen[ids[ids != IGNORE]]).sum() >= 1


def test_later_object_covers_earlier_one():
    world = ObjectWorld(ObjectWorldConfig(min_visible=0.0))
    centre = lambda k: (32.0, 32.0)  # noqa: E731 - both objects at the same place
    owner = world._layout(keyed_rng(0, "occlusion"), [0, 12], centre)
    both = owner >= 0
    assert (owner == 1).any() and set(np.unique(owner[both])) <= {0, 1}
    # Object 1's pixels are exactly its own shape: wherever it lies, it wins.
    rng = keyed_rng(0, "occlusion")
    first = world._shape(rng, 0, (32.0, 32.0))
    second = world._shape(rng, 12, (32.0, 32.0))
    np.testing.assert_array_equal(owner == 1, second)
    np.testing.assert_array_equal(owner == 0, first & ~second)
    # And its colour: class 12 (green plain) painted over class 0 (red plain).
    image = world._compose(keyed_rng(1), [0, 12], owner)
    assert image[owner == 1][:, 1].mean() > image[owner == 1][:, 0].mean() + 0.2  # green over the top
    assert image[owner == 0][:, 0].mean() > image[owner == 0][:, 1].mean() + 0.2  # red where still visible


def test_render_places_each_object_in_its_region(world):
    cells = np.zeros((64, 64), dtype=np.int64)
    cells[:, 32:] = 1
    image = world.render(keyed_rng(5), [0, 12], cells)  # red plain left, green plain right
    assert image.shape == (64, 64, 3) and image.dtype == np.float32
    red = (image[..., 0] - image[..., 1] > 0.5).nonzero()[1] + 0.5  # x of red pixels, of green ones
    green = (image[..., 1] - image[..., 0] > 0.3).nonzero()[1] + 0.5
    assert len(red) and len(green) and red.max() <= 32 + 18 and green.min() >= 32 - 18  # radius <= 18
    with pytest.raises(ValueError, match="cells has no region 1"):
        world.render(keyed_rng(5), [0, 12], np.zeros((64, 64), dtype=np.int64))
    with pytest.raises(ValueError, match=r"cells must be \(64, 64\)"):
        world.render(keyed_rng(5), [0], np.zeros((32, 32), dtype=np.int64))


def test_shape_masks_have_their_geometric_areas():
    centres = np.arange(512) / 4 + 0.125  # a 4x finer grid: areas to ~1 %
    x, y = np.meshgrid(centres, centres)
    cell = 1 / 16
    r = 40.0
    disc = shape_mask("disc", x, y, (64.0, 64.0), r, 0.3, 0.8).sum() * cell
    square = shape_mask("square", x, y, (64.0, 64.0), r, 0.3, 1.0).sum() * cell
    triangle = shape_mask("triangle", x, y, (64.0, 64.0), r, 0.3, 1.0).sum() * cell
    assert disc == pytest.approx(math.pi * r * r * 0.8, rel=0.01)
    assert square == pytest.approx(2 * r * r, rel=0.01)  # half-side r / sqrt(2)
    assert triangle == pytest.approx(3 * math.sqrt(3) / 4 * r * r, rel=0.01)
    with pytest.raises(ValueError, match="unknown shape 'star'"):
        shape_mask("star", x, y, (0.0, 0.0), 1.0, 0.0, 1.0)


def test_world_dataset_takes_the_object_world(world):
    train = WorldDataset(world, "train", 4)
    item = train[2]
    assert item["image"].shape == (3, 64, 64) and item["label"].dtype == torch.int64
    np.testing.assert_array_equal(item["label"].numpy(), world.train_labels(world.sample("train", 2)[1]))
    assert train.seen_classes == world.seen_classes


def test_export_command_writes_the_object_world_with_background_ignored(world, tmp_path):
    from alignzeg.train.datasets.loaders import build_dataset, folder_dataset
    from alignzeg.train.training.world_recipe import main

    assert main(["export", "--family", "objects", "--world", "0", "--out", str(tmp_path), "--train-images", "2",
                 "--test-images", "2", "--val-images", "0", "--clip-steps", "0"]) == 0
    assert (tmp_path / "classes.txt").read_text().splitlines() == list(world.class_names)
    test = folder_dataset(tmp_path, split="test")
    assert test.seen_classes == world.seen_classes
    np.testing.assert_array_equal(test[1]["label"], world.sample("test", 1)[1])  # 255 = background survives
    train = build_dataset("folder", tmp_path, split="train", train=True)
    np.testing.assert_array_equal(train[1]["label"], world.train_labels(world.sample("train", 1)[1]))
