"""Issue 12's architecture parts on the tiny preset: deep prompts, the fused learnable encoder, CLIP-grounded
classification, the soft background maximum, and the indicator_trained guard of PBC."""

import re
import warnings

import pytest
import torch
import torch.nn.functional as F

from alignzeg import AlignZegSegmenter
from alignzeg.config import side_fusion_upsample
from alignzeg.checkpoint import CLIP_PREFIX, clip_fingerprint
from alignzeg.modeling.clip_backbone import run_blocks
from alignzeg.modeling.gepc import mask_pooled_features, soft_max
from alignzeg.presets import get_preset_config

VOCAB = ["person", "chair", "sofa"]  # person, chair seen; sofa unseen


def _clip_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(CLIP_PREFIX)}


def test_prompts_change_dense_features_while_clip_stays_identical():
    with_prompts = AlignZegSegmenter.from_preset("tiny", seed=0).model
    bare = AlignZegSegmenter.from_preset("tiny", seed=0, config_overrides={"clip_prompt_tokens": 0}).model
    assert with_prompts.backbone.prompts.tokens.shape == (2, 4, 64)  # (layers, tokens, width)
    assert bare.backbone.prompts is None
    before = _clip_state(with_prompts)
    assert before.keys() == _clip_state(bare).keys()
    for name, tensor in _clip_state(bare).items():
        assert torch.equal(before[name], tensor), name  # same seed, same CLIP: prompts are built after it
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        prompted = with_prompts.backbone.encode_image_dense(with_prompts.normalize(images)).patches
        plain = bare.backbone.encode_image_dense(bare.normalize(images)).patches
    assert prompted.shape == plain.shape == (2, 64, 8, 8)
    assert (prompted - plain).abs().max() > 1e-2

    # One optimiser step on every trainable parameter: the prompts move, CLIP's tensors do not.
    fingerprint = clip_fingerprint(with_prompts.state_dict())
    prompts_before = with_prompts.backbone.prompts.tokens.detach().clone()
    opt = torch.optim.AdamW(with_prompts.trainable_parameters(), lr=1e-2, weight_decay=0.1)
    with_prompts.train()
    with_prompts.backbone.encode_image_dense(with_prompts.normalize(images)).patches.square().mean().backward()
    opt.step()
    assert not torch.equal(with_prompts.backbone.prompts.tokens, prompts_before)
    for name, tensor in _clip_state(with_prompts).items():
        assert torch.equal(before[name], tensor), name
    assert clip_fingerprint(with_prompts.state_dict()) == fingerprint


def test_trainable_parameters_are_everything_but_clip():
    model = AlignZegSegmenter.from_preset("tiny", seed=0).model
    trainable = {id(p) for p in model.trainable_parameters()}
    names = {n for n, p in model.named_parameters() if id(p) in trainable}
    assert "backbone.prompts.tokens" in names
    assert names == {n for n, _ in model.named_parameters() if not n.startswith(CLIP_PREFIX)}
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith(CLIP_PREFIX))


