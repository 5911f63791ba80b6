"""DeepPrompts.run overwrites the prompt rows in place: same values and gradients as drop-then-append."""

import pytest
import torch

from alignzeg import AlignZegSegmenter


def _reference(prompts, blocks, x, batch_first):
    """The plain loop: append layer i's prompts, run block i, drop the prompt rows."""
    length = x.shape[1]
    for i, block in enumerate(blocks):
        if i < prompts.depth:
            x = torch.cat([x, prompts.tokens[i].to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
        x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)
        x = x[:, :length]
    return x


@pytest.mark.parametrize("depth", [2, 1])  # every layer prompted (tiny: 2 layers), and the first only
def test_in_place_prompt_rows_equal_drop_then_append(depth):
    model = AlignZegSegmenter.from_preset("tiny", seed=0, config_overrides={"clip_prompt_depth": depth}).model
    prompts, transformer = model.backbone.prompts, model.backbone.clip.visual.transformer
    assert prompts.depth == depth
    x = torch.randn(2, 65, 64, generator=torch.Generator().manual_seed(5))
    got = prompts.run(transformer.resblocks, x, transformer.batch_first)
    (grad_got,) = torch.autograd.grad(got.square().mean(), prompts.tokens)
    ref = _reference(prompts, transformer.resblocks, x, transformer.batch_first)
    (grad_ref,) = torch.autograd.grad(ref.square().mean(), prompts.tokens)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad_got, grad_ref, atol=1e-7, rtol=1e-5)
    assert grad_got[depth - 1].abs().max() > 0  # the last prompted layer's tokens get a gradient
    with torch.inference_mode():
        torch.testing.assert_close(prompts.run(transformer.resblocks, x, transformer.batch_first), ref.detach(),
                                   atol=1e-6, rtol=1e-6)
