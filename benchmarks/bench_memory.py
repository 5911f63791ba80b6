"""Benchmark 4: peak resident memory of ``segment`` from 512 px to a 4000 x 3000 photo.

Each size runs in a fresh subprocess (ViT-B/16, random init, 20 VOC classes) that writes the test photo as a
JPEG, builds the model, encodes the vocabulary, resets the peak (``/proc/self/clear_refs``) and segments the
file the way ``alignzeg segment`` does; it reports the peak RSS (``VmHWM``) of building the model and of the
``segment`` call, and the process's peak over both. Square images are resized to 512 px on their short side
(one window); the wide ones go through the sliding window (several crops). Targets: < 3 GB at 2048 px; the
4000 x 3000 photo's peak at most 1.5x the 1024 x 1024 one's (memory bounded by the crop batch, not the image).

    python benchmarks/bench_memory.py [--threads N] [--sizes 1024x1024,3000x4000] [--name memory]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import _common as c

SIZES = ((512, 512), (1024, 1024), (2048, 2048), (1024, 2048), (2048, 4096), (3000, 4000))

CHILD = r"""
import json, os, sys, tempfile, torch
sys.path.insert(0, {bench!r})
import _common as c
from PIL import Image
from alignzeg import AlignZegSegmenter
from alignzeg.pipeline.windows import plan_windows
from alignzeg.train.datasets.splits import VOC_CLASSES
if {threads}: torch.set_num_threads({threads})
folder = tempfile.mkdtemp(prefix="alignzeg-bench-memory-")
path = os.path.join(folder, "photo.jpg")
Image.fromarray(c.test_image(({h}, {w}))).save(path, quality=90)
seg = AlignZegSegmenter.from_preset("vitb16", seed=0, device="cpu")
seg.encode_vocabulary(list(VOC_CLASSES))
model_mb, before_mb = c.memory_mb("VmHWM"), c.memory_mb("VmRSS")
c.reset_peak_memory()  # VmHWM from the current RSS: the next peak is the segment call's
result = seg.segment(path, list(VOC_CLASSES))
segment_mb = c.memory_mb("VmHWM")
os.remove(path); os.rmdir(folder)
print(json.dumps({{"model_mb": model_mb, "rss_before_segment_mb": before_mb, "segment_peak_mb": segment_mb,
                  "peak_mb": max(model_mb, segment_mb), "windows": len(plan_windows(({h}, {w}), seg.config).origins),
                  "label_map": list(result.label_map.shape)}}))
"""


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    if not (h.isdigit() and w.isdigit()):
        raise SystemExit(f"--sizes takes HxW entries such as 3000x4000, got {text!r}")
    return int(h), int(w)


def main() -> None:
    p = c.parser(__doc__.splitlines()[0], reps=1)
    p.add_argument("--sizes", default=",".join(f"{h}x{w}" for h, w in SIZES),
                   help="comma-separated HxW image sizes (default: all)")
    p.add_argument("--name", default="memory", help="results file name (benchmarks/results/<name>.json)")
    args = p.parse_args()
    sizes = [_size(s) for s in args.sizes.split(",")]
    rows, results, loads = [], {}, []
    for h, w in sizes:
        code = CHILD.format(bench=str(c.RESULTS.parent), threads=args.threads or 0, h=h, w=w)
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        data = json.loads(out.stdout.strip().splitlines()[-1])
        loads.append(os.getloadavg())
        results[f"{h}x{w}"] = data
        rows.append([f"{h}x{w}", data["windows"], data["model_mb"], data["segment_peak_mb"],
                     data["segment_peak_mb"] - data["rss_before_segment_mb"], data["peak_mb"]])
        print(rows[-1], flush=True)
    print(c.table(["image HxW", "windows", "build peak MB", "segment peak MB", "segment peak - RSS before MB",
                   "process peak MB"], rows))
    targets = {}
    if "2048x2048" in results:
        peak = results["2048x2048"]["peak_mb"]
        targets["peak_2048_mb"] = peak
        print(f"target < 3 GB at 2048 px: {'met' if peak < 3072 else 'NOT met'} ({peak:.0f} MB)")
    if "3000x4000" in results and "1024x1024" in results:
        ratio = results["3000x4000"]["peak_mb"] / results["1024x1024"]["peak_mb"]
        targets["peak_ratio_4000x3000_vs_1024"] = ratio
        print(f"target peak(4000 x 3000) / peak(1024 x 1024) <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'} "
              f"({ratio:.3f})")
    c.save(args.name, args, {"results": results, "loadavg_after_each_size": loads, **targets,
                             "targets": "peak < 3072 MB at 2048 px; peak(3000x4000) / peak(1024x1024) <= 1.5"})


if __name__ == "__main__":
    main()
