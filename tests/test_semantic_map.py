"""Semantic-map assembly and the chunked upsample, against hand-computed and straightforward references."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alignzeg.modeling.semantic_map import semantic_probabilities, upsample_labels as torch_upsample_labels
from alignzeg.pipeline.labels import linear_taps, upsample_labels


def test_semantic_probabilities_hand_computed():
    # N=2 proposals, C=1 class + background, 1x2 pixels.
    class_logits = torch.log(torch.tensor([[[0.75, 0.25], [0.5, 0.5]]]))  # softmax gives these probabilities
    mask_logits = torch.tensor([[[[0.0, 100.0]], [[-100.0, 0.0]]]])  # sigmoid: [[.5, 1], [0, .5]]
    probs = semantic_probabilities(class_logits, mask_logits, torch.zeros(1, 2), torch.tensor([True]))
    # pixel 0: class .75*.5 = .375, bg .25*.5 = .125 -> .75 / .25
    # pixel 1: class .75*1 + .5*.5 = 1.0, bg .25*1 + .5*.5 = .5 -> 2/3, 1/3
    expected = torch.tensor([[[[0.75, 2 / 3]], [[0.25, 1 / 3]]]])
    assert torch.allclose(probs, expected, atol=1e-6)


def test_semantic_probabilities_applies_pbc_only_when_asked():
    class_logits = torch.log(torch.tensor([[[0.6, 0.3, 0.1]]]))  # seen, unseen, bg
    masks = torch.full((1, 1, 1, 1), 100.0)
    unseen = torch.full((1, 1), 10.0)  # flagged
    seen = torch.tensor([True, False])
    on = semantic_probabilities(class_logits, masks, unseen, seen, bias_correction=True)
    off = semantic_probabilities(class_logits, masks, unseen, seen, bias_correction=False)
    assert torch.allclose(off.flatten(), torch.tensor([0.6, 0.3, 0.1]), atol=1e-6)
    assert torch.allclose(on.flatten(), torch.tensor([0.0, 0.75, 0.25]), atol=1e-6)


def test_linear_taps_match_interpolate():
    x = torch.randn(7, 3)
    for out in (1, 5, 7, 16, 23):
        ref = F.interpolate(x.t()[None], size=out, mode="linear", align_corners=False)[0].t()
        i0, i1, frac = linear_taps(7, out)
        got = x.numpy()[i0] + frac[:, None] * (x.numpy()[i1] - x.numpy()[i0])
        np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=1e-5)


def test_chunked_upsample_equals_full_resolution_argmax():
    torch.manual_seed(0)
    probs = torch.rand(6, 9, 13).softmax(0)
    size = (75, 101)
    full = torch.nn.functional.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]
    labels, conf = upsample_labels(probs.numpy(), size, max_elements=6 * 101 * 4)  # forces many row bands
    best, index = full[:-1].max(0)
    top2 = full[:-1].topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-5).numpy()  # another computation: an argmax may flip only at a near tie
    assert clear.mean() > 0.99
    assert np.array_equal(labels[clear], index.numpy()[clear])
    np.testing.assert_allclose(conf, best.numpy(), rtol=0, atol=1e-5)


def test_unlabelled_threshold():
    probs = torch.tensor([[[0.9, 0.3]], [[0.1, 0.7]]])  # class 0 then background; 1x2
    labels, conf = upsample_labels(probs.numpy(), (1, 2), unlabelled_threshold=0.5)
    assert labels.tolist() == [[0, -1]]
    np.testing.assert_allclose(conf, [[0.9, 0.3]], rtol=0, atol=1e-7)


@pytest.mark.parametrize("threshold", [None, 0.4])
def test_torch_upsample_labels_equals_the_numpy_one(threshold):
    """The PyTorch back-end's upsample (``modeling.semantic_map``) against the pipeline's numpy one: the same
    labels wherever the best two classes differ by more than 1e-5, confidence within 1e-5, in many row bands."""
    gen = torch.Generator().manual_seed(4)
    probs = (torch.rand(8, 11, 17, generator=gen) * 3).softmax(0)
    size = (83, 129)
    want, want_conf = upsample_labels(probs.numpy(), size, threshold)
    got, conf = torch_upsample_labels(probs, size, threshold, max_elements=7 * 129 * 3)
    assert got.dtype == torch.int32 and conf.dtype == torch.float32 and tuple(got.shape) == size
    np.testing.assert_allclose(conf.numpy(), want_conf, rtol=0, atol=1e-5)
    full = torch.nn.functional.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0, :-1]
    top2 = full.topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-5).numpy()
    assert clear.mean() > 0.99 and len(np.unique(want)) > 3
    np.testing.assert_array_equal(got.numpy()[clear], want[clear])
    if threshold is not None:
        assert (want == -1).any() and np.array_equal(got.numpy() == -1, want == -1)


def test_torch_candidate_classes_equal_the_numpy_ones_and_a_max_pool_reference():
    """The classes the torch upsample keeps: the pipeline's numpy rule, and a 2x2 max-pool formulation of it."""
    from alignzeg.modeling.semantic_map import _candidate_classes
    from alignzeg.pipeline.labels import candidate_classes

    gen = torch.Generator().manual_seed(5)
    for shape in ((48, 16, 16), (20, 13, 29), (3, 1, 1)):
        probs = (torch.rand(shape, generator=gen) * 6).softmax(0)
        padded = F.pad(probs[None], (0, 1, 0, 1), mode="replicate")
        cell_max = F.max_pool2d(padded, 2, stride=1)[0]
        floor = (-F.max_pool2d(-padded, 2, stride=1)[0]).amax(dim=0)
        want = (cell_max >= floor - 1e-6).flatten(1).any(dim=1).nonzero().flatten()
        got = _candidate_classes(probs)
        assert torch.equal(got, want) and got.tolist() == candidate_classes(probs.numpy()).tolist()
        assert 0 < len(got) <= shape[0]
    # a class that loses in every cell is dropped: class 1 is 0.1 where class 0 is 0.6 everywhere
    probs = torch.tensor([[[0.6, 0.6]], [[0.1, 0.1]], [[0.3, 0.3]]])
    assert _candidate_classes(probs).tolist() == [0]
