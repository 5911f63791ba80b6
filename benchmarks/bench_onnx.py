"""Benchmark: ``segment`` in PyTorch vs the exported graph on ONNX Runtime (``alignzeg.onnx``), CPU.

ViT-B/16 (random init; the preset's full architecture, PBC on), 512x512 photos (one window each), the 20 VOC classes (cached in torch, stored in
the ONNX file), equal intra-op thread counts. Speed: the two sides interleaved over a few images in one
process (images/s, and the median per-round ratio). Peak memory: each side in a fresh subprocess that
loads its model and segments the same images (``VmHWM``); the ONNX child blocks ``import torch``.

With ``--int8`` a third side runs in the same interleaved rounds: the int8 file
(``export_onnx(..., int8=True)``); its file size, speed-up over the float32 file and label agreement with it
are reported too (random weights: the agreement here is not the accuracy; see bench_int8_accuracy.py).

With ``--fused`` the files exported with ``fuse=True`` (onnxruntime.transformers' optimizer fusions) run as
more sides in the same rounds (rotated, so no side always follows the same one): float32 fused, and int8 fused
with ``--int8``; the fused op counts, the speed ratio fused / unfused (median of the paired rounds) and the
label agreement with the unfused file are reported. ``--preset tiny`` runs the whole thing in seconds (a smoke run).

With ``--encoder-floor`` two more sides run in the same rounds: open_clip's bare image encoder
(``clip.visual``, the same weights) on the same images, already normalised, one window-sized tensor each (512x512 for vitb16), in
PyTorch (MHA fast path on and off, the faster counts per round) and exported to ONNX (the package's
exporter settings: TorchScript exporter, opset 17) on ONNX Runtime with the same threads. Reported: each
runtime's ``segment`` / its own fastest bare encoder (median of the paired rounds), the floor against
which a runtime that already runs the encoder as fast as it can is judged.

    python benchmarks/bench_onnx.py [--reps 3] [--threads 2] [--int8] [--fused] [--encoder-floor] [--no-memory]
                                    [--preset vitb16]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import _common as c
from alignzeg import AlignZegSegmenter
from alignzeg.onnx.metadata import read_fusions
from alignzeg.onnx.runtime import OnnxSegmenter
from alignzeg.train.datasets.splits import VOC_CLASSES

CHILD = r"""
import json, sys, time
if {onnx}:
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "open_clip"):
                raise ImportError("blocked: " + name)
    sys.meta_path.insert(0, Block())
import numpy as np
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
images = list(np.load({images!r}))
names = {names!r}
if {onnx}:
    from alignzeg.onnx.runtime import OnnxSegmenter
    seg = OnnxSegmenter.load({path!r}, threads={threads})
else:
    import torch
    torch.set_num_threads({threads})
    from alignzeg import AlignZegSegmenter
    seg = AlignZegSegmenter.from_preset({preset!r}, seed=0, device="cpu", seen_classes=names[:15],
                                        config_overrides={{"indicator_trained": True}})
    seg.encode_vocabulary(names)
loaded = hwm()
for image in images:
    seg.segment(image, names, keep_image=False)
