"""Proposal-based Bias Correction: a masked softmax over logits, checked on hand-made tensors."""

import math

import pytest
import torch

from alignzeg import proposal_bias_correction
from alignzeg.modeling.semantic_map import semantic_probabilities


def _probs():
    # B=1, N=3 proposals, C=3 classes (seen, seen, unseen) + background column.
    return torch.tensor([[[0.5, 0.2, 0.2, 0.1],
                          [0.1, 0.6, 0.1, 0.2],
                          [0.3, 0.3, 0.3, 0.1]]])


def _logits():
    return _probs().log()  # softmax of these gives _probs() back


SEEN = torch.tensor([True, True, False])


def test_flagged_proposals_are_renormalised_over_unseen_and_background():
    logits = _logits()
    scores = torch.tensor([[0.9, 0.2, 0.51]])  # proposals 0 and 2 flagged at threshold 0.5
    out = proposal_bias_correction(logits, scores, SEEN, threshold=0.5)
    # proposal 0: unseen .2 and bg .1 renormalised -> 2/3, 1/3; proposal 2: .3, .1 -> .75, .25
    expected = torch.tensor([[[0.0, 0.0, 2 / 3, 1 / 3],
                              [0.1, 0.6, 0.1, 0.2],
                              [0.0, 0.0, 0.75, 0.25]]])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert torch.equal(logits, _logits()), "input must not be modified"


def test_two_proposal_example_flagged_evidence_keeps_its_mass():
    """The issue's case: a confidently wrong flagged proposal ('tree' called 'bush') overlaps an unflagged one.

    Vocabulary [bush (seen), tree (unseen)] + background. Proposal A (flagged) says bush .80, tree .15, bg .05;
    proposal B (not flagged) says bush .50, tree .20, bg .30; both masks cover the pixel fully.
    Masked softmax: A becomes tree .15/.20 = .75, bg .25. Pixel evidence: bush 0 + .5 = .5,
    tree .75 + .2 = .95, bg .25 + .3 = .55, total 2.0 -> tree .475 wins. (Multiplying A's seen mass by 0
    without renormalising would leave tree .15 + .2 = .35 against bush .5: the wrong label.)
    """
    logits = torch.tensor([[[0.80, 0.15, 0.05], [0.50, 0.20, 0.30]]]).log()
    seen = torch.tensor([True, False])
    scores = torch.tensor([[0.9, 0.1]])
    probs = proposal_bias_correction(logits, scores, seen, threshold=0.5)
    torch.testing.assert_close(probs, torch.tensor([[[0.0, 0.75, 0.25], [0.50, 0.20, 0.30]]]), atol=1e-6, rtol=0)
    masks = torch.full((1, 2, 1, 1), 50.0)  # sigmoid ~ 1
    pixel = semantic_probabilities(logits, masks, scores.logit(), seen, True, 0.5).flatten()
    torch.testing.assert_close(pixel, torch.tensor([0.5, 0.95, 0.55]) / 2.0, atol=1e-6, rtol=0)
    assert pixel[:2].argmax() == 1


def test_seen_score_offset_lowers_seen_logits_of_every_proposal():
    out = proposal_bias_correction(_logits(), torch.tensor([[1.0, 0.0, 0.0]]), SEEN, threshold=0.5,
                                   seen_score_offset=1.0)
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 0.0, 2 / 3, 1 / 3]), atol=1e-6, rtol=0)
    for n in (1, 2):  # unflagged: seen probabilities times e^-1, then renormalised
        p = _probs()[0, n] * torch.tensor([math.exp(-1), math.exp(-1), 1.0, 1.0])
        torch.testing.assert_close(out[0, n], p / p.sum(), atol=1e-6, rtol=0)


def test_threshold_is_strict():
    out = proposal_bias_correction(_logits(), torch.tensor([[0.5, 0.5, 0.5]]), SEEN, threshold=0.5)
    torch.testing.assert_close(out, _probs(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("seen", [[False, False, False], [True, True, True]])
def test_no_seen_or_no_unseen_class_is_a_plain_softmax(seen):
    out = proposal_bias_correction(_logits(), torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor(seen),
                                   seen_score_offset=2.0)
    torch.testing.assert_close(out, _probs(), atol=1e-6, rtol=0)


def test_background_column_is_required_and_shapes_are_named():
    with pytest.raises(ValueError, match=r"\(1, 3, 4\) and \(1, 2\)"):
        proposal_bias_correction(_logits(), torch.zeros(1, 2), SEEN)
    with pytest.raises(ValueError, match="seen_mask has 2 entries but class_logits has 4 columns"):
        proposal_bias_correction(_logits(), torch.zeros(1, 3), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="seen_mask has 4 entries but class_logits has 4 columns"):
        proposal_bias_correction(_logits(), torch.zeros(1, 3), torch.tensor([True, False, True, False]))
    with pytest.raises(ValueError, match="seen_score_offset must be finite, got inf"):
        proposal_bias_correction(_logits(), torch.zeros(1, 3), SEEN, seen_score_offset=float("inf"))
