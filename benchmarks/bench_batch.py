"""Benchmark: many images. Throughput of three ways side by side, and the CLI's memory over 500 images.

1. Images/s for N images (default 32) at 512x512 px, ViT-B/16 random init, 20 VOC classes, all read from
   JPEG files, measured in one run with the sides interleaved per round (A, B, C, A, B, C...):
   - loop:   ``for path in paths: seg.segment(path, classes)`` (one process, torch's threads)
   - stream: ``alignzeg.folder_jobs.run_batch`` (the engine of ``alignzeg segment ... --out-dir``: segment_iter
             with threaded decode-ahead, writing label PNGs and results.jsonl), in-process, same segmenter
   - ray:    ``segment_dataset`` on a local Ray with 2 actors (1 CPU each, each builds the model once);
             the time includes starting the actor pool and building the models, reported separately from
             a run on 2 images (``ray startup``) so the steady rate can be read off.
2. Resident memory (RSS) of the real CLI (a subprocess) over 500 tiny-preset images, sampled from
   /proc/PID/status when results.jsonl reaches 50, 250 and 500 lines, plus the process's peak (VmHWM).
   Flat = no growth with the image count.

    python benchmarks/bench_batch.py [--images 32] [--rounds 1] [--memory-images 500] [--skip-ray]
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import _common as c

SIZE = 512


def _write_images(folder: Path, count: int, size: tuple[int, int], fmt: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    base = c.test_image(size)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):  # the real photo, shifted and noised so that no two files are equal
        image = np.roll(base, 7 * i, axis=1).astype(np.int16) + rng.integers(-8, 9, base.shape)
        paths.append(str(folder / f"img{i:04d}.{fmt}"))
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(paths[-1])
    return paths


def throughput(args, folder: Path) -> dict:
    from alignzeg import AlignZegSegmenter
    from alignzeg.folder_jobs import collect_inputs, run_batch
    from alignzeg.train.datasets.splits import VOC_CLASSES

    classes = list(VOC_CLASSES)
    paths = _write_images(folder / "in", args.images, (SIZE, SIZE), "jpg")
    seg = AlignZegSegmenter.from_preset("vitb16", seed=0, device="cpu")
    seg.encode_vocabulary(classes)
    seg.segment(paths[0], classes)  # warm-up: first-call allocations are not charged to the first side
    inputs = collect_inputs([str(folder / "in")])
    runs = iter(range(10 ** 6))

    def loop():
        for path in paths:
            seg.segment(path, classes)

    def stream():
        run_batch(seg, inputs, classes, str(folder / f"out{next(runs)}"), settings={}, progress=False)

    fns = {"loop": loop, "stream": stream}
    ray_info = {}
    if not args.skip_ray:
        import ray

        from alignzeg.integrations.ray import segment_dataset

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        factory = functools.partial(AlignZegSegmenter.from_preset, "vitb16", seed=0, device="cpu")

        def ray_run(items=paths):
            ds = ray.data.from_items([{"path": p} for p in items])
            return sum(1 for _ in segment_dataset(ds, factory, classes, column="path", num_actors=2,
                                                  batch_size=2).iter_rows())

        fns["ray"] = ray_run
        start = time.perf_counter()
        ray_run(paths[:2])
        ray_info["startup_2_images_s"] = time.perf_counter() - start
    times = c.interleaved(fns, reps=args.rounds, warmup=0)
    out = {name: {"seconds": t, "images_per_s": args.images / c.median(t)} for name, t in times.items()}
    if "ray" in out:
        out["ray"].update(ray_info)
        import ray

        ray.shutdown()
    return out


def memory(args, folder: Path) -> dict:
    from alignzeg import AlignZegSegmenter

    _write_images(folder / "tiny_in", args.memory_images, (96, 128), "png")
    ckpt = AlignZegSegmenter.from_preset("tiny", seed=0).save_pretrained(folder / "tiny_ckpt")
    out_dir = folder / "tiny_out"
    env = {**os.environ, "PYTHONPATH": str(c.RESULTS.parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "alignzeg.cli", "segment", str(folder / "tiny_in"),
                             "--classes", "person,chair,wall,sky", "--model", ckpt, "--out-dir", str(out_dir),
                             "--no-progress"], env=env, stderr=subprocess.DEVNULL)
    marks = sorted({50, 250, args.memory_images} & set(range(1, args.memory_images + 1)))
    samples, results = {}, out_dir / "results.jsonl"
    while proc.poll() is None and len(samples) < len(marks):
        lines = results.read_bytes().count(b"\n") if results.exists() else 0
        for mark in marks:
            if lines >= mark and mark not in samples:
                samples[mark] = {"lines": lines, **_status(proc.pid)}
        time.sleep(0.01)
    proc.wait()
    return {"images": args.memory_images, "samples": samples, "exit_code": proc.returncode}


def _status(pid: int) -> dict:
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, kb = line.split()[:2]
                values[key.rstrip(":") + "_mb"] = int(kb) / 1024
    return values


def main() -> None:
    p = c.parser(__doc__.splitlines()[0], reps=1)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the three sides")
    p.add_argument("--memory-images", type=int, default=500)
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args()
    c.setup(args)
    data = {}
    with tempfile.TemporaryDirectory(prefix="alignzeg-bench-batch-") as tmp:
        folder = Path(tmp)
        if not args.skip_throughput:
            data["throughput"] = tp = throughput(args, folder)
            rows = [[name, args.images, c.median(v["seconds"]), v["images_per_s"],
                     v["images_per_s"] / tp["loop"]["images_per_s"]] for name, v in tp.items()]
            print(c.table(["way", "images", "seconds", "images/s", "x loop"], rows))
            if "ray" in tp:
                print(f"ray: starting 2 actors and building their models + 2 images took "
                      f"{tp['ray']['startup_2_images_s']:.1f} s")
        data["memory"] = mem = memory(args, folder)
        rows = [[mark, s["VmRSS_mb"], s["VmHWM_mb"]] for mark, s in sorted(mem["samples"].items())]
        print(c.table(["images done", "RSS MB", "peak RSS MB"], rows))
    c.save("batch", args, data)


if __name__ == "__main__":
    main()