def test_prompted_blocks_equal_a_hand_written_loop():
    """Prompts in layer 0 only (clip_prompt_depth=1): cat, block, drop; then the plain block."""
    model = AlignZegSegmenter.from_preset("tiny", seed=0, config_overrides={"clip_prompt_depth": 1}).model
    visual = model.backbone.clip.visual
    blocks = visual.transformer.resblocks
    x = torch.randn(2, 65, 64, generator=torch.Generator().manual_seed(3))
    prompts = model.backbone.prompts.tokens
    assert prompts.shape == (1, 4, 64)
    with torch.no_grad():
        got = run_blocks(blocks, x, visual.transformer.batch_first, prompts)
        first = torch.cat([x, prompts[0].expand(2, -1, -1)], dim=1)
        if not visual.transformer.batch_first:
            ref = blocks[0](first.transpose(0, 1)).transpose(0, 1)[:, :65]
            ref = blocks[1](ref.transpose(0, 1)).transpose(0, 1)
        else:
            ref = blocks[1](blocks[0](first)[:, :65])
        plain = visual.transformer(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert (got - plain).abs().max() > 1e-3  # the layer-0 prompts reach the output through attention


def test_mask_pooling_equals_a_hand_written_loop():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 5, 3, 4, generator=g)  # (B, E, h, w)
    mask_logits = torch.randn(2, 3, 6, 8, generator=g) * 3  # (B, N, 2h, 2w)
    got = mask_pooled_features(features, mask_logits)
    ref = torch.zeros(2, 3, 5)
    for b in range(2):
        for n in range(3):
            num, den = torch.zeros(5), 0.0
            for y in range(3):
                for x in range(4):
                    w = mask_logits[b, n, 2 * y:2 * y + 2, 2 * x:2 * x + 2].sigmoid().mean()  # area average
                    num += w * features[b, :, y, x]
                    den += w
            ref[b, n] = num / den
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_grounded_embedding_is_the_gated_blend():
    model = AlignZegSegmenter.from_preset("tiny", seed=0).model
    clf = model.classifier
    g = torch.Generator().manual_seed(1)
    queries = torch.randn(1, 3, 32, generator=g)
    patches = torch.randn(1, 64, 8, 8, generator=g)
    masks = torch.randn(1, 3, 16, 16, generator=g)
    with torch.no_grad():
        weight = clf.gate[1].weight  # a non-trivial gate, drawn from the test's own generator (no global RNG)
        weight.copy_(0.1 * torch.randn(weight.shape, generator=g))
        got = clf.proposal_embeddings(queries, patches, masks)
        gate = torch.sigmoid(clf.gate(queries))
        q = F.normalize(clf.embed(queries), dim=-1)
        pooled = F.normalize(mask_pooled_features(patches, masks), dim=-1)
        ref = F.normalize((1 - gate) * q + gate * pooled, dim=-1)
    assert 0.05 < gate.min() and gate.max() < 0.95 and gate.std() > 0.01
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="clip_grounding needs the CLIP patch features"):
        clf.proposal_embeddings(queries)
    off = AlignZegSegmenter.from_preset("tiny", seed=0, config_overrides={"clip_grounding": False}).model
    assert off.classifier.gate is None
    torch.testing.assert_close(off.classifier.proposal_embeddings(queries),
                               F.normalize(off.classifier.embed(queries), dim=-1))


@pytest.mark.parametrize("temperature", [0.1, 0.0])
def test_background_soft_max_gradient(temperature):
    sims = torch.tensor([0.30, 0.25, -0.40, 0.10], requires_grad=True)
    out = soft_max(sims, temperature)
    out.backward()
    if temperature == 0:
        assert out.item() == pytest.approx(0.30)
        assert sims.grad.tolist() == [1.0, 0.0, 0.0, 0.0]
    else:
        weights = torch.softmax(sims.detach() / temperature, dim=0)  # d/ds t*logsumexp(s/t) = softmax(s/t)
        assert out.item() == pytest.approx(temperature * torch.logsumexp(sims.detach() / temperature, 0).item())
        torch.testing.assert_close(sims.grad, weights)
        assert (sims.grad > 0).all()


def test_every_background_prototype_gets_gradient_through_the_classifier():
    for temperature, expect_all in ((0.1, True), (0.0, False)):
        model = AlignZegSegmenter.from_preset("tiny", seed=0, config_overrides={"bg_temperature": temperature}).model
        emb = F.normalize(torch.randn(1, 64, generator=torch.Generator().manual_seed(2)), dim=-1)
        classes = F.normalize(torch.randn(2, 64, generator=torch.Generator().manual_seed(3)), dim=-1)
        model.classifier.classify(emb, classes)[0, -1].backward()
        nonzero = (model.classifier.bg_prototypes.grad.abs().sum(dim=1) > 0).sum().item()
        assert nonzero == (3 if expect_all else 1), temperature


