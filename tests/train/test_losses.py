"""Matching, each loss term, negative proposal selection and feature mixing, on hand-made tensors."""

import math

import pytest
import torch

from alignzeg.modeling.model import AlignZegModel
from alignzeg.presets import get_preset_config
from alignzeg.train.training.config import TrainConfig
from alignzeg.train.training.gepc import mix_features, sample_mix_pairs, select_negative_proposals
from alignzeg.train.training.losses import (
    AlignZegCriterion, background_diversity_loss, classification_loss, dice_loss, indicator_loss,
    sigmoid_bce_loss, sigmoid_focal_loss, soft_cross_entropy,
)
from alignzeg.train.training.matching import (
    batch_class_mask_costs, build_targets, class_mask_costs, hungarian_match, pairwise_mask_costs,
)

LOG2, LOG3 = math.log(2), math.log(3)


def test_sigmoid_bce_by_hand():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    out = sigmoid_bce_loss(logits, targets, torch.tensor([1.0, 0.0]))  # second cell ignored
    assert out.tolist() == pytest.approx([LOG2, math.log1p(math.exp(-2.0))])
    assert sigmoid_bce_loss(logits[:1], targets[:1], torch.ones(2)).item() == pytest.approx(LOG2)


def test_focal_by_hand():
    out = sigmoid_focal_loss(torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1))
    assert out.item() == pytest.approx(0.25 * 0.5 ** 2 * LOG2)
    # alpha weights negatives with 1 - alpha
    neg = sigmoid_focal_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1))
    assert neg.item() == pytest.approx(0.75 * 0.5 ** 2 * LOG2)


def test_dice_by_hand():
    # p = 0.5 everywhere; 2*0.5 + 1 over (1 + 1 + 1)
    assert dice_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), torch.ones(2)).item() == pytest.approx(1 / 3)
    # a perfect confident mask has (almost) no loss; weight 0 removes a wrong cell
    big = torch.tensor([[30.0, 30.0]])
    assert dice_loss(big, torch.tensor([[1.0, 0.0]]), torch.tensor([1.0, 0.0])).item() == pytest.approx(0.0, abs=1e-6)


def test_classification_loss_by_hand():
    logits = torch.tensor([[[LOG2, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    classes = torch.tensor([[0, 2]])
    loss = classification_loss(logits, classes, torch.tensor([[1.0, 0.5]]))
    assert loss.item() == pytest.approx((LOG2 + 0.5 * LOG3) / 1.5)


def test_soft_ce_indicator_and_reg_by_hand():
    assert soft_cross_entropy(torch.zeros(1, 4), torch.tensor([[0.5, 0.5, 0, 0]])).item() == pytest.approx(math.log(4))
    assert indicator_loss(torch.zeros(3), torch.tensor([0.0, 1.0, 1.0])).item() == pytest.approx(LOG2)
    assert background_diversity_loss(torch.tensor([[1.0, 0.0], [0.0, 1.0]])).item() == pytest.approx(0.0)
    assert background_diversity_loss(torch.tensor([[1.0, 0.0], [1.0, 1.0]])).item() == pytest.approx(0.5)
    three = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    assert background_diversity_loss(three).item() == pytest.approx(1 / 3)
    assert background_diversity_loss(torch.tensor([[1.0, 0.0]])).item() == 0.0


def test_build_targets_area_pooling_by_hand():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 255], [2, 2, 255, 255], [2, 0, 255, 255]]])
    (t,) = build_targets(labels, (2, 2))
    assert t.classes.tolist() == [0, 1, 2]
    assert t.weight.tolist() == [1.0, 0.75, 1.0, 0.0]
    assert t.masks.tolist() == [[1.0, 0.0, 0.25, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.75, 0.0]]
    (empty,) = build_targets(torch.full((1, 4, 4), 255), (2, 2))
    assert empty.classes.numel() == 0 and empty.masks.shape == (0, 4)


def test_pairwise_costs_equal_the_losses():
    gen = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(5, 12, generator=gen), torch.rand(3, 12, generator=gen)
    weight = torch.rand(12, generator=gen)
    bce, dice = pairwise_mask_costs(logits, targets, weight)
    for g in range(3):
        t = targets[g].expand(5, -1)
        torch.testing.assert_close(bce[:, g], sigmoid_bce_loss(logits, t, weight))
        torch.testing.assert_close(dice[:, g], dice_loss(logits, t, weight))


