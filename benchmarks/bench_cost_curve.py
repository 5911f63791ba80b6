"""Cost curve: time and peak memory per image across image sizes, vocabulary sizes and batch sizes.

Three sweeps around one base point (a 512 x 512 photo, the 20 VOC classes with cached text embeddings,
``batch_size`` 8), each point on every back-end that applies, the back-ends interleaved in rotated rounds:

- image size (H x W): 512x512, 1024x1024, 1536x2048, 3000x4000 (the sliding window, crops batched);
- vocabulary: 5, 20, 171, 500, 2000 classes (the COCO-Stuff names, then numbered names), with the text
  embeddings cached (encoded before timing) and uncached (the text cache emptied before every call: the text
  tower runs inside the timed call; PyTorch only, the ONNX files have no text tower);
- batch: ``segment_batch`` of b different 512 x 512 photos with ``batch_size=b``, b = 1, 4, 16 (time per image).

Back-ends: PyTorch (``AlignZegSegmenter``), ONNX Runtime float32 and int8 (``OnnxSegmenter`` on files exported
from the same random-init model; they get the class embeddings as arrays). Peak memory of a point: the
process's resident set is reset before the point (``/proc/self/clear_refs``) and its peak read after (``VmHWM``;
it includes the models held); on CUDA, ``torch.cuda.max_memory_allocated``. The JSON records the machine (CPU
model, threads, torch and onnxruntime versions) and the load average before and after.

    python benchmarks/bench_cost_curve.py --preset tiny --quick          # smoke run, seconds to minutes
    python benchmarks/bench_cost_curve.py --preset vitb16 --threads 2    # the real curve (hours on 2 CPU cores)
    python benchmarks/bench_cost_curve.py --preset vitb16 --device cuda  # on a GPU (gpu_check.py --cost-curve)
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import _common as c

SIZES = ((512, 512), (1024, 1024), (1536, 2048), (3000, 4000))
VOCABULARIES = (5, 20, 171, 500, 2000)
BATCHES = (1, 4, 16)
QUICK = {"sizes": SIZES, "vocabularies": (5, 171, 2000), "batches": (1, 16)}
BASE = {"size": (512, 512), "classes": 20, "batch": 8}
BACKENDS = ("torch", "onnx float32", "onnx int8")


def class_names(count: int) -> list[str]:
    """``count`` distinct class names: the 171 COCO-Stuff names, then ``"object 172"``, ``"object 173"``..."""
    names = list(c.coco_stuff_names())[:count]
    return names + [f"object {i}" for i in range(len(names) + 1, count + 1)]


def photos(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """``count`` different (H, W, 3) uint8 views of the test photo (shifted crops, resized to ``size``)."""
    from PIL import Image

    base = c.test_image((600, 800))
    views = [base[(i * 17) % 120:(i * 17) % 120 + 480, (i * 29) % 160:(i * 29) % 160 + 640] for i in range(count)]
    return [np.asarray(Image.fromarray(v).resize((size[1], size[0]), Image.BILINEAR)) for v in views]


def machine(threads: int, device: str) -> dict[str, Any]:
    """CPU model, threads, library versions and (on CUDA) the GPU."""
    import torch

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import onnxruntime
        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    return {"cpu_model": cpu, "cpu_count": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
            "onnxruntime": ort, "device": device,
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None, "python": platform.python_version()}


class Memory:
    """Peak memory of a block: resident set (``VmHWM`` after resetting it) on the CPU, allocated on CUDA."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"

    def reset(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            c.reset_peak_memory()

    def peak_mb(self) -> float:
        if self.cuda:
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        return c.memory_mb("VmHWM")


def measure(sides: dict[str, Callable[[], Any]], images: int, reps: int, memory: Memory,
            before: Callable[[], None] | None = None) -> dict[str, dict[str, Any]]:
    """Each side's seconds per image (median over ``reps`` rotated interleaved rounds after one warm-up round) and
    peak memory (MB, over its warm-up call). ``before`` runs before every call, outside the timing."""
    out: dict[str, dict[str, Any]] = {}
    for name, fn in sides.items():  # warm-up, one side at a time: its peak memory
        memory.reset()
        if before:
            before()
        fn()
        out[name] = {"peak_mb": memory.peak_mb()}
    times: dict[str, list[float]] = {name: [] for name in sides}
    items = list(sides.items())
    for r in range(reps):
        for name, fn in items[r % len(items):] + items[:r % len(items)]:
            if before:
                before()
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) / images)
    for name in sides:
        out[name].update(s_per_image=c.median(times[name]), times_s_per_image=times[name])
    return out