def test_side_encoder_reaches_the_masks_at_the_fusion_stride():
    cfg = get_preset_config("tiny")
    assert (cfg.side_encoder, cfg.side_fusion_stride, cfg.mask_stride) == (True, 4, 4)
    model = AlignZegSegmenter.from_preset("tiny", seed=0).model
    assert set(model.extractor.pixel_decoder.laterals) == {"4"}
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    classes = F.normalize(torch.randn(2, 64, generator=torch.Generator().manual_seed(1)), dim=-1)
    model.eval()
    with torch.no_grad():
        before = model(images, classes).mask_logits
        torch.nn.init.normal_(model.extractor.pixel_decoder.laterals["4"].weight)
        after = model(images, classes).mask_logits
    assert before.shape == (1, 8, 16, 16)  # 64 px / stride 4
    assert (before - after).abs().max() > 1e-3
    coarse = AlignZegSegmenter.from_preset("tiny", seed=0, config_overrides={
        "side_fusion_stride": 8, "mask_upsample": 1}).model
    assert len(coarse.extractor.pixel_decoder.laterals) == 0 and coarse.config.mask_stride == 8
    assert side_fusion_upsample(16, 8) == 2 and side_fusion_upsample(16, 4) == 4
    assert side_fusion_upsample(14, 8) == 2 and side_fusion_upsample(8, 8) == 1
    with pytest.raises(ValueError, match=re.escape("with side_encoder=True the masks are at side_fusion_stride 8: "
                                                   "mask_upsample must be 1 for patch size 8, got 2")):
        get_preset_config("tiny", side_fusion_stride=8)
    with pytest.raises(ValueError, match="side_fusion_stride must be 8 or 4, got 16"):
        get_preset_config("tiny", side_fusion_stride=16)
    assert get_preset_config("tiny", side_encoder=False, side_fusion_stride=8).mask_stride == 4


@pytest.mark.parametrize("field, value, error, message", [
    ("clip_prompt_tokens", -1, ValueError, "clip_prompt_tokens must be a non-negative integer, got -1"),
    ("clip_prompt_depth", 0, ValueError, "clip_prompt_depth must be a positive integer or None, got 0"),
    ("clip_prompt_depth", 3, ValueError, "clip_prompt_depth 3 exceeds the 2 layers of the CLIP image encoder"),
    ("bg_temperature", -0.1, ValueError, "bg_temperature must be a finite number >= 0 (0: hard max), got -0.1"),
    ("seen_score_offset", float("nan"), TypeError, "seen_score_offset must be a finite number, got float nan"),
    ("indicator_trained", 1, TypeError, "indicator_trained must be true or false, got int 1"),
])
def test_new_config_fields_are_validated(field, value, error, message):
    with pytest.raises(error, match=re.escape(message)):
        get_preset_config("tiny", **{field: value})


def test_presets_turn_every_part_on():
    for name, tokens in (("tiny", 4), ("vitb16", 10), ("vitl14", 10)):
        cfg = get_preset_config(name)
        assert (cfg.clip_prompt_tokens, cfg.clip_prompt_depth, cfg.side_encoder, cfg.clip_grounding) == \
            (tokens, None, True, True)
        assert cfg.bg_temperature > 0 and cfg.seen_score_offset == 0 and cfg.indicator_trained is False


# PBC and the class indicator's training --------------------------------------------------------------
@pytest.fixture(scope="module")
def flagging():
    """Tiny segmenters whose indicator flags every proposal: one untrained (config), one marked trained."""
    made = {}
    for trained in (False, True):
        seg = AlignZegSegmenter.from_preset("tiny", seen_classes=["person", "chair"], seed=1,
                                            config_overrides={"indicator_trained": trained})
        torch.nn.init.zeros_(seg.model.indicator.net[-1].weight)
        torch.nn.init.constant_(seg.model.indicator.net[-1].bias, 10.0)
        made[trained] = seg
    return made


