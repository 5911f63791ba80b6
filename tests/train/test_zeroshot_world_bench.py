"""benchmarks/zeroshot_world.py: the statistics by hand, and --quick running the whole pipeline."""

import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from alignzeg.train.evaluation.calibration_grid import WORLD_CALIB_OFFSETS, WORLD_CALIB_READOUT, WORLD_CALIB_THRESHOLDS

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "zeroshot_world.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(_PATH.parent))  # spawned workers import the module by name (they inherit sys.path)
    try:
        yield importlib.import_module("zeroshot_world")
    finally:
        sys.path.remove(str(_PATH.parent))


def test_t_interval_by_hand(bench):
    lo, hi = bench.t_interval(np.array([1.0, 2.0, 3.0]))
    half = 4.3026527297 / math.sqrt(3)  # t(0.975, 2) * sd 1 / sqrt(3)
    assert (lo, hi) == pytest.approx((2 - half, 2 + half), abs=1e-9)
    assert all(math.isnan(v) for v in bench.t_interval(np.array([5.0])))


def _run(world, seed, variant, rows, protocol_rows=None):
    """A run job's record as ``run_job`` returns it, the same rows under every protocol unless given."""
    settings = {"pbc_threshold": 1.0, "pbc_soft": False, "seen_score_offset": 0.5, "readout_weight_seen": 0.0,
                "readout_weight_unseen": 0.0}
    protocols = {p: (protocol_rows or {}).get(p, rows) for p in ("inductive", "transductive", "fixed")}
    return {"kind": "run", "world": world, "seed": seed, "variant": variant, "protocols": protocols,
            "settings": {p: {row: dict(settings) for row in rows} for p in protocols},
            "calibration_classes": {"inductive": ["a", "b"], "transductive": ["a", "b", "u"], "fixed": []}}


def _metrics(h):
    return {"hIoU": h, "mIoU_S": 50.0, "mIoU_U": h / 2, "misaligned": 10.0}


def test_aggregate_pairs_runs_by_world_and_seed(bench):
    results = [_run(0, 0, "baseline", {"baseline": _metrics(10.0)}), _run(0, 1, "baseline", {"baseline": _metrics(20.0)}),
               _run(1, 0, "baseline", {"baseline": _metrics(30.0)}), _run(1, 0, "full", {"full": _metrics(33.0)}),
               _run(0, 1, "full", {"full": _metrics(21.0)}), _run(0, 0, "full", {"full": _metrics(14.0)})]
    records = bench.flatten(results, "inductive")
    assert [(r["world"], r["seed"], r["row"]) for r in records] == [
        (0, 0, "baseline"), (0, 0, "full"), (0, 1, "baseline"), (0, 1, "full"), (1, 0, "baseline"), (1, 0, "full")]
    assert records[0]["settings"]["seen_score_offset"] == 0.5 and records[0]["calibration_classes"] == ["a", "b"]
    rows, diffs = bench.aggregate(records)
    assert rows["baseline"]["hIoU_values"] == [10.0, 20.0, 30.0] and rows["full"]["hIoU_values"] == [14.0, 21.0, 33.0]
    assert rows["baseline"]["hIoU"] == 20.0
    diff = diffs["full - baseline"]["hIoU"]
    assert diff["values"] == [4.0, 1.0, 3.0] and diff["mean"] == pytest.approx(2.67, abs=0.005)
    lo, hi = bench.t_interval(np.array([4.0, 1.0, 3.0]))
    assert diff["ci95"] == [round(lo, 2), round(hi, 2)]
    single, _ = bench.aggregate(records[:1])
    assert single["baseline"]["hIoU_ci95"] == [None, None]  # one run: no interval (JSON null, not NaN)
    aucs = {"indicator_minus_margin_auc": {"mean": 0.02, "ci95": [-0.01, 0.05]}}
    goals = {g["target"]: g["pass"] for g in bench.targets(rows, diffs, aucs, 41.0, leak=False)}
    assert goals["calibration classes disjoint from the world's unseen classes in every run"] is True
    assert goals["mean indicator_auc_full - mean margin_auc_full >= +0.03"] is False  # +0.02
    assert goals["CLIP readout top-1 on matched unseen regions >= 40 %"] is True  # 41
    assert goals["full - baseline >= +5 hIoU, interval above 0"] is False  # +2.67
    assert goals["full - +GEPC+offset >= +1 hIoU, interval above 0"] is None  # +GEPC+offset not run
    assert bench.unseen_leak(records, {0: ["u"], 1: ["b"]}) is True  # world 1 calibrated on its unseen "b"
    assert bench.unseen_leak(records, {0: ["u"], 1: ["u"]}) is False


