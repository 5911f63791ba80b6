"""The dry (CPU) path of benchmarks/gpu_check.py: the same code as on a GPU, at toy sizes."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
gpu_check = pytest.importorskip("gpu_check")


def test_dry_run_writes_one_json(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--dry", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["mode"] == "dry (CPU)" and data["ok"] is True
    # the CUDA-marked tests were collected and run: all skip on the CPU
    tests = data["cuda_tests"]
    assert tests["returncode"] == 0 and tests["counts"].get("skipped", 0) >= 3 and "passed" not in tests["counts"]
    throughput = data["throughput"]
    assert throughput["preset"] == "tiny" and throughput["input_size"] == 64 and throughput["classes"] == 20
    assert list(throughput["batches"]) == ["1", "2"]
    for row in throughput["batches"].values():
        assert row["network_images_per_s"] > 0 and row["clip_encoder_images_per_s"] > 0
        assert row["network_over_clip_time"] > 0
    training = data["training"]
    assert training["steps"] == 3 and training["all_finite"] and training["amp"] == "off (CPU: float32)"
    assert training["loss_first"] > 0
    assert "training: 3 steps of tiny" in capsys.readouterr().out