@pytest.mark.slow
def test_untrained_indicator_turns_default_pbc_off_with_one_warning(flagging, voc):
    seg = flagging[False]
    with pytest.warns(UserWarning, match=r"class indicator was never trained .*PBC\) is off") as caught:
        auto = seg.segment(voc["rgb"], VOCAB)
    assert len([w for w in caught if issubclass(w.category, UserWarning)]) == 1
    off = seg.segment(voc["rgb"], VOCAB, bias_correction=False)
    assert auto.bias_correction is False
    assert (auto.label_map == off.label_map).all() and (auto.class_probs == off.class_probs).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seg.segment(voc["rgb"], ["sofa", "tvmonitor"])  # no seen class: PBC is the identity, no warning
        seg.segment_batch([voc["rgb"]], VOCAB, bias_correction=False)


def test_the_seen_score_offset_runs_without_a_trained_indicator(flagging, voc):
    """ZegCLIP's offset needs no class indicator: on a model whose indicator was never trained it is the whole
    bias correction (auto turns it on, no warning), and the indicator's flags are never used."""
    seg = flagging[False]  # its untrained indicator would flag every proposal
    before = seg.model.config
    seg.model.config = before.replace(seen_score_offset=2.0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            auto = seg.segment(voc["rgb"], VOCAB)
        plain = seg.segment(voc["rgb"], VOCAB, bias_correction=False)
    finally:
        seg.model.config = before
    assert auto.bias_correction is True and plain.bias_correction is False
    seen = [VOCAB.index(n) for n in ("person", "chair")]
    assert auto.class_probs[seen].sum() < plain.class_probs[seen].sum()  # seen classes lowered...
    assert auto.class_probs[seen].sum() > 0.01 * plain.class_probs[seen].sum()  # ...not masked by flags


def test_explicit_pbc_on_untrained_indicator_is_an_error(flagging, voc):
    with pytest.raises(ValueError, match=r"bias_correction=True needs a trained class indicator or a seen-score "
                                         r"offset: .*config.indicator_trained is False"):
        flagging[False].segment(voc["rgb"], VOCAB, bias_correction=True)
    with pytest.raises(TypeError, match="bias_correction must be True, False, None or 'auto', got str 'yes'"):
        flagging[False].segment(voc["rgb"], VOCAB, bias_correction="yes")


def test_trained_indicator_gets_pbc_by_default(flagging, voc):
    seg = flagging[True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auto = seg.segment(voc["rgb"], VOCAB)
    explicit = seg.segment(voc["rgb"], VOCAB, bias_correction=True)
    assert auto.bias_correction is True and set(auto.label_map.flatten().tolist()) == {2}  # only the unseen sofa
    assert (auto.class_probs == explicit.class_probs).all()


def test_patch_14_grid_fuses_resized_encoder_stages():
    """ViT-L/14's case at small scale: the encoder's stride-16 and stride-8 stages do not fall on the 14-px
    grid; they are resized to the token grid and the stride-7 mask grid."""
    tiny = get_preset_config("tiny")
    vision = dict(tiny.clip_cfg["vision_cfg"], patch_size=14, image_size=56)
    cfg = tiny.replace(clip_cfg=dict(tiny.clip_cfg, vision_cfg=vision), input_size=56, window_stride=42,
                       side_fusion_stride=8, mask_upsample=2)
    assert cfg.mask_stride == 7
    seg = AlignZegSegmenter.from_config(cfg, seed=0)
    assert set(seg.model.extractor.pixel_decoder.laterals) == {"8"}
    classes = F.normalize(torch.randn(2, 64, generator=torch.Generator().manual_seed(1)), dim=-1)
    with torch.no_grad():
        out = seg.model.eval()(torch.rand(2, 3, 56, 56), classes)
    assert out.mask_logits.shape == (2, 8, 8, 8) and out.class_logits.shape == (2, 8, 3)
    assert torch.isfinite(out.mask_logits).all() and torch.isfinite(out.class_logits).all()


# Code layers (docs/architecture.md, "Code layers") --------------------------------------------------------
import ast  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "alignzeg"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Every alignzeg module each module imports (top level, in functions, under TYPE_CHECKING)."""
    edges = {}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != mod and not (modules[target].name == "__init__.py"
                                                     and mod.startswith(target + ".")):
                    found.add(target)
        edges[mod] = found
    return edges


def _layers() -> list[tuple[str, list[str]]]:
    """(layer name, module patterns) from the table in docs/architecture.md, in order."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Code layers", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+)\. ([\w-]+) \| (.+?) \|", section, flags=re.M)
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 5
    return [(name, re.findall(r"`([\w.*]+)`", cell)) for _, name, cell in rows]


def _layer_of(module: str, layers: list[tuple[str, list[str]]]) -> int:
    hits = [i for i, (_, patterns) in enumerate(layers) for p in patterns
            if module == p or (p.endswith(".*") and module.startswith(p[:-1]))]
    assert len(hits) == 1, f"{module} is in {len(hits)} layers of docs/architecture.md (must be in one)"
    return hits[0]


def test_each_layer_imports_only_its_own_and_lower_layers():
    modules = _modules()
    layers = _layers()
    level = {m: _layer_of(m, layers) for m in modules}
    upward = [f"{m} (layer {level[m] + 1}) imports {t} (layer {level[t] + 1})"
              for m, targets in _imports(modules).items() for t in targets if level[t] > level[m]]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(upward))


