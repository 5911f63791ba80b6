"""The back-end contract (issue 27): one abstract base whose hooks both back-ends implement and nothing else,
a typed front door, and any model file (folder or ``.onnx``) through the same front ends."""

from __future__ import annotations

import ast
import collections.abc
import inspect
import typing
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignzeg import ImageInput, SegmentationResult, Vocabulary
from alignzeg.errors import AlignZegWarning
from alignzeg.onnx.runtime import OnnxSegmenter
from alignzeg.pipeline.images import SupportsArray
from alignzeg.pipeline.segment import SegmentPipeline
from alignzeg.pipeline.windows import plan_windows
from alignzeg.presets import get_preset_config
from alignzeg.segmenter import AlignZegSegmenter
from fake_backend import FakeBackend

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = [AlignZegSegmenter, OnnxSegmenter]
HOOKS = {"_encode_names", "_embeddings", "_native_array", "_resize", "_predict", "_upsample_labels"}
CLASSES = ["person", "chair", "sofa"]


def test_the_base_is_abstract_and_its_abstract_methods_are_the_hooks():
    assert inspect.isabstract(SegmentPipeline) and SegmentPipeline.__abstractmethods__ == HOOKS
    with pytest.raises(TypeError, match="abstract"):
        SegmentPipeline()  # type: ignore[abstract]
    for hook in HOOKS:
        assert getattr(SegmentPipeline, hook).__doc__, f"{hook} has no docstring (the contract's documentation)"


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__)
def test_each_back_end_overrides_exactly_the_hooks(backend):
    assert issubclass(backend, SegmentPipeline) and not inspect.isabstract(backend)
    base = set(dir(SegmentPipeline))
    overridden = {n for n in vars(backend) if n in base and not (n.startswith("__") and n.endswith("__"))
                  and n != "_abc_impl"}  # abc's own bookkeeping, in every subclass
    assert overridden == HOOKS


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__)
def test_the_front_door_is_typed(backend):
    hints = typing.get_type_hints(backend.segment)
    assert hints["image"] == ImageInput and hints["vocabulary"] == typing.Optional[Vocabulary]
    assert hints["return"] is SegmentationResult
    batch = typing.get_type_hints(backend.segment_batch)
    assert batch["images"] == typing.Union[collections.abc.Sequence[ImageInput], SupportsArray]
    assert batch["vocabulary"] == typing.Optional[Vocabulary] and batch["return"] == list[SegmentationResult]
    for hint in (hints["image"], hints["vocabulary"], batch["images"]):
        assert typing.Any not in typing.get_args(hint)


class _RedBackend(FakeBackend):
    """The smallest back-end: class 0 is "red" (the crop's red channel), class 1 the rest; records its calls."""

    def __init__(self) -> None:
        super().__init__(get_preset_config("tiny"))  # its geometry only: the hooks are fakes

    def _predict(self, crops, embeddings, seen, bias_correction):
        self.record_predict(crops, bias_correction)
        side = crops.shape[-1] // self.config.mask_stride
        red = crops[:, 0].reshape(len(crops), side, self.config.mask_stride, side, -1).mean(axis=(2, 4))
        return np.stack([red, 1 - red, np.zeros_like(red)], axis=1).astype(np.float32) * 0.999 + 0.0005


def test_a_new_back_end_needs_only_the_hooks_and_each_runs_once_per_image_or_batch():
    seg = _RedBackend()
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :32, 0] = 255  # left half red
    result = seg.segment(image, ["red", "blue"], bias_correction=False)
    assert (result.label_map[:, :24] == 0).all() and (result.label_map[:, 40:] == 1).all()
    kinds = [kind for kind, _ in seg.calls]
    assert kinds.count("resize") == 1 and kinds.count("upsample") == 1 and kinds.count("encode") == 1
    windows = seg.batches
    assert sum(windows) == len(plan_windows((48, 64), seg.config).origins) > 1 and all(args[1] is False for kind, args in seg.calls if kind == "predict")
    assert dict(seg.calls)["upsample"] == (48, 64)


