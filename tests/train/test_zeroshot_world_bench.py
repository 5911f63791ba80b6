"""benchmarks/zeroshot_world.py: the statistics by hand, and --quick running the whole pipeline."""

import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from alignzeg.train.calibration_grid import WORLD_CALIB_OFFSETS, WORLD_CALIB_READOUT, WORLD_CALIB_THRESHOLDS

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


def test_aggregate_pairs_runs_by_world_and_seed(bench):
    def run(world, seed, variant, h):
        return {"world": world, "seed": seed, "variant": variant,
                "rows": {variant: {"hIoU": h, "mIoU_S": 50.0, "mIoU_U": h / 2, "misaligned": 10.0}}}

    results = [run(0, 0, "baseline", 10.0), run(0, 1, "baseline", 20.0), run(1, 0, "baseline", 30.0),
               run(1, 0, "full", 33.0), run(0, 1, "full", 21.0), run(0, 0, "full", 14.0)]
    rows, diffs = bench.aggregate(results)
    assert rows["baseline"]["hIoU_values"] == [10.0, 20.0, 30.0] and rows["full"]["hIoU_values"] == [14.0, 21.0, 33.0]
    assert rows["baseline"]["hIoU"] == 20.0
    diff = diffs["full - baseline"]["hIoU"]
    assert diff["values"] == [4.0, 1.0, 3.0] and diff["mean"] == pytest.approx(2.67, abs=0.005)
    lo, hi = bench.t_interval(np.array([4.0, 1.0, 3.0]))
    assert diff["ci95"] == [round(lo, 2), round(hi, 2)]
    single, _ = bench.aggregate(results[:1])
    assert single["baseline"]["hIoU_ci95"] == [None, None]  # one run: no interval (JSON null, not NaN)
    goals = {g["target"]: g["pass"] for g in bench.targets(rows, diffs, [0.9, 0.7], 41.0)}
    assert goals["class indicator ROC AUC >= 0.80 on matched test proposals (mean)"] is True  # mean 0.8
    assert goals["CLIP readout top-1 on matched unseen regions >= 40 %"] is True  # 41
    assert goals["full - baseline >= +10 hIoU, interval above 0"] is False  # +2.67
    assert goals["full - +GEPC+offset >= +1.5 hIoU, interval above 0"] is None  # +GEPC+offset not run


def test_roc_auc_by_hand():
    """The AUC the benchmark reports (through ``alignzeg.train.diagnostics.indicator_auc``)."""
    from alignzeg.train.diagnostics import roc_auc

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
    assert {"baseline", "+MRPE", "+GEPC", "+GEPC+offset", "full"} <= set(data["rows"])
    for run in data["runs"]:  # rows with the readout or PBC are calibrated on the val split, on the grid
        if run["variant"] not in ("baseline", "+MRPE"):
            c = run["calibration"]
            assert c["best"]["pbc_threshold"] in WORLD_CALIB_THRESHOLDS
            assert c["best"]["seen_score_offset"] in WORLD_CALIB_OFFSETS
            assert c["offset_only"]["pbc_threshold"] == 1.0 and not c["offset_only"]["pbc_soft"]
            weights = (c["best"]["readout_weight_seen"], c["best"]["readout_weight_unseen"])
            assert weights in WORLD_CALIB_READOUT and c["val_images"] == bench.QUICK["val_images"]
            if run["variant"] == "full":  # NaN (JSON null) when 4 test images hold no matched unseen region
                acc = run["diagnostics"]["readout_acc_unseen"]
                assert acc is None or 0.0 <= acc <= 1.0
        else:
            assert "calibration" not in run
    for row in data["rows"].values():
        assert len(row["hIoU_values"]) == 4 and len(row["hIoU_ci95"]) == 2  # 2 worlds x 2 seeds
    assert {"+MRPE - baseline", "full - +GEPC", "full - baseline", "full - +GEPC+offset"} <= set(data["paired_differences"])
    assert [c["world"] for c in data["mini_clip"]] == [0, 1] and len(data["indicator_auc_full"]) == 4
    assert data["clip_readout_unseen_acc"] is None or 0.0 <= data["clip_readout_unseen_acc"] <= 100.0
    assert data["command"].endswith("--clip-dir " + str(tmp_path / "clip"))
    assert "| full - baseline |" in (tmp_path / "w.md").read_text()


def test_seed_lists(bench):
    assert bench._ints("0,1") == [0, 1] and bench._ints("3", count_ok=True) == [0, 1, 2]
    assert bench._ints("3,", count_ok=True) == [3]
    with pytest.raises(ValueError, match="expected a count >= 1 or a comma-separated list .* got '0'"):
        bench._ints("0", count_ok=True)


def test_family_reaches_every_job(bench):
    args = bench._parser().parse_args(["--family", "objects", "--worlds", "0", "--seeds", "0,",
                                       "--rows", "baseline,+MRPE"])
    jobs = bench.plan(args, {0: "objects-world0.safetensors"})
    assert [(j["variant"], j["family"], j["clip"]) for j in jobs] == [
        ("baseline", "objects", "objects-world0.safetensors"), ("+MRPE", "objects", "objects-world0.safetensors")]
    assert bench._parser().parse_args([]).family == "attribute"
    with pytest.raises(SystemExit):
        bench._parser().parse_args(["--family", "photos"])


def test_a_mini_clip_file_is_reused_only_with_its_own_settings(bench, tmp_path):
    from alignzeg.demo.world import world_config
    from alignzeg.train.miniclip import MiniClipConfig

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