def _circles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of two or more modules (iterative Tarjan)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root), on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child), on.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    top = stack.pop()
                    on.discard(top)
                    comp.add(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


KNOWN_CIRCLES: list[set[str]] = []
"""Import circles tolerated for now: none (the last one, calibrate <-> evaluate, went with the eval CLI's move)."""


def test_no_import_circles():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]  # the finder works
    found = [c for c in _circles(_imports(_modules())) if c not in KNOWN_CIRCLES]
    assert not found, f"import circles: {found}"


def test_core_and_pipeline_layers_import_no_torch():
    """Layers 1-2 are what the ONNX runtime runs on: numpy and PIL, never torch or open_clip at import time
    (a function may try an optional import, as config's check of open_clip's fields does)."""
    modules = _modules()
    layers = _layers()
    heavy = []
    for mod, path in modules.items():
        if _layer_of(mod, layers) > 1:
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            heavy += [f"{mod}: {n}" for n in names if n.split(".")[0] in ("torch", "open_clip", "onnxruntime")]
    assert not heavy, heavy


def test_refinement_gates_start_mrpe_as_the_one_way_decoder():
    """With zero-initialised gates, MRPE's queries read CLIP's tokens alone: they equal a one-way decoder's
    with the same weights; once a gate opens they differ (the learnable encoder and the refinement count)."""
    gated = AlignZegSegmenter.from_preset("tiny", seed=0, config_overrides={"refinement_gates": True}).model.extractor
    one_way = AlignZegSegmenter.from_preset("tiny", seed=1, config_overrides={
        "mutual_refinement": False, "side_encoder": False}).model.extractor
    assert gated.side_gate.shape == (32,) and all(layer.v_gate.shape == (32,) for layer in gated.layers)
    assert not gated.side_gate.any() and not gated.layers[0].v_gate.any()
    missing = one_way.load_state_dict(gated.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("pixel_decoder.") for k in missing)  # masks only: queries share every weight
    patches = torch.randn(2, 64, 8, 8, generator=torch.Generator().manual_seed(0))
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        same = gated(patches, images).queries[-1]
        torch.testing.assert_close(same, one_way(patches).queries[-1], rtol=1e-5, atol=1e-5)
        gated.side_gate.fill_(1.0)
        assert (gated(patches, images).queries[-1] - same).abs().max() > 1e-3
        gated.side_gate.zero_()
        gated.layers[0].v_gate.fill_(1.0)
        assert (gated(patches, images).queries[-1] - same).abs().max() > 1e-3


