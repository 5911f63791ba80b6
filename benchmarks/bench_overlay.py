"""Overlay of a large image: alignzeg's banded blend vs imgviz.label2rgb (what overlay() used before).

Interleaved runs; time and peak traced memory (numpy allocations, tracemalloc) of each, side by side.

    python benchmarks/bench_overlay.py --height 6000 --width 8000 --pairs 2
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import imgviz
import numpy as np

from alignzeg.visualize import _colormap, draw_overlay, legend_font_size


def _old(label_map, names, image):
    shifted = label_map.astype(np.int64) + 1
    alphas = {0: 0.0, **{i + 1: 0.5 for i in range(len(names))}}
    labels = {i + 1: n for i, n in enumerate(names)}
    font = legend_font_size(*label_map.shape, [n for i, n in enumerate(names) if (label_map == i).any()])
    return imgviz.label2rgb(shifted, image=image, alpha=alphas, label_names=labels if font else None,
                            colormap=_colormap(names), font_size=font or 10, loc="rb")


def _measure(fn, *args):
    tracemalloc.start()
    start = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return np.asarray(out), seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--height", type=int, default=6000)
    parser.add_argument("--width", type=int, default=8000)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    names = [f"class {i}" for i in range(20)]
    coarse = rng.integers(-1, len(names), size=(args.height // 100 + 1, args.width // 100 + 1)).astype(np.int32)
    label_map = np.kron(coarse, np.ones((100, 100), dtype=np.int32))[: args.height, : args.width]
    image = rng.integers(0, 256, size=(args.height, args.width, 3), dtype=np.uint8)
    rows = []
    for _ in range(args.pairs):
        old, t_old, m_old = _measure(_old, label_map, names, image)
        new, t_new, m_new = _measure(draw_overlay, label_map, names, image)
        rows.append((t_old, t_new, m_old, m_new))
        del old, new
    for t_old, t_new, m_old, m_new in rows:
        print(f"{args.width}x{args.height}: imgviz.label2rgb {t_old:6.2f} s {m_old / 2**30:5.2f} GiB | "
              f"draw_overlay {t_new:6.2f} s {m_new / 2**30:5.2f} GiB | speed-up {t_old / t_new:5.1f}x, "
              f"memory {m_old / m_new:5.1f}x less")


if __name__ == "__main__":
    main()
