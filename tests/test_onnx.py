"""ONNX export (issue 15): the graph equals ``predict_torch``, the torch-free runtime equals ``segment``.

One tiny checkpoint is saved, loaded and exported once for the module. Tolerance for the graph against
PyTorch: max abs 1e-4 on probabilities (measured ~5e-7; the two run different kernels).
"""

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import alignzeg
import pytest
import torch
from numpy.testing import assert_allclose

from alignzeg import AlignZegSegmenter
from alignzeg.cli import example_image_path, main
from alignzeg.onnx.export import export_onnx
from alignzeg.onnx.metadata import KEY_CONFIG, KEY_OPSET, KEY_VERSION, read_vocabulary
from alignzeg.pipeline.labels import upsample_labels
from alignzeg.pipeline.windows import resize_bilinear
from alignzeg.onnx.runtime import OnnxSegmenter
from voc_split import VOC_SEEN

ATOL = 1e-4
NAMES = ["person", "chair", "diningtable", "bottle", "wall", "window", "sheep", "sofa"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved tiny model whose class indicator counts as trained (so PBC runs), with ZegCLIP's offset on."""
    seg = AlignZegSegmenter.from_preset("tiny", seen_classes=VOC_SEEN, seed=0,
                                        config_overrides={"indicator_trained": True, "seen_score_offset": 0.2})
    return seg.save_pretrained(tmp_path_factory.mktemp("onnx_ckpt"))


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return AlignZegSegmenter.from_pretrained(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def onnx_path(loaded, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    loaded.export_onnx(path, vocabulary=NAMES)
    return path


@pytest.fixture(scope="module")
def runtime(onnx_path):
    return OnnxSegmenter.load(onnx_path, threads=2)


def _inputs(batch, classes, seed):
    gen = torch.Generator().manual_seed(seed)
    crops = torch.rand(batch, 3, 64, 64, generator=gen)
    embeddings = torch.nn.functional.normalize(torch.randn(classes, 64, generator=gen), dim=-1)
    seen = torch.zeros(classes, dtype=torch.bool)
    seen[::2] = True  # mixed, so bias correction has something to do
    return crops, embeddings, seen


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("classes", [2, 20, 171])
def test_graph_equals_predict_torch(loaded, runtime, batch, classes):
    crops, embeddings, seen = _inputs(batch, classes, seed=batch * 1000 + classes)
    for bias_correction in (True, False):
        expected = loaded.predict_torch(crops, embeddings, seen, bias_correction=bias_correction).numpy()
        got = runtime.predict(crops.numpy(), embeddings.numpy(), seen.numpy(), bias_correction)
        assert got.shape == (batch, classes + 1, 16, 16)
        assert_allclose(got, expected, rtol=0, atol=ATOL)


def test_seen_mask_input_drives_bias_correction(loaded, runtime):
    """The seen mask is a live input: PBC changes this model's output, and the graph follows it."""
    crops, embeddings, seen = _inputs(2, 20, seed=7)
    with_pbc = runtime.predict(crops.numpy(), embeddings.numpy(), seen.numpy())
    without = runtime.predict(crops.numpy(), embeddings.numpy(), seen.numpy(), bias_correction=False)
    assert np.abs(with_pbc - without).max() > 1e-2
    # the bias_correction input switches PBC off: the torch path without it
    assert_allclose(without, loaded.predict_torch(crops, embeddings, seen, bias_correction=False).numpy(),
                    rtol=0, atol=ATOL)
    flipped = ~seen
    expected = loaded.predict_torch(crops, embeddings, flipped).numpy()
    assert_allclose(runtime.predict(crops.numpy(), embeddings.numpy(), flipped.numpy()), expected, rtol=0, atol=ATOL)


def test_metadata_and_dynamic_axes(loaded, onnx_path):
    model = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta[KEY_CONFIG]) == loaded.config.to_dict()
    assert meta[KEY_OPSET] == "17" and meta[KEY_VERSION] == alignzeg.__version__
    assert [op.version for op in model.opset_import if op.domain in ("", "ai.onnx")] == [17]
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims == {"crops": ["batch", 3, 64, 64], "class_embeddings": ["classes", 64], "seen_mask": ["classes"],
                    "bias_correction": [1]}
    names, embeddings = read_vocabulary(meta)
    assert names == tuple(NAMES)
    np.testing.assert_array_equal(embeddings, loaded.encode_vocabulary(NAMES).numpy())  # stored bit-exactly


def _assert_labels_match_up_to_ties(expected, got):
    """Label maps equal except at pixels where torch's two best classes tie within ATOL (and those are few)."""
    probs = np.stack([expected.probability_map(name) for name in expected.class_names])
    ys, xs = np.nonzero(expected.label_map != got.label_map)
    gap = np.abs(probs[expected.label_map[ys, xs], ys, xs] - probs[got.label_map[ys, xs], ys, xs])
    assert (gap <= ATOL).all(), f"{(gap > ATOL).sum()} mismatching pixels are not ties (gap up to {gap.max()})"
    assert len(ys) <= 1e-3 * expected.label_map.size


@pytest.mark.parametrize("bias_correction", [True, False])
def test_runtime_equals_segment_on_voc_photo(loaded, runtime, voc, bias_correction):
    expected = loaded.segment(voc["rgb"], NAMES, bias_correction=bias_correction)
    got = runtime.segment(voc["rgb"], NAMES, bias_correction=bias_correction)
    assert got.class_names == tuple(NAMES) and got.size == (375, 500)
    np.testing.assert_array_equal(got.seen, expected.seen)
    assert_allclose(got.class_probs, expected.class_probs, rtol=0, atol=ATOL)
    _assert_labels_match_up_to_ties(expected, got)
    assert_allclose(got.scores, expected.scores, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(got.image, voc["rgb"])


def test_runtime_subset_order_embeddings_and_threshold(loaded, runtime, voc):
    subset = ["sofa", "wall", "Person"]  # a reordered subset of the stored names, matched like segment does
    expected = loaded.segment(voc["rgb"], subset, unlabelled_threshold=0.3)
    got = runtime.segment(voc["rgb"], subset, unlabelled_threshold=0.3)
    assert_allclose(got.class_probs, expected.class_probs, rtol=0, atol=ATOL)
    _assert_labels_match_up_to_ties(expected, got)
    assert (got.label_map == -1).any() and got.seen.tolist() == [False, False, True]
    embeddings = loaded.encode_vocabulary(["cat", "dog"]).numpy() * 3.0  # not unit norm: normalised as in segment
    by_vectors = runtime.segment(voc["rgb"], embeddings, class_names=["cat", "dog"])
    assert_allclose(by_vectors.class_probs, loaded.segment(voc["rgb"], embeddings).class_probs, rtol=0, atol=ATOL)


def test_larger_and_smaller_images_use_the_same_windows(loaded, runtime, voc):
    from PIL import Image

    wide = np.asarray(Image.fromarray(voc["rgb"]).resize((900, 250)))  # several windows, downscaled
    tiny = voc["rgb"][:40, :30]  # upscaled and padded
    for image in (wide, tiny):
        assert_allclose(runtime.segment(image, NAMES).class_probs, loaded.segment(image, NAMES).class_probs,
                        rtol=0, atol=ATOL)


def test_pipeline_resize_and_upsample_equal_torch():
    gen = np.random.default_rng(0)
    pixels = gen.random((3, 37, 53), dtype=np.float32)
    for size in ((64, 90), (20, 31), (64, 24)):  # up, down, mixed (antialiased like torch)
        antialias = size[0] < 37 or size[1] < 53
        ref = torch.nn.functional.interpolate(torch.from_numpy(pixels)[None], size=size, mode="bilinear",
                                              align_corners=False, antialias=antialias)[0].clamp(0, 1)
        assert_allclose(resize_bilinear(pixels, size), ref.numpy(), rtol=0, atol=1e-5)
    probs = gen.dirichlet(np.ones(6), size=(9, 13)).transpose(2, 0, 1).astype(np.float32)
    labels, confidence = upsample_labels(probs, (70, 101), max_elements=5000)
    full = torch.nn.functional.interpolate(torch.from_numpy(probs)[None], size=(70, 101), mode="bilinear",
                                           align_corners=False)[0].numpy()[:-1]
    assert_allclose(confidence, full.max(axis=0), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(labels, full.argmax(axis=0))


def test_bad_inputs_name_the_value(loaded, runtime, tmp_path, voc):
    with pytest.raises(ValueError, match=r"\['giraffe'\] are not in the vocabulary stored"):
        runtime.segment(voc["rgb"], ["wall", "giraffe"])
    with pytest.raises(ValueError, match=r"shape \(C, 64\).*\(2, 5\)"):
        runtime.segment(voc["rgb"], np.ones((2, 5), dtype=np.float32))
    with pytest.raises(TypeError, match="got Tensor"):
        runtime.segment(torch.zeros(3, 8, 8), ["wall"])  # no torch in this back-end: a tensor is not an image
    from PIL import Image

    Image.new("RGB", (1200, 1000)).save(tmp_path / "big.png")
    small = OnnxSegmenter(runtime.session, max_pixels=1_000_000)
    with pytest.raises(ValueError, match=r"big.png' is 1200 x 1000 = 1,200,000 pixels, above the limit of 1,000,000"):
        small.load_image(tmp_path / "big.png")
    assert runtime.load_image(tmp_path / "big.png")[0].pixels.shape == (3, 1000, 1200)
    with pytest.raises(ValueError, match=r"opset must be an integer >= 17 .*got 11"):
        export_onnx(loaded, tmp_path / "x.onnx", opset=11)
    with pytest.raises(TypeError, match="AlignZegSegmenter, got str"):
        export_onnx("model", tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="the folder of .*missing.* does not exist"):
        loaded.export_onnx(tmp_path / "missing" / "x.onnx")


def test_untrained_indicator_follows_segment(tiny_checkpoint, voc, tmp_path):
    """Auto PBC is off (with segment's warning) for a model whose indicator was not trained; True is refused."""
    seg = AlignZegSegmenter.from_pretrained(tiny_checkpoint, device="cpu")
    runtime = OnnxSegmenter.load(seg.export_onnx(tmp_path / "untrained.onnx", vocabulary=NAMES), threads=2)
    with pytest.warns(UserWarning, match=r"class indicator was never trained .*PBC\) is off"):
        auto = runtime.segment(voc["rgb"], NAMES)
    assert auto.bias_correction is False
    assert_allclose(auto.class_probs, seg.segment(voc["rgb"], NAMES, bias_correction=False).class_probs,
                    rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="bias_correction=True needs a trained class indicator"):
        runtime.segment(voc["rgb"], NAMES, bias_correction=True)
    with pytest.raises(TypeError, match="got str 'yes'"):
        runtime.segment(voc["rgb"], NAMES, bias_correction="yes")


def test_foreign_file_and_cli_errors(onnx_path, tmp_path, capsys):
    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match="not written by alignzeg's export_onnx"):
        OnnxSegmenter.load(tmp_path / "plain.onnx")
    with pytest.raises(FileNotFoundError, match="nothing.onnx"):
        OnnxSegmenter.load(tmp_path / "nothing.onnx")
    assert main(["export", "--model", str(tmp_path / "no_model"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "no_model" in capsys.readouterr().err


@pytest.mark.slow
def test_saved_exported_and_run_without_torch(checkpoint, loaded, voc, tmp_path):
    """CLI export of a saved checkpoint, then a subprocess in which importing torch (or open_clip) fails."""
    path = tmp_path / "cli.onnx"
    assert main(["export", "--model", str(checkpoint), "--out", str(path), "--classes", ",".join(NAMES)]) == 0
    np.save(tmp_path / "image.npy", voc["rgb"])
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "open_clip", "torchvision"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        from alignzeg.onnx.runtime import OnnxSegmenter
        seg = OnnxSegmenter.load({str(path)!r}, threads=2)
        result = seg.segment(np.load({str(tmp_path / 'image.npy')!r}), {NAMES!r})
        np.save({str(tmp_path / 'labels.npy')!r}, result.label_map)
        np.save({str(tmp_path / 'probs.npy')!r}, result.class_probs)
        np.save({str(tmp_path / 'wall.npy')!r}, result.probability_map("wall"))
        result.overlay().save({str(tmp_path / 'overlay.png')!r})
        assert not any(m.split(".")[0] in ("torch", "open_clip") for m in sys.modules), "torch was imported"
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = loaded.segment(voc["rgb"], NAMES)
    assert_allclose(np.load(tmp_path / "probs.npy"), expected.class_probs, rtol=0, atol=ATOL)
    got = type("R", (), {"label_map": np.load(tmp_path / "labels.npy")})
    _assert_labels_match_up_to_ties(expected, got)
    assert_allclose(np.load(tmp_path / "wall.npy"), expected.probability_map("wall"), rtol=0, atol=ATOL)
    assert (tmp_path / "overlay.png").stat().st_size > 0


def test_a_file_that_is_not_a_whole_onnx_model_is_named_before_onnxruntime_reads_it(onnx_path, tmp_path):
    data = onnx_path.read_bytes()
    cases = {
        "truncated.onnx": (data[:len(data) // 2], "it ends at byte {size}, inside a field that starts at byte "),
        "photo.onnx": (example_image_path().read_bytes(), "byte 0 is not protobuf data"),
        "empty.onnx": (b"", "it holds no graph and no opset_import"),
    }
    for name, (content, problem) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError) as info:
            OnnxSegmenter.load(tmp_path / name)
        message = str(info.value)
        assert message.startswith(f"'{tmp_path / name}' is not an ONNX model file: "
                                  + problem.format(size=len(content))), message
        assert message.endswith("; write one with `alignzeg export` or AlignZegSegmenter.export_onnx")


def test_export_without_classes_says_the_file_refuses_every_name(checkpoint, loaded, voc, tmp_path, capsys):
    """It wrote a file that refuses every name without a word at export time."""
    path = tmp_path / "bare.onnx"
    assert main(["export", "--model", str(checkpoint), "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert out == (f"ONNX graph (float32) written to {path}\n"
                   "no class names are stored (no --classes): the file refuses every name and segments only with "
                   "(C, E) class embeddings computed by the PyTorch model (AlignZegSegmenter.encode_vocabulary); "
                   "export with --classes to segment by name\n")
    bare = OnnxSegmenter.load(path, threads=2)
    with pytest.raises(ValueError, match=r"class names \['wall'\] are not in the vocabulary stored in this ONNX file"):
        bare.segment(voc["rgb"], ["wall"])
    embeddings = loaded.encode_vocabulary(["wall", "sofa"]).numpy()
    assert bare.segment(voc["rgb"], embeddings).label_map.shape == voc["rgb"].shape[:2]  # what it does accept
    stored = tmp_path / "named.onnx"
    assert main(["export", "--model", str(checkpoint), "--out", str(stored), "--classes", "wall,sofa|couch"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == ("it segments with the 3 class names stored in it (wall, sofa, "
                                                       "couch), any of them in any order, or with class embeddings")


def test_fused_export_counts_its_fusions_and_labels_like_the_unfused_file(loaded, runtime, onnx_path, voc,
                                                                               tmp_path, capfd, caplog):
    """``fuse=True``: onnxruntime.transformers' fusions on the float32 graph (and before int8 quantization). The
    metadata counts exactly the fused ops the file holds; labels equal the unfused file's, probabilities equal
    PyTorch's within the parity tolerance. The optimizer's own prints go to the DEBUG log, not the terminal."""
    from collections import Counter

    from alignzeg.onnx.metadata import read_fusions

    path = tmp_path / "fused.onnx"
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG, logger="alignzeg.onnx.export"):
        loaded.export_onnx(path, vocabulary=NAMES, fuse=True)
    assert capfd.readouterr().out == ""
    assert "optimizer printed: failed in shape inference" in caplog.text
    proto = onnx.load(path)
    fusions = read_fusions({p.key: p.value for p in proto.metadata_props})
    ops = Counter(node.op_type for node in proto.graph.node)
    assert fusions["model_type"] == "vit" and fusions["opt_level"] == 0
    assert fusions["fused"]["BiasGelu"] == ops["BiasGelu"] > 0 and fusions["fused"]["Gelu"] == ops["Gelu"] > 0
    assert set(fusions["fused"]) == {"Gelu", "BiasGelu"}  # GELU's erf form, and the bias add before it
    assert fusions["already_in_graph"]["LayerNormalization"] == ops["LayerNormalization"] > 0  # native in opset 17
    assert ops["Attention"] == ops["MultiHeadAttention"] == ops["SkipLayerNormalization"] == 0
    assert ops["Erf"] == 0 and Counter(n.op_type for n in onnx.load(onnx_path).graph.node)["Erf"] > 0
    fused = OnnxSegmenter.load(path, threads=2)
    for bias_correction in (False, True):
        expected = loaded.segment(voc["rgb"], NAMES, bias_correction=bias_correction)
        plain = runtime.segment(voc["rgb"], NAMES, bias_correction=bias_correction)
        got = fused.segment(voc["rgb"], NAMES, bias_correction=bias_correction)
        np.testing.assert_array_equal(got.label_map, plain.label_map)
        assert_allclose(got.class_probs, expected.class_probs, rtol=0, atol=ATOL)
    int8_plain, int8_fused = tmp_path / "int8.onnx", tmp_path / "int8_fused.onnx"
    loaded.export_onnx(int8_plain, vocabulary=NAMES, int8=True)
    loaded.export_onnx(int8_fused, vocabulary=NAMES, int8=True, fuse=True)
    a = OnnxSegmenter.load(int8_plain, threads=2).segment(voc["rgb"], NAMES)
    b = OnnxSegmenter.load(int8_fused, threads=2).segment(voc["rgb"], NAMES)
    np.testing.assert_array_equal(a.label_map, b.label_map)
    with pytest.raises(TypeError, match="fuse must be a bool, got str 'yes'"):
        loaded.export_onnx(tmp_path / "x.onnx", fuse="yes")
