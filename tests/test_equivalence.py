"""The optimised inference paths equal their straightforward versions (within float tolerance).

- ``upsample_labels`` (class pruning, banded separable interpolation) vs a full-resolution
  ``F.interpolate`` of the probability map followed by an argmax.
- ``semantic_probabilities`` (one einsum) vs a loop over proposals with PBC written out by hand.
- mask prediction and proposal classification (einsum / matmul) vs per-proposal loops.
- ``CLIPBackbone.encode_text`` (batch cut to its longest prompt) vs open_clip's full 77-token forward.
- ``segment`` end to end vs crop-by-crop inference, a naive stitch and a full-resolution upsample.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alignzeg import AlignZegSegmenter
from voc_split import VOC_SEEN
from alignzeg.modeling.semantic_map import semantic_probabilities
from alignzeg.pipeline import labels as np_labels
from alignzeg.pipeline import windows as np_windows
from alignzeg.pipeline.windows import plan_windows
from compare import assert_same_segmentation


# The pipeline works in numpy; these tests build their references in torch.
def upsample_labels(probs, size, **kwargs):
    labels, confidence = np_labels.upsample_labels(probs.numpy(), size, **kwargs)
    return torch.from_numpy(labels), torch.from_numpy(confidence)


def candidate_classes(probs):
    return torch.from_numpy(np_labels.candidate_classes(probs.numpy()))


def cut_windows(pixels, plan, fill):
    return torch.from_numpy(np_windows.cut_windows(pixels.numpy(), plan, fill.numpy()))


def stitch_windows(maps, plan):
    return torch.from_numpy(np.ascontiguousarray(np_windows.stitch_windows(maps.numpy(), plan)))


def _reference_labels(probs, size, threshold=None):
    full = F.interpolate(probs[None].double(), size=size, mode="bilinear", align_corners=False)[0, :-1]
    top2 = full.topk(min(2, full.shape[0]), dim=0).values
    best, index = full.max(dim=0)
    if threshold is not None:
        index = torch.where(best < threshold, torch.full_like(index, -1), index)
    margin = top2[0] - top2[-1] if full.shape[0] > 1 else torch.ones_like(best)
    return index, best.float(), margin


def _smooth_probs(channels, h, w, seed):
    """A spatially smooth, peaked probability map (like a real model's): few classes can win."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(channels, max(2, h // 8), max(2, w // 8), generator=g) * 6
    logits = F.interpolate(low[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return logits.softmax(dim=0)


@pytest.mark.parametrize("channels,h,w,size", [
    (6, 7, 9, (50, 61)),      # odd sizes, non-integer scale
    (21, 64, 64, (512, 512)),  # the usual x8
    (4, 1, 5, (3, 17)),        # one low-res row
    (9, 40, 30, (17, 13)),     # downsampling
])
def test_upsample_labels_matches_full_interpolate(channels, h, w, size):
    for probs in (torch.rand(channels, h, w).softmax(0), _smooth_probs(channels, h, w, seed=h)):
        labels, confidence = upsample_labels(probs, size, max_elements=channels * size[1] * 3)  # many bands
        ref, ref_conf, margin = _reference_labels(probs, size)
        clear = margin > 1e-5
        assert labels.shape == size and labels.dtype == torch.int32
        assert torch.equal(labels.long()[clear], ref[clear])
        assert torch.allclose(confidence, ref_conf, atol=1e-6)


def test_upsample_labels_threshold_matches_reference():
    probs = _smooth_probs(8, 16, 20, seed=3)
    labels, _ = upsample_labels(probs, (70, 90), unlabelled_threshold=0.5)
    ref, _, margin = _reference_labels(probs, (70, 90), threshold=0.5)
    best = F.interpolate(probs[None], size=(70, 90), mode="bilinear", align_corners=False)[0, :-1].amax(0)
    clear = (margin > 1e-5) & ((best - 0.5).abs() > 1e-5)
    assert (labels == -1).any() and (labels >= 0).any()
    assert torch.equal(labels.long()[clear], ref[clear])


def test_candidate_pruning_is_exact_and_prunes():
    probs = _smooth_probs(172, 64, 64, seed=0)
    keep = candidate_classes(probs[:-1])
    assert 0 < keep.numel() < 171  # the pruned path is exercised
    full = F.interpolate(probs[None], size=(512, 512), mode="bilinear", align_corners=False)[0, :-1]
    winners = torch.unique(full.argmax(dim=0))
    assert set(winners.tolist()) <= set(keep.tolist())


def test_upsample_labels_ties_pick_lowest_index():
    probs = torch.full((4, 3, 3), 0.25)
    labels, confidence = upsample_labels(probs, (7, 7))
    assert torch.all(labels == 0) and torch.allclose(confidence, torch.full((7, 7), 0.25))


def _reference_semantic(class_logits, mask_logits, unseen_logits, seen, threshold, offset):
    """PBC written out per proposal: exp of the logits (seen ones lowered by ``offset``), seen ones zeroed
    for a flagged proposal, normalised; then the mask-weighted sum over proposals."""
    b, n, k = class_logits.shape
    out = torch.zeros(b, k, *mask_logits.shape[-2:], dtype=torch.float64)
    seen_col = torch.cat([seen, torch.tensor([False])])
    for i in range(b):
        for j in range(n):
            e = class_logits[i, j].double().exp()
            if seen.any() and not seen.all():
                e = torch.where(seen_col, e * math.exp(-offset), e)
                if torch.sigmoid(unseen_logits[i, j]) > threshold:
                    e = torch.where(seen_col, torch.zeros_like(e), e)
            out[i] += (e / e.sum())[:, None, None] * torch.sigmoid(mask_logits[i, j].double())
    return (out / out.sum(dim=1, keepdim=True)).float()


@pytest.mark.parametrize("offset", [0.0, 0.7])
def test_semantic_probabilities_matches_proposal_loop(offset):
    g = torch.Generator().manual_seed(0)
    class_logits = torch.randn(2, 7, 6, generator=g) * 3
    mask_logits = torch.randn(2, 7, 5, 4, generator=g) * 4
    unseen_logits = torch.randn(2, 7, generator=g) * 2
    seen = torch.tensor([True, False, True, True, False])
    got = semantic_probabilities(class_logits, mask_logits, unseen_logits, seen, True, 0.5, offset)
    ref = _reference_semantic(class_logits, mask_logits, unseen_logits, seen, 0.5, offset)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    off = semantic_probabilities(class_logits, mask_logits, unseen_logits, seen, False, 0.5, offset)
    torch.testing.assert_close(off, _reference_semantic(class_logits, mask_logits, unseen_logits,
                                                        torch.zeros(5, dtype=torch.bool), 2.0, 0.0),
                               atol=1e-6, rtol=0)


def test_mask_and_class_einsums_match_loops(tiny_segmenter):
    model = tiny_segmenter.model
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    queries = torch.randn(2, 5, cfg.decoder_dim, generator=g)
    visual = torch.randn(2, 6 * 4, cfg.decoder_dim, generator=g)
    patches = torch.randn(2, cfg.embed_dim, 6, 4, generator=g)
    classes = F.normalize(torch.randn(3, cfg.embed_dim, generator=g), dim=-1)
    with torch.no_grad():
        side = model.extractor.side(torch.randn(2, 3, 6 * cfg.patch_size, 4 * cfg.patch_size, generator=g))
        masks = model.extractor.predict_masks(queries, visual, (6, 4), side)
        pixel = model.extractor.pixel_features(visual, (6, 4), side)
        embeds = model.extractor.mask_embed(model.extractor.query_norm(queries))
        emb, logits = model.classifier(queries, classes, patches, masks)
        bg = F.normalize(model.classifier.bg_prototypes, dim=-1)
        scale, t = model.classifier.logit_scale, cfg.bg_temperature
        assert t > 0
        for b in range(2):
            for n in range(5):
                ref_mask = (embeds[b, n, :, None, None] * pixel[b]).sum(0)
                torch.testing.assert_close(masks[b, n], ref_mask, atol=1e-5, rtol=1e-5)
                ref_cls = [scale * torch.dot(emb[b, n], classes[c]) for c in range(3)]
                ref_bg = scale * t * math.log(sum(math.exp(torch.dot(emb[b, n], bg[m]).item() / t)
                                                  for m in range(bg.shape[0])))
                torch.testing.assert_close(logits[b, n], torch.stack(ref_cls + [ref_bg.reshape(())]),
                                           atol=1e-4, rtol=1e-5)


def test_encode_text_cut_matches_full_context(tiny_segmenter):
    backbone = tiny_segmenter.model.backbone
    prompts = ["a photo of a cat.", "there is a traffic light in the scene.", "a photo of a !.", "x"]
    tokens = backbone.tokenize(prompts)
    with torch.no_grad():
        full = backbone.clip.encode_text(tokens, normalize=True)
        cut = backbone.encode_text(tokens)
        long_tokens = backbone.tokenize(["word " * 100])  # truncated to the full context: nothing to cut
        assert torch.allclose(backbone.encode_text(long_tokens),
                              backbone.clip.encode_text(long_tokens, normalize=True), atol=1e-6)
    assert torch.allclose(cut, full, atol=1e-5)


def _naive_stitch(window_maps, plan):
    cell = plan.cell
    total = torch.zeros(window_maps.shape[1], plan.padded[0] // cell, plan.padded[1] // cell, dtype=torch.float64)
    count = torch.zeros(plan.padded[0] // cell, plan.padded[1] // cell, dtype=torch.float64)
    side = window_maps.shape[-1]
    for (y, x), window in zip(plan.origins, window_maps):
        for i in range(side):
            for j in range(side):
                total[:, y // cell + i, x // cell + j] += window[:, i, j].double()
                count[y // cell + i, x // cell + j] += 1
    return (total / count)[:, : plan.resized[0] // cell, : plan.resized[1] // cell].float()


def test_segment_matches_straightforward_pipeline(voc):
    # indicator_trained=True so that PBC (default: auto) runs on both paths, as with a trained checkpoint.
    seg = AlignZegSegmenter.from_preset("tiny", seen_classes=VOC_SEEN, seed=0,
                                        config_overrides={"indicator_trained": True})
    names = ["person", "sheep", "dog", "grass", "sky"]
    image = voc["rgb"]
    result = seg.segment(image, names)
    assert result.bias_correction
    embeddings, _, seen = seg.prepare_vocabulary(names)
    pixels = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255
    plan = plan_windows(pixels.shape[1:], seg.config)
    crops = cut_windows(pixels, plan, torch.tensor(seg.config.mean))
    assert crops.shape[0] > 1  # the sliding window is exercised
    windows = torch.cat([seg.predict_torch(crop[None], embeddings, seen) for crop in crops])  # one at a time
    probs = _naive_stitch(windows, plan)
    assert np.allclose(result.class_probs, probs.numpy(), atol=1e-5)
    ref, ref_conf, margin = _reference_labels(probs, image.shape[:2])
    clear = (margin > 1e-5).numpy()
    assert np.array_equal(result.label_map[clear], ref.numpy()[clear])
    assert np.allclose(result.scores, ref_conf.numpy(), atol=1e-5)


def test_segment_batch_independent_of_batch_size(tiny_segmenter, voc):
    seg = tiny_segmenter
    images = [voc["rgb"], voc["rgb"][:200, :300]]
    old = seg.batch_size
    try:
        seg.batch_size = 1
        one = seg.segment_batch(images, ["person", "dog"])
        seg.batch_size = 8
        many = seg.segment_batch(images, ["person", "dog"])
    finally:
        seg.batch_size = old
    for a, b in zip(one, many):
        assert_same_segmentation(a, b)


def test_one_window_stitch_matches_the_naive_stitch(tiny_segmenter):
    plan = plan_windows((64, 70), tiny_segmenter.config)  # wider than the crop: two windows
    square = plan_windows((64, 64), tiny_segmenter.config)
    assert len(square.origins) == 1 and len(plan.origins) > 1
    g = torch.Generator().manual_seed(0)
    for p in (square, plan):
        side = p.crop // p.cell
        maps = torch.rand(len(p.origins), 5, side, side, generator=g)
        torch.testing.assert_close(stitch_windows(maps, p), _naive_stitch(maps, p), rtol=0, atol=1e-6)
