"""The attribute world: determinism, held-out combinations, exact patterns and labels, the folder export."""

import re
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import alignzeg

from alignzeg.worlds.attributes import COLOURS, IGNORE, PATTERNS, AttributeWorld, WorldConfig, pattern_mask, world_config
from alignzeg.train.datasets.loaders import build_dataset, folder_dataset
from alignzeg.worlds.export import WorldDataset, export_world


@pytest.fixture(scope="module")
def world():
    return AttributeWorld(world_config(0))


def test_classes_are_colour_pattern_compositions(world):
    assert world.num_classes == len(COLOURS) * len(PATTERNS) == 48
    assert world.class_names[:3] == ("red plain", "red striped", "red checkered")
    assert world.class_names[-1] == "pink wavy"
    assert [world.class_names[i] for i in (6, 13)] == ["orange plain", "yellow striped"]


@pytest.mark.parametrize("split_seed", [0, 1, 7])
def test_unseen_are_held_out_combinations_of_seen_words(split_seed):
    w = AttributeWorld(WorldConfig(split_seed=split_seed))
    assert len(w.unseen_classes) == 8 and len(w.seen_classes) == 40
    colours = [n.split()[0] for n in w.unseen_classes]
    patterns = [n.split()[1] for n in w.unseen_classes]
    assert len(set(colours)) == 8 and max(patterns.count(p) for p in PATTERNS) <= 2
    seen_words = {word for n in w.seen_classes for word in n.split()}
    assert seen_words == set(COLOURS) | set(PATTERNS)


def test_worlds_differ_in_split_and_images(world):
    other = AttributeWorld(world_config(1))
    assert world.unseen_classes != other.unseen_classes
    assert not np.array_equal(world.sample("test", 0)[0], other.sample("test", 0)[0])


def test_same_seed_same_images_and_global_rngs_untouched(world):
    torch.manual_seed(123)
    np.random.seed(123)
    expected = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(123)
    np.random.seed(123)
    again = AttributeWorld(world_config(0))
    for split in ("train", "val", "test"):
        for a, b in zip(world.sample(split, 3), again.sample(split, 3)):
            np.testing.assert_array_equal(a, b)
    assert torch.equal(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])


