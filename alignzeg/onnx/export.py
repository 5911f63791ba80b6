"""Export the segmenter's image path as one ONNX graph (needs torch; the runtime side does not).

The graph computes what ``AlignZegSegmenter.predict_torch`` computes for a batch of ready-made crops:
normalisation, the frozen CLIP image tower, MRPE, GEPC, the class indicator, Proposal-based Bias
Correction and the semantic map at mask resolution.

Inputs:
    crops: (B, 3, S, S) float32 RGB in [0, 1], S = ``config.input_size``; B dynamic.
    class_embeddings: (C, E) float32, L2-normalised class prototypes; C dynamic.
    seen_mask: (C,) bool, which classes are seen (training) classes.
    bias_correction: (1,) bool, apply PBC (it is the identity anyway when the mask holds no seen class or
        no unseen one).

Output:
    probabilities: (B, C + 1, S / mask_stride, S / mask_stride) float32, summing to 1 over the channels
        (channel C: background).

The file's ``metadata_props`` hold the model config (``alignzeg.config``), the alignzeg version, the
opset, the exporter, the precision (``alignzeg.precision``: ``float32`` or ``int8``, with
``alignzeg.quantization`` saying how) and, optionally, a precomputed vocabulary (``alignzeg.vocabulary``) so
that class names can be used without a text tower at run time.

``int8=True`` quantizes the float32 graph with onnxruntime's dynamic quantization: the weights of the
MatMul/Gemm nodes that multiply by a constant (the transformers' projections and MLPs, the heads' linear
layers) are stored as int8, one scale per tensor; their activations are quantized to uint8 per call.
Convolutions, normalisations, the attention's activation-activation products and everything after the
logits stay float32.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import logging
import os
import tempfile
import warnings
from collections import Counter
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..modeling.model import AlignZegModel
from ..modeling.semantic_map import output_probabilities
from ..pipeline.vocabulary import validate_class_names
from .metadata import (
    INPUT_NAMES, KEY_CONFIG, KEY_EXPORTER, KEY_FORMAT, KEY_FUSIONS, KEY_OPSET, KEY_PRECISION, KEY_QUANTIZATION,
    KEY_VERSION, KEY_VOCABULARY, ONNX_FORMAT, OUTPUT_NAME,
)

logger = logging.getLogger(__name__)

__all__ = ["export_onnx", "ProbabilityGraph", "DEFAULT_OPSET", "QUANTIZED_OPS"]

DEFAULT_OPSET = 17
"""ONNX opset of the exported graph (LayerNormalization is native from 17; onnxruntime >= 1.14 runs it)."""

QUANTIZED_OPS = ("MatMul", "Gemm")
"""Node types whose constant weights ``int8=True`` quantizes (Conv stays float32: ConvInteger measured slower)."""


class ProbabilityGraph(nn.Module):
    """The exported computation: crops + class embeddings + seen mask -> low-resolution probabilities.

    It calls the model's ``forward`` and ``output_probabilities`` exactly as ``predict_torch`` does,
    with bias correction on and the config's PBC settings (baked into the graph as constants).

    Args:
        model: the network, in eval mode, float32.
    """

    def __init__(self, model: AlignZegModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, crops: torch.Tensor, class_embeddings: torch.Tensor, seen_mask: torch.Tensor,
                bias_correction: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float, (C, E) float, (C,) bool, (1,) bool -> (B, C + 1, h, w) float32 probabilities.

        Both the corrected and the plain probabilities are computed and one is selected in the graph: PBC's
        "no seen or no unseen class" shortcut is a Python branch that tracing cannot record.
        """
        cfg = self.model.config
        out = self.model(crops, class_embeddings, deep_supervision=False, seen_mask=seen_mask)
        corrected = output_probabilities(out, seen_mask, cfg, True)
        plain = output_probabilities(out, seen_mask, cfg, False)
        active = bias_correction.reshape(()) & seen_mask.any() & ~seen_mask.all()
        return torch.where(active, corrected, plain)


