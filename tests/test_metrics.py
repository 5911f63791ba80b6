"""alignzeg.metrics: the numpy-only metrics shared by evaluation and the demo, by hand."""

import math
import subprocess
import sys

import numpy as np
import pytest

from alignzeg.metrics import ConfusionMatrix, class_iou, harmonic_iou, nanmean


def test_harmonic_iou_and_nanmean_by_hand():
    assert harmonic_iou(0.5, 0.25) == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    assert harmonic_iou(0.0, 0.0) == 0.0
    assert math.isnan(harmonic_iou(float("nan"), 0.5)) and math.isnan(harmonic_iou(0.5, float("nan")))
    assert nanmean(np.array([0.2, np.nan, 0.4])) == pytest.approx(0.3)
    assert math.isnan(nanmean(np.array([np.nan])))


def test_confusion_over_a_stack_and_its_iou():
    cm = ConfusionMatrix(2)
    cm.update(np.array([[[0, 1]], [[1, -1]]]), np.array([[[0, 1]], [[0, 255]]]))  # two 1x2 maps
    np.testing.assert_array_equal(cm.matrix, [[1, 1, 0], [0, 1, 0]])
    np.testing.assert_allclose(class_iou(cm.matrix), [1 / 2, 1 / 2])
    with pytest.raises(ValueError, match=r"label values must be in \[0, 2\) or 255, got range \[0, 7\]"):
        cm.update(np.zeros(2), np.array([0, 7]))


def test_metrics_import_without_torch():
    code = "import sys, alignzeg.metrics; sys.exit(int('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
