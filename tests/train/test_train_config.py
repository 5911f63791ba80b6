"""TrainConfig checked once (types from the annotations, as AlignZegConfig), its model config built when it is
made, and the one registry of recipes and variants."""

import json

import pytest
import torch

from alignzeg import AlignZegSegmenter
from alignzeg.config import AlignZegConfig
from alignzeg.train.training.train_cli import main as train_main
from alignzeg.train.training.train_cli import resolve_config
from alignzeg.train.training.config import TrainConfig, apply_overrides
from alignzeg.train.training.registry import apply_variant, get_recipe, lookup, names
from alignzeg.train.training.trainer import Trainer, untrained_model
from alignzeg.train.training.world_recipe import world_train_config
from alignzeg.worlds.export import WorldDataset
from alignzeg.worlds.attributes import AttributeWorld, world_config

WORLD_CLIP = "alignzeg:demo/assets/clip.safetensors"


@pytest.mark.parametrize("field, value, message", [
    ("lr", "1e-3", "train config lr must be a finite number, got str '1e-3'"),
    ("lr", float("inf"), "train config lr must be a finite number, got float inf"),
    ("iterations", 2.0, "train config iterations must be an integer, got float 2.0"),
    ("iterations", True, "train config iterations must be an integer, got bool True"),
    ("amp", "yes", "train config amp must be true or false, got str 'yes'"),
    ("grad_clip", "big", "train config grad_clip must be a finite number or null, got str 'big'"),
    ("device", 0, "train config device must be a string or null, got int 0"),
    ("seen_classes", "cat", "train config seen_classes must be a list of strings, got str 'cat'"),
    ("crop_scale", [0.5, "2"], "train config crop_scale must be a list of finite numbers, got list [0.5, '2']"),
    ("model_overrides", [("num_queries", 5)], "train config model_overrides must be a JSON object, got list"),
    ("data", "label_dir", "train config data must be a JSON object, got str 'label_dir'"),
])
def test_types_are_checked_from_the_annotations(field, value, message):
    with pytest.raises(TypeError) as err:
        TrainConfig(**{field: value})
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("changes, message", [
    ({"iterations": 0}, "train config iterations must be a positive integer, got 0"),
    ({"seed": -1}, "train config seed must be a non-negative integer, got -1"),
    ({"lambda_vir": -1}, "train config lambda_vir must be a number >= 0, got -1"),
    ({"schedule": "step"}, "train config schedule must be one of ('poly', 'cosine', 'constant'), got 'step'"),
    ({"vir_target": "hard"}, "train config vir_target must be one of ('soft', 'extra'), got 'hard'"),
    ({"crop_scale": (2, 1)}, "train config crop_scale must be (low, high) with 0 < low <= high, got (2.0, 1.0)"),
    ({"crop_scale": (1, 2, 3)}, "train config crop_scale must be (low, high) with 0 < low <= high, got (1.0, 2.0, 3.0)"),
    ({"indicator_holdout": (0.0, 0.2)},
     "train config indicator_holdout must be (low, high) with 0 < low <= high < 1 (fractions), got (0.0, 0.2)"),
    ({"mixup_alpha": 0}, "train config mixup_alpha must be > 0, got 0"),
    ({"batch_size": 16, "grad_accum": 3}, "batch_size 16 is not divisible by grad_accum 3"),
    ({"lr_multipliers": {"extractor.side": 0}}, "train config lr_multipliers maps parameter name prefixes to "
     "factors > 0 ({'extractor.side': 0.1}), got 'extractor.side': 0"),
    ({"lr_multipliers": {"": 0.5}}, "train config lr_multipliers maps parameter name prefixes to factors > 0 "
     "({'extractor.side': 0.1}), got '': 0.5"),
    ({"lr_multipliers": {"extractor": "0.1"}}, "train config lr_multipliers maps parameter name prefixes to "
     "factors > 0 ({'extractor.side': 0.1}), got 'extractor': '0.1'"),
])
def test_ranges_and_choices(changes, message):
    with pytest.raises(ValueError) as err:
        TrainConfig(**changes)
    assert str(err.value) == message