def run_curve(preset: str, quick: bool, reps: int, threads: int, device: str,
              backends: Sequence[str] = BACKENDS) -> dict[str, Any]:
    """Measure the three sweeps; returns the JSON-ready record (``points``: one per sweep point and back-end)."""
    import torch

    from alignzeg import AlignZegSegmenter
    from alignzeg.onnx.runtime import OnnxSegmenter
    from alignzeg.pipeline.windows import plan_windows

    torch.set_num_threads(threads)
    grid = QUICK if quick else {"sizes": SIZES, "vocabularies": VOCABULARIES, "batches": BATCHES}
    backends = [b for b in backends if device == "cpu" or b == "torch"]  # the ONNX files run on the CPU here
    load_start = os.getloadavg()
    seg = AlignZegSegmenter.from_preset(preset, seed=0, device=device, batch_size=BASE["batch"])
    memory = Memory(device)
    points: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="alignzeg-cost-curve-") as folder:
        runtimes: dict[str, Any] = {"torch": seg}
        for name, int8 in (("onnx float32", False), ("onnx int8", True)):
            if name in backends:
                path = str(Path(folder) / f"{name.replace(' ', '_')}.onnx")
                AlignZegSegmenter.from_preset(preset, seed=0, device="cpu").export_onnx(path, int8=int8)
                runtimes[name] = OnnxSegmenter.load(path, threads=threads, batch_size=BASE["batch"])

        def embeddings(names: list[str], backend: str) -> Any:
            return None if backend == "torch" else seg.encode_vocabulary(names).cpu().numpy()

        def add(sweep: str, point: dict[str, Any], results: dict[str, dict[str, Any]]) -> None:
            for backend, values in results.items():
                points.append({"sweep": sweep, **point, "backend": backend, **values})
            print(sweep, point, {k: f"{v['s_per_image']:.4f} s, {v['peak_mb']:.0f} MB" for k, v in results.items()},
                  flush=True)

        base_names = class_names(BASE["classes"])
        seg.encode_vocabulary(base_names)
        for size in grid["sizes"]:
            image = photos(1, size)[0]
            sides = {b: _segment(runtimes[b], [image], base_names, embeddings(base_names, b), BASE["batch"])
                     for b in backends}
            add("image size", {"size": list(size), "windows": len(plan_windows(size, seg.config).origins),
                               "classes": BASE["classes"], "cached": True, "batch": BASE["batch"]},
                measure(sides, 1, reps, memory))
        image = photos(1, BASE["size"])[0]
        for count in grid["vocabularies"]:
            names = class_names(count)
            seg.encode_vocabulary(names)
            sides = {b: _segment(runtimes[b], [image], names, embeddings(names, b), BASE["batch"]) for b in backends}
            add("vocabulary", {"size": list(BASE["size"]), "classes": count, "cached": True, "batch": BASE["batch"]},
                measure(sides, 1, reps, memory))
            uncached = {"torch": _segment(seg, [image], names, None, BASE["batch"])}
            add("vocabulary", {"size": list(BASE["size"]), "classes": count, "cached": False, "batch": BASE["batch"]},
                measure(uncached, 1, reps, memory, before=seg.vocabulary.cache_clear))
        for batch in grid["batches"]:
            images = photos(batch, BASE["size"])
            sides = {b: _segment(runtimes[b], images, base_names, embeddings(base_names, b), batch) for b in backends}
            add("batch", {"size": list(BASE["size"]), "classes": BASE["classes"], "cached": True, "batch": batch},
                measure(sides, batch, reps, memory))
    return {"preset": preset, "quick": quick, "reps": reps, "machine": machine(threads, device),
            "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "points": points}


def _segment(runtime: Any, images: list[np.ndarray], names: list[str], embeddings: Any,
             batch: int) -> Callable[[], Any]:
    """One timed call: ``segment_batch`` of ``images`` with ``batch_size=batch`` (names, or embeddings + names)."""
    def call() -> Any:
        runtime.batch_size = batch
        if embeddings is None:
            return runtime.segment_batch(images, names, keep_image=False)
        return runtime.segment_batch(images, embeddings, class_names=names, keep_image=False)
    return call


def render_table(data: dict[str, Any]) -> str:
    """The cost curve's JSON as a markdown table: one row per sweep point, one column per back-end, each cell
    ``seconds per image / peak MB`` (``-`` where the back-end does not apply)."""
    backends = list(dict.fromkeys(p["backend"] for p in data["points"]))
    rows: dict[tuple, dict[str, str]] = {}
    for p in data["points"]:
        key = (p["sweep"], f"{p['size'][0]}x{p['size'][1]}", p.get("windows", ""), p["classes"],
               "cached" if p["cached"] else "uncached", p["batch"])
        rows.setdefault(key, {})[p["backend"]] = f"{p['s_per_image']:.3g} s / {p['peak_mb']:.0f} MB"
    header = ["sweep", "image HxW", "windows", "classes", "text embeddings", "batch"] + \
        [f"{b} (s per image / peak)" for b in backends]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, cells in rows.items():
        lines.append("| " + " | ".join([str(k) for k in key] + [cells.get(b, "-") for b in backends]) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = c.parser(__doc__.splitlines()[0], reps=3)
    p.add_argument("--preset", default="tiny", help="model preset: tiny (a smoke run) or vitb16 (the real curve)")
    p.add_argument("--quick", action="store_true", help="fewer vocabularies and batches (%s), one round" % QUICK)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="PyTorch's device (ONNX: CPU only)")
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: %s" % ", ".join(BACKENDS))
    p.add_argument("--name", default=None, help="results file name (default: cost_curve, cost_curve_<preset>)")
    args = p.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",")]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise SystemExit(f"--backends: unknown {unknown}; expected some of {list(BACKENDS)}")
    data = run_curve(args.preset, args.quick, 1 if args.quick else args.reps, args.threads or 2, args.device,
                     backends)
    print(render_table(data))
    name = args.name or ("cost_curve" if args.preset == "vitb16" and not args.quick else f"cost_curve_{args.preset}")
    c.save(name, args, data)
    if not args.no_save:
        print(json.dumps({"wrote": str(c.RESULTS / f"{name}.json")}))


if __name__ == "__main__":
    main()
