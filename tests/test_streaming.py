"""``segment_iter``: same results as ``segment``, in order, lazily, with per-image errors on request."""

import itertools

import numpy as np
import pytest
from PIL import Image

from alignzeg.streaming import ImageError, decode_ahead

CLASSES = ["person", "chair", "wall"]


@pytest.fixture(scope="module")
def inputs(voc, tmp_path_factory):
    """A path, a PIL image, uint8 and float arrays of different sizes."""
    folder = tmp_path_factory.mktemp("stream")
    path = folder / "voc.jpg"
    Image.fromarray(voc["rgb"]).save(path)
    rng = np.random.default_rng(1)
    return [str(path), Image.fromarray(voc["rgb"][:120, :200]),
            rng.integers(0, 256, (70, 90, 3), dtype=np.uint8), rng.random((50, 40, 3)).astype(np.float32)]


def test_segment_iter_equals_segment_image_by_image(tiny_segmenter, inputs):
    streamed = list(tiny_segmenter.segment_iter(inputs, CLASSES, prefetch=2, workers=2))
    assert len(streamed) == len(inputs)
    for image, got in zip(inputs, streamed):
        want = tiny_segmenter.segment(image, CLASSES)
        np.testing.assert_array_equal(got.label_map, want.label_map)  # same code path on the same input
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(got.image, want.image)
        assert got.class_names == tuple(CLASSES)


def test_options_reach_the_segmenter(tiny_segmenter, inputs):
    got = next(tiny_segmenter.segment_iter(inputs[2:], CLASSES, unlabelled_threshold=1.0, keep_image=False))
    assert got.image is None
    assert (got.label_map == -1).all()  # no class reaches probability 1.0


def test_inputs_are_read_lazily_with_a_bounded_window(tiny_segmenter, inputs):
    pulled = []

    def endless():
        for i in itertools.count():
            pulled.append(i)
            yield inputs[2]

    stream = tiny_segmenter.segment_iter(endless(), CLASSES, prefetch=3)
    for _ in range(5):
        next(stream)
    # 5 consumed + at most 3 decoded ahead: the generator is never drained.
    assert len(pulled) <= 5 + 3
    stream.close()


def test_decode_ahead_keeps_input_order_and_returns_errors(tmp_path):
    arrays = [np.full((4 + i, 5, 3), i * 10, dtype=np.uint8) for i in range(7)]
    items = arrays[:3] + [str(tmp_path / "missing.png")] + arrays[3:]
    got = list(decode_ahead(items, prefetch=2, workers=3))
    assert [index for index, _, _ in got] == list(range(8))
    assert isinstance(got[3][2], FileNotFoundError) and "missing.png" in str(got[3][2])
    heights = [decoded.size[0] for _, _, decoded in got if not isinstance(decoded, BaseException)]
    assert heights == [4, 5, 6, 7, 8, 9, 10]


def test_on_error_return_yields_an_image_error_in_place(tiny_segmenter, inputs, tmp_path, caplog):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with caplog.at_level("INFO"):
        out = list(tiny_segmenter.segment_iter([inputs[2], str(bad), inputs[3]], CLASSES, on_error="return"))
    assert "bad.jpg" not in caplog.text  # returned to the caller, not logged as "skipped" as well
    assert [type(o).__name__ for o in out] == ["SegmentationResult", "ImageError", "SegmentationResult"]
    error = out[1]
    assert isinstance(error, ImageError) and error.index == 1 and error.source == str(bad)
    assert error.message.startswith("ValueError:") and "bad.jpg" in error.message
    assert out[2].size == (50, 40)


def test_on_error_raise_is_the_default(tiny_segmenter, inputs, tmp_path):
    stream = tiny_segmenter.segment_iter([inputs[2], str(tmp_path / "nope.jpg")], CLASSES)
    assert next(stream).size == (70, 90)
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        next(stream)


@pytest.mark.parametrize("kwargs, match", [
    (dict(on_error="skip"), "on_error must be one of .* got 'skip'"),
    (dict(prefetch=0), "prefetch must be a positive integer, got 0"),
    (dict(workers=1.5), "workers must be a positive integer, got 1.5"),
])
def test_bad_options_are_refused_at_the_call(tiny_segmenter, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_segmenter.segment_iter([], CLASSES, **kwargs)


def test_unknown_options_are_refused_at_the_call(tiny_segmenter):
    with pytest.raises(TypeError, match=r"unknown options \['treshold'\]"):
        tiny_segmenter.segment_iter([], CLASSES, treshold=0.5)


def test_a_batch_tensor_item_is_refused(tiny_segmenter):
    import torch

    with pytest.raises(ValueError, match="one image per item, got a batch of 2"):
        list(tiny_segmenter.segment_iter([torch.rand(2, 3, 8, 8)], CLASSES))