def test_an_image_crosses_between_numpy_and_torch_once_each_way(tiny_segmenter, voc, monkeypatch):
    """The PyTorch back-end's data path in one call: each image's pixels become a tensor once (``_resize``), its
    crops and window maps stay tensors through ``_predict`` and the stitching, and come back to numpy once
    (``_upsample_labels``: the map, labels and confidence). Counted at the hooks and at every conversion."""
    import torch

    seg, classes = tiny_segmenter, ["person", "chair", "sofa"]
    seg.prepare_vocabulary(classes)  # encoded and cached beforehand: the count is about the images
    hooks: list[tuple[str, object, object]] = []
    for name in ("_resize", "_predict", "_upsample_labels"):
        def hook(*args, _name=name, _original=getattr(seg, name)):
            out = _original(*args)
            hooks.append((_name, type(args[0]), tuple(map(type, out)) if isinstance(out, tuple) else type(out)))
            return out
        monkeypatch.setattr(seg, name, hook)
    crossings = {"to torch": [], "to numpy": []}
    from_numpy, to_numpy = torch.from_numpy, torch.Tensor.numpy
    vocabulary_shapes = {(len(classes),), (len(classes), seg.config.embed_dim)}  # the embeddings and the seen mask

    def counted_from_numpy(array):
        if array.shape not in vocabulary_shapes:
            crossings["to torch"].append(array.shape)
        return from_numpy(array)

    def counted_numpy(tensor, *args, **kwargs):
        if tuple(tensor.shape) not in vocabulary_shapes:
            crossings["to numpy"].append(tuple(tensor.shape))
        return to_numpy(tensor, *args, **kwargs)

    monkeypatch.setattr(torch, "from_numpy", counted_from_numpy)
    monkeypatch.setattr(torch.Tensor, "numpy", counted_numpy)
    wide, small = voc["rgb"][:120], voc["rgb"][:40, :30]  # several windows in all: several batches
    seg.batch_size = 2
    try:
        results = seg.segment_batch([wide, small], classes, bias_correction=False)
    finally:
        seg.batch_size = 8
    first, second = (len(plan_windows(size, seg.config).origins) for size in ((120, 500), (40, 30)))
    windows = first + second
    assert windows > 3 and [r.label_map.shape for r in results] == [(120, 500), (40, 30)]
    assert crossings["to torch"] == [(3, 120, 500), (3, 40, 30)]  # the decoded pixels, once per image
    assert len(crossings["to numpy"]) == 6 and {s for s in crossings["to numpy"] if len(s) == 2} == {(120, 500), (40, 30)}
    # crops are cut one image at a time: the second image is resized once the batches the first fills have run
    assert [h[0] for h in hooks] == (["_resize"] + ["_predict"] * (first // 2) + ["_resize"]
                                     + ["_predict"] * (-(-windows // 2) - first // 2) + ["_upsample_labels"] * 2)
    assert {h[1:] for h in hooks if h[0] == "_resize"} == {(np.ndarray, torch.Tensor)}
    assert {h[1:] for h in hooks if h[0] == "_predict"} == {(torch.Tensor, torch.Tensor)}
    assert {h[1:] for h in hooks if h[0] == "_upsample_labels"} == {(torch.Tensor, (np.ndarray,) * 3)}


def _code_windows(path: Path, size: int = 3) -> set[tuple[str, ...]]:
    """Runs of ``size`` consecutive code lines (docstrings, comments and blank lines dropped) of a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {node.body[0].lineno for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef,
            ast.Module)) and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and node.lineno in docs:
            skip.update(range(node.lineno, node.end_lineno + 1))
    lines = [line.strip() for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if i not in skip and line.strip() and not line.strip().startswith(("#", "from ", "import "))]
    return {tuple(lines[i:i + size]) for i in range(len(lines) - size + 1)}


def test_no_block_is_repeated_between_the_back_ends():
    shared = _code_windows(ROOT / "alignzeg" / "segmenter.py") & _code_windows(ROOT / "alignzeg" / "onnx" / "runtime.py")
    assert not shared, f"code repeated in both back-ends: {sorted(shared)}"


# Any model file from any front end ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_file(tiny_onnx):
    return tiny_onnx  # tests/conftest.py: the tiny model with CLASSES among its stored names


def test_load_segmenter_chooses_the_back_end_by_what_the_path_holds(tiny_checkpoint, onnx_file, tmp_path):
    from alignzeg.loader import load_segmenter

    assert isinstance(load_segmenter(onnx_file), OnnxSegmenter)
    assert isinstance(load_segmenter(str(tiny_checkpoint), device="cpu"), AlignZegSegmenter)
    with pytest.raises(ValueError, match=r"'tiny' is a preset name"):
        load_segmenter("tiny")
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"is a file but not an \.onnx file"):
        load_segmenter(other)
    with pytest.raises(ValueError, match=r"an ONNX file takes no revision"):
        load_segmenter(onnx_file, revision="main")


def test_cli_segment_with_an_onnx_file_writes_the_pytorch_labels(tiny_checkpoint, onnx_file, voc, tmp_path):
    from alignzeg.cli import main

    image = tmp_path / "voc.png"
    Image.fromarray(voc["rgb"]).save(image)
    written = {}
    for name, model in (("torch", tiny_checkpoint), ("onnx", onnx_file)):
        written[name] = tmp_path / f"{name}.png"
        assert main(["segment", str(image), "--classes", ",".join(CLASSES), "--model", str(model),
                     "--labels-out", str(written[name]), "--no-bias-correction", "--device", "cpu"]) == 0
    torch_labels, onnx_labels = (np.asarray(Image.open(written[k])) for k in ("torch", "onnx"))
    assert torch_labels.shape == (375, 500) and len(np.unique(torch_labels)) >= 2
    # another set of kernels (onnxruntime): probabilities agree within 1e-4 (tests/test_golden.py), so an argmax
    # may flip only where two classes tie within that; on this untrained model that is under 0.5 % of the pixels
    assert (torch_labels == onnx_labels).mean() > 0.995


def test_app_serves_segment_from_an_onnx_file(onnx_file, voc, tmp_path):
    pytest.importorskip("gradio")
    from alignzeg.app import SegmentApp

    app = SegmentApp.load(onnx_file, device="cpu")
    assert app.load_error is None and isinstance(app.segmenter, OnnxSegmenter)
    path = tmp_path / "voc.png"
    Image.fromarray(voc["rgb"]).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AlignZegWarning)  # the tiny model's untrained indicator, asked for by "auto"
        overlay, table = app.api_callback(str(path), "person, chair, sofa")
    assert overlay.size == (500, 375)
    assert set(table["class"]) <= set(CLASSES) and table["pixels %"].sum() == pytest.approx(100.0, abs=0.1)


def test_ray_actor_runs_an_onnx_file(onnx_file, tiny_segmenter, voc):
    pytest.importorskip("ray")
    from alignzeg.integrations.ray import SegmentBatch

    image = voc["rgb"][:150, :220].copy()
    actor = SegmentBatch(onnx_file, CLASSES, bias_correction=False)
    assert isinstance(actor.segmenter, OnnxSegmenter)
    out = actor({"image": np.stack([image])})
    want = tiny_segmenter.segment(image, CLASSES, bias_correction=False).label_map
    assert out["label_map"][0].shape == want.shape and (out["label_map"][0] == want).mean() > 0.995
