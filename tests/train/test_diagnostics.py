"""Diagnostics (issue 12, items 5 and 6): the exact ROC AUC, the class indicator's AUC on matched proposals,
and background-prototype usage."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alignzeg.train.evaluation.diagnostics import (background_prototype_usage, indicator_auc, prototype_usage,
                                        reference_scores, roc_auc)


def test_roc_auc_by_hand_and_against_pair_counting():
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of the 4 pairs ordered right
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert roc_auc([0.5, 0.5, 0.9], [0, 1, 1]) == 0.75  # one tie counts 1/2: (0.5 + 1) / 2
    assert roc_auc([0.2, 0.1], [True, False]) == 1.0 and roc_auc([0.2, 0.1], [False, True]) == 0.0
    assert math.isnan(roc_auc([0.2, 0.1], [1, 1]))
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 40) / 5.0  # many ties
    labels = rng.random(40) < 0.4
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0)
             for p, n in itertools.product(scores[labels], scores[~labels])]
    np.testing.assert_allclose(roc_auc(scores, labels), np.mean(pairs), rtol=1e-12)
    with pytest.raises(ValueError, match="same length, got 2 and 3"):
        roc_auc([0.1, 0.2], [0, 1, 1])


def test_soft_maximum_uses_more_than_one_prototype():
    # two proposals, two prototypes; prototype 0 is the most similar for both (cosines 1 vs 0.6, 0.8 vs 0.6)
    embeddings = torch.tensor([[1.0, 0.0], [0.8, -0.6]])
    prototypes = torch.tensor([[2.0, 0.0], [0.6, 0.8]])  # normalised inside
    wins, soft = prototype_usage(embeddings, prototypes, temperature=0.0)
    assert wins.tolist() == [1.0, 0.0] and soft.tolist() == [1.0, 0.0]
    wins, soft = prototype_usage(embeddings, prototypes, temperature=0.2)
    assert wins.tolist() == [1.0, 0.0]
    # softmax([1, 0.6] / 0.2) and softmax([0.8, 0.48 - 0.48] / 0.2) = softmax([4, 0]): prototype 1 gets a share
    first = 1 / (1 + math.exp(-2.0))
    second = 1 / (1 + math.exp(-4.0))
    expected = torch.tensor([(first + second) / 2, (2 - first - second) / 2], dtype=torch.float64)
    torch.testing.assert_close(soft, expected)
    assert (soft > 0.05).sum() == 2


def test_indicator_auc_and_background_usage_on_a_tiny_model(tiny_segmenter, shapes_factory, monkeypatch):
    ds = shapes_factory(num=3)  # classes red, green, blue seen; yellow unseen
    result = indicator_auc(tiny_segmenter, ds)
    assert result.num_unseen + result.num_seen == sum(
        len(set(np.unique(it["label"]).tolist()) - {255}) for it in ds.items)  # one proposal per present class
    assert result.num_unseen == sum(3 in np.unique(it["label"]) for it in ds.items)
    assert 0.0 <= result.mean_unmatched <= 1.0
    # a constant indicator: every score tied, so the AUC is exactly one half
    model = tiny_segmenter.model
    original = model.indicator.forward
    monkeypatch.setattr(model.indicator, "forward", lambda e: torch.full(e.shape[:-1], -5.0))
    flat = indicator_auc(tiny_segmenter, ds)
    assert flat.auc == 0.5 and flat.mean_seen == pytest.approx(1 / (1 + math.exp(5)))  # all tied
    # the reference score does not use the indicator: unchanged by it, and in [0, 1]
    assert flat.reference_auc == result.reference_auc and 0.0 <= result.reference_auc <= 1.0
    monkeypatch.setattr(model.indicator, "forward", original)
    usage = background_prototype_usage(tiny_segmenter, ds, only_background=False)
    cfg = tiny_segmenter.config
    assert usage.num_proposals == 3 * cfg.num_queries and usage.temperature == cfg.bg_temperature > 0
    assert usage.wins.sum() == pytest.approx(1.0) and usage.wins.shape == (cfg.num_bg_prototypes,)
    assert usage.responsibility.sum() == pytest.approx(1.0) and (usage.responsibility > 0).all()
    hard = background_prototype_usage(tiny_segmenter, ds, temperature=0.0, only_background=False)
    np.testing.assert_array_equal(hard.wins, usage.wins)
    np.testing.assert_array_equal(hard.responsibility, hard.wins)  # temperature 0: the one-hot winner


def test_reference_scores_by_hand():
    """1 - the largest cosine to a seen prototype; unseen prototypes play no part."""
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # the third is unseen
    seen = np.array([True, True, False])
    embeddings = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]])
    scores = reference_scores(embeddings, prototypes, seen)
    torch.testing.assert_close(scores, torch.tensor([0.0, 1 - 0.8, 1.0]))
    with pytest.raises(ValueError, match="no seen class"):
        reference_scores(embeddings, prototypes, np.zeros(3, dtype=bool))


def test_reference_auc_ties_when_every_proposal_is_the_same(tiny_segmenter, shapes_factory, monkeypatch):
    ds = shapes_factory(num=3)
    model = tiny_segmenter.model
    forward = model.forward

    def pinned(images, class_embeddings, **kw):
        out = forward(images, class_embeddings, **kw)
        out.embeddings = class_embeddings[3].expand_as(out.embeddings).clone()  # all on the unseen prototype
        return out

    monkeypatch.setattr(model, "forward", pinned)
    assert indicator_auc(tiny_segmenter, ds).reference_auc == 0.5


def test_readout_accuracy_counts_matched_proposals(tiny_segmenter, shapes_factory, monkeypatch):
    """Readout logits pinned to one class: top-1 is right exactly for the regions of that class."""
    ds = shapes_factory(num=4)  # red, green, blue seen; yellow (3) unseen
    model = tiny_segmenter.model
    forward = model.forward

    def pinned(images, class_embeddings, **kw):
        out = forward(images, class_embeddings, **kw)
        readout = torch.zeros(out.class_logits.shape[:-1] + (class_embeddings.shape[0],))
        readout[..., 3] = 10.0  # every proposal read as "yellow"
        out.readout_logits = readout
        return out

    monkeypatch.setattr(model, "forward", pinned)
    result = indicator_auc(tiny_segmenter, ds)
    assert result.num_unseen > 0 and result.num_seen > 0
    assert result.readout_acc_unseen == 1.0 and result.readout_acc_seen == 0.0
    assert result.to_dict()["readout_acc_unseen"] == 1.0
