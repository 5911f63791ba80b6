"""Training side of the unseen-class parts: episodic hold-out for the profile class indicator, L_vir's extra
class, and the grid search on cached outputs (against the full inference path)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alignzeg import AlignZegSegmenter
from alignzeg.worlds.attributes import AttributeWorld, world_config
from alignzeg.train.evaluation.calibration_grid import cache_outputs, evaluate_cached, search
from alignzeg.train.evaluation.evaluate import evaluate
from alignzeg.train.training.losses import extra_class_logits, holdout_profile_batch
from compare import assert_same_pixels


def test_holdout_batch_labels_the_held_out_classes_and_uses_them_as_other_names():
    # 3 matched proposals of classes 0, 1, 2 (C = 4); decoder cosines by hand, no readout.
    cos = torch.tensor([[0.9, 0.1, 0.2, 0.3], [0.2, 0.8, 0.1, 0.4], [0.1, 0.3, 0.7, 0.2]])
    classes = torch.tensor([0, 1, 2])
    gen = torch.Generator().manual_seed(0)
    inputs, labels = holdout_profile_batch(cos, None, classes, 4, (0.25, 0.25), episodes=3, generator=gen)
    assert inputs.shape == (9, 6) and labels.shape == (9,)
    gen = torch.Generator().manual_seed(0)
    for episode in range(3):
        torch.rand(1, generator=gen)
        held = torch.zeros(4, dtype=torch.bool)
        held[torch.randperm(4, generator=gen)[:1]] = True  # round(0.25 * 4) = 1 class held out
        rows = slice(3 * episode, 3 * episode + 3)
        assert labels[rows].tolist() == held[classes].float().tolist()
        best_seen = cos.masked_fill(held, -2).amax(-1)
        best_other = cos.masked_fill(~held, -2).amax(-1)
        torch.testing.assert_close(inputs[rows, 0], best_seen)
        torch.testing.assert_close(inputs[rows, 1], best_other)
        assert torch.all(inputs[rows, 3:] == 0)


def test_holdout_keeps_at_least_one_class_on_each_side():
    cos = torch.rand(4, 2)
    _, labels = holdout_profile_batch(cos, None, torch.tensor([0, 1, 0, 1]), 2, (0.9, 0.95), episodes=5)
    assert labels.view(5, 4).sum(1).tolist() == [2.0] * 5  # one of the two classes held out, never both


def test_extra_class_logits_by_hand():
    protos = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), dim=-1)
    z = F.normalize(torch.tensor([[1.0, 1.0, 1.0]]), dim=-1)
    logits = torch.zeros(1, 3)
    out = extra_class_logits(logits, z, protos, torch.tensor([[0, 1]]), torch.tensor([0, 1]), torch.tensor([0.5]),
                             torch.tensor(10.0))
    mixed = F.normalize(torch.tensor([0.5, 0.5, 0.0]), dim=0)
    assert out.shape == (1, 4)
    torch.testing.assert_close(out[0, 3], 10.0 * (z[0] @ mixed))


@pytest.fixture(scope="module")
def world_val():
    from alignzeg.worlds.export import WorldDataset

    world = AttributeWorld(world_config(0))
    return WorldDataset(world, "val", 6)


def test_cached_grid_matches_the_segment_path(world_val):
    """``evaluate_cached`` (network once, post-processing per grid point) gives the confusion matrix of
    ``evaluate`` (the full ``segment`` path) for the same settings: both run the same steps."""
    seg = AlignZegSegmenter.from_preset("tiny", seen_classes=world_val.seen_classes, seed=0,
                                        config_overrides={"indicator_trained": True})
    cached = cache_outputs(seg, world_val)
    assert cached.readout_logits.shape == (6, seg.config.num_queries, 48)
    for changes in ({"pbc_threshold": 0.5, "seen_score_offset": 1.0},
                    {"pbc_soft": True, "readout_weight_seen": 0.3, "readout_weight_unseen": 1.0}):
        config = seg.config.replace(**changes)
        original = seg.model.config
        seg.model.config = config
        try:
            full = evaluate(seg, world_val, bias_correction=True)
        finally:
            seg.model.config = original
        fast = evaluate_cached(cached, config)
        assert_same_pixels(full.confusion, fast.confusion)
    best, grid = search(cached, seg.config, pbc=(0.5, 1.0, "soft"), offsets=(0.0, 1.0),
                        readout_weights=((0.0, 0.0), (0.3, 0.8)))
    assert len(grid) == 12 and best["hIoU"] == max(g["hIoU"] for g in grid if not np.isnan(g["hIoU"]))
    assert sum(g["pbc_soft"] for g in grid) == 4