def _example_inputs(model: AlignZegModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trace inputs: 2 crops, 3 classes of which one is seen (so the bias-correction path is the one traced),
    bias correction on."""
    cfg = model.config
    gen = torch.Generator().manual_seed(0)
    crops = torch.rand(2, 3, cfg.input_size, cfg.input_size, generator=gen)
    embeddings = torch.nn.functional.normalize(torch.randn(3, cfg.embed_dim, generator=gen), dim=-1)
    return crops, embeddings, torch.tensor([True, False, False]), torch.tensor([True])


def _cpu_float32(model: AlignZegModel) -> AlignZegModel:
    """The model itself when it is already float32 on the CPU, else a float32 CPU copy (the original is kept)."""
    if model.device.type == "cpu" and all(p.dtype == torch.float32 for p in model.parameters()):
        return model
    return copy.deepcopy(model).to("cpu", torch.float32)


def _encode_vocabulary(names: Sequence[str], embeddings: torch.Tensor) -> str:
    """JSON with the names and the (C, E) float32 embeddings as base64 (exact round trip)."""
    array = np.ascontiguousarray(embeddings.detach().cpu().float().numpy(), dtype="<f4")
    return json.dumps({"names": list(names), "shape": list(array.shape),
                       "embeddings": base64.b64encode(array.tobytes()).decode("ascii")}, ensure_ascii=False)


def _export(graph: nn.Module, inputs: tuple[torch.Tensor, ...], path: str, opset: int) -> None:
    """TorchScript-tracing export with dynamic batch and class axes.

    The ``torch.export``-based exporter (``dynamo=True``) refuses this model: PBC's "no seen / all seen"
    shortcut is Python control flow on tensor values (a data-dependent guard). Tracing records the branch of
    the trace inputs (mixed seen/unseen: the correction path); the runtime maps the shortcut's cases to an
    all-False seen mask, for which that path is the identity as well.
    """
    dynamic = {"crops": {0: "batch"}, "class_embeddings": {0: "classes"}, "seen_mask": {0: "classes"},
               OUTPUT_NAME: {0: "batch", 1: "classes_plus_background"}}
    torch.onnx.export(graph, inputs, path, dynamo=False, opset_version=opset, input_names=list(INPUT_NAMES),
                      output_names=[OUTPUT_NAME], dynamic_axes=dynamic, do_constant_folding=True)


def _write_metadata(path: str, metadata: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(path)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, path)


class _DropHint(logging.Filter):
    """Drops onnxruntime's "consider pre-processing" hint: its shape inference fails on this graph."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


@contextmanager
def _no_preprocess_hint() -> Iterator[None]:
    root = logging.getLogger()
    hint = _DropHint()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def _fold_constants(source: str, target: str) -> None:
    """``source`` with onnxruntime's basic graph optimizations (constant folding, Identity removal) saved to
    ``target``: standard ONNX ops, the same values. The quantizer only sees a MatMul weight that is an
    initializer; the CLIP region readout reads the last blocks' weights through Slice/Transpose/Identity
    nodes, which stayed float32 without this (ViT-B/16: 84 MB of float MatMul weights in the int8 file)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = target
    onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


COSINE_LOGIT_NODES = "/model/classifier/MatMul"
"""Name prefix of the classifier's cosine MatMuls (proposal embeddings x class / background prototypes): kept
float32, since the logit scale (~1/0.07) would multiply their quantization error. Once constant-folded, the
normalised background prototypes are a constant the quantizer would otherwise take."""


def _cosine_logit_nodes(model: Any) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name.startswith(COSINE_LOGIT_NODES)]


def _quantize_int8(source: str, target: str, fused: bool = False) -> dict[str, Any]:
    """Dynamic int8 quantization of ``source`` into ``target``; returns the ``alignzeg.quantization`` record.
    ``source`` lies in a temporary folder: the constant-folded copy is written beside it.

    Weights: int8, symmetric, one scale per tensor (per-channel scales and ``reduce_range`` measured no more
    accurate on the world model, see docs/onnx.md); activations: uint8 with a scale and zero point computed
    for each call (``DynamicQuantizeLinear``), so no calibration images are needed. ``fused``: ``source`` holds
    onnxruntime's contrib ops (``fuse=True``), through which ONNX shape inference gives no type: the quantizer
    is told that such tensors are float32 (``DefaultTensorType``).
    """
    try:
        import onnx
        import onnxruntime
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as err:
        raise ImportError('export_onnx(int8=True) needs onnxruntime: pip install "alignzeg[onnx]"') from err
    folded = str(Path(source).with_suffix(".folded.onnx"))  # beside the float32 file, in its temporary folder
    _fold_constants(source, folded)
    cosines = _cosine_logit_nodes(onnx.load(folded, load_external_data=False))
    with _no_preprocess_hint():
        extra = {"DefaultTensorType": onnx.TensorProto.FLOAT} if fused else {}
        quantize_dynamic(folded, target, op_types_to_quantize=list(QUANTIZED_OPS), weight_type=QuantType.QInt8,
                         per_channel=False, reduce_range=False, nodes_to_exclude=cosines, extra_options=extra)
    nodes = sum(node.op_type == "MatMulInteger" for node in onnx.load(target).graph.node)
    return {"method": "dynamic", "tool": "onnxruntime.quantization.quantize_dynamic",
            "onnxruntime": onnxruntime.__version__, "op_types": list(QUANTIZED_OPS), "quantized_nodes": nodes,
            "weights": "int8, symmetric, per tensor", "activations": "uint8, per call (DynamicQuantizeLinear)",
            "per_channel": False, "reduce_range": False}


FUSION_MODEL_TYPE = "vit"
"""``onnxruntime.transformers.optimizer`` model type used by ``fuse=True`` (the image tower is a ViT; ``"clip"``
fused the same ops on this graph)."""


def _fuse(source: str, target: str, config: Any) -> dict[str, Any]:
    """``onnxruntime.transformers.optimizer.optimize_model`` fusions of ``source`` (attention, LayerNorm, GELU,
    bias-add, SkipLayerNorm where their patterns match) saved to ``target``; returns the ``alignzeg.fusions``
    record: the nodes of each fused op type it added (``fused``) and those the export already held
    (``already_in_graph``: opset 17's native LayerNormalization). ``opt_level=0``: only the optimizer's own
    pattern fusions, no onnxruntime session optimizations baked into the file (they run at load)."""
    try:
        import onnxruntime
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError as err:
        raise ImportError('export_onnx(fuse=True) needs onnxruntime: pip install "alignzeg[onnx]"') from err
    vision = config.clip_cfg["vision_cfg"]
    width = int(vision["width"])
    heads = int(vision.get("heads") or width // int(vision.get("head_width", 64)))
    with _quiet_optimizer():
        model = optimize_model(source, model_type=FUSION_MODEL_TYPE, num_heads=heads, hidden_size=width,
                               opt_level=0, use_gpu=False)
        statistics = {op: int(n) for op, n in model.get_fused_operator_statistics().items() if n}
        model.save_model_to_file(target)
    import onnx

    before = Counter(node.op_type for node in onnx.load(source, load_external_data=False).graph.node)
    fused = {op: n - before[op] for op, n in statistics.items() if n > before[op]}
    present = {op: before[op] for op in statistics if before[op]}
    return {"tool": "onnxruntime.transformers.optimizer.optimize_model", "onnxruntime": onnxruntime.__version__,
            "model_type": FUSION_MODEL_TYPE, "num_heads": heads, "hidden_size": width, "opt_level": 0,
            "fused": fused, "already_in_graph": present}


@contextmanager
def _quiet_optimizer() -> Iterator[None]:
    """The optimizer reports its symbolic shape inference failing on this graph (a Reshape of data-dependent
    rank, as for the quantizer's pre-processing); the fusions run without it. Its loggers are set to ERROR
    meanwhile, and what it prints to stdout ("failed in shape inference ...") goes to this module's DEBUG log."""
    names = ("onnxruntime.transformers", "fusion_base", "onnx_model", "optimizer", "fusion_utils",
             "onnx_model_bert", "fusion_attention", "fusion_skiplayernorm", "fusion_layernorm", "fusion_gelu",
             "fusion_biasgelu", "fusion_options")
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    printed = io.StringIO()
    try:
        with redirect_stdout(printed):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if printed.getvalue().strip():
            logger.debug("onnxruntime.transformers optimizer printed: %s", printed.getvalue().strip())


def export_onnx(segmenter: Any, path: str | os.PathLike, opset: int = DEFAULT_OPSET,
                vocabulary: Sequence[str] | None = None, int8: bool = False, fuse: bool = False) -> str:
    """Write the segmenter's image path as one ONNX graph with dynamic batch and class count.

    Args:
        segmenter: an ``AlignZegSegmenter`` (exported in float32 on the CPU; the segmenter is not changed).
        path: the ``.onnx`` file to write (its folder must exist).
        opset: ONNX opset version (17 is the tested one).
        vocabulary: class names whose embeddings are computed now and stored in the file's metadata, so the
            runtime can segment with these names (any subset, any order) without a text tower. Which of
            them are seen classes follows ``config.seen_classes`` at run time, as in ``segment``.
        int8: quantize the graph's MatMul/Gemm weights to int8 (onnxruntime dynamic quantization; needs
            onnxruntime at export). ViT-B/16: the file is ~31 % of the float32 one; accuracy and speed in
            docs/onnx.md. ``OnnxSegmenter`` runs both kinds.
        fuse: run ``onnxruntime.transformers``' optimizer fusions on the float32 graph (before int8
            quantization): GELU and bias + GELU into onnxruntime's ``Gelu`` / ``BiasGelu`` ops, where their
            patterns match; the file then needs onnxruntime (contrib ops). Its ``alignzeg.fusions`` metadata
            counts each fused op. On this graph onnxruntime's own load-time optimizations make the same
            fusions, so the session runs the same ops either way (docs/onnx.md, "Transformer fusions").

    Returns:
        The path written, as a string.

    Raises:
        TypeError: ``segmenter`` is not an ``AlignZegSegmenter``, or ``int8`` or ``fuse`` is not a bool.
        ValueError: bad ``opset``, a missing output folder, or a bad vocabulary.
        ImportError: ``int8=True`` or ``fuse=True`` without onnxruntime.
    """
    if not (isinstance(getattr(segmenter, "model", None), AlignZegModel) and hasattr(segmenter, "encode_vocabulary")):
        raise TypeError(f"segmenter must be an AlignZegSegmenter, got {type(segmenter).__name__}")
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < 17:
        raise ValueError(f"opset must be an integer >= 17 (LayerNormalization), got {opset!r}")
    for option, value in (("int8", int8), ("fuse", fuse)):
        if not isinstance(value, bool):
            raise TypeError(f"{option} must be a bool, got {type(value).__name__} {value!r}")
    path = str(path)
    if not Path(path).parent.is_dir():
        raise ValueError(f"the folder of {path!r} does not exist")
    metadata = {KEY_FORMAT: str(ONNX_FORMAT), KEY_VERSION: __version__, KEY_OPSET: str(opset),
                KEY_EXPORTER: "torchscript", KEY_PRECISION: "int8" if int8 else "float32",
                KEY_CONFIG: json.dumps(segmenter.config.to_dict(), ensure_ascii=False)}
    if vocabulary is not None:
        names = validate_class_names(vocabulary)
        metadata[KEY_VOCABULARY] = _encode_vocabulary(names, segmenter.encode_vocabulary(names))
    if not int8 and not fuse:
        _export_float32(segmenter, path, opset)
    else:
        with tempfile.TemporaryDirectory(prefix="alignzeg-onnx-") as folder:
            float_path = str(Path(folder) / "float32.onnx")
            _export_float32(segmenter, float_path, opset)
            if fuse:
                fused_path = path if not int8 else str(Path(folder) / "fused.onnx")
                metadata[KEY_FUSIONS] = json.dumps(_fuse(float_path, fused_path, segmenter.config))
                float_path = fused_path
            if int8:
                metadata[KEY_QUANTIZATION] = json.dumps(_quantize_int8(float_path, path, fused=fuse))
    _write_metadata(path, metadata)
    logger.info("exported %s (opset %d, %s)", path, opset, metadata[KEY_PRECISION])
    return path


def _export_float32(segmenter: Any, path: str, opset: int) -> None:
    graph = ProbabilityGraph(_cpu_float32(segmenter.model)).eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel has no ONNX form
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # Tracing warns at every Python branch on a tensor; the ones in the graph are shape checks on
            # fixed sizes and PBC's "no seen / all seen" shortcut, which the runtime handles (see docs/onnx.md).
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            _export(graph, _example_inputs(graph.model), path, opset)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
