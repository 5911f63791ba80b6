"""Benchmark: ``segment`` in PyTorch vs the exported graph on ONNX Runtime (``alignzeg.onnx``), CPU.

ViT-B/16 (random init; the preset's full architecture, PBC on), 512x512 photos (one window each), the 20 VOC classes (cached in torch, stored in
the ONNX file), equal intra-op thread counts. Speed: the two sides interleaved over a few images in one
process (images/s, and the median per-round ratio). Peak memory: each side in a fresh subprocess that
loads its model and segments the same images (``VmHWM``); the ONNX child blocks ``import torch``.

    python benchmarks/bench_onnx.py [--reps 3] [--threads 2]
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
from alignzeg.onnx.runtime import OnnxSegmenter
from alignzeg.train.splits import VOC_CLASSES

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
    seg = AlignZegSegmenter.from_preset("vitb16", seed=0, device="cpu", seen_classes=names[:15],
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


def _peak_memory(onnx: bool, path: str, images_path: str, names: list[str], threads: int) -> dict:
    code = CHILD.format(onnx=onnx, path=path, images=images_path, names=names, threads=threads)
    env_path = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": env_path})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = c.parser(__doc__.splitlines()[0], reps=3)
    p.add_argument("--images", type=int, default=3, help="different 512x512 images per round")
    args = p.parse_args()
    threads = args.threads or 2
    torch.set_num_threads(threads)
    names = list(VOC_CLASSES)
    seg = AlignZegSegmenter.from_preset("vitb16", seed=0, device="cpu", seen_classes=names[:15],
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

        def run(segmenter):
            return lambda: [segmenter.segment(image, names, keep_image=False) for image in images]

        times = c.interleaved({"torch": run(seg), "onnxruntime": run(runtime)}, reps=args.reps)
        agree = np.mean([(seg.segment(i, names).label_map == runtime.segment(i, names).label_map).mean()
                         for i in images])
        images_path = str(Path(folder) / "images.npy")
        np.save(images_path, images)
        memory = {"torch": _peak_memory(False, path, images_path, names, threads),
                  "onnxruntime": _peak_memory(True, path, images_path, names, threads)}
        file_mb = Path(path).stat().st_size / 2**20
    rate = {k: len(images) / c.median(v) for k, v in times.items()}
    ratio = c.paired_ratio(times["torch"], times["onnxruntime"])
    rows = [[k, rate[k], memory[k]["after_load_mb"], memory[k]["peak_mb"]] for k in ("torch", "onnxruntime")]
    print(c.table(["side", "images/s", "RSS after load MB", "peak RSS MB"], rows))
    print(f"onnxruntime speed-up (torch time / onnxruntime time, median of {args.reps} interleaved rounds of "
          f"{len(images)} images): {ratio:.2f}x; threads {threads}; label maps agree on {100 * agree:.3f} % of pixels")
    print(f"export {export_s:.1f} s, file {file_mb:.0f} MB, onnxruntime session {session_s:.1f} s")
    c.save("onnx", args, {"images_per_s": rate, "speedup_onnxruntime": ratio, "times_s": times, "threads": threads,
                          "peak_memory": memory, "export_s": export_s, "session_s": session_s, "file_mb": file_mb,
                          "label_agreement": float(agree), "images": len(images), "image_size": [512, 512]})


if __name__ == "__main__":
    main()
