"""benchmarks/indicator_information.py: its statistics by hand (the model-reading part runs in the benchmark)."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "indicator_information.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(_PATH.parent))
    try:
        yield importlib.import_module("indicator_information")
    finally:
        sys.path.remove(str(_PATH.parent))


def _row(embedding, cls=0, margin=0.0):
    return {"embedding": list(embedding), "cls": cls, "margin": margin, "profile": [0.0] * 6,
            "disagreement": [0.0] * 5, "mask": [0.0, 0.0]}


def test_novelty_is_the_distance_to_the_seen_class_means(bench):
    rng = np.random.default_rng(0)
    train = [_row([1, 0, 0] + rng.normal(0, 0.05, 3), 0) for _ in range(20)]
    train += [_row([0, 1, 0] + rng.normal(0, 0.05, 3), 1) for _ in range(20)]
    stats = bench.FeatureStatistics(train)
    near, far = _row([1.0, 0.0, 0.0]), _row([0.0, 0.0, 1.0])
    novelty = stats.novelty([near, far])
    mean0 = np.mean([r["embedding"] for r in train[:20]], 0)
    assert novelty[0, 0] == pytest.approx(1 - mean0[0] / np.linalg.norm(mean0), abs=1e-9)  # cos to class 0's mean
    assert novelty[1, 0] > 0.9 and novelty[1, 1] > novelty[0, 1] + 5  # far from both means, by cosine and Mahalanobis
    columns = bench.features([near, far], ("mask", "novelty"), stats)
    assert columns.shape == (2, 1 + 2 + 2) and np.array_equal(columns[:, 3:], novelty)


def test_logistic_fit_and_the_paired_bootstrap(bench):
    from alignzeg.train.evaluation.diagnostics import roc_auc

    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (200, 2))
    y = x[:, 1] > 0  # the second column decides; the first is noise
    model = bench.fit_logistic(x, y, l2=1e-3)
    assert roc_auc(model(x), y) == 1.0
    images = np.repeat(np.arange(40), 5)
    assert bench.paired_bootstrap(x[:, 1], x[:, 1], y, images, resamples=50) == [0.0, 0.0]
    low, high = bench.paired_bootstrap(x[:, 1], x[:, 0], y, images, resamples=200)
    assert 0 < low <= high  # the deciding column beats noise on every resample's interval


def test_the_mlp_finds_what_a_linear_model_cannot(bench):
    from alignzeg.train.evaluation.diagnostics import roc_auc

    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (400, 2))
    y = (x[:, 0] > 0) != (x[:, 1] > 0)  # XOR of the signs: no linear score separates it
    test = rng.normal(0, 1, (400, 2))
    y_test = (test[:, 0] > 0) != (test[:, 1] > 0)
    assert abs(roc_auc(bench.fit_logistic(x, y, l2=1e-3)(test), y_test) - 0.5) < 0.1
    mlp = bench.fit_mlp(x, y, members=2, epochs=300)
    assert roc_auc(mlp(test), y_test) > 0.9
    assert np.array_equal(mlp(test), bench.fit_mlp(x, y, members=2, epochs=300)(test))  # seeded