def test_batched_targets_and_costs_equal_the_per_image_ones():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (3, 16, 16), generator=gen)
    labels[0][labels[0] == 2] = 255  # images hold different class sets
    labels[1, :, :8] = 255
    labels[2] = 255  # no valid pixel at all
    batch = build_targets(labels, (4, 4))
    class_logits, mask_logits = torch.randn(3, 5, 5, generator=gen), torch.randn(3, 5, 16, generator=gen)
    for kind in ("prob", "logprob"):
        costs = batch_class_mask_costs(class_logits, mask_logits, batch, 2.0, 5.0, 5.0, kind)
        for b in range(3):
            (alone,) = build_targets(labels[b:b + 1], (4, 4))
            assert torch.equal(batch[b].classes, alone.classes)  # integer labels: exact
            # masks and weights are 0/1 and counts; costs come from batched vs per-image matmuls, which may
            # differ in the last bits between BLAS kernels and thread counts
            torch.testing.assert_close(batch[b].masks, alone.masks, rtol=0, atol=1e-6)
            torch.testing.assert_close(batch[b].weight, alone.weight, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(costs[b], class_mask_costs(class_logits[b], mask_logits[b], alone, 2.0, 5.0,
                                                                  5.0, kind), rtol=1e-5, atol=1e-5)
    assert batch[2].classes.numel() == 0 and costs[2].shape == (5, 0)


def test_hungarian_match_by_hand():
    cost = torch.tensor([[5.0, 1.0], [1.0, 5.0], [3.0, 3.0]])
    rows, cols = hungarian_match(cost)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    with pytest.raises(ValueError, match="NaN or infinite"):
        hungarian_match(torch.tensor([[float("nan")]]))


def test_class_mask_costs_prefer_the_right_proposal():
    labels = torch.tensor([[[0, 0], [1, 1]]])
    (t,) = build_targets(labels, (2, 2))
    class_logits = torch.tensor([[0.0, 9.0, 0.0], [9.0, 0.0, 0.0]])  # proposal 0 says class 1
    mask_logits = torch.tensor([[-9.0, -9.0, 9.0, 9.0], [9.0, 9.0, -9.0, -9.0]])
    rows, cols = hungarian_match(class_mask_costs(class_logits, mask_logits, t))
    assert cols[rows == 0].item() == 1 and cols[rows == 1].item() == 0


COST = torch.tensor([  # columns: the loss of each of 6 proposals for seen class A and B
    [0.1, 4.0],
    [5.0, 0.3],
    [4.0, 5.0],
    [3.0, 2.0],
    [0.2, 6.0],
    [6.0, 1.0],
])


def test_negative_selection_by_hand():
    none = torch.zeros(6, dtype=torch.bool)
    # top-3 by loss: A -> {5, 1, 2}, B -> {4, 2, 0}; only proposal 2 is in both
    assert select_negative_proposals(COST, none, k=3).nonzero().flatten().tolist() == [2]
    # top-4: A -> {5, 1, 2, 3}, B -> {4, 2, 0, 3}
    assert select_negative_proposals(COST, none, k=4).nonzero().flatten().tolist() == [2, 3]
    matched = none.clone()
    matched[2] = True
    assert not select_negative_proposals(COST, matched, k=3).any()
    # k larger than N: every unmatched proposal is in every top-K
    assert select_negative_proposals(COST, matched, k=10).tolist() == [True, True, False, True, True, True]
    assert not select_negative_proposals(torch.zeros(6, 0), none, k=5).any()
    with pytest.raises(ValueError, match="positive integer"):
        select_negative_proposals(COST, none, k=0)


def test_mix_features_by_hand():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z, target = mix_features(emb, torch.tensor([0, 2]), torch.tensor([[0, 1]]), torch.tensor([0.75]), 4)
    norm = math.hypot(0.75, 0.25)
    assert z[0].tolist() == pytest.approx([0.75 / norm, 0.25 / norm])
    assert target[0].tolist() == pytest.approx([0.75, 0.0, 0.25, 0.0])


def test_mix_pairs_have_different_classes():
    classes = torch.tensor([1, 1, 2])
    pairs = sample_mix_pairs(classes, 50, torch.Generator().manual_seed(0))
    assert pairs.shape == (50, 2)
    assert {tuple(p) for p in pairs.tolist()} <= {(0, 2), (1, 2)}
    assert sample_mix_pairs(torch.tensor([3, 3]), 5).shape == (0, 2)


@pytest.fixture(scope="module")
def model_out():
    torch.manual_seed(0)
    model = AlignZegModel(get_preset_config("tiny")).train()
    images = torch.rand(2, 3, 64, 64)
    classes = torch.nn.functional.normalize(torch.randn(3, 64), dim=-1)
    labels = torch.full((2, 64, 64), 255)
    labels[0, :32] = 0
    labels[0, 32:, :32] = 1
    labels[1, :, 20:] = 2
    labels[1, :, :20] = 1
    return model, model(images, classes), labels, classes


def _terms(model_out, **changes):
    """The criterion's terms with every part on (GEPC's training parts and the class indicator are off by
    default) and ``changes``."""
    model, out, labels, classes = model_out
    cfg = TrainConfig(**{"synthetic_features": True, "negative_proposals": True, "class_indicator": True, **changes})
    torch.manual_seed(1)
    total, terms = AlignZegCriterion(cfg)(model, out, labels, classes)
    return cfg, total, terms


def test_total_is_the_weighted_sum(model_out):
    cfg, total, terms = _terms(model_out, lambda_ce=1.5, lambda_mask=3.0, lambda_vir=0.7, lambda_reg=2.0, lambda_bc=0.4)
    assert set(terms) == {"ce", "mask", "vir", "bc", "reg"}
    expected = (0.4 * terms["bc"] + 1.5 * terms["ce"] + 3.0 * terms["mask"] + 0.7 * terms["vir"]
                + 2.0 * terms["reg"])
    assert total.item() == pytest.approx(expected, rel=1e-5)
    total.backward()
    assert model_out[0].classifier.bg_prototypes.grad is not None


@pytest.mark.parametrize("switch, term", [("synthetic_features", "vir"), ("class_indicator", "bc"), ("reg", "reg")])
def test_each_switch_removes_its_term(model_out, switch, term):
    _, _, terms = _terms(model_out, **{switch: False})
    assert term not in terms


def test_lambda_zero_removes_terms(model_out):
    _, total, terms = _terms(model_out, lambda_ce=0.0, lambda_mask=0.0, lambda_vir=0.0, lambda_reg=0.0)
    assert set(terms) == {"bc"}
    assert total.item() == pytest.approx(terms["bc"])


def test_deep_supervision_adds_the_aux_layer(model_out):
    model, out, labels, _ = model_out
    _, _, with_aux = _terms(model_out, negative_proposals=False)
    _, _, without = _terms(model_out, negative_proposals=False, deep_supervision=False)
    crit = AlignZegCriterion(TrainConfig())
    targets = build_targets(labels, tuple(out.mask_logits.shape[-2:]))
    (aux_masks, aux_logits), = out.aux
    aux_ce, aux_mask = crit._layer_losses(aux_logits, aux_masks, targets, crit.match(aux_logits, aux_masks, targets), None)
    assert with_aux["ce"] == pytest.approx(without["ce"] + aux_ce.item(), rel=1e-5)
    assert with_aux["mask"] == pytest.approx(without["mask"] + aux_mask.item(), rel=1e-5)


def test_class_targets_weights(model_out):
    _, out, labels, _ = model_out
    crit = AlignZegCriterion(TrainConfig(eos_coef=0.1, negative_weight=0.7))
    targets = build_targets(labels, tuple(out.mask_logits.shape[-2:]))
    match = crit.match(out.class_logits, out.mask_logits, targets)
    negatives = crit.negatives(match, out.class_logits.shape[1])
    classes, weights = crit._class_targets(out.class_logits, targets, match, negatives)
    for b, (src, tgt) in enumerate(match.indices):
        assert classes[b, src].tolist() == targets[b].classes[tgt].tolist()
        assert (weights[b, src] == 1.0).all()
        rest = torch.ones(classes.shape[1], dtype=torch.bool)
        rest[src] = False
        assert (classes[b, rest] == 3).all()  # background column of C = 3 classes
        expected = torch.where(negatives[b, rest], torch.tensor(0.7), torch.tensor(0.1))
        torch.testing.assert_close(weights[b, rest], expected)


def test_mask_loss_is_the_mean_over_every_matched_pair(model_out):
    _, out, labels, _ = model_out
    crit = AlignZegCriterion(TrainConfig())
    targets = build_targets(labels, tuple(out.mask_logits.shape[-2:]))
    match = crit.match(out.class_logits, out.mask_logits, targets)
    per_pair = []
    for b, (src, tgt) in enumerate(match.indices):
        logits, t, w = out.mask_logits[b].flatten(1)[src], targets[b].masks[tgt], targets[b].weight
        per_pair.append(sigmoid_bce_loss(logits, t, w) + dice_loss(logits, t, w))
    torch.testing.assert_close(crit._mask_loss(out.mask_logits, targets, match), torch.cat(per_pair).mean())
