"""Issue 12, item 7 (the recipe as the peers train) and item 6's L_bc targets: parameter groups without
decay, VOC's augmented set from the CLI, warm-up / clipping / photometric / class cost in train_config.json,
the photometric distortion, the -p class cost, and the class indicator's positives."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from alignzeg import AlignZegSegmenter
from alignzeg.train import TrainConfig
from alignzeg.train.datasets import loaders as datasets_module
from alignzeg.train.training.train_cli import main as train_main
from alignzeg.train.training.config import apply_overrides
from alignzeg.train.datasets.augmentation import PhotoMetricDistortion
from alignzeg.train.datasets.loaders import build_dataset, voc_dataset
from alignzeg.train.training.gepc import off_prototype_features
from alignzeg.train.training.losses import AlignZegCriterion, indicator_batch
from alignzeg.train.training.matching import ImageTargets, class_cost_matrix, class_mask_costs
from alignzeg.train.training.optim import lr_multiplier, parameter_groups
from alignzeg.train.training.registry import get_recipe, list_recipes


# Parameter groups ------------------------------------------------------------------------------------
def test_parameter_groups_put_embeddings_norms_biases_prototypes_and_scale_at_zero_decay():
    model = AlignZegSegmenter.from_preset("tiny", seed=0, config_overrides={"side_encoder": True}).model
    groups = parameter_groups(model, model.trainable_parameters(), weight_decay=0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    decayed, free = set(groups[0]["names"]), set(groups[1]["names"])
    for name in ("backbone.prompts.tokens",  # the deep visual prompts (trained; CLIP itself is not)
                 "extractor.query_embed", "extractor.query_pos", "extractor.visual_pos", "classifier.bg_prototypes",
                 "classifier.log_logit_scale", "extractor.input_proj.1.weight",  # LayerNorm gain
                 "extractor.side.stages.0.1.weight",  # the learnable encoder's norm gain
                 "extractor.layers.0.q_cross.attn.in_proj_bias", "classifier.embed.1.bias"):
        assert name in free, name
    for name in ("extractor.input_proj.0.weight", "extractor.side.stages.0.0.weight",  # Linear and Conv kernels
                 "extractor.layers.0.q_cross.attn.in_proj_weight", "classifier.embed.1.weight",  # inside "embed"
                 "indicator.net.0.weight"):
        assert name in decayed, name
    # every trainable parameter is in exactly one group, and nothing of the frozen CLIP is
    names = [n for n, _ in model.named_parameters() if not n.startswith("backbone.clip.")]
    assert sorted(decayed | free) == sorted(names) and not decayed & free
    every = {id(p) for g in groups for p in g["params"]}
    assert every == {id(p) for p in model.trainable_parameters()}
    # the rule is the same for modules it has never seen: a new norm, embedding, prompt and linear layer
    extra = torch.nn.ModuleDict({"norm": torch.nn.BatchNorm2d(4), "table": torch.nn.Embedding(5, 4),
                                 "proj": torch.nn.Linear(4, 4)})
    extra.register_parameter("deep_prompts", torch.nn.Parameter(torch.zeros(2, 3, 4)))
    g = parameter_groups(extra, list(extra.parameters()), 0.01)
    assert g[0]["names"] == ["proj.weight"]
    assert sorted(g[1]["names"]) == ["deep_prompts", "norm.bias", "norm.weight", "proj.bias", "table.weight"]
    assert [x["weight_decay"] for x in parameter_groups(extra, list(extra.parameters()), 0.01, no_decay=False)] == [0.01]


def test_lr_multipliers_match_dotted_prefixes_longest_first():
    multipliers = {"extractor": 0.5, "extractor.side": 0.1}
    assert lr_multiplier("extractor.side.stages.0.0.weight", multipliers) == 0.1  # the longer prefix wins
    assert lr_multiplier("extractor.query_embed", multipliers) == 0.5
    assert lr_multiplier("extractor.sidecar.weight", {"extractor.side": 0.1}) == 1.0  # prefixes end at a dot
    assert lr_multiplier("extractor.side", {"extractor.side": 0.1}) == 0.1  # the name itself
    assert lr_multiplier("classifier.embed.1.weight", multipliers) == 1.0
    assert lr_multiplier("classifier.embed.1.weight", {}) == 1.0


def test_parameter_groups_split_by_lr_multiplier():
    model = AlignZegSegmenter.from_preset("tiny", seed=0, config_overrides={"side_encoder": True}).model
    params = model.trainable_parameters()
    plain = parameter_groups(model, params, 0.05)
    assert [(g["weight_decay"], g["lr_mult"]) for g in plain] == [(0.05, 1.0), (0.0, 1.0)]
    groups = parameter_groups(model, params, 0.05, lr_multipliers={"extractor.side": 0.1})
    assert [(g["weight_decay"], g["lr_mult"]) for g in groups] == [(0.05, 0.1), (0.05, 1.0), (0.0, 0.1), (0.0, 1.0)]
    side = {n for n, _ in model.named_parameters() if n.startswith("extractor.side.")}
    assert side and {n for g in groups if g["lr_mult"] == 0.1 for n in g["names"]} == side
    # the same parameters, the same decay, only split further
    for decay in (0.05, 0.0):
        assert sorted(n for g in groups if g["weight_decay"] == decay for n in g["names"]) == sorted(
            n for g in plain if g["weight_decay"] == decay for n in g["names"])
    with pytest.raises(ValueError, match=r"lr_multipliers prefixes \['extractor.sid'\] match no parameter to "
                                         r"optimise; prefixes are dotted parameter names such as 'extractor.side'"):
        parameter_groups(model, params, 0.05, lr_multipliers={"extractor.sid": 0.1})
    frozen = {"backbone.clip.visual.conv1": 0.1}  # CLIP is frozen: not among the parameters to optimise
    with pytest.raises(ValueError, match=r"prefixes \['backbone.clip.visual.conv1'\] match no parameter"):
        parameter_groups(model, params, 0.05, lr_multipliers=frozen)


def test_trainer_steps_each_group_at_its_multiple_of_the_lr():
    """AdamW's first step moves every parameter with a non-zero gradient by about lr (|m / sqrt(v)| = 1 at
    step 1, no decay): with a multiplier of 0.1 the learnable encoder moves ten times less."""
    from shapes_data import ShapesDataset

    from alignzeg.train import Trainer

    lr = 1e-2
    cfg = TrainConfig(preset="tiny", iterations=1, batch_size=2, lr=lr, schedule="constant", weight_decay=0.0,
                      progress=False, checkpoint_every=0, device="cpu", model_overrides={"side_encoder": True},
                      lr_multipliers={"extractor.side": 0.1})
    trainer = Trainer(cfg, None, ShapesDataset(num=4))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    moved = {n: float((after[n].detach() - before[n]).abs().max()) for n in before}
    side = [moved[n] for n in moved if n.startswith("extractor.side.")]
    rest = [moved[n] for n in moved if n.startswith("extractor.layers.")]
    assert max(side) == pytest.approx(0.1 * lr, rel=0.05) and max(rest) == pytest.approx(lr, rel=0.05)
    assert trainer.history[0]["lr"] == lr  # the schedule's lr, before the multipliers


def test_trainer_optimizer_uses_the_groups(tmp_path):
    from shapes_data import ShapesDataset

    from alignzeg.train import Trainer

    cfg = TrainConfig(preset="tiny", iterations=2, batch_size=2, weight_decay=0.1, progress=False, checkpoint_every=1,
                      device="cpu", class_indicator=True)
    assert TrainConfig().class_indicator is False  # off unless asked for (it measured no gain over the offset)
    trainer = Trainer(cfg, None, ShapesDataset(num=4), out_dir=tmp_path)
    trainer.train()
    state = torch.load(tmp_path / "checkpoints" / "step_000001" / "trainer_state.pt", weights_only=True)
    groups = state["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    expected = parameter_groups(trainer.model, trainer.model.trainable_parameters(), 0.1)
    assert [g["names"] for g in groups] == [g["names"] for g in expected]
    # the class indicator was trained (class_indicator and lambda_bc > 0): the saved config says so
    assert json.loads((tmp_path / "config.json").read_text())["indicator_trained"] is True
    assert AlignZegSegmenter.from_pretrained(tmp_path, device="cpu").config.indicator_trained is True
    for off in (dict(class_indicator=False), dict(lambda_bc=0.0)):
        assert Trainer(cfg.replace(**off), None, ShapesDataset(num=4)).model.config.indicator_trained is False
    # fine-tuning a model whose indicator was trained, without training it: the flag goes back to False
    seg = AlignZegSegmenter.from_pretrained(tmp_path, device="cpu")
    assert Trainer(cfg.replace(class_indicator=False), seg, ShapesDataset(num=4)).model.config.indicator_trained is False


# Recipes and the config ------------------------------------------------------------------------------
def test_recipes_carry_the_peers_settings():
    for name in list_recipes():
        cfg = get_recipe(name)
        assert (cfg.warmup_iters, cfg.grad_clip, cfg.photometric, cfg.class_cost, cfg.no_decay) == (
            1500, 0.01, True, "prob", True), name
        assert cfg.data == ({"label_dir": "auto"} if cfg.dataset == "voc" else {}), name
        tokens = {"voc": 10, "coco-stuff": 100, "context": 50}[cfg.dataset]
        assert cfg.model_overrides == {"num_queries": 100, "clip_prompt_tokens": tokens, "num_bg_prototypes": 1}, name
    assert TrainConfig().class_cost == "prob"
    with pytest.raises(ValueError, match="class_cost must be one of .*got 'nll'"):
        TrainConfig(class_cost="nll")
    with pytest.raises(ValueError, match=r"indicator_angle must be .*got \(40.0, 30.0\)"):
        TrainConfig(indicator_angle=(40, 30))
    assert TrainConfig(indicator_angle=(0, 0)).indicator_angle == (0.0, 0.0)  # plain mixes
    cfg = apply_overrides(TrainConfig(), ["data.label_dir=SegmentationClassAug", "data.images=img"])
    assert cfg.data == {"label_dir": "SegmentationClassAug", "images": "img"}
    with pytest.raises(ValueError, match="names no data key"):
        apply_overrides(TrainConfig(), ["data.=x"])


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _voc_aug_tree(root, layout="mmseg"):
    """VOC2012 with 2 train images (SegmentationClass), 3 SBD images (SegmentationClassAug) and 1 val image."""
    base = root / "VOC2012"
    label = np.repeat(np.array([0, 1, 16, 8, 255], np.uint8), 10)[None].repeat(40, 0)
    rng = np.random.default_rng(0)
    for stem in ("t0", "t1", "s0", "s1", "s2", "v0"):
        _save(base / "JPEGImages" / f"{stem}.jpg", rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    for stem in ("t0", "t1", "v0"):
        _save(base / "SegmentationClass" / f"{stem}.png", label, "L")
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("t0\nt1\n")
    (lists / "val.txt").write_text("v0\n")
    if layout == "mmseg":  # SegmentationClassAug holds the SBD images only; aug.txt = SBD - train - val
        for stem in ("s0", "s1", "s2"):
            _save(base / "SegmentationClassAug" / f"{stem}.png", label, "L")
        (lists / "aug.txt").write_text("s0\ns1\ns2\n")
    else:  # DeepLab: every label in SegmentationClassAug, one 10,582-style list
        for stem in ("t0", "t1", "s0", "s1", "s2"):
            _save(base / "SegmentationClassAug" / f"{stem}.png", label, "L")
        (lists / "train_aug.txt").write_text("t0\nt1\ns0\ns1\ns2\n")
    return root


def test_voc_augmented_set_is_read_from_the_cli(tmp_path, monkeypatch):
    root = _voc_aug_tree(tmp_path / "VOCdevkit")
    built = []
    original = datasets_module.build_dataset

    def spy(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(datasets_module, "build_dataset", spy)
    out = tmp_path / "run"
    sets = ['preset="tiny"', "clip_pretrained=null", "iterations=2", "batch_size=2", "warmup_iters=1",
            "model_overrides.num_queries=8", "progress=false", 'device="cpu"', "checkpoint_every=0",
            "data.label_dir=SegmentationClassAug"]
    assert train_main(["--recipe", "voc-vitb16", "--data-root", str(root), "--out", str(out)]
                      + [a for s in sets for a in ("--set", s)]) == 0
    (dataset,) = built
    assert len(dataset) == 5
    assert [p.parent.name for p in dataset.labels] == ["SegmentationClass"] * 2 + ["SegmentationClassAug"] * 3
    assert [p.stem for p in dataset.images] == ["t0", "t1", "s0", "s1", "s2"]
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["data"] == {"label_dir": "SegmentationClassAug"}
    # the recipe's own settings reach train_config.json
    assert (saved["warmup_iters"], saved["grad_clip"], saved["photometric"], saved["class_cost"], saved["no_decay"]) == (
        1, 0.01, True, "prob", True)
    assert AlignZegSegmenter.from_pretrained(out, device="cpu").config.seen_classes[:2] == ("aeroplane", "bicycle")


def test_voc_augmented_layouts_auto_and_errors(tmp_path, caplog):
    deeplab = _voc_aug_tree(tmp_path / "d", layout="deeplab")
    ds = voc_dataset(deeplab, "train", label_dir="auto")
    assert len(ds) == 5 and {p.parent.name for p in ds.labels} == {"SegmentationClassAug"}
    assert ds[2]["label"][0, ::10].tolist() == [255, 0, 255, 7, 255]  # raw 16 (pottedplant) is unseen: dropped
    assert len(voc_dataset(deeplab, "val", label_dir="auto")) == 1  # evaluation splits keep SegmentationClass
    with open(deeplab / "VOC2012" / "ImageSets" / "Segmentation" / "train_aug.txt", "a") as f:
        f.write("v0\n")
    (deeplab / "VOC2012" / "SegmentationClassAug" / "v0.png").write_bytes(
        (deeplab / "VOC2012" / "SegmentationClass" / "v0.png").read_bytes())
    with pytest.raises(ValueError, match=r"1 ids of the augmented training list are in val.txt .*'v0'"):
        voc_dataset(deeplab, "train", label_dir="SegmentationClassAug")
    plain = _voc_aug_tree(tmp_path / "p")
    (plain / "VOC2012" / "ImageSets" / "Segmentation" / "aug.txt").unlink()
    with pytest.raises(FileNotFoundError, match="no list of VOC's augmented training set"):
        build_dataset("voc", plain, label_dir="SegmentationClassAug")
    import shutil

    shutil.rmtree(plain / "VOC2012" / "SegmentationClassAug")
    with caplog.at_level("WARNING", logger="alignzeg.train.datasets.loaders"):
        assert len(build_dataset("voc", plain, label_dir="auto")) == 2
    assert "not the 10,582-image augmented set" in caplog.text
    with pytest.raises(ValueError, match=r"dataset 'voc' takes no option \['lable_dir'\]; its options are \['label_dir'\]"):
        build_dataset("voc", plain, lable_dir="x")


# Photometric distortion ------------------------------------------------------------------------------
def test_photometric_distortion_is_seeded_and_keeps_the_range():
    image = torch.rand(3, 24, 32, generator=torch.Generator().manual_seed(0))
    distort = PhotoMetricDistortion()
    outs = [distort(image, torch.Generator().manual_seed(s)) for s in range(8)]
    again = [distort(image, torch.Generator().manual_seed(s)) for s in range(8)]
    assert all(torch.equal(a, b) for a, b in zip(outs, again))  # same seed, same code path: identical
    assert all(o.shape == image.shape and o.dtype == torch.float32 for o in outs)
    assert all(0.0 <= float(o.min()) and float(o.max()) <= 1.0 for o in outs)
    changed = [float((o - image).abs().mean()) for o in outs]
    assert sum(c > 1e-3 for c in changed) >= 5 and len({round(c, 6) for c in changed}) >= 5
    # brightness alone (the other steps' ranges collapsed to the identity): + delta / 255, clipped
    bright = PhotoMetricDistortion(contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=0)
    for s in range(8):
        gen = torch.Generator().manual_seed(s)
        coin, value = torch.rand(2, generator=gen).tolist()
        expected = (image + (-32 + 64 * value) / 255).clamp(0, 1) if coin < 0.5 else image
        torch.testing.assert_close(bright(image, torch.Generator().manual_seed(s)), expected, rtol=0, atol=1e-6)


def test_photometric_training_resumes_exactly(tmp_path):
    from shapes_data import ShapesDataset

    from alignzeg.train import Trainer

    cfg = TrainConfig(preset="tiny", iterations=4, batch_size=2, progress=False, checkpoint_every=2, device="cpu",
                      photometric=True)
    full = Trainer(cfg, None, ShapesDataset(num=4), out_dir=tmp_path / "full")
    full.train()
    resumed = Trainer(cfg, None, ShapesDataset(num=4), out_dir=tmp_path / "r",
                      resume=tmp_path / "full" / "checkpoints" / "step_000002")
    resumed.train()
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history[2:]]
    plain = Trainer(cfg.replace(photometric=False), None, ShapesDataset(num=4))
    plain.train()
    assert plain.history[0]["loss"] != full.history[0]["loss"]  # the distortion reaches the batches


# Matching class cost ---------------------------------------------------------------------------------
def test_class_cost_prob_by_hand():
    class_logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, math.log(2.0)]])
    e = math.e
    p0 = [e * e / (e * e + 2), 1 / (e * e + 2), 1 / (e * e + 2)]
    p1 = [1 / (1 + e + 2), e / (1 + e + 2), 2 / (1 + e + 2)]
    torch.testing.assert_close(class_cost_matrix(class_logits, "prob"), -torch.tensor([p0, p1]))
    torch.testing.assert_close(class_cost_matrix(class_logits, "logprob"), -torch.tensor([p0, p1]).log())
    # in the full cost: weight 2 * (-p) plus the mask terms (zero-weight cells: BCE 0, dice 1 - 1/1 = 0)
    target = ImageTargets(classes=torch.tensor([1]), masks=torch.zeros(1, 4), weight=torch.zeros(4))
    cost = class_mask_costs(class_logits, torch.zeros(2, 4), target, 2.0, 5.0, 5.0, class_cost="prob")
    torch.testing.assert_close(cost, torch.tensor([[-2 * p0[1]], [-2 * p1[1]]]))
    with pytest.raises(ValueError, match="class cost must be one of .*got 'nll'"):
        class_cost_matrix(class_logits, "nll")


# The class indicator's targets -----------------------------------------------------------------------
def test_off_prototype_features_shrink_the_cosine_to_both_prototypes():
    gen = torch.Generator().manual_seed(0)
    protos = F.normalize(torch.randn(3, 16, generator=gen), dim=-1)
    emb = F.normalize(protos[[0, 1, 2, 0]] + 0.3 * torch.randn(4, 16, generator=gen), dim=-1)
    classes = torch.tensor([0, 1, 2, 0])
    pairs = torch.tensor([[0, 1], [1, 2], [3, 2]])
    lam = torch.tensor([0.5, 0.3, 0.8])
    theta = torch.deg2rad(torch.tensor([30.0, 45.0, 60.0]))
    z = off_prototype_features(emb, classes, protos, pairs, lam, theta, noise=torch.randn(3, 16, generator=gen))
    u = F.normalize(lam[:, None] * emb[pairs[:, 0]] + (1 - lam[:, None]) * emb[pairs[:, 1]], dim=-1)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close((z * u).sum(-1), torch.cos(theta))  # rotated by exactly theta off the mix
    plain = off_prototype_features(emb, classes, protos, pairs, lam, torch.zeros(3), noise=torch.randn(3, 16))
    torch.testing.assert_close(plain, u)  # angle 0: the mix itself
    for side in (0, 1):
        t = protos[classes[pairs[:, side]]]
        torch.testing.assert_close((z * t).sum(-1), torch.cos(theta) * (u * t).sum(-1), rtol=1e-5, atol=1e-6)
    # a direction with nothing outside span{u, t_a, t_b} (here: u itself) falls back to a random one
    torch.manual_seed(1)  # (seed 0 would redraw the prototypes' own numbers, which lie in the span)
    z = off_prototype_features(emb, classes, protos, pairs, lam, theta, noise=u.clone())
    torch.testing.assert_close((z * u).sum(-1), torch.cos(theta))
    t = protos[classes[pairs[:, 0]]]
    torch.testing.assert_close((z * t).sum(-1), torch.cos(theta) * (u * t).sum(-1), rtol=1e-5, atol=1e-6)


def test_indicator_positives_exclude_background_unmatched_and_negative_proposals():
    torch.manual_seed(0)
    model = AlignZegSegmenter.from_preset("tiny", seed=0, config_overrides={"indicator_inputs": "embedding"}).model
    cfg = TrainConfig(num_synthetic=6, negative_topk=6, class_indicator=True)  # two top-6 of 8 overlap: negatives
    criterion = AlignZegCriterion(cfg)
    labels = torch.full((1, 64, 64), 255, dtype=torch.long)
    labels[0, :32] = 0
    labels[0, 32:] = 1
    class_embeddings = F.normalize(torch.randn(2, 64), dim=-1)
    out = model(torch.rand(1, 3, 64, 64), class_embeddings, deep_supervision=False)
    seen_inputs = []
    original = model.indicator.forward
    model.indicator.forward = lambda x: (seen_inputs.append(x), original(x))[1]
    total, terms = criterion(model, out, labels, class_embeddings)
    assert "bc" in terms and len(seen_inputs) == 1
    (inputs,) = seen_inputs
    from alignzeg.train.training.matching import build_targets

    match = criterion.match(out.class_logits, out.mask_logits, build_targets(labels, tuple(out.mask_logits.shape[-2:])))
    src = match.indices[0][0]
    assert inputs.shape[0] == src.numel() + 6  # the matched proposals, then 6 synthetic positives
    torch.testing.assert_close(inputs[:src.numel()], out.embeddings[0, src].detach())
    others = out.embeddings[0, [n for n in range(out.embeddings.shape[1]) if n not in set(src.tolist())]].detach()
    ranking = criterion.ranking_costs(out.class_logits, out.mask_logits,
                                      build_targets(labels, tuple(out.mask_logits.shape[-2:])), match)
    assert criterion.negatives(match, out.embeddings.shape[1], ranking).any()  # there are negatives to keep out
    # no positive is an unmatched (background or negative) proposal, nor close to one
    assert float((inputs[src.numel():] @ others.t()).max()) < 0.999
    x, y = indicator_batch(out.embeddings[0, src], inputs[src.numel():])
    assert y.tolist() == [0.0] * src.numel() + [1.0] * 6 and not x.requires_grad
