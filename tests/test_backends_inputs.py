"""Inputs and options through both back-ends (PyTorch and ONNX Runtime): the same exception type and message
for every bad input, the same labels for every good one, and synonyms.

Both back-ends run the shared pipeline (``alignzeg.pipeline``), so a check written once holds in both; this
module is what says so. The ONNX file is the tiny model's export with every name used here stored in it.
Tolerance between the back-ends: 1e-4 on probabilities (as tests/test_onnx.py); within one back-end, two
spellings of one input agree to 1e-6.
"""

import re

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from alignzeg import AlignZegSegmenter
from alignzeg.onnx.runtime import OnnxSegmenter
from compare import assert_same_labels
from voc_split import VOC_SEEN

NAMES = ["cat", "dog", "sofa", "person", "kitty", "puppy", "couch"]
VOCAB = ["cat", "dog", "sofa"]
ONNX_ATOL = 1e-4


@pytest.fixture(scope="module")
def backends(tmp_path_factory, voc):
    torch_seg = AlignZegSegmenter.from_preset("tiny", seen_classes=VOC_SEEN, seed=0, device="cpu",
                                              config_overrides={"indicator_trained": True})
    path = torch_seg.export_onnx(tmp_path_factory.mktemp("inputs_onnx") / "tiny.onnx", vocabulary=NAMES)
    return {"torch": torch_seg, "onnx": OnnxSegmenter.load(path, threads=2)}


@pytest.fixture(scope="module")
def image(voc):
    return np.ascontiguousarray(voc["rgb"][100:180, 150:250])  # 80 x 100: two windows


def _error(call):
    with pytest.raises(Exception) as info:
        call()
    return info.value