def test_pattern_masks_by_hand():
    x = np.arange(8) + 0.5
    y = np.full(8, 0.5)
    np.testing.assert_array_equal(pattern_mask("striped", x, y, 8.0, 0.0, (0.0, 0.0)), [1, 1, 1, 1, 0, 0, 0, 0])
    # checkered squares of half a period: x in [0, 4) and y in [0, 4) is a "0 + 0 = even" square
    np.testing.assert_array_equal(pattern_mask("checkered", x, y, 8.0, 0.0, (0.0, 0.0)), [1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(pattern_mask("grid", x, y, 8.0, 0.0, (0.0, 0.0)), np.ones(8))  # v/8 < 0.25
    # dotted: a disc of radius 2.4 px around (4, 4)
    np.testing.assert_array_equal(pattern_mask("dotted", x, np.full(8, 4.0), 8.0, 0.0, (0.0, 0.0)),
                                  [0, 0, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(pattern_mask("plain", x, y, 8.0, 0.3, (1.0, 2.0)), np.zeros(8))
    with pytest.raises(ValueError, match="unknown pattern 'spotted'"):
        pattern_mask("spotted", x, y, 8.0, 0.0, (0.0, 0.0))


def test_plain_texture_is_its_colour(world):
    y, x = np.mgrid[0:64, 0:64] + 0.5
    image = world.paint(np.random.default_rng(0), world.class_names.index("blue plain"), x, y)
    assert np.ptp(image.reshape(-1, 3), axis=0).max() == 0.0  # one colour, no pattern
    np.testing.assert_allclose(image[0, 0], COLOURS["blue"], atol=0.15)  # colour jitter std 0.04


def test_test_images_mix_splits_and_train_labels_hide_unseen(world):
    for i in range(20):
        _, labels = world.sample("test", i)
        assert (~world.seen[np.unique(labels)]).any()
    unseen_train = 0
    for i in range(40):
        image, labels = world.sample("train", i)
        assert image.shape == (64, 64, 3) and image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
        hidden = world.train_labels(labels)
        np.testing.assert_array_equal(hidden == IGNORE, ~world.seen[labels])
        unseen_train += int((hidden == IGNORE).any())
    assert 0 < unseen_train < 40  # train_unseen_prob 0.1 per cell


def test_dataset_has_names_and_no_embeddings(world):
    ds = WorldDataset(world, "train", 5)
    assert ds.class_names == world.class_names and ds.seen_classes == world.seen_classes
    assert getattr(ds, "class_embeddings", None) is None
    item = ds[2]
    assert item["image"].shape == (3, 64, 64) and item["label"].dtype == torch.int64
    with pytest.raises(IndexError, match="index 5 out of range"):
        ds[5]


def test_bad_arguments(world):
    with pytest.raises(ValueError, match="split must be one of"):
        world.sample("validation", 0)
    with pytest.raises(ValueError, match="index must be a non-negative integer, got -1"):
        world.sample("test", -1)
    with pytest.raises(ValueError, match="world must be a non-negative integer, got -2"):
        world_config(-2)
    with pytest.raises(ValueError, match="num_unseen must be in"):
        WorldConfig(num_unseen=9)


def test_export_reads_back_through_the_folder_dataset_with_splits(world, tmp_path):
    export_world(world, tmp_path, train_images=3, test_images=2, val_images=2)
    assert (tmp_path / "classes.txt").read_text().splitlines() == list(world.class_names)
    val = folder_dataset(tmp_path, split="val")  # the calibration split
    np.testing.assert_array_equal(val[1]["label"], world.sample("val", 1)[1])
    test = folder_dataset(tmp_path, split="test")
    assert len(test) == 2 and test.seen_classes == world.seen_classes  # seen.txt is read
    image, labels = world.sample("test", 1)
    np.testing.assert_array_equal(test[1]["label"], labels)
    np.testing.assert_array_equal(test[1]["image"], np.round(image * 255).astype(np.uint8))
    train = build_dataset("folder", tmp_path, split="train", train=True)
    assert len(train) == 3
    _, labels = world.sample("train", 0)
    np.testing.assert_array_equal(train[0]["label"], world.train_labels(labels))


@pytest.mark.slow
def test_export_command_writes_data_clip_and_a_train_config(tmp_path):
    from alignzeg import AlignZegSegmenter
    from alignzeg.train.training.train_cli import resolve_config
    from alignzeg.train.training.world_recipe import main

    assert main(["export", "--world", "1", "--out", str(tmp_path), "--train-images", "2", "--test-images", "1",
                 "--val-images", "1", "--clip-steps", "2"]) == 0
    world = AttributeWorld(world_config(1))
    cfg = resolve_config(None, str(tmp_path / "train_config.json"), [], "full")
    assert cfg.seen_classes == world.seen_classes and cfg.class_indicator and cfg.negative_topk == 1
    assert cfg.clip_pretrained == str(tmp_path / "clip.safetensors") and cfg.model_overrides["decoder_dim"] == 64
    AlignZegSegmenter.from_preset("tiny", clip_pretrained=cfg.clip_pretrained)  # the file fits the preset
    assert len(folder_dataset(tmp_path, split="train")) == 2


def test_val_is_drawn_like_test_from_its_own_stream(world):
    """val images mix seen and unseen classes as test images do, and are not test images."""
    for i in range(20):
        image, labels = world.sample("val", i)
        present = np.unique(labels)
        assert (~world.seen[present]).sum() >= 1 and world.seen[present].sum() >= 1
        assert not np.array_equal(image, world.sample("test", i)[0])


def test_export_with_a_reused_clip_trains_from_another_folder(tmp_path, monkeypatch, capsys):
    """--clip reuses the shipped mini-CLIP (no pre-training); train_config.json works from any folder. Given by
    its path before it moved into alignzeg/demo/, the config records its present one."""
    from alignzeg.train.training.train_cli import main as train_main
    from alignzeg.train.training.world_recipe import main

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert main(["export", "--world", "1", "--out", "w1", "--train-images", "2", "--test-images", "1",
                 "--val-images", "1", "--clip", "alignzeg:assets/world/clip.safetensors"]) == 0
    assert not (tmp_path / "a" / "w1" / "clip.safetensors").exists()
    config = json.loads((tmp_path / "a" / "w1" / "train_config.json").read_text())
    assert config["clip_pretrained"] == "alignzeg:demo/assets/clip.safetensors" and config["progress"] is False
    monkeypatch.chdir(tmp_path / "b")
    data = tmp_path / "a" / "w1"
    assert train_main(["--config", str(data / "train_config.json"), "--set", "iterations=1", "--set", "batch_size=1",
                       "--set", "device=\"cpu\"", "--dataset", "folder", "--data-root", str(data),
                       "--out", "run"]) == 0
    assert (tmp_path / "b" / "run" / "model.safetensors").is_file()
    # A file given by a relative path is recorded as an absolute one.
    clip = tmp_path / "a" / "my_clip.safetensors"
    clip.write_bytes((Path(alignzeg.__file__).parent / "demo" / "assets" / "clip.safetensors").read_bytes())
    monkeypatch.chdir(tmp_path / "a")
    assert main(["export", "--out", "w2", "--train-images", "1", "--test-images", "1", "--val-images", "0",
                 "--clip", "my_clip.safetensors"]) == 0
    assert json.loads((tmp_path / "a" / "w2" / "train_config.json").read_text())["clip_pretrained"] == str(clip)


def test_export_refuses_no_clip_and_contradictory_clip_options(tmp_path, capsys):
    from alignzeg.train.training.world_recipe import main

    assert main(["export", "--out", str(tmp_path / "w"), "--clip-steps", "-1"]) == 2
    assert "--clip-steps must be >= 0, got -1" in capsys.readouterr().err
    assert main(["export", "--out", str(tmp_path / "w"), "--clip-steps", "5", "--clip", "x.safetensors"]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert main(["export", "--out", str(tmp_path / "w"), "--clip", str(tmp_path / "none.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # nothing written before the options are checked
    # --clip-steps 0: the data only, and it says that there is no train config and how to get one
    assert main(["export", "--out", str(tmp_path / "d"), "--train-images", "1", "--test-images", "1",
                 "--val-images", "0", "--clip-steps", "0"]) == 0
    printed = capsys.readouterr().out
    assert "no train_config.json" in printed and "--clip FILE" in printed
    assert (tmp_path / "d" / "classes.txt").is_file() and not (tmp_path / "d" / "train_config.json").exists()


def test_world_configs_check_their_types_from_the_annotations():
    from alignzeg.worlds.objects import ObjectWorldConfig

    with pytest.raises(TypeError, match=re.escape("world config image_size must be an integer, got str '64'")):
        WorldConfig(image_size="64")
    with pytest.raises(TypeError, match=re.escape("object world config shapes must be")):
        ObjectWorldConfig(shapes="circle")


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_export_into_a_non_empty_folder_is_refused_or_replaced_with_overwrite(tmp_path, capsys):
    from alignzeg.train.training.world_recipe import main

    out = tmp_path / "w"
    common = ["export", "--out", str(out), "--test-images", "1", "--val-images", "0", "--clip-steps", "0"]
    assert main([*common, "--train-images", "3"]) == 0
    before = _files(out)
    assert before == ["classes.txt", "seen.txt", "test/images/000000.png", "test/labels/000000.png",
                      *(f"train/{k}/00000{i}.png" for k in ("images", "labels") for i in range(3))]
    capsys.readouterr()
    assert main([*common, "--train-images", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"python -m alignzeg.train.training.world_recipe: error: --out {str(out)!r} is not empty (it holds classes.txt, "
                   "seen.txt, test, train); give a new or empty folder, or --overwrite to replace its contents")
    assert _files(out) == before  # untouched
    # --overwrite, another family: the folder holds exactly the new export, no file of the old one.
    assert main([*common, "--train-images", "1", "--family", "objects", "--overwrite"]) == 0
    assert _files(out) == ["classes.txt", "seen.txt", "test/images/000000.png", "test/labels/000000.png",
                           "train/images/000000.png", "train/labels/000000.png"]
    assert len(folder_dataset(out, split="train")) == 1
    from alignzeg.worlds.objects import make_world
    assert (out / "classes.txt").read_text().splitlines() == list(make_world("objects", 0).class_names)


def test_overwrite_deletes_nothing_that_is_not_an_export(tmp_path, capsys):
    from alignzeg.train.training.world_recipe import main

    (tmp_path / "notes.txt").write_text("mine")
    assert main(["export", "--out", str(tmp_path), "--train-images", "1", "--test-images", "1", "--val-images", "0",
                 "--clip-steps", "0", "--overwrite"]) == 2
    assert "holds notes.txt but no classes.txt: it is not a world export, so --overwrite does not delete it" \
        in capsys.readouterr().err
    assert _files(tmp_path) == ["notes.txt"]


def test_export_help_gives_every_default(capsys):
    from alignzeg.train.training.world_recipe import main

    with pytest.raises(SystemExit) as info:
        main(["export", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for option, words in [("--train-images", "(default 4000)"), ("--test-images", "(default 200)"),
                          ("--val-images", "(default 100; 0: none)"), ("--world", "default 0"),
                          ("--family", "the default"), ("--overwrite", "delete an earlier export")]:
        assert option in text and words in text, (option, words)
