"""Sliding-window geometry: plans, cutting and stitching."""

import numpy as np
import pytest
import torch

from alignzeg.pipeline.windows import cut_windows, plan_windows, stitch_windows
from alignzeg.presets import get_preset_config

CFG = get_preset_config("tiny")  # input 64, stride 48, mask stride 4, max long side 256


def test_square_image_is_one_window():
    plan = plan_windows((64, 64), CFG)
    assert plan.resized == (64, 64) and plan.origins == ((0, 0),)


def test_wide_image_windows_cover_and_align():
    plan = plan_windows((375, 500), CFG)  # short side -> 64, long 85.3 -> 84 (multiple of 4)
    assert plan.resized == (64, 84)
    assert plan.origins == ((0, 0), (0, 20))
    assert all(y % plan.cell == 0 and x % plan.cell == 0 for y, x in plan.origins)


def test_thin_image_is_capped_and_padded():
    plan = plan_windows((5000, 3), CFG)
    assert plan.resized == (256, 4)  # long side capped at 256; short side rounded up to one cell
    assert plan.padded == (256, 64)
    assert [x for _, x in plan.origins] == [0] * len(plan.origins)
    assert plan.origins[-1][0] == 256 - 64


def test_cut_then_stitch_reconstructs_a_smooth_map():
    plan = plan_windows((100, 300), CFG)
    pixels = torch.linspace(0, 1, 300).expand(3, 100, 300).contiguous()
    crops = torch.from_numpy(cut_windows(pixels.numpy(), plan, np.asarray(CFG.mean, dtype=np.float32)))
    assert crops.shape == (len(plan.origins), 3, 64, 64)
    # Feed each window's own low-res image back: stitching must give the resized image at cell resolution.
    low = torch.nn.functional.avg_pool2d(crops, plan.cell)
    stitched = torch.from_numpy(stitch_windows(low.numpy(), plan))
    assert stitched.shape == (3, plan.resized[0] // 4, plan.resized[1] // 4)
    resized = torch.nn.functional.interpolate(pixels[None], size=plan.resized, mode="bilinear",
                                              align_corners=False, antialias=True)[0]
    assert torch.allclose(stitched, torch.nn.functional.avg_pool2d(resized, 4), atol=1e-5)


@pytest.mark.parametrize("size,target", [((512, 512), (64, 64)), ((96, 200), (128, 264)), ((480, 640), (512, 680))])
def test_torch_resize_matches_the_pipeline_resize(size, target):
    """The torch back-end's resize (torch antialiased bilinear) and the shared one (PIL's triangle filter) are
    one function: they agree within 1e-4 when shrinking and enlarging."""
    from alignzeg.pipeline.windows import resize_bilinear
    from alignzeg.torch_resize import resize_pixels

    pixels = np.random.default_rng(0).random((3, *size), dtype=np.float32)
    shared = resize_bilinear(pixels, target)
    by_torch = resize_pixels(torch.from_numpy(pixels), target).numpy()
    assert shared.shape == by_torch.shape == (3, *target)
    np.testing.assert_allclose(by_torch, shared, atol=1e-4)
    assert by_torch.min() >= 0.0 and by_torch.max() <= 1.0
