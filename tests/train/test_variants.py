"""Ablation rows as named training variants, and alignzeg-train's --variant / --seeds on an exported world."""

import json

import pytest

from alignzeg.config import AlignZegConfig
from alignzeg.worlds.attributes import AttributeWorld, world_config
from alignzeg.train.training.train_cli import main as train_main
from alignzeg.train.training.train_cli import resolve_config
from alignzeg.train.training.config import TrainConfig
from alignzeg.train.training.registry import (apply_variant, get_recipe, list_recipes, list_variants, lookup,
                                              variant_uses_pbc)
from alignzeg.train.training.world_recipe import world_train_config
from alignzeg.worlds.export import export_world


def test_rows_in_ablation_order_with_the_contract_switches():
    names = list_variants()
    assert names[:4] == ["baseline", "+MRPE", "+GEPC", "full"]
    assert "no-learnable-encoder" in names
    fields = AlignZegConfig.__dataclass_fields__
    assert ("no-prompts" in names) == ("clip_prompt_tokens" in fields)
    assert ("no-grounding" in names) == ("clip_grounding" in fields)
    base = apply_variant(TrainConfig(model_overrides={"num_queries": 5, "num_bg_prototypes": 7}), "baseline")
    assert base.model_overrides == {"num_queries": 5, "num_bg_prototypes": 1, "mutual_refinement": False,
                                    "side_encoder": False, "clip_readout": False}
    full = apply_variant(TrainConfig(), "full").model_overrides
    assert full["clip_readout"] is True and full["indicator_inputs"] == "profile"
    assert apply_variant(TrainConfig(), "no-grounding").model_overrides["clip_readout"] is False
    assert apply_variant(TrainConfig(), "full-vir-extra").vir_target == "extra"
    assert (base.synthetic_features, base.negative_proposals, base.class_indicator) == (False, False, False)
    gepc = apply_variant(TrainConfig(model_overrides={"num_bg_prototypes": 7}), "+GEPC")  # the paper's M = 10
    assert gepc.model_overrides["num_bg_prototypes"] == 10 and gepc.synthetic_features and gepc.negative_proposals
    assert not gepc.class_indicator and apply_variant(TrainConfig(), "full").class_indicator
    assert apply_variant(TrainConfig(), "no-learnable-encoder").model_overrides["side_encoder"] is False
    assert [variant_uses_pbc(n) for n in ("baseline", "+MRPE", "+GEPC", "full")] == [False, False, False, True]
    for name in names:  # every row's model switches are real config fields
        assert set(lookup(name, "variant").model) <= set(fields), name


def test_recipes_train_mrpe_without_gepc_and_the_full_variant_adds_gepc_and_the_indicator():
    """GEPC's training parts and the class indicator paid on neither world family (docs/zeroshot_world.md):
    off in TrainConfig's defaults and every recipe (one background prototype); ``full`` is the paper's model."""
    assert (TrainConfig().synthetic_features, TrainConfig().negative_proposals) == (False, False)
    for name in list_recipes():
        recipe = get_recipe(name)
        assert (recipe.synthetic_features, recipe.negative_proposals, recipe.class_indicator) == (False, False, False)
        model = recipe.model_config
        assert (model.num_bg_prototypes, model.mutual_refinement, model.side_encoder, model.clip_readout) == (
            1, True, True, True), name
        full = apply_variant(recipe, "full")
        assert (full.synthetic_features, full.negative_proposals, full.class_indicator) == (True, True, True)
        assert full.model_config.num_bg_prototypes == 10 and full.model_config.num_queries == 100


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant 'fully'; variants are: baseline, \\+MRPE, "):
        apply_variant(TrainConfig(), "fully")


def test_resolve_config_applies_the_variant_last(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"preset": "tiny", "model_overrides": {"mutual_refinement": True}}))
    cfg = resolve_config(None, str(path), ["model_overrides.side_encoder=true"], "baseline")
    assert cfg.model_overrides["mutual_refinement"] is False and cfg.model_overrides["side_encoder"] is False


def test_the_world_config_without_a_variant_trains_what_the_recipes_train():
    """No variant: MRPE with its learnable encoder and the CLIP readout, one background prototype, no GEPC
    training parts, no class indicator (the recipes' configuration); ``full`` is the paper's model (M = 10)."""
    world = AttributeWorld(world_config(1))
    plain = world_train_config(world, None)
    model = plain.model_config
    assert (model.mutual_refinement, model.side_encoder, model.clip_readout, model.num_bg_prototypes) == (
        True, True, True, 1)
    assert (plain.synthetic_features, plain.negative_proposals, plain.class_indicator) == (False, False, False)
    full = apply_variant(plain, "full")
    assert full.model_config.num_bg_prototypes == 10 and full.synthetic_features and full.class_indicator


@pytest.mark.slow
def test_train_cli_runs_a_variant_for_a_list_of_seeds_on_an_exported_world(tmp_path):
    world = AttributeWorld(world_config(1))
    export_world(world, tmp_path / "data", train_images=4, test_images=1)
    cfg = world_train_config(world, None, iterations=1, batch_size=2,
                             progress=False, model_overrides={})
    cfg.to_json(tmp_path / "cfg.json")
    code = train_main(["--config", str(tmp_path / "cfg.json"), "--variant", "+MRPE", "--seeds", "3,5",
                       "--dataset", "folder", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "run")])
    assert code == 0
    for seed in (3, 5):
        saved = json.loads((tmp_path / "run" / f"seed_{seed}" / "train_config.json").read_text())
        assert saved["seed"] == seed and saved["model_overrides"]["mutual_refinement"] is True
        model = json.loads((tmp_path / "run" / f"seed_{seed}" / "config.json").read_text())
        assert model["side_encoder"] is True and model["num_bg_prototypes"] == 1
        assert tuple(model["seen_classes"]) == world.seen_classes


@pytest.mark.parametrize("text", ["0,x", "1,1", "-1"])
def test_bad_seed_lists(text, capsys):
    with pytest.raises(SystemExit):
        train_main(["--seeds", text])
    assert f"--seeds needs distinct non-negative integers like 0,1,2, got {text!r}" in capsys.readouterr().err