def test_auc_pairs_by_hand(bench):
    runs = [dict(_run(w, 0, "full", {"full": _metrics(1.0)}), indicator_auc=i, margin_auc=m)
            for w, i, m in ((1, 0.90, 0.85), (0, 0.80, 0.82))]
    aucs = bench.auc_pairs(runs)
    assert aucs["indicator_auc_full"] == [0.8, 0.9] and aucs["margin_auc_full"] == [0.82, 0.85]  # world order
    assert aucs["indicator_minus_margin_auc"]["values"] == [-0.02, 0.05]
    assert aucs["indicator_minus_margin_auc"]["mean"] == pytest.approx(0.015)


def test_fixed_settings_are_set_in_advance(bench):
    assert bench.fixed_settings("full") == {"pbc_threshold": 0.5, "pbc_soft": False, "seen_score_offset": 1.0,
                                            "readout_weight_seen": 0.4, "readout_weight_unseen": 0.8}
    assert bench.fixed_settings("baseline") == {"pbc_threshold": 1.0, "pbc_soft": False, "seen_score_offset": 1.0,
                                                "readout_weight_seen": 0.0, "readout_weight_unseen": 0.0}
    assert bench.fixed_settings("+GEPC")["seen_score_offset"] == 0.0  # the row without any bias correction


def test_roc_auc_by_hand():
    """The AUC the benchmark reports (through ``alignzeg.train.evaluation.diagnostics.indicator_auc``)."""
    from alignzeg.train.evaluation.diagnostics import roc_auc

    scores = np.array([0.9, 0.4, 0.4, 0.1])
    positive = np.array([True, True, False, False])
    assert roc_auc(scores, positive) == pytest.approx((1 + 1 + 1 + 0.5) / 4)


