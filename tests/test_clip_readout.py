"""The CLIP region readout (SAN-style masked region tokens), FC-CLIP's geometric ensemble, the vocabulary-aware
class indicator's profile and soft PBC: hand-made cases, a second computation, and the switches."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alignzeg import AlignZegSegmenter, proposal_bias_correction
from alignzeg.config import FORMAT_VERSION, AlignZegConfig
from alignzeg.modeling.class_indicator import PROFILE_FEATURES, profile_features
from alignzeg.modeling.clip_readout import geometric_ensemble, region_attention_mask, region_tokens
from alignzeg.modeling.semantic_map import output_probabilities, semantic_probabilities


def test_region_attention_mask_by_patch_coverage_with_a_fallback():
    # 2x2 patch grid, masks at stride 2 (4x4): proposal 0 covers the top-left patch fully; proposal 1 covers
    # no patch by more than half, so it gets its most covered patch (bottom-right: 2 of 4 pixels).
    logits = torch.full((1, 2, 4, 4), -30.0)
    logits[0, 0, :2, :2] = 30.0
    logits[0, 1, 2:, 3] = 30.0
    allow = region_attention_mask(logits, (2, 2))
    assert allow.tolist() == [[[True, False, False, False], [False, False, False, True]]]


@pytest.fixture(scope="module")
def tiny():
    return AlignZegSegmenter.from_preset("tiny", seed=3)


def test_region_tokens_equal_the_block_run_on_the_whole_sequence_with_an_attention_mask(tiny):
    """Second computation: the open_clip block itself over [image tokens + region tokens] with a (L, L) mask
    in which image tokens never see region tokens and each region token sees itself and its patches."""
    clip = tiny.model.backbone.clip
    block = clip.visual.transformer.resblocks[-1]
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 1 + 4, 64, generator=gen)  # [CLS] + 4 patches
    allow = torch.tensor([[[True, False, True, False], [False, False, False, True]],
                          [[True, True, True, True], [False, True, False, False]]])
    ours = region_tokens([block], [tokens], allow)
    for b in range(2):
        seq = torch.cat([tokens[b], tokens[b, :1].expand(2, -1)])[None]  # (1, 7, D): cls, 4 patches, 2 regions
        mask = torch.zeros(7, 7)
        mask[:5, 5:] = float("-inf")  # image tokens never see the regions
        for n in range(2):
            row = torch.full((7,), float("-inf"))
            row[1:5][allow[b, n]] = 0.0
            row[5 + n] = 0.0
            mask[5 + n] = row
        out = block(seq, attn_mask=mask)
        torch.testing.assert_close(ours[b], out[0, 5:], rtol=0, atol=1e-5)
        torch.testing.assert_close(out[0, :5], block(tokens[b:b + 1])[0], rtol=0, atol=1e-5)


def test_geometric_ensemble_by_hand():
    dec = torch.tensor([[[2.0, 0.0, 1.0, 0.5]]])  # 3 classes + background
    clip = torch.tensor([[[0.0, 3.0, 1.0]]])
    seen = torch.tensor([True, True, False])
    out = geometric_ensemble(dec, clip, seen, 0.25, 0.75)
    ld, lc = F.log_softmax(dec, -1)[0, 0], F.log_softmax(clip, -1)[0, 0]
    expected = [0.75 * ld[0] + 0.25 * lc[0], 0.75 * ld[1] + 0.25 * lc[1], 0.25 * ld[2] + 0.75 * lc[2], ld[3]]
    torch.testing.assert_close(out[0, 0], torch.stack(expected), rtol=0, atol=1e-6)
    # weights 0: the decoder's log-probabilities, whose softmax is the decoder's softmax
    torch.testing.assert_close(geometric_ensemble(dec, clip, seen, 0, 0).softmax(-1), dec.softmax(-1), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="readout_logits"):
        geometric_ensemble(dec, clip[..., :2], seen, 0.4, 0.8)
    with pytest.raises(ValueError, match="void must be 'joint' or 'fcclip', got 'none'"):
        geometric_ensemble(dec, clip, seen, 0.4, 0.8, void="none")


def test_fcclip_void_handling_by_hand():
    """FC-CLIP's ensemble: the decoder's class probabilities without the void column, geometrically mixed with
    the readout's, renormalised over the classes and scaled by 1 - p_void; p_void is the decoder's own."""
    import math

    dec = [2.0, 0.0, 1.0, 0.5]  # 3 classes + background (void)
    clip = [0.0, 3.0, 1.0]
    weights = [0.25, 0.25, 0.75]  # seen, seen, unseen
    z = sum(math.exp(v) for v in dec)
    p_void = math.exp(dec[3]) / z
    zc = sum(math.exp(v) for v in dec[:3])
    zr = sum(math.exp(v) for v in clip)
    mixed = [(math.exp(dec[c]) / zc) ** (1 - weights[c]) * (math.exp(clip[c]) / zr) ** weights[c] for c in range(3)]
    probs = [m / sum(mixed) * (1 - p_void) for m in mixed] + [p_void]
    out = geometric_ensemble(torch.tensor([[dec]]), torch.tensor([[clip]]), torch.tensor([True, True, False]), 0.25,
                             0.75, void="fcclip")
    torch.testing.assert_close(out[0, 0].exp(), torch.tensor(probs), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.softmax(-1), out.exp(), rtol=0, atol=1e-6)  # already log-probabilities
    # weights 0: the decoder's own distribution in both modes
    zero = geometric_ensemble(torch.tensor([[dec]]), torch.tensor([[clip]]), torch.tensor([True, True, False]), 0, 0,
                              void="fcclip")
    torch.testing.assert_close(zero.softmax(-1), torch.tensor([[dec]]).softmax(-1), rtol=0, atol=1e-6)


def test_ensemble_margin_by_hand():
    from types import SimpleNamespace

    from alignzeg.train.evaluation.diagnostics import ensemble_margin

    dec = torch.tensor([[[2.0, 0.0, 1.0, 0.5], [0.0, 1.0, 3.0, 0.0]]])  # 2 proposals, 3 classes + background
    clip = torch.tensor([[[0.0, 3.0, 1.0], [1.0, 0.0, 2.0]]])
    seen = np.array([True, True, False])
    config = SimpleNamespace(readout_weight_seen=0.25, readout_weight_unseen=0.75, ensemble_void="joint")
    ens = geometric_ensemble(dec, clip, torch.from_numpy(seen), 0.25, 0.75)[0]
    expected = ens[:, 2] - ens[:, :2].amax(-1)  # best non-seen minus best seen log-score
    torch.testing.assert_close(ensemble_margin(SimpleNamespace(class_logits=dec, readout_logits=clip), seen, config),
                               expected, rtol=0, atol=1e-6)
    plain = F.log_softmax(dec[0], -1)
    torch.testing.assert_close(ensemble_margin(SimpleNamespace(class_logits=dec, readout_logits=None), seen, config),
                               plain[:, 2] - plain[:, :2].amax(-1), rtol=0, atol=1e-6)


def test_profile_features_by_hand():
    cos = torch.tensor([[0.9, 0.2, 0.5, 0.7]])
    seen = torch.tensor([True, False, True, False])
    readout = torch.tensor([[0.1, 0.3, 0.6, 0.2]])
    f = profile_features(cos, readout, seen)
    assert f.shape == (1, len(PROFILE_FEATURES))
    torch.testing.assert_close(f[0], torch.tensor([0.9, 0.7, -0.2, 0.6, 0.3, -0.3]), rtol=0, atol=1e-6)
    # no other name: -1 as its best cosine; no readout: zeros
    f = profile_features(cos, None, torch.ones(4, dtype=torch.bool))
    torch.testing.assert_close(f[0], torch.tensor([0.9, -1.0, -1.9, 0.0, 0.0, 0.0]), rtol=0, atol=1e-6)


def test_soft_pbc_mixes_plain_and_masked_softmax_by_the_score():
    logits = torch.tensor([[[1.0, 0.5, 0.2, 0.1], [0.3, 0.3, 0.9, 0.0]]])
    seen = torch.tensor([True, True, False])
    scores = torch.tensor([[0.25, 1.0]])
    out = proposal_bias_correction(logits, scores, seen, seen_score_offset=0.5, soft=True)
    shifted = logits - 0.5 * torch.tensor([1.0, 1.0, 0.0, 0.0])
    plain = shifted.softmax(-1)
    masked = shifted.masked_fill(torch.tensor([True, True, False, False]), -math.inf).softmax(-1)
    torch.testing.assert_close(out[0, 0], 0.75 * plain[0, 0] + 0.25 * masked[0, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[0, 1], masked[0, 1], rtol=0, atol=1e-6)
    # a score of 0 leaves the proposal alone, as an unflagged hard one
    hard = proposal_bias_correction(logits, torch.zeros(1, 2), seen, seen_score_offset=0.5)
    torch.testing.assert_close(proposal_bias_correction(logits, torch.zeros(1, 2), seen, 0.5, 0.5, soft=True), hard)


def test_readout_switch_leaves_the_network_outputs_and_off_weights_give_the_previous_probabilities(tiny):
    """The readout adds region tokens only: masks, class logits and embeddings are the same with it off,
    and ensemble weights (0, 0) give the probabilities of the model without the readout."""
    cfg = tiny.config
    assert cfg.clip_readout and cfg.indicator_inputs == "profile"
    off = AlignZegSegmenter.from_config(cfg.replace(clip_readout=False), seed=3)
    off.model.load_state_dict(tiny.model.state_dict())
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    vocab = tiny.encode_vocabulary(["red striped", "blue dotted", "cat"])
    seen = torch.tensor([True, False, True])
    with torch.no_grad():
        a = tiny.model(images, vocab, seen_mask=seen, deep_supervision=False)
        b = off.model(images, vocab, seen_mask=seen, deep_supervision=False)
    assert a.readout_logits.shape == (2, cfg.num_queries, 3) and b.readout_logits is None
    for name in ("mask_logits", "class_logits", "embeddings"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=1e-6)
    zero = cfg.replace(readout_weight_seen=0.0, readout_weight_unseen=0.0)
    torch.testing.assert_close(output_probabilities(a, seen, zero, False),
                               semantic_probabilities(b.class_logits, b.mask_logits, b.unseen_logits, seen, False),
                               rtol=0, atol=1e-6)


def test_profile_indicator_reads_the_vocabulary(tiny):
    """The same proposals get other unseen scores when other names are seen (zero weights: 0.5 everywhere)."""
    indicator = tiny.model.indicator
    assert indicator.inputs == "profile" and indicator.net[-1].weight.shape == (1, 6)
    with torch.no_grad():
        indicator.net[-1].weight.copy_(torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]]))  # decoder margin
    try:
        images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
        vocab = tiny.encode_vocabulary(["a", "b", "c"])
        with torch.no_grad():
            out_a = tiny.model(images, vocab, seen_mask=torch.tensor([True, False, False]), deep_supervision=False)
            cos = out_a.embeddings[0] @ vocab.t()
        margin = cos[:, 1:].amax(-1) - cos[:, 0]
        torch.testing.assert_close(out_a.unseen_logits[0], 10.0 * margin, rtol=0, atol=1e-5)
    finally:
        with torch.no_grad():
            indicator.net[-1].weight.zero_()


def test_readout_config_fields_are_checked_and_format_2_loads_with_them_off():
    base = AlignZegSegmenter.from_preset("tiny", seed=0).config
    with pytest.raises(ValueError, match="readout_weight_unseen must be in \\[0, 1\\], got 1.5"):
        base.replace(readout_weight_unseen=1.5)
    with pytest.raises(ValueError, match="clip_readout_layers must be None or in \\[1, 2\\]"):
        base.replace(clip_readout_layers=3)
    with pytest.raises(ValueError, match="indicator_inputs must be 'embedding' or 'profile', got 'mlp'"):
        base.replace(indicator_inputs="mlp")
    old = base.to_dict()
    for key in ("clip_readout", "clip_readout_layers", "readout_weight_seen", "readout_weight_unseen",
                "indicator_inputs", "pbc_soft"):
        del old[key]
    old["format_version"] = 2
    loaded = AlignZegConfig.from_dict(old)
    assert loaded.format_version == FORMAT_VERSION and loaded.clip_readout is False and loaded.indicator_inputs == "embedding"
    assert loaded.pbc_soft is False and (loaded.readout_weight_seen, loaded.readout_weight_unseen) == (0.0, 0.0)
