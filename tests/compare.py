"""Comparing two segmentations computed along different code paths (batched vs single, threads, fused vs
reference): probabilities within a stated float tolerance, labels equal wherever the winner is clear.

Two different computations of one value agree to float tolerance, not bit for bit (BLAS kernels, thread
counts and batch shapes change the summation order), so an argmax may flip where two classes tie to
within that tolerance. ``assert_same_segmentation`` allows a flip only there.
"""

from __future__ import annotations

import numpy as np

ATOL = 1e-5
"""Absolute tolerance on probabilities for two code paths of one segmentation (float32 throughout)."""


def assert_same_labels(labels_a: np.ndarray, labels_b: np.ndarray, result, atol: float = ATOL) -> None:
    """``labels_a == labels_b`` except where ``result``'s probabilities of the two labels differ by <= ``atol``."""
    assert labels_a.shape == labels_b.shape
    differ = labels_a != labels_b
    if not differ.any():
        return
    ys, xs = np.nonzero(differ)
    maps = {}
    for label in set(labels_a[differ].tolist()) | set(labels_b[differ].tolist()):
        assert label >= 0, "a pixel is unlabelled in one result only"
        maps[label] = result.probability_map(result.class_names[label])
    gaps = [abs(maps[a][y, x] - maps[b][y, x]) for a, b, y, x in zip(labels_a[differ], labels_b[differ], ys, xs)]
    assert max(gaps) <= atol, f"{differ.sum()} labels differ, with a probability gap up to {max(gaps):g} > {atol}"


def assert_same_segmentation(a, b, atol: float = ATOL) -> None:
    """Two ``SegmentationResult``s of one image and vocabulary from different code paths agree."""
    assert a.class_names == b.class_names
    np.testing.assert_array_equal(a.seen, b.seen)
    np.testing.assert_allclose(a.class_probs, b.class_probs, rtol=0, atol=atol)
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=atol)
    assert_same_labels(a.label_map, b.label_map, a, atol)


def assert_same_pixels(confusion_a: np.ndarray, confusion_b: np.ndarray, share: float = 1e-3) -> None:
    """Two (K, K + 1) confusion matrices of the same pixels that differ in at most ``share`` of them (a pixel that
    moves changes two cells): for two code paths that batch crops differently, where float rounding may flip a
    pixel whose two best classes tie."""
    total = confusion_a.sum()
    assert total == confusion_b.sum() > 0
    moved = np.abs(confusion_a - confusion_b).sum() / 2
    assert moved <= share * total, f"{moved:g} of {total} pixels labelled otherwise (more than {share:g})"
