"""Dataset loaders on small fake trees, the standard splits, augmentation and the resumable sampler."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from alignzeg.train.datasets.augmentation import RandomResizeCrop, ResumableBatchSampler, to_tensors
from alignzeg.train.datasets.loaders import build_dataset, coco_stuff_dataset, context_dataset, folder_dataset, voc_dataset
from alignzeg.train.datasets.splits import SPLITS


def _write(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _rgb(h=6, w=8):
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _voc_tree(root, sub, label_dir, list_dir, values):
    base = root / sub
    label = np.array([values], dtype=np.uint8).repeat(6, 0)
    for stem in ("a", "b"):
        _write(base / "JPEGImages" / f"{stem}.jpg", _rgb(6, len(values)))
        _write(base / label_dir / f"{stem}.png", label, "L")
    (base / "ImageSets" / list_dir).mkdir(parents=True)
    (base / "ImageSets" / list_dir / "train.txt").write_text("a\nb\n")
    (base / "ImageSets" / list_dir / "val.txt").write_text("b\n")


def test_standard_splits():
    assert [(len(s.classes), len(s.seen), len(s.unseen)) for s in SPLITS.values()] == [(171, 156, 15), (20, 15, 5), (59, 49, 10)]
    assert SPLITS["voc"].unseen == ("pottedplant", "sheep", "sofa", "train", "tvmonitor")


def test_voc_labels_background_ignored_and_unseen_dropped_in_training(tmp_path):
    _voc_tree(tmp_path / "VOCdevkit", "VOC2012", "SegmentationClass", "Segmentation", [0, 1, 16, 20, 255])
    train = voc_dataset(tmp_path / "VOCdevkit", "train")
    val = voc_dataset(tmp_path / "VOCdevkit" / "VOC2012", "val")
    assert len(train) == 2 and len(val) == 1 and len(train.class_names) == 20
    assert "pottedplant" not in train.seen_classes and len(train.seen_classes) == 15
    # raw 16 = pottedplant (index 15), raw 20 = tvmonitor (index 19): both unseen
    assert val[0]["label"][0].tolist() == [255, 0, 15, 19, 255]
    assert train[0]["label"][0].tolist() == [255, 0, 255, 255, 255]
    assert train[0]["image"].shape == (6, 5, 3) and train[0]["image"].dtype == np.uint8


def test_context_labels(tmp_path):
    _voc_tree(tmp_path, "VOC2010", "SegmentationClassContext", "SegmentationContext", [0, 1, 59, 7])
    val = context_dataset(tmp_path, "val", ignore_unseen=False)
    assert val[0]["label"][0].tolist() == [255, 0, 58, 6]  # raw 7 = bird (unseen), kept for evaluation
    assert context_dataset(tmp_path, "train")[0]["label"][0].tolist() == [255, 255, 58, 255]


@pytest.mark.parametrize("train_ids", [True, False])
def test_coco_stuff_both_label_formats(tmp_path, train_ids):
    raw = [0, 11, 12, 181, 255] if not train_ids else [0, 11, 170, 29, 255]
    suffix = "_labelTrainIds" if train_ids else ""
    _write(tmp_path / "images" / "val2017" / "000001.jpg", _rgb(6, 5))
    _write(tmp_path / "annotations" / "val2017" / f"000001{suffix}.png", np.array([raw], dtype=np.uint8).repeat(6, 0), "L")
    ds = coco_stuff_dataset(tmp_path, "val")
    row = ds[0]["label"][0].tolist()
    if train_ids:
        assert row == [0, 11, 170, 29, 255]
    else:  # raw 11 (street sign) is unused; raw 12 = stop sign (11); raw 181 = wood (170)
        assert row == [0, 255, 11, 170, 255]
    assert ds.class_names[29] == "frisbee" and "frisbee" not in ds.seen_classes
    train = coco_stuff_dataset(tmp_path, "val", ignore_unseen=True)
    assert (train[0]["label"][0] == 29).sum() == 0


def test_folder_dataset_and_build(tmp_path):
    (tmp_path / "classes.txt").write_text("sky\nroad\n\ncar\n")
    _write(tmp_path / "images" / "x.png", _rgb(4, 3))
    _write(tmp_path / "labels" / "x.png", np.array([[0, 1, 2]] * 4, dtype=np.uint8), "L")
    ds = folder_dataset(tmp_path, seen_classes=["sky", "car"])
    assert ds.class_names == ("sky", "road", "car") and ds.seen_classes == ("sky", "car")
    assert ds[0]["label"][0].tolist() == [0, 1, 2]
    assert build_dataset("folder", tmp_path, seen_classes=["sky", "car"])[0]["label"][0].tolist() == [0, 255, 2]
    with pytest.raises(ValueError, match="unknown dataset 'kitti'"):
        build_dataset("kitti", tmp_path)
    with pytest.raises(ValueError, match=r"seen classes \['tree'\] are not among"):
        folder_dataset(tmp_path, seen_classes=["tree"])


def test_wrong_root_and_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; expected layout: VOC2012/JPEGImages"):
        voc_dataset(tmp_path / "nope")
    (tmp_path / "VOC2012" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="label folder .*SegmentationClass"):
        voc_dataset(tmp_path)
    _voc_tree(tmp_path / "v", "VOC2012", "SegmentationClass", "Segmentation", [1])
    (tmp_path / "v" / "VOC2012" / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="listed files are missing.*b.jpg"):
        voc_dataset(tmp_path / "v")
    with pytest.raises(FileNotFoundError, match="images/<split>2017"):
        coco_stuff_dataset(tmp_path)
    (tmp_path / "f" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="class-names file"):
        folder_dataset(tmp_path / "f")
    (tmp_path / "f" / "classes.txt").write_text("a\na\n")
    with pytest.raises(ValueError, match="distinct class names"):
        folder_dataset(tmp_path / "f")


def test_random_resize_crop_keeps_image_and_label_aligned():
    image = torch.zeros(3, 40, 60)
    image[:, :, 30:] = 1.0
    label = torch.zeros(40, 60, dtype=torch.long)
    label[:, 30:] = 1
    label[:5] = 255
    aug = RandomResizeCrop(32, (0.5, 2.0), flip=True)
    for seed in range(8):
        img, lab = aug(image, label, torch.Generator().manual_seed(seed))
        assert img.shape == (3, 32, 32) and lab.shape == (32, 32)
        assert set(lab.unique().tolist()) <= {0, 1, 255}
        for k, side in ((0, lambda v: v < 0.5), (1, lambda v: v > 0.5)):
            if (lab == k).any():
                assert side(img[0][lab == k].mean().item())
    a = aug(image, label, torch.Generator().manual_seed(3))
    b = aug(image, label, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_to_tensors_checks_input():
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        to_tensors({"image": np.zeros((4, 4), np.uint8), "label": np.zeros((4, 4))})
    with pytest.raises(ValueError, match="does not match image size"):
        to_tensors({"image": np.zeros((4, 4, 3), np.uint8), "label": np.zeros((3, 4))})


def test_resumable_sampler_resumes_mid_epoch():
    def batches(start):
        sampler = DistributedSampler(range(10), num_replicas=1, rank=0, shuffle=True, seed=4, drop_last=True)
        return list(ResumableBatchSampler(sampler, 3, start, 9, seed=4))

    full = batches(0)
    assert len(full) == 9 and all(len(b) == 3 for b in full)  # 3 micro-batches per epoch, last sample dropped
    assert batches(4) == full[4:]
    assert [i for b in full[:3] for i, _ in b] != [i for b in full[3:6] for i, _ in b]  # reshuffled each epoch
    assert len({s for b in full for _, s in b}) == 27  # every sample gets its own augmentation seed


def test_a_named_split_must_exist(tmp_path):
    """A folder without split subfolders never serves a named split from root/images (two 'splits' would be
    the same images); the default is the flat layout, or train/ for training."""
    from alignzeg.train.datasets.loaders import default_split

    (tmp_path / "classes.txt").write_text("sky\nroad\n")
    _write(tmp_path / "images" / "x.png", _rgb(4, 3))
    _write(tmp_path / "labels" / "x.png", np.zeros((4, 3), np.uint8), "L")
    for split in ("val", "test"):
        with pytest.raises(FileNotFoundError, match=f"split '{split}' does not exist: no folder .*flat layout "
                                                    r"images/ without splits.*expected layout: \[<split>/\]images"):
            build_dataset("folder", tmp_path, split=split, train=False)
    assert len(build_dataset("folder", tmp_path, train=False)) == 1  # no split named: the flat layout
    split = tmp_path / "s"
    (split / "train" / "images").mkdir(parents=True)
    (split / "test" / "images").mkdir(parents=True)
    (split / "classes.txt").write_text("sky\n")
    assert default_split("folder", split, train=True) == "train"
    assert default_split("voc", split, train=False) == "val"
    with pytest.raises(FileNotFoundError, match="name a split \\(its splits are test, train\\)"):
        default_split("folder", split, train=False)
    with pytest.raises(FileNotFoundError, match="split 'val' does not exist.*its splits are test, train"):
        folder_dataset(split, split="val")


def test_folder_labels_are_all_checked_before_any_step_with_every_problem_in_one_message(tmp_path):
    """A value >= K (a 1-based labelling) was silently read as ignore; wrong sizes and modes were tracebacks
    in the middle of a run."""
    (tmp_path / "classes.txt").write_text("sky\nroad\ncar\n")
    for stem in ("a", "b", "c", "d"):
        _write(tmp_path / "images" / f"{stem}.png", _rgb(4, 3))
    _write(tmp_path / "labels" / "a.png", np.array([[0, 2, 255]] * 4, dtype=np.uint8), "L")  # fine
    _write(tmp_path / "labels" / "b.png", np.array([[1, 3, 7]] * 4, dtype=np.uint8), "L")  # 1-based
    _write(tmp_path / "labels" / "c.png", np.zeros((5, 3), np.uint8), "L")  # wrong size
    _write(tmp_path / "labels" / "d.png", _rgb(4, 3))  # RGB, not class ids
    labels = tmp_path / "labels"
    with pytest.raises(ValueError) as info:
        build_dataset("folder", tmp_path)
    assert str(info.value) == (
        "3 of 4 label files are unusable (values must be class indices 0..2, as classes.txt has 3 classes, "
        f"or 255 = ignore): {labels / 'b.png'}: values 3, 7 (no such class); "
        f"{labels / 'c.png'}: size 3x5, its image c.png is 3x4; "
        f"{labels / 'd.png'}: mode RGB, expected a single-channel image (P, L, I, I;16)")
    for stem in ("b", "c", "d"):
        (tmp_path / "labels" / f"{stem}.png").unlink()
        (tmp_path / "images" / f"{stem}.png").unlink()
    assert folder_dataset(tmp_path)[0]["label"][0].tolist() == [0, 2, 255]
