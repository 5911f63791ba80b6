"""int8 ONNX export (``export_onnx(..., int8=True)``, ``alignzeg export --int8``) on the shipped world model.

The world model is the tiny preset trained on the attribute world, so its label maps mean something: the
int8 file must agree with the float32 file on the world's test images, not merely run.
"""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from alignzeg.cli import main
from alignzeg.demo import DEMO_WORLD, load_demo_model, model_path
from alignzeg.worlds.attributes import AttributeWorld, world_config
from alignzeg.onnx.export import QUANTIZED_OPS, export_onnx
from alignzeg.onnx.metadata import KEY_PRECISION, KEY_QUANTIZATION, read_precision, read_quantization
from alignzeg.onnx.runtime import OnnxSegmenter

AGREEMENT = 0.97
"""Least mean fraction of pixels whose int8 label equals the float32 label (measured: 99.2 % on the 200 test images)."""
PROB_ATOL = 0.1
"""Largest |int8 - float32| probability allowed (measured on an earlier model: up to 0.038 on 20 images)."""


@pytest.fixture(scope="module")
def world():
    return AttributeWorld(world_config(DEMO_WORLD))


@pytest.fixture(scope="module")
def files(world, tmp_path_factory):
    """The world model exported twice with its 48 class names: float32 and int8."""
    seg = load_demo_model("cpu")
    folder = tmp_path_factory.mktemp("int8")
    names = list(world.class_names)
    return (export_onnx(seg, folder / "fp32.onnx", vocabulary=names),
            export_onnx(seg, folder / "int8.onnx", vocabulary=names, int8=True))


def test_int8_metadata_graph_and_size(files):
    fp32_path, int8_path = files
    fp32, int8 = OnnxSegmenter.load(fp32_path, threads=2), OnnxSegmenter.load(int8_path, threads=2)
    assert (fp32.precision, int8.precision) == ("float32", "int8")
    assert "precision='int8'" in repr(int8)
    assert read_quantization(fp32.metadata) is None
    record = read_quantization(int8.metadata)
    graph = onnx.load(int8_path).graph
    ops = [node.op_type for node in graph.node]
    assert record["method"] == "dynamic" and record["op_types"] == list(QUANTIZED_OPS)
    assert record["quantized_nodes"] == ops.count("MatMulInteger") > 0
    # every MatMul/Gemm left in float multiplies two activations: no weight left unquantized, also none that
    # reaches its MatMul through nodes of constants only (the readout's weights came through Identity nodes)
    constants = {i.name for i in graph.initializer}
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type == "Constant" or (node.input and all(i in constants for i in node.input if i)):
            constants.update(node.output)
    left = [n.name for n in graph.node if n.op_type in QUANTIZED_OPS and set(n.input) & constants]
    # ... but the classifier's cosine logits (x class / background prototypes), kept float32 on purpose
    assert left == ["/model/classifier/MatMul_1"]  # the background prototypes' (normalised: a constant)
    float_matmuls = {n.name for n in graph.node if n.op_type == "MatMul"}
    assert {"/model/classifier/MatMul", "/model/classifier/MatMul_1"} <= float_matmuls
    assert int8.config == fp32.config and int8.stored_names == fp32.stored_names
    # the tiny model's many small tensors keep its ratio well above vitb16's (~31 %, docs/onnx.md)
    assert Path(int8_path).stat().st_size < 0.62 * Path(fp32_path).stat().st_size  # measured 0.54


def test_int8_segments_like_float32_on_world_images(files, world):
    fp32, int8 = (OnnxSegmenter.load(p, threads=2) for p in files)
    names = list(world.class_names)
    agreement, gaps = [], []
    for index in range(10):
        image, _ = world.sample("test", index)
        a, b = fp32.segment(image, names), int8.segment(image, names)
        assert b.label_map.shape == a.label_map.shape == image.shape[:2]
        agreement.append((a.label_map == b.label_map).mean())
        gaps.append(np.abs(a.class_probs - b.class_probs).max())
    assert np.mean(agreement) >= AGREEMENT, agreement
    assert max(gaps) <= PROB_ATOL
    assert max(gaps) > 1e-4  # the int8 graph really computes something else than the float32 one


def test_precision_metadata_is_checked():
    assert read_precision({}) == "float32"  # files written before the key existed
    assert read_precision({KEY_PRECISION: "int8"}) == "int8"
    with pytest.raises(ValueError, match="'int4'.*expected one of"):
        read_precision({KEY_PRECISION: "int4"})
    assert read_quantization({KEY_QUANTIZATION: json.dumps({"method": "dynamic"})}) == {"method": "dynamic"}


def test_int8_must_be_a_bool(tmp_path):
    seg = load_demo_model("cpu")
    with pytest.raises(TypeError, match="int8 must be a bool, got str 'yes'"):
        export_onnx(seg, tmp_path / "m.onnx", int8="yes")
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export_int8(tmp_path, capsys):
    """``--model demo`` names the shipped demo model, as ``segment`` and ``app`` take it (it was refused)."""
    out = tmp_path / "world_int8.onnx"
    assert main(["export", "--model", "demo", "--out", str(out), "--int8",
                 "--classes", "red plain,blue dotted"]) == 0
    assert capsys.readouterr().out == (f"ONNX graph (int8) written to {out}\nit segments with the 2 class names "
                                       "stored in it (red plain, blue dotted), any of them in any order, or with "
                                       "class embeddings\n")
    runtime = OnnxSegmenter.load(out, threads=1)
    assert runtime.precision == "int8" and runtime.stored_names == ("red plain", "blue dotted")
    assert read_quantization(runtime.metadata)["quantized_nodes"] > 0