def _bad_cases(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir(exist_ok=True)
    ok = np.zeros((8, 8, 3), np.uint8)
    return [
        # (id, image, vocabulary, options, exception type, message pattern)
        ("url", "https://example.com/cat.jpg", VOCAB, {}, ValueError, "is a URL; URLs are not supported"),
        ("folder", folder, VOCAB, {}, IsADirectoryError, "is a directory, not an image file"),
        ("missing", tmp_path / "nope.png", VOCAB, {}, FileNotFoundError, "image file not found"),
        ("object", object(), VOCAB, {}, TypeError, "image must be a path, PIL.Image, HWC numpy array"),
        ("bool array", np.zeros((8, 8), bool), VOCAB, {}, TypeError, "must be uint8, uint16 or float, got dtype bool"),
        ("int32 array", np.zeros((8, 8, 3), np.int32), VOCAB, {}, TypeError, "must be uint8 or uint16, got int32"),
        ("big-endian int32", np.zeros((8, 8, 3), ">i4"), VOCAB, {}, TypeError, "must be uint8 or uint16, got int32"),
        ("float range", np.full((8, 8, 3), 2.0), VOCAB, {}, ValueError, r"in \[0, 1\], got range \[2, 2\]"),
        ("CHW array", np.zeros((3, 8, 9), np.uint8), VOCAB, {}, ValueError, "it looks CHW"),
        ("bare string", ok, "cat", {}, TypeError, "got the single string 'cat'"),
        ("set", ok, {"cat", "dog"}, {}, TypeError, "it has no order"),
        ("generator", ok, (n for n in VOCAB), {}, TypeError, "must be an ordered sequence"),
        ("bytes array", ok, np.array([b"cat", b"dog"]), {}, TypeError, "must be 1-D of str, got shape .2,. dtype .S3"),
        ("2-D str array", ok, np.array([["cat", "dog"]]), {}, TypeError, r"must be 1-D of str, got shape \(1, 2\)"),
        ("empty", ok, [], {}, ValueError, "vocabulary is empty"),
        ("not a str", ok, ["cat", 3], {}, TypeError, "class name at index 1 must be a str .or a tuple of synonyms., got int: 3"),
        ("whitespace", ok, ["cat", " \t"], {}, ValueError, "class name at index 1 is empty once whitespace and invisible"),
        ("zero-width", ok, ["cat", "\u200b"], {}, ValueError, r"index 1 is empty once .*'\\u200b'"),
        ("BOM + joiner", ok, ["\ufeff\u2060 ", "cat"], {}, ValueError, "index 0 is empty once whitespace"),
        ("invisible duplicate", ok, ["cat", "ca\u200bt"], {}, ValueError, r"duplicate class name 'ca\\u200bt' at index 1"),
        ("case duplicate", ok, ["Cat", "cat"], {}, ValueError, "duplicate class name 'cat' at index 1 .same as index 0: 'Cat'"),
        ("reserved", ok, ["cat", "<unlabelled>"], {}, ValueError, "class name '<unlabelled>' at index 1 is reserved"),
        ("reserved, other case", ok, ["<Unlabelled>"], {}, ValueError, "is reserved"),
        ("synonym duplicate", ok, [("cat", "kitty"), "kitty"], {}, ValueError, "duplicate class name 'kitty' at index 1"),
        ("empty synonyms", ok, [(), "cat"], {}, ValueError, r"class at index 0 has no name: \(\)"),
        ("bad synonyms", ok, {"cat": 3}, {}, TypeError, "synonyms of class 'cat' must be a string or a list"),
        ("threshold bool", ok, VOCAB, {"unlabelled_threshold": True}, TypeError, "got bool True"),
        ("threshold str", ok, VOCAB, {"unlabelled_threshold": "0.5"}, TypeError, "got str '0.5'"),
        ("threshold range", ok, VOCAB, {"unlabelled_threshold": 1.5}, ValueError, r"must be in \[0, 1\] or None, got 1.5"),
        ("threshold nan", ok, VOCAB, {"unlabelled_threshold": float("nan")}, ValueError, "got nan"),
        ("bias str", ok, VOCAB, {"bias_correction": "yes"}, TypeError, "got str 'yes'"),
        ("keep_image int", ok, VOCAB, {"keep_image": 1}, TypeError, "keep_image must be True or False, got int 1"),
        ("seen unknown", ok, VOCAB, {"seen": ["horse"]}, ValueError, r"seen names \['horse'\] are not in the vocabulary"),
        ("seen length", ok, VOCAB, {"seen": [True]}, ValueError, "seen has 1 flags for 3 classes"),
        ("seen string", ok, VOCAB, {"seen": "cat"}, TypeError, "seen must be a list of class names"),
        ("class_names with names", ok, VOCAB, {"class_names": VOCAB}, ValueError, "class_names is only for precomputed"),
        ("embeddings shape", ok, np.ones((2, 5), np.float32), {}, ValueError, r"shape \(C, 64\) with C >= 1, got \(2, 5\)"),
        ("embeddings int", ok, np.ones((2, 64), np.int64), {}, TypeError, "floating point, got int64"),
        ("embeddings nan", ok, np.full((2, 64), np.nan, np.float32), {}, ValueError, "NaN or infinite"),
        ("embeddings zero row", ok, np.vstack([np.ones(64), np.zeros(64)]).astype(np.float32), {}, ValueError,
         r"rows \[1\] are all zeros"),
        ("embeddings names", ok, np.ones((2, 64), np.float32), {"class_names": ["a"]}, ValueError,
         "class_names has 1 names for 2 embeddings"),
        ("embeddings reserved name", ok, np.ones((1, 64), np.float32), {"class_names": ["<unlabelled>"]}, ValueError,
         "is reserved"),
    ]


def test_bad_inputs_fail_alike_in_both_back_ends(backends, tmp_path):
    """Every bad input: the same exception type and message from both back-ends, matching the expected one."""
    for name, image, vocabulary, options, kind, pattern in _bad_cases(tmp_path):
        errors = {}
        for key, seg in backends.items():  # (a generator is refused before it is read: both see the same one)
            errors[key] = _error(lambda seg=seg: seg.segment(image, vocabulary, **options))
        for key, err in errors.items():
            assert type(err) is kind, f"{name} ({key}): {type(err).__name__}: {err}"
            assert re.search(pattern, str(err)), f"{name} ({key}): {err}"
        assert str(errors["torch"]) == str(errors["onnx"]), name


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_good_spellings_give_the_same_result(backends, image, backend):
    """Other sequence types and byte orders are accepted and give the result of the plain spelling."""
    seg = backends[backend]
    plain = seg.segment(image, VOCAB)
    for vocabulary in (tuple(VOCAB), np.array(VOCAB), np.array(VOCAB, dtype=object), ["cat\u200b", "dog", "sofa"],
                       ["Cat", "DOG", " sofa "]):
        got = seg.segment(image, vocabulary)
        assert_allclose(got.class_probs, plain.class_probs, rtol=0, atol=1e-6)
        assert_array_equal(got.label_map, plain.label_map)
        assert_array_equal(got.seen, plain.seen)
    assert seg.segment(image, np.array(VOCAB)).class_names == tuple(VOCAB)
    for array in (image.astype(">u1"), (image.astype(np.uint16) * 257).astype(">u2"),
                  (image / 255.0).astype(">f8"), (image / 255.0).astype("<f4")):
        got = seg.segment(array, VOCAB)
        assert_allclose(got.class_probs, plain.class_probs, rtol=0, atol=1e-5)
        assert_same_labels(plain.label_map, got.label_map, plain, atol=1e-5)


def test_back_ends_agree_on_good_inputs(backends, image):
    for vocabulary, options in ((VOCAB, {}), (("sofa", "person"), {"seen": [True, False]}),
                                (np.array(VOCAB), {"unlabelled_threshold": 0.3, "bias_correction": False})):
        a = backends["torch"].segment(image, vocabulary, **options)
        b = backends["onnx"].segment(image, vocabulary, **options)
        assert a.class_names == b.class_names and a.bias_correction == b.bias_correction
        assert_allclose(a.class_probs, b.class_probs, rtol=0, atol=ONNX_ATOL)
        assert_same_labels(a.label_map, b.label_map, a, atol=ONNX_ATOL)


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_class_with_two_names_is_the_normalised_mean(backends, image, backend):
    seg = backends[backend]
    if backend == "torch":
        rows = seg.encode_vocabulary(["cat", "kitty", "dog", "sofa", "couch"]).cpu().numpy()
    else:
        rows = np.stack([seg._stored[n] for n in ("cat", "kitty", "dog", "sofa", "couch")])
    cat, dog, sofa = _unit(rows[0] + rows[1]), rows[2], _unit(rows[3] + rows[4])
    assert np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-5)  # unit prototypes: their mean's direction
    by_hand = seg.segment(image, np.stack([cat, dog, sofa]).astype(np.float32), class_names=VOCAB,
                          seen=[True, True, False])
    for vocabulary in ([("cat", "kitty"), "dog", ["sofa", "couch"]],
                       {"cat": ["kitty"], "dog": [], "sofa": "couch"},
                       {"cat": ("cat", "kitty"), "dog": (), "sofa": ["couch"]}):
        got = seg.segment(image, vocabulary)
        assert got.class_names == ("cat", "dog", "sofa")  # reported under the first name
        assert_array_equal(got.seen, [True, True, False])  # cat and dog are the model's seen classes
        assert_allclose(got.class_probs, by_hand.class_probs, rtol=0, atol=1e-5)
        assert_same_labels(by_hand.label_map, got.label_map, by_hand, atol=1e-5)
    with pytest.raises(ValueError, match=r"seen names \['kitty'\] are not in the vocabulary \['cat', 'dog'\]"):
        seg.segment(image, [("cat", "kitty"), "dog"], seen=["kitty"])  # seen classes go by their reported name
    single = seg.segment(image, [("cat",), "dog", "sofa"])
    assert_allclose(single.class_probs, seg.segment(image, VOCAB).class_probs, rtol=0, atol=1e-6)


def test_synonyms_not_stored_in_the_onnx_file_are_named(backends, image):
    with pytest.raises(ValueError, match=r"class names \['kitten'\] are not in the vocabulary stored"):
        backends["onnx"].segment(image, [("cat", "kitten"), "dog"])


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_untrained_indicator_warns_once_per_segmenter(backends, image, backend, tmp_path):
    source = backends["torch"]
    original = source.model.config
    untrained = AlignZegSegmenter(source.model, device="cpu")  # the same network, a new segmenter
    untrained.model.config = original.replace(indicator_trained=False)
    try:
        seg = untrained if backend == "torch" else OnnxSegmenter.load(
            untrained.export_onnx(tmp_path / "untrained.onnx", vocabulary=NAMES), threads=2)
        with pytest.warns(UserWarning, match="class indicator was never trained") as caught:
            for _ in range(3):
                assert seg.segment(image, VOCAB).bias_correction is False
            seg.segment_batch([image, image], VOCAB)
        assert len(caught) == 1
    finally:
        source.model.config = original