def test_refinement_gates_are_off_in_older_checkpoints():
    from alignzeg.config import AlignZegConfig

    data = get_preset_config("tiny").to_dict()
    for version in (2, 3, 4):
        old = {k: v for k, v in data.items() if k != "refinement_gates"} | {"format_version": version}
        if version == 2:
            old = {k: v for k, v in old.items() if k not in ("clip_readout", "clip_readout_layers", "readout_weight_seen",
                   "readout_weight_unseen", "indicator_inputs", "pbc_soft")}
        if version <= 3:
            old = {k: v for k, v in old.items() if k not in ("ensemble_void", "calibration_protocol",
                                                               "calibration_classes")}
        loaded = AlignZegConfig.from_dict(old)
        assert loaded.refinement_gates is False and loaded.format_version == 5


def test_a_calibrated_model_without_indicator_or_offset_does_not_warn():
    """A calibration that chose a seen-score offset of 0 found nothing to correct: no warning; never
    calibrated, the same model warns once and names the calibration."""
    from alignzeg.pipeline.options import resolve_bias_correction, untrained_warning_due

    mixed = [True, False]
    assert untrained_warning_due(None, False, mixed) and not untrained_warning_due(None, False, mixed, calibrated=True)
    assert not untrained_warning_due(None, False, [True, True])  # nothing unseen: the correction is the identity
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_bias_correction(None, False, mixed, calibrated=True) is False
        assert resolve_bias_correction("auto", False, mixed, seen_score_offset=0.5) is True
    with pytest.warns(UserWarning, match=r"offset was never calibrated \(config.calibration_protocol is 'none'\)"):
        assert resolve_bias_correction(None, False, mixed) is False
    with pytest.raises(ValueError, match="bias_correction=True needs a trained class indicator or a seen-score offset"):
        resolve_bias_correction(True, False, mixed, calibrated=True)


def test_sdpa_blocks_equal_open_clips_blocks():
    """On CPU at inference the CLIP blocks run through ``block_forward`` (torch's MHA fast path was the slower
    way there); it is the block's own arithmetic: equal to open_clip's forward to float rounding, on the
    tiny preset's CLIP (not batch-first) with prompts and kept block inputs."""
    from alignzeg.modeling.clip_backbone import _plain_block, block_forward, uses_sdpa_blocks

    seg = AlignZegSegmenter.from_preset("tiny", seed=0)
    transformer = seg.model.backbone.clip.visual.transformer
    blocks = transformer.resblocks
    assert all(_plain_block(b) for b in blocks)
    torch.manual_seed(0)
    x = torch.randn(2, 17, transformer.width)
    prompts = torch.randn(2, 3, transformer.width)
    with torch.no_grad():
        assert uses_sdpa_blocks(x)
        keep_fast, keep_own = [], []
        fast = run_blocks(blocks, x, transformer.batch_first, prompts, keep_fast, 1)
        with torch.enable_grad():  # the blocks' own forward (uses_sdpa_blocks is False with grad on)
            assert not uses_sdpa_blocks(x)
            own = run_blocks(blocks, x, transformer.batch_first, prompts, keep_own, 1)
        torch.testing.assert_close(fast, own.detach(), rtol=1e-5, atol=1e-5)
        assert len(keep_fast) == len(keep_own) == len(blocks) - 1
        block = blocks[0]
        want = block(x) if transformer.batch_first else block(x.transpose(0, 1)).transpose(0, 1)
        torch.testing.assert_close(block_forward(block, x), want, rtol=1e-5, atol=1e-5)
    assert not _plain_block(torch.nn.Linear(4, 4))