print(json.dumps({{"after_load_mb": loaded, "peak_mb": hwm()}}))
"""


def _images(count: int) -> np.ndarray:
    """``count`` different 512x512 views of the VOC photo (crops at several offsets, resized)."""
    base = c.test_image((600, 800))
    views = [base[i * 40:i * 40 + 480, i * 60:i * 60 + 640] for i in range(count)]
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(v).resize((512, 512), Image.BILINEAR)) for v in views])


def _peak_memory(onnx: bool, path: str, images_path: str, names: list[str], threads: int,
                 preset: str = "vitb16") -> dict:
    code = CHILD.format(onnx=onnx, path=path, images=images_path, names=names, threads=threads, preset=preset)
    env_path = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": env_path})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _bare_encoder_sides(seg: AlignZegSegmenter, images: np.ndarray, folder: str, threads: int) -> dict:
    """Timed callables for open_clip's bare image encoder on ``images`` ((N, 512, 512, 3) uint8).

    Sides: "torch bare encoder" (fast path on), "torch bare encoder fastpath off" and "onnxruntime bare
    encoder" (``clip.visual`` exported with the package's exporter settings, run on ``threads`` threads).
    The pixels are normalised (and resized to the model's ``input_size``) once, outside the timed calls,
    each image a (1, 3, input_size, input_size) float32 tensor.
    """
    import onnxruntime as ort

    from alignzeg.onnx.export import DEFAULT_OPSET

    from torch.nn.functional import interpolate

    visual = seg.model.backbone.clip.visual.eval()
    size = seg.model.config.input_size  # the window the model runs at (512 for vitb16: one window per image)
    pixels = [interpolate(seg.model.normalize(torch.from_numpy(i).permute(2, 0, 1)[None].float() / 255),
                          size=(size, size), mode="bilinear", align_corners=False) for i in images]
    path = str(Path(folder) / "bare_encoder.onnx")
    with c.mha_fastpath(False), torch.no_grad(), warnings.catch_warnings():  # the fused MHA op has no ONNX export
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, as alignzeg.onnx uses
        torch.onnx.export(visual, (pixels[0],), path, dynamo=False, opset_version=DEFAULT_OPSET,
                          input_names=["pixels"], output_names=["embedding"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    arrays = [x.numpy() for x in pixels]

    def torch_encoder(fastpath: bool):
        def run() -> None:
            with c.mha_fastpath(fastpath), torch.inference_mode():
                for x in pixels:
                    visual(x)
        return run

    return {"torch bare encoder": torch_encoder(True), "torch bare encoder fastpath off": torch_encoder(False),
            "onnxruntime bare encoder": lambda: [session.run(None, {"pixels": a}) for a in arrays]}


def main() -> None:
    p = c.parser(__doc__.splitlines()[0], reps=3)
    p.add_argument("--images", type=int, default=3, help="different 512x512 images per round")
    p.add_argument("--int8", action="store_true", help="also time the int8 file (export_onnx(..., int8=True))")
    p.add_argument("--fused", action="store_true", help="also time the files exported with fuse=True")
    p.add_argument("--rotate", action="store_true", help="round r starts with the r-th side (default with --fused)")
    p.add_argument("--preset", default="vitb16", help="model preset (tiny: a smoke run)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--encoder-floor", action="store_true",
                   help="also time open_clip's bare image encoder in PyTorch and on ONNX Runtime (each runtime's floor)")
    args = p.parse_args()
    threads = args.threads or 2
    torch.set_num_threads(threads)
    names = list(VOC_CLASSES)
    seg = AlignZegSegmenter.from_preset(args.preset, seed=0, device="cpu", seen_classes=names[:15],
                                        config_overrides={"indicator_trained": True})  # so PBC runs on both sides
    images = _images(args.images)
    with tempfile.TemporaryDirectory(prefix="alignzeg-bench-onnx-") as folder:
        path = str(Path(folder) / "vitb16.onnx")
        start = time.perf_counter()
        seg.export_onnx(path, vocabulary=names)
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        runtime = OnnxSegmenter.load(path, threads=threads)
        session_s = time.perf_counter() - start
        seg.encode_vocabulary(names)
        sides = {"torch": seg, "onnxruntime": runtime}
        paths = {"onnxruntime": path}
        if args.int8:
            paths["onnxruntime int8"] = str(Path(folder) / "vitb16_int8.onnx")
            start = time.perf_counter()
            seg.export_onnx(paths["onnxruntime int8"], vocabulary=names, int8=True)
            export_int8_s = time.perf_counter() - start
            sides["onnxruntime int8"] = OnnxSegmenter.load(paths["onnxruntime int8"], threads=threads)
        fusions = {}
        if args.fused:
            for side, int8 in (("onnxruntime fused", False), ("onnxruntime int8 fused", True))[:1 + args.int8]:
                paths[side] = str(Path(folder) / f"{side.replace(' ', '_')}.onnx")
                seg.export_onnx(paths[side], vocabulary=names, int8=int8, fuse=True)
                sides[side] = OnnxSegmenter.load(paths[side], threads=threads)
                fusions[side] = read_fusions(sides[side].session.get_modelmeta().custom_metadata_map)

        def run(segmenter):
            return lambda: [segmenter.segment(image, names, keep_image=False) for image in images]

        timed = {k: run(v) for k, v in sides.items()}
        if args.encoder_floor:
            timed.update(_bare_encoder_sides(seg, images, folder, threads))
        times = c.interleaved(timed, reps=args.reps, rotate=args.rotate or args.fused or args.encoder_floor)
        labels = {k: [v.segment(i, names).label_map for i in images] for k, v in sides.items()}
        agree = {k: float(np.mean([(a == b).mean() for a, b in zip(labels["onnxruntime"], v)])) for k, v in labels.items()}
        images_path = str(Path(folder) / "images.npy")
        np.save(images_path, images)
        memory = {}
        if not args.no_memory:
            memory = {"torch": _peak_memory(False, path, images_path, names, threads, args.preset)}
            memory.update({k: _peak_memory(True, v, images_path, names, threads) for k, v in paths.items()})
        file_mb = {k: Path(v).stat().st_size / 2**20 for k, v in paths.items()}
    rate = {k: len(images) / c.median(v) for k, v in times.items()}
    ratio = c.paired_ratio(times["torch"], times["onnxruntime"])
    nan = {"after_load_mb": float("nan"), "peak_mb": float("nan")}
    rows = [[k, rate[k], memory.get(k, nan)["after_load_mb"], memory.get(k, nan)["peak_mb"]] for k in times]
    print(c.table(["side", "images/s", "RSS after load MB", "peak RSS MB"], rows))
    print(f"onnxruntime speed-up (torch time / onnxruntime time, median of {args.reps} interleaved rounds of "
          f"{len(images)} images): {ratio:.2f}x; threads {threads}; label maps agree with onnxruntime float32 on "
          + ", ".join(f"{k} {100 * v:.3f} %" for k, v in agree.items()))
    print(f"export {export_s:.1f} s, files " + ", ".join(f"{k} {v:.1f} MB" for k, v in file_mb.items())
          + f", onnxruntime session {session_s:.1f} s")
    extra = {}
    if args.int8:
        extra = {"speedup_int8_vs_float32_onnx": c.paired_ratio(times["onnxruntime"], times["onnxruntime int8"]),
                 "speedup_int8_vs_torch": c.paired_ratio(times["torch"], times["onnxruntime int8"]),
                 "int8_file_vs_float32": file_mb["onnxruntime int8"] / file_mb["onnxruntime"],
                 "export_int8_s": export_int8_s}
        print(f"int8: {extra['speedup_int8_vs_float32_onnx']:.2f}x the float32 file's speed, "
              f"{extra['speedup_int8_vs_torch']:.2f}x torch's; file {100 * extra['int8_file_vs_float32']:.1f} % "
              f"of the float32 one (export + quantization {export_int8_s:.1f} s)")
    if args.fused:
        extra["fusions"] = fusions
        for side, base in (("onnxruntime fused", "onnxruntime"), ("onnxruntime int8 fused", "onnxruntime int8")):
            if side in times:
                extra[f"speedup {side} vs {base}"] = c.paired_ratio(times[base], times[side])
                extra[f"label agreement {side} vs {base}"] = float(np.mean([(a == b).mean() for a, b in
                                                                           zip(labels[base], labels[side])]))
                print(f"{side}: fused {fusions[side]['fused']}; {extra[f'speedup {side} vs {base}']:.3f}x the "
                      f"unfused file's speed; labels agree with it on "
                      f"{100 * extra[f'label agreement {side} vs {base}']:.3f} % of the pixels")
    if args.encoder_floor:
        times["torch fastest bare encoder"] = [min(a, b) for a, b in zip(
            times["torch bare encoder"], times["torch bare encoder fastpath off"])]  # paired by round
        extra["over_own_bare_encoder"] = {
            "torch": c.paired_ratio(times["torch"], times["torch fastest bare encoder"]),
            "onnxruntime": c.paired_ratio(times["onnxruntime"], times["onnxruntime bare encoder"]),
            "bare_encoder_speedup_onnxruntime_vs_torch": c.paired_ratio(
                times["torch fastest bare encoder"], times["onnxruntime bare encoder"])}
        floor = extra["over_own_bare_encoder"]
        print(f"segment / own fastest bare encoder: torch {floor['torch']:.3f}, onnxruntime "
              f"{floor['onnxruntime']:.3f} (target: onnxruntime within 1.10); bare encoder onnxruntime "
              f"{floor['bare_encoder_speedup_onnxruntime_vs_torch']:.2f}x torch's fastest")
    name = "onnx_int8" if args.int8 else "onnx"
    name = name + "_fused" if args.fused else name
    name = name + "_floor" if args.encoder_floor else name
    name = name if args.preset == "vitb16" else f"{name}_{args.preset}"
    c.save(name, args,
           {"preset": args.preset, "images_per_s": rate, "speedup_onnxruntime": ratio, "times_s": times, "threads": threads,
            "peak_memory": memory, "export_s": export_s, "session_s": session_s, "file_mb": file_mb,
            "label_agreement_with_onnx_float32": agree, "images": len(images), "image_size": [512, 512], **extra})


if __name__ == "__main__":
    main()
