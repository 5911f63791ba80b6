"""Tests that need a CUDA GPU (marker ``cuda``; skipped without one). ``benchmarks/gpu_check.py`` runs them.

    pytest -m cuda            # on a GPU machine
"""

import math

import numpy as np
import pytest
import torch

from alignzeg import AlignZegSegmenter
from alignzeg.demo import CLIP_SOURCE, DEMO_WORLD, load_demo_model
from alignzeg.worlds.attributes import AttributeWorld, world_config
from voc_split import VOC_SEEN

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_float32_on_cuda_equals_cpu(voc):
    """Autocast off: the GPU computes what the CPU computes (float32, up to kernel rounding)."""
    cpu = AlignZegSegmenter.from_preset("tiny", seen_classes=VOC_SEEN, seed=0, device="cpu")
    gpu = AlignZegSegmenter.from_preset("tiny", seen_classes=VOC_SEEN, seed=0, device="cuda", autocast=False)
    names = ["person", "chair", "wall", "sheep"]
    a, b = cpu.segment(voc["rgb"], names), gpu.segment(voc["rgb"], names)
    np.testing.assert_allclose(b.class_probs, a.class_probs, rtol=0, atol=1e-3)


def test_bf16_autocast_labels_agree_with_float32_on_the_world_model():
    """The shipped world model under CUDA autocast labels the world's test images like float32 on the CPU."""
    world = AttributeWorld(world_config(DEMO_WORLD))
    names = list(world.class_names)
    cpu, gpu = load_demo_model("cpu"), load_demo_model("cuda")
    assert gpu.autocast and gpu.device.type == "cuda"
    agreement = [(cpu.segment(image, names).label_map == gpu.segment(image, names).label_map).mean()
                 for image, _ in (world.sample("test", i) for i in range(10))]
    assert np.mean(agreement) >= 0.97, agreement


def test_amp_training_steps_on_cuda():
    """A few AMP steps of the world recipe on the GPU: finite losses, the trainable weights move."""
    from alignzeg.train import Trainer
    from alignzeg.train.training.world_recipe import world_train_config
    from alignzeg.worlds.export import WorldDataset

    world = AttributeWorld(world_config(DEMO_WORLD))
    config = world_train_config(world, CLIP_SOURCE, iterations=3, batch_size=4,
                                amp=True, device="cuda", progress=False)
    trainer = Trainer(config, None, WorldDataset(world, "train", 16), out_dir=None)
    before = [p.detach().clone() for p in trainer.model.trainable_parameters()]
    segmenter = trainer.train()
    assert segmenter.device.type == "cuda"
    assert all(math.isfinite(r["loss"]) for r in trainer.history) and len(trainer.history) == 3
    after = list(trainer.model.trainable_parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
