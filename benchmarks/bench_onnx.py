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

    python benchmarks/bench_onnx.py [--reps 3] [--threads 2] [--int8] [--fused] [--no-memory] [--preset vitb16]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
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


def main() -> None:
    p = c.parser(__doc__.splitlines()[0], reps=3)
    p.add_argument("--images", type=int, default=3, help="different 512x512 images per round")
    p.add_argument("--int8", action="store_true", help="also time the int8 file (export_onnx(..., int8=True))")
    p.add_argument("--fused", action="store_true", help="also time the files exported with fuse=True")
    p.add_argument("--rotate", action="store_true", help="round r starts with the r-th side (default with --fused)")
    p.add_argument("--preset", default="vitb16", help="model preset (tiny: a smoke run)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
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

        times = c.interleaved({k: run(v) for k, v in sides.items()}, reps=args.reps, rotate=args.rotate or args.fused)
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
    rows = [[k, rate[k], memory.get(k, nan)["after_load_mb"], memory.get(k, nan)["peak_mb"]] for k in sides]
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
    name = "onnx_int8" if args.int8 else "onnx"
    name = name + "_fused" if args.fused else name
    name = name if args.preset == "vitb16" else f"{name}_{args.preset}"
    c.save(name, args,
           {"preset": args.preset, "images_per_s": rate, "speedup_onnxruntime": ratio, "times_s": times, "threads": threads,
            "peak_memory": memory, "export_s": export_s, "session_s": session_s, "file_mb": file_mb,
            "label_agreement_with_onnx_float32": agree, "images": len(images), "image_size": [512, 512], **extra})


if __name__ == "__main__":
    main()
