"""Vocabularies: odd, large, invalid, and precomputed embeddings of the wrong shape."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

from alignzeg import AlignZegSegmenter
from alignzeg.modeling.text_encoder import validate_class_names


@pytest.fixture(scope="module")
def image(voc):
    return voc["rgb"][::4, ::4].copy()  # 94 x 125: one crop, fast


# Validation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vocabulary", [[], ()])
def test_empty_vocabulary_is_refused(tiny_segmenter, image, vocabulary):
    with pytest.raises(ValueError, match="vocabulary is empty: give at least one class name"):
        tiny_segmenter.segment(image, vocabulary)


@pytest.mark.parametrize("vocabulary,shown", [
    ({"cat", "dog"}, r"got set \{'(cat|dog)', '(cat|dog)'\}: it has no order"),
    ((n for n in ["cat", "dog"]), r"got generator <generator object"),
    (iter([]), r"got list_iterator <list_iterator object"),
    (5, r"got int 5; pass a list or tuple"),
])
def test_unordered_or_one_shot_vocabulary_is_refused(tiny_segmenter, image, vocabulary, shown):
    with pytest.raises(TypeError, match=r"vocabulary must be an ordered sequence \(list or tuple\) of class names, "
                                        + shown):
        tiny_segmenter.segment(image, vocabulary)


def test_bare_string_is_refused_not_split_into_letters(tiny_segmenter, image):
    with pytest.raises(TypeError, match="got the single string 'cat'"):
        tiny_segmenter.segment(image, "cat")


@pytest.mark.parametrize("names, index, shown", [
    (["cat", "dog", "cat"], 2, "'cat'"),
    (["Cat", "dog", " cat "], 2, "' cat '"),
    (["ﬁsh", "fish"], 1, "'fish'"),  # NFKC: the ligature is the same word
])
def test_duplicates_are_refused_naming_both_positions(names, index, shown):
    with pytest.raises(ValueError, match=f"duplicate class name {re.escape(shown)} at index {index} "
                                         r"\(same as index 0"):
        validate_class_names(names)


@pytest.mark.parametrize("bad, index", [([""], 0), (["cat", "   "], 1), (["cat", "\t\n"], 1),
                                        (["cat", "\u200b\ufeff"], 1)])  # zero-width space + BOM: invisible
def test_empty_and_whitespace_names_are_refused(bad, index):
    with pytest.raises(ValueError, match=f"class name at index {index} is empty once whitespace and invisible "
                                         "characters are removed"):
        validate_class_names(bad)


@pytest.mark.parametrize("bad, type_name", [(["cat", None], "NoneType"), (["cat", 3], "int"),
                                            (["cat", b"dog"], "bytes"), (["cat", {"dog"}], "set")])
def test_non_string_names_are_refused_with_index_and_type(tiny_segmenter, image, bad, type_name):
    with pytest.raises(TypeError, match=f"class name at index 1 must be a str .or a tuple of synonyms., "
                                        f"got {type_name}"):
        tiny_segmenter.segment(image, bad)


def test_non_iterable_vocabulary_is_refused():
    with pytest.raises(TypeError, match="vocabulary must be an ordered sequence .* got int 5"):
        validate_class_names(5)


def test_order_is_kept_and_numpy_strings_are_accepted():
    names = np.array(["zebra", "apple", "mango"])
    assert validate_class_names(names) == ("zebra", "apple", "mango")
    assert validate_class_names(("b", "a")) == ("b", "a")


# Results ---------------------------------------------------------------------------------------------
def test_one_class_labels_every_pixel_with_it(tiny_segmenter, image):
    result = tiny_segmenter.segment(image, ["sky"])
    assert result.class_names == ("sky",)
    assert (result.label_map == 0).all()
    assert result.class_probs.shape[0] == 2  # sky + background
    np.testing.assert_allclose(result.class_probs.sum(axis=0), 1.0, atol=1e-5)


def test_permuting_the_vocabulary_permutes_the_probabilities(tiny_segmenter, image):
    """Order is the user's: no sorting or set() anywhere. (Equal up to float rounding: the text tower and
    the sums see the classes in another order.)"""
    first = tiny_segmenter.segment(image, ["person", "sofa", "chair"], seen=[False] * 3)
    second = tiny_segmenter.segment(image, ["chair", "person", "sofa"], seen=[False] * 3)
    np.testing.assert_allclose(second.class_probs, first.class_probs[[2, 0, 1, 3]], rtol=0, atol=1e-6)
    remap = np.array([1, 2, 0])  # first's label -> second's label
    probs = np.stack([first.probability_map(n) for n in first.class_names])
    ordered = np.sort(probs, axis=0)
    clear = ordered[-1] - ordered[-2] > 1e-4  # pixels without a near tie
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(second.label_map[clear], remap[first.label_map][clear])


def test_large_vocabulary_of_520_classes(tiny_segmenter, image):
    names = [f"object number {i}" for i in range(520)]
    embeddings = tiny_segmenter.encode_vocabulary(names)
    assert tuple(embeddings.shape) == (520, tiny_segmenter.config.embed_dim)
    np.testing.assert_allclose(embeddings.norm(dim=1).numpy(), 1.0, atol=1e-5)
    result = tiny_segmenter.segment(image, names)
    assert result.label_map.shape == image.shape[:2]
    assert 0 <= result.label_map.min() and result.label_map.max() < 520
    assert result.class_probs.shape[0] == 521


def test_unicode_and_emoji_names_get_distinct_embeddings(tiny_segmenter, image):
    names = ["chat noir", "猫", "кошка", "🐈", "🐈‍⬛", "café au lait", "Ωmega"]
    embeddings = tiny_segmenter.encode_vocabulary(names)
    assert torch.isfinite(embeddings).all()
    similarity = embeddings @ embeddings.t()
    off_diagonal = similarity[~torch.eye(len(names), dtype=torch.bool)]
    assert off_diagonal.max() < 1 - 1e-6  # no two names collapsed onto the same prompt
    result = tiny_segmenter.segment(image, names)
    assert result.class_names == tuple(names)
    assert set(result.pixel_counts()) <= set(names)


def test_names_beyond_the_text_context_warn_and_name_the_culprit(tiny_segmenter):
    long_name = " ".join(["enormous"] * 90)  # ~90 tokens, context is 77
    with pytest.warns(UserWarning, match=r"1 class name\(s\) exceed the text encoder's context of 77 tokens"
                                         r".*truncated.*enormous enormous"):
        embeddings = tiny_segmenter.encode_vocabulary(["cat", long_name])
    assert tuple(embeddings.shape) == (2, tiny_segmenter.config.embed_dim)


def test_names_within_the_context_do_not_warn(tiny_segmenter):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_segmenter.encode_vocabulary(["a " * 60 + "cat", "dog"])  # long but fits


def test_vocabulary_embeddings_are_cached_and_reused(tiny_segmenter):
    tiny_segmenter.vocabulary.cache_clear()
    first = tiny_segmenter.encode_vocabulary(["kettle", "teapot"])
    cached = tiny_segmenter.vocabulary.cached(["kettle", "teapot"])
    assert tiny_segmenter.vocabulary.cached(("kettle", "teapot")) is cached  # one cache entry, reused
    assert tiny_segmenter.vocabulary.cache_size() == 1
    assert torch.equal(tiny_segmenter.encode_vocabulary(("kettle", "teapot")), first)  # a copy of the same tensor
    other = tiny_segmenter.encode_vocabulary(["teapot", "kettle"])
    torch.testing.assert_close(other, first[[1, 0]], rtol=0, atol=1e-6)  # another batch of prompts


# Precomputed embeddings ------------------------------------------------------------------------------
def test_precomputed_embeddings_give_the_same_result_as_names(tiny_segmenter, image):
    names = ["tree", "road", "car"]
    by_name = tiny_segmenter.segment(image, names, seen=[False, False, False])
    embeddings = tiny_segmenter.encode_vocabulary(names).numpy().astype(np.float64) * 3.0  # any norm
    by_vector = tiny_segmenter.segment(image, embeddings, class_names=names)
    np.testing.assert_allclose(by_vector.class_probs, by_name.class_probs, atol=1e-6)
    assert by_vector.class_names == tuple(names)


@pytest.mark.parametrize("shape", [(3, 32), (3, 65), (64,), (2, 3, 64), (0, 64)])
def test_embeddings_of_the_wrong_shape_are_refused(tiny_segmenter, image, shape):
    dim = tiny_segmenter.config.embed_dim
    with pytest.raises(ValueError, match=re.escape(f"must have shape (C, {dim}) with C >= 1, got {shape}")):
        tiny_segmenter.segment(image, torch.randn(shape))


def test_bad_embedding_values_are_refused(tiny_segmenter, image):
    dim = tiny_segmenter.config.embed_dim
    with pytest.raises(TypeError, match="must be floating point, got int64"):
        tiny_segmenter.segment(image, torch.ones(2, dim, dtype=torch.int64))
    nan = torch.randn(2, dim)
    nan[1, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        tiny_segmenter.segment(image, nan)
    zero = torch.randn(3, dim)
    zero[2] = 0
    with pytest.raises(ValueError, match=r"rows \[2\] are all zeros"):
        tiny_segmenter.segment(image, zero)


def test_class_names_must_match_the_embeddings(tiny_segmenter, image):
    embeddings = torch.randn(3, tiny_segmenter.config.embed_dim)
    with pytest.raises(ValueError, match="class_names has 2 names for 3 embeddings"):
        tiny_segmenter.segment(image, embeddings, class_names=["a", "b"])
    with pytest.raises(ValueError, match="class_names is only for precomputed embeddings"):
        tiny_segmenter.segment(image, ["a", "b"], class_names=["a", "b"])


def test_large_vocabulary_shows_a_text_progress_bar_only_when_progress_is_on(tiny_segmenter, capsys):
    quiet = AlignZegSegmenter(tiny_segmenter.model, progress=False)
    loud = AlignZegSegmenter(tiny_segmenter.model, progress=True)
    names = [f"thing {i}" for i in range(200)]  # 200 names x 2 templates = 400 prompts: 2 batches of 256
    quiet.encode_vocabulary(names)
    assert "alignzeg text" not in capsys.readouterr().err
    loud.encode_vocabulary(names)
    assert "alignzeg text" in capsys.readouterr().err
    loud.encode_vocabulary(["cat", "dog"])  # one batch: no bar
    assert "alignzeg text" not in capsys.readouterr().err


def _key_by_the_general_rule(name: str) -> str:
    """class_name_key written out without its ASCII shortcut: NFKC, drop category Cf, strip, lower."""
    import unicodedata

    text = unicodedata.normalize("NFKC", name)
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf").strip().lower()


def test_class_name_key_ascii_shortcut_equals_the_general_rule():
    from alignzeg.pipeline.name_keys import class_name_key, visible_text

    every_ascii = [chr(i) for i in range(128)]
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(every_ascii, size=int(rng.integers(0, 12)))) for _ in range(500)]
    words += [" Cat ", "\tSOFA\n", "potted plant", "A\x00B", "x\x7f"]
    for word in every_ascii + words:
        assert class_name_key(word) == _key_by_the_general_rule(word), repr(word)
        assert visible_text(word) == word
    # non-ASCII names take the general path: NFKC folds the full-width letters, Cf characters go
    assert class_name_key("\uff23at\u200b") == "cat" == _key_by_the_general_rule("\uff23at\u200b")
    assert visible_text("so\u00adfa\ufeff") == "sofa"


def test_remembered_vocabularies_fail_and_parse_like_fresh_ones():
    """parse_vocabulary remembers plain-name vocabularies: a bad one still fails on every call with the same
    message, and a list and a tuple of the same names give the same classes."""
    from alignzeg.pipeline.vocabulary import _parse_vocabulary, parse_vocabulary

    for _ in range(2):
        with pytest.raises(ValueError, match=r"duplicate class name 'Cat' at index 1 \(same as index 0: 'cat'\)"):
            parse_vocabulary(["cat", "Cat"])
    names = ["cat", " sofa", "wall\u200b"]
    assert parse_vocabulary(names) == parse_vocabulary(tuple(names)) == _parse_vocabulary(names, "vocabulary")
    assert parse_vocabulary(names).names == ("cat", " sofa", "wall\u200b")  # names kept exactly as given


def test_trained_flags_match_names_as_vocabulary_keys():
    from alignzeg.pipeline.vocabulary import trained_flags

    assert trained_flags(("Cat", "sofa", "\uff37all", "dog"), ("cat", "wall ")) == (True, False, True, False)
    assert trained_flags(("cat",), ()) == (False,)
