"""Benchmark 5: images per second of ``segment_batch`` on the CPU for batch sizes 1, 4 and 8.

ViT-B/16 (random init), 512x512 images, 20 VOC classes (cached). For batch size b, ``b`` images go through
one ``segment_batch`` call with ``batch_size=b`` (one forward pass of b crops).

    python benchmarks/bench_throughput.py [--reps 1] [--preset vitb16] [--threads N]
"""

from __future__ import annotations

import _common as c
from alignzeg import AlignZegSegmenter
from alignzeg.train.datasets.splits import VOC_CLASSES

BATCHES = (1, 4, 8)


def main() -> None:
    p = c.parser(__doc__.splitlines()[0], reps=1)
    p.add_argument("--preset", default="vitb16")
    args = p.parse_args()
    c.setup(args)
    seg = AlignZegSegmenter.from_preset(args.preset, seed=0, device="cpu")
    names = list(VOC_CLASSES)
    seg.encode_vocabulary(names)
    size = seg.config.input_size
    images = [c.test_image((size, size))] * max(BATCHES)

    def run(b: int) -> None:
        seg.batch_size = b
        seg.segment_batch(images[:b], names, keep_image=False)

    times = c.interleaved({f"batch_{b}": (lambda b=b: run(b)) for b in BATCHES}, reps=args.reps, warmup=0)
    rows = [[b, c.median(times[f"batch_{b}"]), b / c.median(times[f"batch_{b}"])] for b in BATCHES]
    print(c.table(["batch", "median s per call", "images/s"], rows))
    c.save(f"throughput_{args.preset}", args, {"preset": args.preset, "image": [size, size], "seconds": times,
                                                "images_per_s": {f"batch_{r[0]}": r[2] for r in rows}})


if __name__ == "__main__":
    main()
