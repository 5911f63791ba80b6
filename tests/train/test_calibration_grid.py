"""The one calibration search (``alignzeg.train.evaluation.calibration_grid``): ``calibrate`` on the world's grid makes the
search's choice on the cache as it was built before images of any size were cached."""

import numpy as np
import pytest
import torch

from alignzeg import AlignZegSegmenter
from alignzeg.train.evaluation.calibrate import calibrate
from alignzeg.train.evaluation.calibration_grid import (SETTINGS, WORLD_CALIB_OFFSETS, WORLD_CALIB_PBC, WORLD_CALIB_READOUT,
                                             CachedOutputs, applicable_grid, cache_outputs, check_grid,
                                             evaluate_cached, search)
from alignzeg.train.evaluation.evaluate import dataset_vocabulary, evaluate
from compare import assert_same_pixels


@pytest.fixture(scope="module")
def demo_and_val():
    from alignzeg.demo import model_path
    from alignzeg.worlds.attributes import AttributeWorld, world_config
    from alignzeg.worlds.export import WorldDataset

    segmenter = AlignZegSegmenter.from_pretrained(model_path(), device="cpu", local_files_only=True)
    return segmenter, WorldDataset(AttributeWorld(world_config(0)), "val", 8)


def _stacked_cache(segmenter, val):
    """The cache as ``cache_outputs`` built it for one-crop images before: the images stacked, one forward."""
    names = tuple(val.class_names)
    seen = np.array([n in set(val.seen_classes) for n in names])
    items = [val[i] for i in range(len(val))]
    with torch.inference_mode():
        out = segmenter.model(torch.stack([item["image"] for item in items]),
                              segmenter.encode_vocabulary(list(names)), deep_supervision=False,
                              seen_mask=torch.from_numpy(seen))
    return CachedOutputs(out.class_logits.float(), out.mask_logits.float(), out.unseen_logits.float(),
                         out.readout_logits.float(), np.stack([np.asarray(item["label"]) for item in items]), seen,
                         names)


def test_the_world_and_the_cli_make_the_same_choice(demo_and_val):
    segmenter, val = demo_and_val
    config = segmenter.config
    before = _stacked_cache(segmenter, val)
    cached = cache_outputs(segmenter, val)
    assert cached.plans == () and cached.num_images == 8  # one 64 px crop per image: the stacked fast path
    for name in ("class_logits", "mask_logits", "unseen_logits", "readout_logits"):
        torch.testing.assert_close(getattr(cached, name), getattr(before, name), rtol=1e-5, atol=1e-5)
    best, grid = search(before, config, WORLD_CALIB_PBC, WORLD_CALIB_OFFSETS, WORLD_CALIB_READOUT)
    assert len(grid) == 210 and len({g["hIoU"] for g in grid}) > 1
    result = calibrate(segmenter, val, WORLD_CALIB_PBC, WORLD_CALIB_OFFSETS, readout_weights=WORLD_CALIB_READOUT)
    assert {k: result.settings[k] for k in SETTINGS} == {k: best[k] for k in SETTINGS} and len(result.grid) == 210
    assert result.hiou == pytest.approx(best["hIoU"], abs=1e-4)


def test_the_cache_labels_the_pixels_segment_labels(demo_and_val):
    """The shipped world model (a real hIoU): every grid point's pixels are ``segment``'s, for two settings."""
    segmenter, val = demo_and_val
    cached = cache_outputs(segmenter, val)
    original = segmenter.model.config
    for changes in ({}, {"pbc_soft": True, "seen_score_offset": 0.5, "readout_weight_unseen": 1.0}):
        config = original.replace(**changes)
        segmenter.model.config = config
        try:
            full = evaluate(segmenter, val)
        finally:
            segmenter.model.config = original
        fast = evaluate_cached(cached, config)
        assert full.hiou > 0.3 and abs(full.hiou - fast.hiou) < 1e-3
        assert_same_pixels(full.confusion, fast.confusion)


def test_dataset_vocabulary_is_the_protocol_of_evaluate(demo_and_val):
    """All class names in label order, seen by ``seen_classes``; fixed embeddings go in as (K, E) rows named by
    the class names; ``prepare`` is ``prepare_vocabulary`` of those arguments."""
    segmenter, val = demo_and_val
    vocabulary = dataset_vocabulary(val)
    assert vocabulary.names == tuple(val.class_names) and len(vocabulary.names) == 48
    assert sum(vocabulary.seen) == len(val.seen_classes) == 40 and vocabulary.embeddings is None
    assert [n for n, s in zip(vocabulary.names, vocabulary.seen) if not s] == [
        n for n in val.class_names if n not in val.seen_classes]
    assert vocabulary.segment_arguments() == {"vocabulary": list(val.class_names), "class_names": None,
                                              "seen": list(vocabulary.seen)}
    embeddings, names, seen = vocabulary.prepare(segmenter)
    torch.testing.assert_close(embeddings, segmenter.encode_vocabulary(list(val.class_names)), rtol=0, atol=0)
    assert names == vocabulary.names and seen.tolist() == list(vocabulary.seen)

    class Fixed:  # a dataset with fixed embeddings (not unit length) and no seen_classes
        class_names = ("a", "b")
        class_embeddings = torch.tensor([[3.0] + [0.0] * 63, [0.0, 4.0] + [0.0] * 62])  # E = 64

    fixed = dataset_vocabulary(Fixed())
    assert fixed.seen == (False, False) and fixed.segment_arguments()["class_names"] == ("a", "b")
    embeddings, names, seen = fixed.prepare(segmenter)
    assert names == ("a", "b") and not seen.any()
    torch.testing.assert_close(embeddings, torch.eye(2, 64), rtol=0, atol=0)


def test_applicable_grid_and_check_grid(demo_and_val):
    config = demo_and_val[0].config
    grids = ((0.5, "soft"), (0.0, 1.0), ((0.0, 0.0),))
    assert applicable_grid(config, *grids) == (*grids, True)
    assert applicable_grid(config.replace(clip_readout=False), *grids) == (*grids[:2], None, True)
    # the offset needs no class indicator: it is searched on every model, PBC's flags only with a trained one
    assert applicable_grid(config.replace(indicator_trained=False), *grids) == (None, grids[1], grids[2], True)
    assert applicable_grid(config.replace(indicator_trained=False, clip_readout=False), *grids) == (
        None, grids[1], None, True)
    check_grid(*grids)
    check_grid(None, None, None)
    for bad, error, message in (((("0.5",), None, None), ValueError, "or 'soft', got '0.5'"),
                                (((True,), None, None), TypeError, "a pbc threshold must be a number, got bool True"),
                                ((None, (float("inf"),), None), ValueError, "got inf"),
                                ((None, None, ((0.1, 0.2, 0.3),)), TypeError, r"pair, got \(0.1, 0.2, 0.3\)"),
                                ((None, None, ((-0.1, 0.5),)), ValueError, r"got -0.1 in \(-0.1, 0.5\)"),
                                ((None, "0,1", None), ValueError, "offsets must be a non-empty sequence")):
        with pytest.raises(error, match=message):
            check_grid(*bad)