@pytest.mark.slow
def test_quick_runs_the_whole_pipeline(bench, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "world.json"
    assert bench.main(["--quick", "--workers", "2", "--diagnose", "--json", str(out), "--md", str(tmp_path / "w.md"),
                       "--clip-dir", str(tmp_path / "clip")]) == 0
    data = json.loads(out.read_text())
    assert data["protocol"] == "inductive" and data["complete"]
    rows = {"baseline", "baseline+readout", "+MRPE", "+MRPE+readout", "+GEPC", "+GEPC+offset", "full",
            "full-void-fcclip"}
    assert set(data["rows"]) == rows
    assert set(data["protocols"]["fixed"]["rows"]) == rows  # FC-CLIP's void is compared inductively and fixed
    assert set(data["protocols"]["transductive"]["rows"]) == rows - {"full-void-fcclip"}
    for run in data["runs"]:  # every row of every run is calibrated, the baseline too, on seen classes only
        settings = run["settings"]
        assert settings["seen_score_offset"] in WORLD_CALIB_OFFSETS
        assert settings["pbc_threshold"] in WORLD_CALIB_THRESHOLDS
        assert (settings["readout_weight_seen"], settings["readout_weight_unseen"]) in WORLD_CALIB_READOUT
        unseen = set(data["unseen_classes"][str(run["world"])])
        assert len(run["calibration_classes"]) == 40 and not set(run["calibration_classes"]) & unseen
        if run["row"] in ("baseline", "+MRPE", "+GEPC", "+GEPC+offset"):
            assert settings["pbc_threshold"] == 1.0 and not settings["pbc_soft"]  # no flag without the indicator
        if run["row"] in ("baseline", "+MRPE"):
            assert (settings["readout_weight_seen"], settings["readout_weight_unseen"]) == (0.0, 0.0)
        if run["row"] == "+GEPC":
            assert settings["seen_score_offset"] == 0.0
    models = data["calibration_models"]
    assert sorted((m["world"], m["variant"]) for m in models) == [(w, v) for w in (0, 1) for v in
                                                                 ("+MRPE", "baseline", "full")]
    for m in models:
        assert len(m["validation_classes"]) == 8 and set(m["validation_classes"]) <= set(m["calibration_classes"])
    for row in data["rows"].values():
        assert len(row["hIoU_values"]) == 4 and len(row["hIoU_ci95"]) == 2  # 2 worlds x 2 seeds
    assert {"+MRPE - baseline", "full - baseline", "full - baseline+readout", "full - +GEPC+offset"} <= set(
        data["paired_differences"])
    assert [c["world"] for c in data["mini_clip"]] == [0, 1]
    assert len(data["indicator_auc_full"]) == 4 and len(data["margin_auc_full"]) == 4
    assert data["clip_readout_unseen_acc"] is None or 0.0 <= data["clip_readout_unseen_acc"] <= 100.0
    assert data["command"].endswith("--clip-dir " + str(tmp_path / "clip"))
    text = (tmp_path / "w.md").read_text()
    assert "| full - baseline+readout |" in text and "**Transductive protocol**" in text and "**Fixed protocol**" in text


def test_seed_lists(bench):
    assert bench._ints("0,1") == [0, 1] and bench._ints("3", count_ok=True) == [0, 1, 2]
    assert bench._ints("3,", count_ok=True) == [3]
    with pytest.raises(ValueError, match="expected a count >= 1 or a comma-separated list .* got '0'"):
        bench._ints("0", count_ok=True)


def test_family_reaches_every_job(bench):
    args = bench._parser().parse_args(["--family", "objects", "--worlds", "0", "--seeds", "0,",
                                       "--rows", "baseline,+MRPE"])
    calibrations, runs = bench.plan(args, {0: "objects-world0.safetensors"})
    assert [(j["variant"], j["family"], j["clip"], j["seed"]) for j in calibrations + runs] == [
        ("baseline", "objects", "objects-world0.safetensors", bench.CALIBRATION_SEED),
        ("+MRPE", "objects", "objects-world0.safetensors", bench.CALIBRATION_SEED),
        ("baseline", "objects", "objects-world0.safetensors", 0), ("+MRPE", "objects", "objects-world0.safetensors", 0)]
    assert bench._parser().parse_args([]).family == "attribute"
    with pytest.raises(SystemExit):
        bench._parser().parse_args(["--family", "photos"])


def test_a_mini_clip_file_is_reused_only_with_its_own_settings(bench, tmp_path):
    from alignzeg.worlds.attributes import world_config
    from alignzeg.worlds.miniclip import MiniClipConfig

    settings = bench.clip_settings("attribute", world_config(0), MiniClipConfig(steps=600, seed=0))
    path = str(tmp_path / "world0.safetensors")
    with pytest.raises(ValueError, match=r"records no settings \(world0.safetensors.json is missing\)"):
        bench.check_clip_file(path, settings)
    Path(path + ".json").write_text(json.dumps(settings))
    bench.check_clip_file(path, settings)  # the same settings: re-used
    other = bench.clip_settings("attribute", world_config(0, num_unseen=6), MiniClipConfig(steps=300, seed=0))
    with pytest.raises(ValueError, match=r"other settings \(world.num_unseen: file 8, now 6; "
                                         r"mini_clip.steps: file 600, now 300\)"):
        bench.check_clip_file(path, other)


def test_model_and_train_settings_reach_every_job_and_guard_resume(bench, tmp_path):
    assert bench.json_settings(["refinement_gates=true", "num_queries=4"]) == {"refinement_gates": True,
                                                                                "num_queries": 4}
    for bad in ("refinement_gates", "=1", "refinement_gates=yes"):
        with pytest.raises(ValueError, match=f"--model-set takes FIELD=VALUE with a JSON value .*got '{bad}'"):
            bench.json_settings([bad])
    with pytest.raises(ValueError, match="--train-set takes FIELD=VALUE with a JSON value .*got 'lr=x'"):
        bench.json_settings(["lr=x"], "--train-set")
    args = bench._parser().parse_args(["--worlds", "0", "--seeds", "0,", "--rows", "+MRPE", "--protocols", "fixed",
                                       "--model-set", "refinement_gates=true", "--save-models", str(tmp_path),
                                       "--train-set", 'lr_multipliers={"extractor.side": 0.1}'])
    calibrations, runs = bench.plan(args, {0: "clip.safetensors"})
    assert calibrations == [] and len(runs) == 1
    assert runs[0]["model_set"] == {"refinement_gates": True} and runs[0]["save_models"] == str(tmp_path)
    assert runs[0]["train_set"] == {"lr_multipliers": {"extractor.side": 0.1}}
    record = tmp_path / "table.json"
    recipe = bench.world_recipe()
    record.write_text(json.dumps({"world_recipe": recipe, "model_set": {}, "jobs": []}))
    args.json, args.resume = record, True
    with pytest.raises(ValueError, match=r"made with --model-set \{\}, not \{'refinement_gates': True\}"):
        bench.previous_jobs(args)
    record.write_text(json.dumps({"world_recipe": recipe, "model_set": {"refinement_gates": True}, "jobs": []}))
    with pytest.raises(ValueError, match=r"made with --train-set \{\}, not \{'lr_multipliers': "):
        bench.previous_jobs(args)
    args.train_set = ["lr_multiplier=1"]
    with pytest.raises(ValueError, match=r"--train-set names \['lr_multiplier'\], which are not TrainConfig fields"):
        bench.plan(args, {0: "clip.safetensors"})


def test_resume_refuses_a_file_of_another_world_recipe(bench, tmp_path):
    from alignzeg.train.training.world_recipe import WORLD_RECIPE

    recipe = bench.world_recipe()
    assert recipe["warmup_iters"] == WORLD_RECIPE["warmup_iters"] == 150 and recipe["crop_scale"] == [1.0, 1.0]
    assert recipe["model_overrides"] == {"num_bg_prototypes": 1, "decoder_dim": 64}
    record = tmp_path / "table.json"
    args = bench._parser().parse_args(["--json", str(record), "--resume"])
    record.write_text(json.dumps({"world_recipe": recipe, "jobs": [{"kind": "run", "world": 0}]}))
    assert bench.previous_jobs(args) == [{"kind": "run", "world": 0}]
    older = dict(recipe, warmup_iters=0, grad_clip=None)
    record.write_text(json.dumps({"world_recipe": older, "jobs": [{"kind": "run", "world": 0}]}))
    with pytest.raises(ValueError, match=r"made with another world recipe \(warmup_iters: file 0, now 150, "
                                         r"grad_clip: file None, now 0.01\): its runs would not pair"):
        bench.previous_jobs(args)
    record.write_text(json.dumps({"jobs": [{"kind": "run", "world": 0}]}))  # a file from before the record
    with pytest.raises(ValueError, match=r"another world recipe \(it records none \(made before the recipe"):
        bench.previous_jobs(args)


def test_clip_steps_per_world(bench):
    default = bench.CLIP_STEPS["objects"]
    assert bench.clip_steps_per_world(None, [0, 1, 2], "objects") == {0: default, 1: default, 2: default}
    assert bench.clip_steps_per_world("2000", [0, 2], "objects") == {0: 2000, 2: 2000}
    assert bench.clip_steps_per_world("1=2000", [0, 1, 2], "objects") == {0: default, 1: 2000, 2: default}
    assert bench.clip_steps_per_world("0=700,1=2000", [0, 1], "attribute") == {0: 700, 1: 2000}
    for bad in ("0", "x", "1=0", "1=abc", ""):
        with pytest.raises(ValueError, match="--clip-steps takes N or WORLD=N items with N >= 1"):
            bench.clip_steps_per_world(bad, [0, 1], "objects")
    with pytest.raises(ValueError, match=r"--clip-steps names world 5, which is not in --worlds \[0, 1\]"):
        bench.clip_steps_per_world("5=2000", [0, 1], "objects")


def test_resume_refuses_another_mini_clip(bench, tmp_path):
    record = tmp_path / "table.json"
    record.write_text(json.dumps({"world_recipe": bench.world_recipe(), "model_set": {},
                                  "jobs": [{"kind": "run", "world": 1}],
                                  "mini_clip": [{"world": 1, "path": "clips/objects-world1_steps1500.safetensors"}]}))
    args = bench._parser().parse_args(["--json", str(record), "--resume"])
    assert bench.previous_jobs(args, {1: "elsewhere/objects-world1_steps1500.safetensors"}) == [
        {"kind": "run", "world": 1}]  # the same file in another folder
    assert len(bench.previous_jobs(args, {0: "objects-world0_steps2000.safetensors"})) == 1  # another world
    with pytest.raises(ValueError, match=r"made with world 1's mini-CLIP clips/objects-world1_steps1500.safetensors, "
                                         r"not objects-world1_steps2000.safetensors: resume with the same"):
        bench.previous_jobs(args, {1: "objects-world1_steps2000.safetensors"})
