"""Property tests: whatever the image and vocabulary, segment() returns a valid result or a ValueError/TypeError."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

DTYPES = ["uint8"] * 3 + ["uint16", "float32", "float64", "float16", "int32", "bool"]
VALID = {"uint8", "uint16", "float32", "float64", "float16"}


@st.composite
def images(draw):
    """(image, expected (H, W) or None when the input is invalid)."""
    height = draw(st.one_of(st.integers(1, 96), st.sampled_from([1, 2, 3, 130, 400])))
    width = draw(st.one_of(st.integers(1, 96), st.sampled_from([1, 2, 3, 130, 400])))
    dtype = draw(st.sampled_from(DTYPES))
    channels = draw(st.sampled_from([None, 1, 3, 3, 3, 4, 2]))
    kind = draw(st.sampled_from(["numpy", "numpy", "torch", "pil"]))
    poison = draw(st.sampled_from([None] * 12 + ["nan", "inf", "over", "negative"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = (height, width) if channels is None else (height, width, channels)
    if dtype.startswith("float"):
        array = rng.random(shape).astype(dtype)
        if poison is not None:
            array.flat[rng.integers(array.size)] = {"nan": np.nan, "inf": np.inf, "over": 2.0, "negative": -0.1}[poison]
    elif dtype == "bool":
        array = rng.random(shape) > 0.5
    else:
        array = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    valid = dtype in VALID and channels != 2 and not (dtype.startswith("float") and poison is not None)
    if kind == "torch" and dtype not in ("uint16",):
        tensor = torch.from_numpy(array if array.ndim == 3 else array[:, :, None]).permute(2, 0, 1)
        valid = valid and dtype in ("uint8", "float32", "float64", "float16") and (channels or 1) in (1, 3)
        return tensor, (height, width) if valid else None
    if kind == "pil" and valid and dtype == "uint8" and channels in (None, 3, 4):
        return Image.fromarray(array), (height, width)
    return array, (height, width) if valid else None


def _key(name: str) -> str:
    import unicodedata

    return unicodedata.normalize("NFKC", name).strip().casefold()


names = st.text(st.characters(codec="utf-8"), min_size=0, max_size=24)
clean_names = st.text(st.characters(codec="utf-8", categories=["L", "N", "Zs", "So", "P"]), min_size=1,
                      max_size=24).filter(lambda n: n.strip())
vocabularies = st.one_of(
    st.lists(clean_names, min_size=1, max_size=8, unique_by=_key),  # valid: unicode, emoji, punctuation
    st.lists(clean_names, min_size=1, max_size=8, unique_by=_key),
    st.lists(st.sampled_from(["cat", "dog", "🐕", "狗", "sofa", "a" * 200, "x " * 80]), min_size=1, max_size=4,
             unique=True),
    st.lists(names, min_size=0, max_size=6),  # anything: empty, blank, duplicates
    st.lists(st.one_of(names, st.integers(), st.none()), min_size=1, max_size=3),
)


def _valid_vocabulary(vocabulary) -> bool:
    if not vocabulary or not all(isinstance(n, str) and n.strip() for n in vocabulary):
        return False
    keys = [_key(n) for n in vocabulary]
    return len(set(keys)) == len(keys)


@FUZZ
@given(case=images(), vocabulary=vocabularies, threshold=st.sampled_from([None, None, 0.0, 0.3, 1.0]))
def test_segment_never_fails_unexpectedly(tiny_segmenter, case, vocabulary, threshold):
    image, expected_size = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # over-long names warn; that is tested elsewhere
        try:
            result = tiny_segmenter.segment(image, vocabulary, unlabelled_threshold=threshold)
        except (ValueError, TypeError) as err:
            event(f"refused: {type(err).__name__}")
            assert str(err), "errors must say what was wrong"
            assert expected_size is None or not _valid_vocabulary(vocabulary), f"valid input refused: {err}"
            return
    event("segmented")
    assert expected_size is not None and _valid_vocabulary(vocabulary), "invalid input accepted"
    assert result.label_map.shape == expected_size and result.scores.shape == expected_size
    assert result.label_map.dtype == np.int32
    assert result.class_names == tuple(vocabulary)
    low = -1 if threshold is not None else 0
    assert result.label_map.min() >= low and result.label_map.max() < len(vocabulary)
    assert np.isfinite(result.scores).all() and 0 <= result.scores.min() and result.scores.max() <= 1 + 1e-6
    if threshold == 0.0:
        assert result.label_map.min() >= 0


@settings(FUZZ, max_examples=12)
@given(height=st.integers(1, 2000), width=st.integers(1, 2000))
def test_any_image_size_keeps_its_size(tiny_segmenter, height, width):
    if height * width > 200_000:
        height = max(1, 200_000 // width)
    image = np.full((height, width), 77, dtype=np.uint8)
    result = tiny_segmenter.segment(image, ["floor", "wall"], keep_image=False)
    assert result.label_map.shape == (height, width)
    assert set(np.unique(result.label_map)) <= {0, 1}


@settings(FUZZ, max_examples=10)
@given(num=st.integers(1, 40), dim_offset=st.sampled_from([0, 0, 0, -1, 1]), scale=st.floats(1e-3, 1e3))
def test_precomputed_embeddings(tiny_segmenter, num, dim_offset, scale):
    dim = tiny_segmenter.config.embed_dim + dim_offset
    embeddings = torch.randn(num, dim, generator=torch.Generator().manual_seed(num)) * scale
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    if dim_offset:
        with pytest.raises(ValueError, match=f"got \\({num}, {dim}\\)"):
            tiny_segmenter.segment(image, embeddings)
        return
    result = tiny_segmenter.segment(image, embeddings)
    assert result.label_map.shape == (20, 30)
    assert 0 <= result.label_map.min() and result.label_map.max() < num
    assert result.class_names == tuple(f"class_{i}" for i in range(num))
