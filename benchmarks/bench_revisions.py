"""Benchmark: ``segment`` time of this checkout against another git revision, same run, interleaved rounds.

Answers "is the code no slower than before?" for the workloads of bench_onnx.py and bench_overhead.py:
each revision's package is unpacked from git (``git archive``) into a temporary folder and served by its own
child process, which builds the models once and then times one side per request. The parent asks the two
children in turn (rotating which revision goes first), so both revisions see the same machine load.

Sides (random-init models, seed 0, CPU, equal thread counts, one 512x512 VOC photo, a cached vocabulary):
- ``vitb16 torch voc``: bench_onnx.py's PyTorch side (20 VOC classes, 15 seen, PBC on);
- ``vitb16 onnx voc``: bench_onnx.py's ONNX Runtime side (the same model exported by that revision);
- ``vitb16 torch coco``: bench_overhead.py's ``segment_side_encoder`` side (171 COCO-Stuff classes);
- ``tiny torch coco`` / ``tiny onnx coco``: the tiny preset, where the pipeline around the network is a
  large share of the time (each timed request: 20 calls back to back).

Reported per side: the median over rounds of the per-round ratio (this checkout / the other revision), a
95 % distribution-free interval for that median (binomial order statistics), and whether the two revisions
gave the same label maps.

    python benchmarks/bench_revisions.py --base 65ff252 [--reps 9] [--threads 2] [--sides tiny]
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as c

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import hashlib, os, sys, tempfile, time, warnings
warnings.simplefilter("ignore")  # the untrained-indicator warning of bench_overhead's side (PBC off, as there)
import numpy as np
import torch
torch.set_num_threads({threads})
from alignzeg import AlignZegSegmenter
from alignzeg.onnx.runtime import OnnxSegmenter
from alignzeg.train.datasets.splits import VOC_CLASSES, COCO_STUFF_CLASSES
image = np.load({image!r})
voc, coco = list(VOC_CLASSES), list(COCO_STUFF_CLASSES)
folder = tempfile.mkdtemp(prefix="alignzeg-bench-rev-")
wanted = {sides!r}
sides = {{}}

def torch_side(preset, names, overrides):
    seg = AlignZegSegmenter.from_preset(preset, seed=0, device="cpu", seen_classes=names[:15],
                                        config_overrides=overrides)
    seg.encode_vocabulary(names)
    return seg

def onnx_side(seg, names, tag):
    path = os.path.join(folder, tag + ".onnx")
    seg.export_onnx(path, vocabulary=names)
    return OnnxSegmenter.load(path, threads={threads})

if any(s.startswith("vitb16") and s.endswith("voc") for s in wanted):
    voc_seg = torch_side("vitb16", voc, {{"indicator_trained": True}})
    sides["vitb16 torch voc"] = (voc_seg, voc)
    if "vitb16 onnx voc" in wanted:
        sides["vitb16 onnx voc"] = (onnx_side(voc_seg, voc, "vitb16"), voc)
if "vitb16 torch coco" in wanted:
    sides["vitb16 torch coco"] = (torch_side("vitb16", voc, None), coco)
    sides["vitb16 torch coco"][0].encode_vocabulary(coco)
if any(s.startswith("tiny") for s in wanted):
    tiny = torch_side("tiny", coco, {{"indicator_trained": True}})
    sides["tiny torch coco"] = (tiny, coco)
    sides["tiny onnx coco"] = (onnx_side(tiny, coco, "tiny"), coco)
for seg, names in sides.values():  # warm-up
    seg.segment(image, names, keep_image=False)
print("ready", flush=True)
for line in sys.stdin:
    side, calls = line.rstrip("\n").split("\t")
    seg, names = sides[side]
    start = time.perf_counter()
    for _ in range(int(calls)):
        labels = seg.segment(image, names, keep_image=False).label_map
    elapsed = (time.perf_counter() - start) / int(calls)
    print(elapsed, hashlib.md5(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest(), flush=True)
"""

CALLS = {"vitb16": 1, "tiny": 20}
"""``segment`` calls per timed request (a tiny-preset call takes ~15 ms: one alone is mostly noise)."""
ALL_SIDES = ("vitb16 torch voc", "vitb16 onnx voc", "vitb16 torch coco", "tiny torch coco", "tiny onnx coco")


