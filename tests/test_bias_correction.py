"""Proposal-based Bias Correction: a pure function checked on hand-made tensors."""

import pytest
import torch

from alignzeg import proposal_bias_correction


def _probs():
    # B=1, N=3 proposals, C=3 classes (seen, seen, unseen) + background column.
    return torch.tensor([[[0.5, 0.2, 0.2, 0.1],
                          [0.1, 0.6, 0.1, 0.2],
                          [0.3, 0.3, 0.3, 0.1]]])


SEEN = torch.tensor([True, True, False])


def test_flagged_proposals_lose_seen_mass_others_unchanged():
    probs = _probs()
    scores = torch.tensor([[0.9, 0.2, 0.51]])  # proposals 0 and 2 flagged at threshold 0.5
    out = proposal_bias_correction(probs, scores, SEEN, threshold=0.5, factor=0.0)
    expected = torch.tensor([[[0.0, 0.0, 0.2, 0.1],
                              [0.1, 0.6, 0.1, 0.2],
                              [0.0, 0.0, 0.3, 0.1]]])
    assert torch.equal(out, expected)
    assert torch.equal(probs, _probs()), "input must not be modified"


def test_factor_scales_seen_columns_only():
    out = proposal_bias_correction(_probs(), torch.tensor([[1.0, 0.0, 0.0]]), SEEN, threshold=0.5, factor=0.25)
    assert torch.allclose(out[0, 0], torch.tensor([0.125, 0.05, 0.2, 0.1]))
    assert torch.equal(out[0, 1:], _probs()[0, 1:])


def test_threshold_is_strict():
    out = proposal_bias_correction(_probs(), torch.tensor([[0.5, 0.5, 0.5]]), SEEN, threshold=0.5)
    assert torch.equal(out, _probs())


def test_no_seen_class_in_vocabulary_is_identity():
    scores = torch.tensor([[1.0, 1.0, 1.0]])
    out = proposal_bias_correction(_probs(), scores, torch.tensor([False, False, False]))
    assert torch.equal(out, _probs())


def test_no_unseen_class_in_vocabulary_is_identity():
    out = proposal_bias_correction(_probs(), torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor([True, True, True]))
    assert torch.equal(out, _probs())


def test_works_without_background_column():
    probs = _probs()[..., :3]
    out = proposal_bias_correction(probs, torch.tensor([[1.0, 0.0, 0.0]]), SEEN)
    assert torch.equal(out[0, 0], torch.tensor([0.0, 0.0, 0.2]))


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(1, 3, 4\) and \(1, 2\)"):
        proposal_bias_correction(_probs(), torch.zeros(1, 2), SEEN)
    with pytest.raises(ValueError, match="seen_mask has 2 entries"):
        proposal_bias_correction(_probs(), torch.zeros(1, 3), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="factor must be in"):
        proposal_bias_correction(_probs(), torch.zeros(1, 3), SEEN, factor=2.0)
