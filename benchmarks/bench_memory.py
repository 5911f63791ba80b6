"""Benchmark 4: peak resident memory of ``segment`` for 512, 1024 and 2048 px images.

Each size runs in a fresh subprocess (ViT-B/16, random init, 20 VOC classes) that reports the peak RSS
(``VmHWM``) after building the model and after segmenting. Square images are resized to 512 px on their
short side (one window); the 1024x2048 and 2048x4096 inputs go through the sliding window (several crops).
Target: < 3 GB at 2048 px.

    python benchmarks/bench_memory.py [--threads N]
"""

from __future__ import annotations

import json
import subprocess
import sys

import _common as c

SIZES = ((512, 512), (1024, 1024), (2048, 2048), (1024, 2048), (2048, 4096))

CHILD = r"""
import json, sys, torch
sys.path.insert(0, {bench!r})
import _common as c
from alignzeg import AlignZegSegmenter
from alignzeg.pipeline.windows import plan_windows
from alignzeg.train.datasets.splits import VOC_CLASSES
if {threads}: torch.set_num_threads({threads})
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
seg = AlignZegSegmenter.from_preset("vitb16", seed=0, device="cpu")
seg.encode_vocabulary(list(VOC_CLASSES))
model_mb = hwm()
image = c.test_image(({h}, {w}))
result = seg.segment(image, list(VOC_CLASSES))
print(json.dumps({{"model_mb": model_mb, "peak_mb": hwm(), "windows": len(plan_windows(({h}, {w}), seg.config).origins),
                  "label_map": list(result.label_map.shape)}}))
"""


def main() -> None:
    args = c.parser(__doc__.splitlines()[0], reps=1).parse_args()
    rows, results = [], {}
    for h, w in SIZES:
        code = CHILD.format(bench=str(c.RESULTS.parent), threads=args.threads or 0, h=h, w=w)
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        data = json.loads(out.stdout.strip().splitlines()[-1])
        results[f"{h}x{w}"] = data
        rows.append([f"{h}x{w}", data["windows"], data["model_mb"], data["peak_mb"], data["peak_mb"] - data["model_mb"]])
        print(rows[-1], flush=True)
    print(c.table(["image HxW", "windows", "after build MB", "peak MB", "peak - build MB"], rows))
    peak = results["2048x2048"]["peak_mb"]
    print(f"target < 3 GB at 2048 px: {'met' if peak < 3072 else 'NOT met'} ({peak:.0f} MB)")
    c.save("memory", args, {"results": results, "target": "peak < 3072 MB at 2048 px"})


if __name__ == "__main__":
    main()
