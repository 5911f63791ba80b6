"""Behaviour kept: both back-ends reproduce the outputs recorded by ``tests/golden/make_golden.py``.

Tolerances: the torch back-end within 1e-5 on the low-resolution probabilities (float32, recorded in
float32) and 1e-3 on the scores (recorded in float16: rounding up to 4.9e-4); labels equal wherever the
two best classes differ by more than 1e-5. The ONNX back-end (another set of kernels, measured ~5e-7 on
probabilities) within 1e-4, labels equal where the margin is above 1e-4.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from compare import assert_same_labels

_spec = importlib.util.spec_from_file_location("make_golden", Path(__file__).parent / "golden" / "make_golden.py")
golden_cases = importlib.util.module_from_spec(_spec)
sys.modules["make_golden"] = golden_cases
_spec.loader.exec_module(golden_cases)

TORCH_ATOL = 1e-5
ONNX_ATOL = 1e-4
SCORE_ATOL = 1e-3  # float16 storage


@pytest.fixture(scope="module")
def golden():
    with np.load(golden_cases.GOLDEN) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def images():
    return golden_cases.inputs()


@pytest.fixture(scope="module")
def segmenters():
    return golden_cases.segmenters()


@pytest.fixture(scope="module")
def onnx_segmenters(segmenters, tmp_path_factory):
    """Each model exported once, with every name vocabulary its cases use stored in the file."""
    from alignzeg.onnx.runtime import OnnxSegmenter

    folder = tmp_path_factory.mktemp("golden_onnx")
    world_names, _ = golden_cases.world_names()
    stored = {"tiny": golden_cases.VOC_NAMES, "tiny_pbc": golden_cases.VOC_NAMES, "world": world_names}
    return {key: OnnxSegmenter.load(seg.export_onnx(folder / f"{key}.onnx", vocabulary=stored[key]), threads=2)
            for key, seg in segmenters.items()}


def _check(result, golden, name, atol):
    assert result.class_names == tuple(golden[f"{name}/class_names"].tolist())
    assert_array_equal(result.seen, golden[f"{name}/seen"])
    assert result.bias_correction == bool(golden[f"{name}/bias_correction"])
    assert_allclose(result.class_probs, golden[f"{name}/class_probs"], rtol=0, atol=atol)
    assert_allclose(result.scores, golden[f"{name}/scores"].astype(np.float32), rtol=0, atol=SCORE_ATOL)
    assert_same_labels(golden[f"{name}/label_map"].astype(np.int32), result.label_map, result, atol)


@pytest.mark.parametrize("case", golden_cases.CASES, ids=[c[0] for c in golden_cases.CASES])
def test_torch_back_end_reproduces_the_recording(case, golden, images, segmenters):
    _check(golden_cases.run_case(segmenters[case[1]], case, images), golden, case[0], TORCH_ATOL)


@pytest.mark.parametrize("case", golden_cases.CASES, ids=[c[0] for c in golden_cases.CASES])
def test_onnx_back_end_matches_the_recording(case, golden, images, onnx_segmenters):
    _check(golden_cases.run_case(onnx_segmenters[case[1]], case, images), golden, case[0], ONNX_ATOL)


def test_recording_is_not_trivial(golden):
    """The cases exercise what they claim: PBC both ways, unlabelled pixels, several labels, five windows."""
    names = [c[0] for c in golden_cases.CASES]
    assert {bool(golden[f"{n}/bias_correction"]) for n in names} == {True, False}
    assert (golden["tiny_voc_threshold/label_map"] == -1).any()
    assert (golden["tiny_wide_threshold/label_map"] == -1).any()
    assert len(np.unique(golden["world1/label_map"])) >= 3
    assert golden["tiny_wide/label_map"].shape == (100, 1500)
    assert golden["tiny_wide/class_probs"].shape[1:] == (4, 64)  # 16 x 256 resized px / mask stride 4