def test_values_are_normalised_and_frozen():
    cfg = TrainConfig(crop_scale=[1, 2], seen_classes=["a", "b"], model_overrides={"templates": ["a {}."]},
                      data={"label_dir": "x"})
    assert cfg.crop_scale == (1.0, 2.0) and isinstance(cfg.crop_scale[0], float)
    assert cfg.seen_classes == ("a", "b") and cfg.model_overrides["templates"] == ("a {}.",)
    with pytest.raises(TypeError):
        cfg.model_overrides["num_queries"] = 3  # read-only: the model config was built from these
    assert cfg.to_dict()["model_overrides"] == {"templates": ["a {}."]} and cfg.to_dict()["crop_scale"] == [1.0, 2.0]
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert hash(cfg) == hash(TrainConfig.from_dict(cfg.to_dict()))


@pytest.mark.parametrize("make", [
    lambda overrides: TrainConfig(model_overrides=overrides),
    lambda overrides: apply_overrides(TrainConfig(), [f"model_overrides.{k}={json.dumps(v)}" for k, v in overrides.items()]),
    lambda overrides: TrainConfig().replace(model_overrides=overrides),
])
def test_a_bad_model_override_fails_when_the_config_is_made(make):
    with pytest.raises(ValueError, match=r"train config model_overrides has unknown keys \['num_querys'\]; "
                                         r"the model config \(AlignZegConfig\) fields are \['bg_temperature', "):
        make({"num_querys": 5})
    with pytest.raises(TypeError) as err:
        make({"num_queries": "5"})
    assert str(err.value) == ("train config model_overrides (preset 'tiny'): config num_queries must be an integer, "
                              "got str '5'")
    with pytest.raises(ValueError) as err:
        make({"num_queries": 0})
    assert str(err.value) == ("train config model_overrides (preset 'tiny'): config num_queries must be a positive "
                              "integer, got 0")
    with pytest.raises(ValueError, match="model_overrides cannot set 'seen_classes': the trainer records them"):
        make({"seen_classes": ["cat"]})
    with pytest.raises(ValueError, match="model_overrides cannot set 'clip_cfg': the preset fixes the CLIP"):
        make({"clip_cfg": {}})


def test_an_unknown_preset_fails_when_the_config_is_made():
    with pytest.raises(ValueError) as err:
        TrainConfig(preset="vitx")
    assert str(err.value) == "train config preset: unknown preset 'vitx'; available presets: tiny, vitb16, vitl14"


def test_model_config_is_the_preset_with_the_overrides():
    model = TrainConfig(preset="vitb16", model_overrides={"num_queries": 50, "clip_prompt_tokens": 100}).model_config
    assert isinstance(model, AlignZegConfig) and model.clip_model == "ViT-B-16"
    assert (model.num_queries, model.clip_prompt_tokens, model.input_size, model.decoder_dim) == (50, 100, 512, 256)
    assert (model.clip_readout, model.clip_readout_layers, model.indicator_inputs) == (True, 3, "profile")
    assert model.seen_classes == () and model.indicator_trained is False and model.clip_pretrained is None
    tiny = TrainConfig(model_overrides={"input_size": 128, "window_stride": 96}).model_config
    assert tiny.input_size == 128 and tiny.clip_cfg["vision_cfg"]["image_size"] == 128  # as the preset builds it


def _world_trainer_config(variant: str, clip):
    world = AttributeWorld(world_config(0))
    return world, apply_variant(world_train_config(world, clip, iterations=1, batch_size=2, device="cpu"), variant)


@pytest.mark.parametrize("variant, expected", [
    ("baseline", dict(num_bg_prototypes=1, mutual_refinement=False, side_encoder=False, clip_readout=False,
                      indicator_inputs="profile", clip_grounding=True, indicator_trained=False)),
    ("full", dict(num_bg_prototypes=10, mutual_refinement=True, side_encoder=True, clip_readout=True,
                  indicator_inputs="profile", clip_grounding=True, indicator_trained=True)),
    ("no-grounding", dict(num_bg_prototypes=10, mutual_refinement=True, side_encoder=True, clip_readout=False,
                          indicator_inputs="profile", clip_grounding=False, indicator_trained=True)),
])
def test_a_trainer_built_from_a_variant_gets_the_model_config_of_before(variant, expected):
    world, cfg = _world_trainer_config(variant, WORLD_CLIP)
    model = Trainer(cfg, None, WorldDataset(world, "train", 2)).model.config
    # The world ablation's fields (world_train_config) and the tiny preset's, written out by hand.
    common = dict(clip_model="tiny", decoder_dim=64, num_queries=8, num_decoder_layers=2, num_heads=2, input_size=64,
                  window_stride=48, max_long_side=256, indicator_hidden=32, clip_prompt_tokens=4, side_fusion_stride=4,
                  mask_upsample=2, clip_readout_layers=None, pbc_threshold=0.5, seen_score_offset=0.0, pbc_soft=False,
                  clip_pretrained=WORLD_CLIP, seen_classes=world.seen_classes)
    assert {k: getattr(model, k) for k in {**common, **expected}} == {**common, **expected}
    assert model.replace(seen_classes=(), indicator_trained=False, clip_pretrained=None, clip_cfg=cfg.model_config.clip_cfg,
                         mean=cfg.model_config.mean, std=cfg.model_config.std) == cfg.model_config


