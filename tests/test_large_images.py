"""Large images (issue 29): the windows are streamed in batches and averaged as they arrive, the label map is
computed in row bands, and every chunked path gives exactly what the unchunked one gives."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch

from alignzeg.cli import main
from alignzeg.modeling.semantic_map import upsample_labels as torch_upsample_labels
from alignzeg.pipeline.labels import PER_PIXEL, band_rows, upsample_labels
from alignzeg.pipeline.windows import WindowStitcher, plan_windows, stitch_windows
from alignzeg.presets import get_preset_config
from alignzeg.progress import advance, progress_bar
from fake_backend import FakeBackend

CFG = get_preset_config("tiny")  # input 64, window stride 48, mask stride 4, max long side 256


# Stitching as the windows arrive ------------------------------------------------------------------------
def test_two_overlapping_windows_average_to_hand_computed_values():
    plan = plan_windows((64, 80), CFG)  # resized (64, 80): windows at x = 0 and x = 16 px, cells 0 and 4
    assert plan.origins == ((0, 0), (0, 16)) and plan.resized == (64, 80)
    stitcher = WindowStitcher(plan)
    stitcher.add(np.full((2, 16, 16), 1.0, np.float32))
    stitcher.add(np.full((2, 16, 16), 4.0, np.float32))
    out = stitcher.result()
    assert out.shape == (2, 16, 20)
    np.testing.assert_array_equal(out[:, :, :4], 1.0)  # only the first window
    np.testing.assert_array_equal(out[:, :, 4:16], 2.5)  # both: (1 + 4) / 2
    np.testing.assert_array_equal(out[:, :, 16:], 4.0)  # only the second


@pytest.mark.parametrize("xp", [np, torch], ids=["numpy", "torch"])
def test_windows_added_one_by_one_equal_stitch_windows_exactly(xp, rng):
    plan = plan_windows((300, 100), CFG)  # tall: several overlapping windows
    maps = rng.random((len(plan.origins), 5, 16, 16), dtype=np.float32)
    maps = maps if xp is np else torch.from_numpy(maps)
    stitcher = WindowStitcher(plan, xp)
    for window in maps:
        stitcher.add(window.copy() if xp is np else window.clone())
    expected = _naive_average(np.asarray(maps), plan)
    assert len(plan.origins) > 2
    np.testing.assert_array_equal(np.asarray(stitcher.result()), expected)
    np.testing.assert_array_equal(np.asarray(stitch_windows(maps, plan, xp)), expected)


def _naive_average(maps: np.ndarray, plan) -> np.ndarray:
    """Each cell's mean over the windows covering it, cell by cell (float64, then float32)."""
    cell, side = plan.cell, maps.shape[-1]
    height, width = plan.resized[0] // cell, plan.resized[1] // cell
    out = np.zeros((maps.shape[1], height, width), np.float32)
    for i in range(height):
        for j in range(width):
            values = [m[:, i - y // cell, j - x // cell] for m, (y, x) in zip(maps, plan.origins)
                      if 0 <= i - y // cell < side and 0 <= j - x // cell < side]
            out[:, i, j] = np.mean(np.asarray(values, np.float64), axis=0)
    return out


def test_the_stitcher_refuses_too_many_or_too_few_windows():
    plan = plan_windows((64, 80), CFG)
    stitcher = WindowStitcher(plan)
    stitcher.add(np.zeros((2, 16, 16), np.float32))
    with pytest.raises(ValueError, match="this image has 2 windows; 1 were added"):
        stitcher.result()
    stitcher.add(np.zeros((2, 16, 16), np.float32))
    with pytest.raises(ValueError, match="this image has 2 windows; got a map for window 3"):
        stitcher.add(np.zeros((2, 16, 16), np.float32))


# Streaming crops through the pipeline ---------------------------------------------------------------------
class _PatternBackend(FakeBackend):
    """Each crop's map depends on that crop only (a per-pixel function of its pixels), so any batching of the
    crops must give the same maps bit for bit. Records the crops of each ``_predict`` call (``batches``)."""

    def __init__(self, batch_size: int, progress: bool = False) -> None:
        super().__init__(CFG, batch_size=batch_size, progress=progress)

    def _predict(self, crops, embeddings, seen, bias_correction):
        self.record_predict(crops, bias_correction)
        cell = self.config.mask_stride
        low = crops.reshape(len(crops), 3, 16, cell, 16, cell).mean(axis=(3, 5))  # (B, 3, 16, 16)
        scores = np.concatenate([low, 1.5 - low.mean(axis=1, keepdims=True)], axis=1) + 0.1  # 4 channels
        return (scores / scores.sum(axis=1, keepdims=True)).astype(np.float32)


def _images(rng):
    return [rng.integers(0, 256, (90, 400, 3), dtype=np.uint8), rng.integers(0, 256, (40, 30, 3), dtype=np.uint8),
            rng.integers(0, 256, (300, 70, 3), dtype=np.uint8)]


def test_crops_streamed_one_per_batch_equal_all_crops_in_one_batch(rng):
    images, names = _images(rng), ["r", "g", "b"]
    whole = _PatternBackend(batch_size=1000).segment_batch(images, names, bias_correction=False)
    streamed_seg = _PatternBackend(batch_size=1)
    streamed = streamed_seg.segment_batch(images, names, bias_correction=False)
    windows = sum(len(plan_windows(i.shape[:2], CFG).origins) for i in images)
    assert streamed_seg.batches == [1] * windows and windows > 5
    # two computations of one map (other batch shapes): float32 round-off at most, labels alike off ties
    for a, b in zip(whole, streamed):
        np.testing.assert_allclose(a.class_probs, b.class_probs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
        assert a.label_map.shape == b.label_map.shape and (a.label_map == b.label_map).mean() >= 0.999


def test_a_batch_spans_images_in_input_order(rng):
    seg = _PatternBackend(batch_size=4)
    images = _images(rng)
    seg.segment_batch(images, ["r", "g", "b"], bias_correction=False)
    windows = sum(len(plan_windows(i.shape[:2], CFG).origins) for i in images)
    assert seg.batches == [4] * (windows // 4) + ([windows % 4] if windows % 4 else [])


def test_the_streamed_pipeline_equals_cutting_all_crops_then_stitching(tiny_segmenter, voc):
    """The real tiny model, several windows per image, 3 crops per batch: the maps equal the unchunked path (all
    crops cut first, predicted in the same batches, all window maps stitched at once, one label band)."""
    seg, names = tiny_segmenter, ["person", "chair", "sofa"]
    images = [voc["rgb"][:150], voc["rgb"][:, :90]]
    seg.batch_size = 3
    try:
        got = seg.segment_batch(images, names, bias_correction=False)
        embeddings, _, seen = seg.prepare_vocabulary(names)
        loaded = seg.load_images(images)
        cut = [seg.window_crops(image) for image in loaded]
        crops = torch.cat([c for c, _ in cut])
        probs = torch.cat([seg._predict(crops[s:s + 3], embeddings, seen, False) for s in range(0, len(crops), 3)])
    finally:
        seg.batch_size = 8
    offset = 0
    for (_, plan), image, result in zip(cut, loaded, got):
        maps = probs[offset:offset + len(plan.origins)]
        offset += len(plan.origins)
        assert len(plan.origins) > 1
        expected = stitch_windows(maps, plan, torch)
        labels, confidence = torch_upsample_labels(expected.contiguous(), image.size, max_elements=1 << 40)
        np.testing.assert_array_equal(result.class_probs, expected.numpy())
        np.testing.assert_array_equal(result.label_map, labels.numpy())
        np.testing.assert_array_equal(result.scores, confidence.numpy())


# The label map in row bands -------------------------------------------------------------------------------
def test_band_rows_counts_the_classes_and_the_per_pixel_arrays():
    assert PER_PIXEL == 6
    assert band_rows(5, 3000, 4000, 1 << 22) == (1 << 22) // (4000 * 11) == 95
    assert band_rows(5, 3000, 4000, 1 << 22, per_class=2) == (1 << 22) // (4000 * 16) == 65
    assert band_rows(5, 3000, 4000, 1) == 1  # at least one row
    assert band_rows(0, 20, 10, 1 << 22) == 20  # at most the height


def test_one_row_bands_equal_one_band_exactly(rng):
    probs = rng.random((8, 9, 13), dtype=np.float32)
    probs /= probs.sum(axis=0)
    size = (61, 97)
    for threshold in (None, 0.2):
        whole = upsample_labels(probs, size, threshold, max_elements=1 << 40)
        rows = upsample_labels(probs, size, threshold, max_elements=1)  # one row per band
        torch_whole = torch_upsample_labels(torch.from_numpy(probs), size, threshold, max_elements=1 << 40)
        torch_rows = torch_upsample_labels(torch.from_numpy(probs), size, threshold, max_elements=1)
        for a, b in ((whole, rows), (torch_whole, torch_rows)):
            np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
            np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))
        assert (whole[0] == -1).any() == (threshold is not None)


# Progress: windows done / total ---------------------------------------------------------------------------
def test_advance_counts_several_steps_and_leaves_the_last_for_close():
    out = io.StringIO()
    with progress_bar(5, file=out, mininterval=0) as bar:
        advance(bar, 3)
        assert bar.n == 3
        advance(bar, 2)
        assert bar.n == 5
    lines = [line for line in out.getvalue().replace("\r", "\n").splitlines() if line.strip()]
    assert sum("3/5" in line for line in lines) == 1 and [line for line in lines if "5/5" in line] == [lines[-1]]


def test_progress_logs_windows_done_over_total(rng, caplog):
    seg = _PatternBackend(batch_size=4, progress=True)
    image = rng.integers(0, 256, (40, 300, 3), dtype=np.uint8)
    windows = len(plan_windows((40, 300), CFG).origins)
    assert windows > 4
    with caplog.at_level(logging.INFO, logger="alignzeg.pipeline.segment"):
        seg.segment(image, ["r", "g", "b"], bias_correction=False)
    done = list(range(4, windows, 4)) + [windows]
    assert [r.getMessage() for r in caplog.records] == [f"windows {d}/{windows}" for d in done]
    caplog.clear()
    seg.progress = False
    with caplog.at_level(logging.INFO, logger="alignzeg.pipeline.segment"):
        seg.segment(image, ["r", "g", "b"], bias_correction=False)
    assert not caplog.records


def test_cli_verbose_reports_windows_of_a_single_image(tiny_checkpoint, voc, tmp_path, caplog):
    from PIL import Image

    path = tmp_path / "wide.png"
    Image.fromarray(voc["rgb"][:100]).save(path)  # 100 x 500: several windows with the tiny preset
    windows = len(plan_windows((100, 500), CFG).origins)
    with caplog.at_level(logging.INFO, logger="alignzeg.pipeline.segment"):
        code = main(["-v", "segment", str(path), "--classes", "person,chair", "--model", str(tiny_checkpoint),
                     "--batch-size", "2", "--json"])
    assert code == 0 and windows > 2
    messages = [r.getMessage() for r in caplog.records if r.name == "alignzeg.pipeline.segment"]
    assert messages == [f"windows {d}/{windows}" for d in list(range(2, windows, 2)) + [windows]]
