"""Benchmark: what int8 ONNX costs in accuracy, on the shipped world model and its world's test images.

The shipped model (``alignzeg/demo/assets/model``, the tiny preset trained on world 0) is exported in
float32 and in int8 (``export_onnx(..., int8=True)``: onnxruntime dynamic quantization of the MatMul/Gemm
weights) and both segment the world's first 200 test images with the 48 class names (8 unseen), PBC on.
Reported per file: size, the fraction of pixels whose label equals the float32 file's, and mIoU(S) /
mIoU(U) / hIoU against the ground truth (as ``alignzeg demo``, over all images at once). PyTorch
``segment`` is scored too (the float32 reference the ONNX graph reproduces).

With ``--variants``, other quantizations that were tried are scored the same way: per-channel weight scales,
``reduce_range`` (7-bit weights), Conv quantized too, and static QDQ with activation ranges calibrated on
64 world training images (MinMax, per-channel weights).

    python benchmarks/bench_int8_accuracy.py [--images 200] [--variants] [--threads 2]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

import _common as c
from alignzeg.demo import DEMO_WORLD, load_demo_model
from alignzeg.worlds.attributes import AttributeWorld, world_config
from alignzeg.metrics import ConfusionMatrix, class_iou, harmonic_iou, nanmean
from alignzeg.pipeline.vocabulary import class_name_key
from alignzeg.onnx.metadata import read_vocabulary
from alignzeg.onnx.runtime import OnnxSegmenter
from alignzeg.pipeline.images import decode_image


def _score(segmenter, world: AttributeWorld, names: list[str], count: int) -> tuple[dict, list[np.ndarray]]:
    """mIoU(S) / mIoU(U) / hIoU in % over test images 0 .. count - 1, and the label maps."""
    confusion, preds, seen = ConfusionMatrix(len(names)), [], None
    for index in range(count):
        image, labels = world.sample("test", index)
        result = segmenter.segment(image, names, bias_correction=True)
        confusion.update(result.label_map, labels)  # the vocabulary is the world's names, in its order
        preds.append(result.label_map)
        seen = np.asarray(result.seen, dtype=bool)
    iou = class_iou(confusion.matrix)
    s, u = nanmean(iou[seen]), nanmean(iou[~seen])
    return {"miou_seen": 100 * s, "miou_unseen": 100 * u, "hiou": 100 * harmonic_iou(s, u)}, preds


def _variants(source: str, folder: Path, world: AttributeWorld) -> dict[str, str]:
    """Other quantizations of the float32 file (not offered by export_onnx; scored for comparison)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    runtime = OnnxSegmenter.load(source)
    names, embeddings = read_vocabulary(runtime.metadata)
    trained = {class_name_key(n) for n in runtime.config.seen_classes}
    seen = np.array([class_name_key(n) in trained for n in names])

    class Calibration(CalibrationDataReader):
        def __init__(self, count: int = 64) -> None:
            self.feeds = iter({"crops": decode_image(world.sample("train", i)[0]).pixels[None],
                               "class_embeddings": embeddings, "seen_mask": seen,
                               "bias_correction": np.array([True])} for i in range(count))

        def get_next(self):
            return next(self.feeds, None)

    ops = ["MatMul", "Gemm"]
    dynamic = {"int8 per-channel": dict(op_types_to_quantize=ops, per_channel=True),
               "int8 reduce_range": dict(op_types_to_quantize=ops, reduce_range=True),
               "int8 + Conv": dict(op_types_to_quantize=ops + ["Conv"])}
    paths = {}
    for name, kwargs in dynamic.items():
        paths[name] = str(folder / f"{len(paths)}.onnx")
        quantize_dynamic(source, paths[name], weight_type=QuantType.QInt8, **kwargs)
    paths["static QDQ (calibrated)"] = str(folder / "static.onnx")
    quantize_static(source, paths["static QDQ (calibrated)"], Calibration(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=ops, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return paths


def main() -> None:
    p = c.parser(__doc__.splitlines()[0], reps=1)
    p.add_argument("--images", type=int, default=200, help="world test images scored")
    p.add_argument("--variants", action="store_true", help="also score the other quantizations tried")
    args = p.parse_args()
    threads = args.threads or 2
    c.setup(args)
    world = AttributeWorld(world_config(DEMO_WORLD))
    names = list(world.class_names)
    seg = load_demo_model("cpu")
    with tempfile.TemporaryDirectory(prefix="alignzeg-int8-") as tmp:
        folder = Path(tmp)
        files = {"onnx float32": seg.export_onnx(folder / "fp32.onnx", vocabulary=names),
                 "onnx int8 (export_onnx int8=True)": seg.export_onnx(folder / "int8.onnx", vocabulary=names,
                                                                        int8=True)}
        if args.variants:
            files.update(_variants(files["onnx float32"], folder, world))
        sizes = {k: Path(v).stat().st_size for k, v in files.items()}
        rows, results = [], {}
        start = time.perf_counter()
        scores, reference = _score(seg, world, names, args.images)
        results["pytorch float32"] = {**scores, "seconds": time.perf_counter() - start}
        base = None
        for name, path in files.items():
            start = time.perf_counter()
            scores, preds = _score(OnnxSegmenter.load(path, threads=threads), world, names, args.images)
            base = preds if base is None else base
            agree = float(np.mean([(a == b).mean() for a, b in zip(base, preds)]))
            worst = float(min((a == b).mean() for a, b in zip(base, preds)))
            results[name] = {**scores, "agreement_with_float32": 100 * agree, "worst_image_agreement": 100 * worst,
                             "file_bytes": sizes[name], "size_vs_float32": sizes[name] / sizes["onnx float32"],
                             "seconds": time.perf_counter() - start}
        torch_agree = float(np.mean([(a == b).mean() for a, b in zip(base, reference)]))
        results["pytorch float32"]["agreement_with_float32"] = 100 * torch_agree
    for name, r in results.items():
        rows.append([name, r.get("size_vs_float32", float("nan")), r["agreement_with_float32"],
                     r["miou_seen"], r["miou_unseen"], r["hiou"]])
    print(f"shipped world model, world {DEMO_WORLD}, {args.images} test images, 48 classes (8 unseen), PBC on, "
          f"{threads} onnxruntime threads")
    print(c.table(["file", "size / float32", "label agreement %", "mIoU(S)", "mIoU(U)", "hIoU"], rows))
    c.save("int8_accuracy", args, {"images": args.images, "world": DEMO_WORLD, "threads": threads,
                                   "results": results})


if __name__ == "__main__":
    main()