@pytest.mark.parametrize("clip", [None, WORLD_CLIP])
def test_untrained_model_is_what_from_preset_builds(clip):
    _, cfg = _world_trainer_config("full", clip)
    ours = untrained_model(cfg)
    theirs = AlignZegSegmenter.from_preset("tiny", seed=cfg.seed, config_overrides=cfg.model_overrides,
                                           clip_pretrained=clip or False, device="cpu").model
    assert ours.config == theirs.config
    state, reference = ours.state_dict(), theirs.state_dict()
    assert state.keys() == reference.keys()
    for name, tensor in reference.items():  # two builds of one seed: equal up to float rounding
        torch.testing.assert_close(state[name], tensor, rtol=1e-6, atol=1e-7, msg=name)


def test_one_lookup_for_recipes_and_variants():
    assert names("recipe")[:2] == ["coco-stuff-vitb16", "coco-stuff-vitl14"] and names("variant")[0] == "baseline"
    assert lookup("voc-vitb16", "recipe").model == {"num_queries": 100, "clip_prompt_tokens": 10, "num_bg_prototypes": 1}
    with pytest.raises(ValueError) as err:
        lookup("full", "recipe")
    assert str(err.value) == ("unknown recipe 'full' ('full' is a variant); recipes are: coco-stuff-vitb16, "
                              "coco-stuff-vitl14, context-vitb16, context-vitl14, voc-vitb16, voc-vitl14")
    with pytest.raises(ValueError, match=r"unknown variant 'voc-vitb16' \('voc-vitb16' is a recipe\); variants are: "
                                         r"baseline, \+MRPE, \+GEPC, full, "):
        lookup("voc-vitb16", "variant")
    with pytest.raises(ValueError, match=r"kind must be one of \('recipe', 'variant'\), got 'row'"):
        names("row")
    # a recipe is its entry over TrainConfig's defaults; a variant merges its switches into model_overrides
    voc = get_recipe("voc-vitb16")
    assert voc == TrainConfig(**lookup("voc-vitb16", "recipe").train, model_overrides={
        "num_queries": 100, "clip_prompt_tokens": 10, "num_bg_prototypes": 1})
    assert apply_variant(voc, "no-prompts").model_overrides == {"num_queries": 100, "clip_prompt_tokens": 0,
                                                                "num_bg_prototypes": 10,  # GEPC's M, the paper's
                                                                "mutual_refinement": True, "side_encoder": True,
                                                                "clip_readout": True, "indicator_inputs": "profile"}


def test_the_cli_lists_and_looks_up_names_in_the_registry(tmp_path, capsys):
    assert train_main(["--list-variants"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == names("variant")
    assert out[1] == "+MRPE: baseline + mutual refinement + the learnable encoder"
    assert train_main(["--variant", "fully", "--dataset", "folder", "--data-root", str(tmp_path), "--out",
                       str(tmp_path / "run")]) == 2
    assert "unknown variant 'fully'; variants are: baseline, +MRPE" in capsys.readouterr().err
    # the config is made once, from the resolved fields: an override that only fits the preset set later is fine
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"model_overrides": {"clip_readout_layers": 12}}))
    cfg = resolve_config(None, str(path), ["preset=\"vitb16\""], "full")
    assert cfg.model_config.clip_readout_layers == 12 and cfg.model_config.clip_model == "ViT-B-16"
    with pytest.raises(ValueError, match=r"config clip_readout_layers must be None or in \[1, 2\]"):
        resolve_config(None, str(path), [], "full")