def unpack(revision: str, folder: Path) -> Path:
    """The package of ``revision`` (``"HEAD"``-like names or hashes; ``"."`` = this working tree) in a folder."""
    if revision == ".":
        return ROOT
    target = folder / revision.replace("/", "_")
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "alignzeg"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


class Child:
    """One revision's process, serving timed ``segment`` calls of its sides."""

    def __init__(self, root: Path, code: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=str(root))
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"child for {root} did not start (said {line!r}); see its stderr above")

    def ask(self, side: str, calls: int) -> tuple[float, str]:
        """Seconds per call of ``calls`` back-to-back calls of ``side``, and the label map's digest."""
        self.proc.stdin.write(f"{side}\t{calls}\n")
        self.proc.stdin.flush()
        seconds, digest = self.proc.stdout.readline().split()
        return float(seconds), digest

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval for the median: order statistics k and n-1-k with binomial coverage."""
    xs, n = sorted(values), len(values)
    best = (xs[0], xs[-1])
    for k in range(n // 2):
        cover = 1 - 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
        if cover < level:
            break
        best = (xs[k], xs[n - 1 - k])
    return best


def main() -> None:
    p = c.parser(__doc__.splitlines()[0], reps=9)
    p.add_argument("--base", required=True, help="git revision to compare against (e.g. a commit hash)")
    p.add_argument("--head", default=".", help="revision measured against --base (default: this working tree)")
    p.add_argument("--sides", default="all", help="'all', 'tiny' or a comma-separated list of side names")
    args = p.parse_args()
    threads = args.threads or 2
    sides = {"all": ALL_SIDES, "tiny": ALL_SIDES[3:]}.get(args.sides) or tuple(args.sides.split(","))
    with tempfile.TemporaryDirectory(prefix="alignzeg-revisions-") as tmp:
        folder = Path(tmp)
        image_path = str(folder / "image.npy")
        import numpy as np

        np.save(image_path, c.test_image((512, 512)))
        code = CHILD.format(threads=threads, image=image_path, sides=list(sides))
        start = time.perf_counter()
        children = {"head": Child(unpack(args.head, folder), code), "base": Child(unpack(args.base, folder), code)}
        setup_s = time.perf_counter() - start
        times = {side: {"head": [], "base": []} for side in sides}
        digests = {side: {"head": set(), "base": set()} for side in sides}
        for r in range(args.reps):
            order = ["head", "base"] if r % 2 == 0 else ["base", "head"]
            for side in sides:
                for who in order:
                    seconds, digest = children[who].ask(side, CALLS[side.split()[0]])
                    times[side][who].append(seconds)
                    digests[side][who].add(digest)
        for child in children.values():
            child.close()
    rows, result = [], {}
    for side in sides:
        ratios = [h / b for h, b in zip(times[side]["head"], times[side]["base"])]
        low, high = median_interval(ratios)
        same = digests[side]["head"] == digests[side]["base"] and len(digests[side]["head"]) == 1
        result[side] = {"ratio_median": c.median(ratios), "ratio_ci95": [low, high], "same_labels": same,
                        "head_median_s": c.median(times[side]["head"]), "base_median_s": c.median(times[side]["base"]),
                        "times_s": times[side]}
        rows.append([side, 1000 * result[side]["base_median_s"], 1000 * result[side]["head_median_s"],
                     f"{c.median(ratios):.3f} [{low:.3f}, {high:.3f}]", same])
    print(c.table(["side", f"{args.base} ms", f"{args.head} ms", "ratio head/base [95 %]", "same labels"], rows))
    print(f"{args.reps} interleaved rounds, {threads} threads, set-up {setup_s:.0f} s")
    c.save("revisions", args, {"base": args.base, "head": args.head, "threads": threads, "sides": result,
                               "head_commit": _commit(args.head), "base_commit": _commit(args.base)})


def _commit(revision: str) -> str:
    rev = "HEAD" if revision == "." else revision
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", rev], capture_output=True, text=True).stdout.strip()
    dirty = revision == "." and subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "--", "alignzeg"]).returncode
    return out + ("+dirty" if dirty else "")


if __name__ == "__main__":
    main()
