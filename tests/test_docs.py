"""The documents agree with the code and with the measurements they quote."""

import dataclasses
import json
import re
from pathlib import Path

from alignzeg.config import FORMAT_VERSION, AlignZegConfig

ROOT = Path(__file__).resolve().parents[1]


def _text(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def test_api_md_names_every_config_key_and_the_format_version():
    """docs/api.md listed format 2 and lacked fields such as clip_fingerprint and window_stride."""
    section = _text("docs/api.md").split("## Configuration and presets")[1].split("\n## ")[0]
    missing = [f.name for f in dataclasses.fields(AlignZegConfig) if f"`{f.name}`" not in section]
    assert missing == []
    assert f"`format_version` = {FORMAT_VERSION}" in section


def test_onnx_md_quotes_the_measured_int8_difference():
    """docs/onnx.md gave int8's hIoU difference as -0.16 in its table and -0.13 in its text."""
    results = json.loads(_text("benchmarks/results/int8_accuracy.json"))["results"]
    diff = results["onnx int8 (export_onnx int8=True)"]["hiou"] - results["onnx float32"]["hiou"]
    quoted = f"{diff:+.2f}"
    text = _text("docs/onnx.md")
    assert f"({quoted})" in text and f"own\n{quoted} in the other direction" in text
    assert f"within {abs(diff):.2f} hIoU points" in text
    assert set(re.findall(r"int8's own\s+(-?\d\.\d\d)", text)) == {quoted}
    assert f"`{json.loads(_text('benchmarks/results/int8_accuracy.json'))['command']}`" in text  # the settings


def test_the_slim_size_in_the_publish_recipe_is_the_measured_one():
    """docs/training.md said ~24 MB; docs/weights.md measured 26.3 MB (vitb16, float32)."""
    measured = float(re.search(r"\| float32 \| [\d.]+ MB \([\d,]+ bytes\) \| ([\d.]+) MB", _text("docs/weights.md"))[1])
    recipe = _text("docs/training.md").split("## Evaluate and publish")[1]
    quoted = re.findall(r"slim: ~(\d+) MB", recipe)
    assert quoted == [f"{measured:.0f}"]


def test_transparency_is_documented_where_inputs_are():
    """RGBA's alpha is dropped (tests/test_inputs.py); README's "Using it" and docs/api.md say what that means."""
    using_it = " ".join(_text("README.md").split("## Using it")[1].split("\n## ")[0].split())
    assert "Transparency is dropped" in using_it and "segmented as black" in using_it
    api = " ".join(_text("docs/api.md").split())
    assert "**Transparency is dropped**" in api and "segmented as **black**" in api
