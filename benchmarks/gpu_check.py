"""The CUDA check in one script: CUDA tests, bf16 throughput against the bare CLIP encoder, peak memory, AMP training.

On a CUDA machine (the full check, a few minutes on one GPU):

1. runs the tests marked ``cuda`` (``pytest -m cuda``) in a subprocess and records their counts;
2. images/s of the ``vitb16`` network (``predict_torch``: CLIP tower, MRPE, GEPC, PBC, semantic map) on
   512x512 crops under bf16 autocast (fp16 where bf16 is unsupported), 171 classes, batch 1, 8 and 32,
   against the bare CLIP image encoder on the same crops (the floor), timed with CUDA events after warm-up,
   and the peak allocated memory of each batch size;
3. a 50-step AMP training run of the ``tiny`` preset on the attribute world (world 0, the shipped
   mini-CLIP, the world recipe's settings): seconds, steps/s, first and last loss, peak memory;

and writes everything to one JSON (``benchmarks/results/gpu_check.json``). Exit status 1 when a part failed.

Without CUDA, or with ``--dry``, it runs the same code on the CPU at toy sizes (the tiny preset at 64 px,
batch 1 and 2, a few timing iterations, 3 training steps, float32: autocast is CUDA-only here); the CUDA
tests are still collected and run (they skip). The test suite runs this dry path.

    python benchmarks/gpu_check.py                    # on a GPU machine
    python benchmarks/gpu_check.py --dry --out /tmp/gpu_check_dry.json
    python benchmarks/gpu_check.py --cost-curve       # also the cost curve on CUDA (bench_cost_curve.py, PyTorch)

``--cost-curve`` adds the cost curve of ``bench_cost_curve.py`` (image sizes, vocabularies, batch sizes) on the
GPU to the JSON (``cost_curve``): the ``vitb16`` preset, or ``tiny --quick`` on the dry path.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

import _common as c
from gpu_throughput import cuda_time

ROOT = Path(__file__).resolve().parent.parent

FULL = {"preset": "vitb16", "batches": (1, 8, 32), "classes": 171, "iters": 20, "warmup": 5,
        "train_steps": 50, "train_batch": 8}
DRY = {"preset": "tiny", "batches": (1, 2), "classes": 20, "iters": 2, "warmup": 1,
       "train_steps": 3, "train_batch": 2}


def _sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def _time(fn: Callable[[], Any], iters: int, warmup: int, cuda: bool) -> float:
    """Median seconds per call: CUDA events on the GPU (``gpu_throughput.cuda_time``), ``perf_counter`` on the CPU."""
    if cuda:
        return cuda_time(fn, iters, warmup)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start_s = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start_s)
    return c.median(times)


def _autocast_name(cuda: bool) -> str:
    """The autocast dtype the segmenter and trainer use on CUDA, or what runs on the CPU."""
    if not cuda:
        return "off (CPU: float32)"
    from alignzeg.device import autocast_dtype

    return str(autocast_dtype()).replace("torch.", "")


def _reset_peak(cuda: bool) -> None:
    if cuda:
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(cuda: bool) -> float:
    """Peak allocated CUDA memory since the last reset, or the process's peak RSS on the CPU (MB)."""
    if cuda:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_cuda_tests(paths: Sequence[str] = ("tests",), timeout_s: float = 900) -> dict[str, Any]:
    """``pytest -m cuda PATHS`` in a subprocess: return code, the counts of its summary line and the line itself."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *paths]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
    summary = lines[-1] if lines else ""
    counts = {}
    for part in summary.strip("= ").split(" in ")[0].split(", "):
        words = part.split()
        if len(words) == 2 and words[0].isdigit():
            counts[words[1]] = int(words[0])
    # pytest exits 5 when nothing is collected, 0 when all selected tests pass or skip
    return {"command": " ".join(cmd[1:]), "returncode": done.returncode, "counts": counts, "summary": summary,
            "seconds": time.perf_counter() - start, "ok": done.returncode == 0}


def measure_throughput(preset: str, batches: Sequence[int], classes: int, iters: int, warmup: int,
                       device: str) -> dict[str, Any]:
    """images/s of ``predict_torch`` and of the bare CLIP image encoder per batch size, with peak memory."""
    from alignzeg import AlignZegSegmenter

    cuda = device.startswith("cuda")
    names = list(c.coco_stuff_names())[:classes]
    # PBC on, as for a trained model; autocast on (used on CUDA only)
    seg = AlignZegSegmenter.from_preset(preset, seed=0, device=device, seen_classes=names[: classes * 9 // 10],
                                        config_overrides={"indicator_trained": True})
    embeddings = seg.encode_vocabulary(names)
    seen = torch.zeros(len(names), dtype=torch.bool)
    seen[: classes * 9 // 10] = True
    model, size = seg.model, seg.config.input_size
    rows = {}
    for batch in batches:
        crops = torch.rand(batch, 3, size, size, device=device)

        def clip_encoder() -> None:
            with torch.inference_mode(), seg.autocast_context():
                model.backbone.encode_image_dense(model.normalize(crops))

        def network() -> None:
            seg.predict_torch(crops, embeddings, seen)

        _reset_peak(cuda)
        clip_s = _time(clip_encoder, iters, warmup, cuda)
        net_s = _time(network, iters, warmup, cuda)
        rows[str(batch)] = {"clip_encoder_images_per_s": batch / clip_s, "network_images_per_s": batch / net_s,
                            "network_over_clip_time": net_s / clip_s, "peak_memory_mb": _peak_mb(cuda)}
        del crops
    return {"preset": preset, "input_size": size, "classes": len(names), "device": device,
            "autocast": _autocast_name(cuda), "iters": iters, "warmup": warmup, "batches": rows}


def measure_training(steps: int, batch: int, device: str) -> dict[str, Any]:
    """``steps`` steps of the world recipe (tiny preset, world 0, the shipped mini-CLIP), AMP on CUDA."""
    from alignzeg.demo import CLIP_SOURCE, DEMO_WORLD
    from alignzeg.train import Trainer
    from alignzeg.train.training.world_recipe import world_train_config
    from alignzeg.worlds.export import WorldDataset
    from alignzeg.worlds.attributes import AttributeWorld, world_config

    cuda = device.startswith("cuda")
    world = AttributeWorld(world_config(DEMO_WORLD))
    config = world_train_config(world, CLIP_SOURCE, iterations=steps, batch_size=batch,
                                amp=True, device=device, progress=False, log_every=max(steps, 1))
    trainer = Trainer(config, None, WorldDataset(world, "train", max(steps * batch, 16)), out_dir=None)
    _reset_peak(cuda)
    start = time.perf_counter()
    trainer.train()
    _sync(cuda)
    seconds = time.perf_counter() - start
    losses = [record["loss"] for record in trainer.history]
    return {"preset": config.preset, "world": DEMO_WORLD, "steps": len(losses), "batch_size": batch,
            "amp": _autocast_name(cuda),
            "seconds": seconds, "steps_per_s": len(losses) / seconds, "loss_first": losses[0],
            "loss_last": losses[-1], "all_finite": all(math.isfinite(v) for v in losses),
            "peak_memory_mb": _peak_mb(cuda)}


def run(dry: bool, out: Path, skip_tests: bool = False, cost_curve: bool = False) -> dict[str, Any]:
    """Run the check (``dry``: CPU toy sizes) and write its JSON to ``out``; returns what was written.
    ``cost_curve``: also ``bench_cost_curve.run_curve`` on the check's device."""
    cuda = torch.cuda.is_available() and not dry
    sizes = FULL if cuda else DRY
    device = "cuda" if cuda else "cpu"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    env = c.environment()
    if cuda:
        env.update({"cuda_version": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                    "gpu_memory_gb": torch.cuda.get_device_properties(0).total_memory / 2**30})
    result: dict[str, Any] = {"benchmark": "gpu_check", "mode": "cuda" if cuda else "dry (CPU)",
                              "command": "python " + " ".join(sys.argv), "environment": env}
    # the dry path runs only the file of CUDA tests (collecting the whole suite takes longer than the rest)
    paths = ["tests"] if cuda else ["tests/test_cuda.py"]
    result["cuda_tests"] = {"skipped": "--skip-tests"} if skip_tests else run_cuda_tests(paths)
    result["throughput"] = measure_throughput(sizes["preset"], sizes["batches"], sizes["classes"], sizes["iters"],
                                              sizes["warmup"], device)
    result["training"] = measure_training(sizes["train_steps"], sizes["train_batch"], device)
    if cost_curve:
        from bench_cost_curve import run_curve

        result["cost_curve"] = run_curve("vitb16" if cuda else "tiny", quick=not cuda, reps=3 if cuda else 1,
                                         threads=torch.get_num_threads(), device=device,
                                         backends=("torch",) if cuda else ("torch", "onnx float32", "onnx int8"))
    result["ok"] = bool(result["cuda_tests"].get("ok", True) and result["training"]["all_finite"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _report(result: dict[str, Any]) -> str:
    t = result["throughput"]
    rows = [[b, r["network_images_per_s"], r["clip_encoder_images_per_s"], r["network_over_clip_time"],
             r["peak_memory_mb"]] for b, r in t["batches"].items()]
    train = result["training"]
    return "\n".join([
        f"{result['mode']}: {result['environment'].get('cuda') or result['environment']['processor']}",
        f"CUDA tests: {result['cuda_tests'].get('summary', result['cuda_tests'])}",
        f"{t['preset']} at {t['input_size']} px, {t['classes']} classes, autocast {t['autocast']}:",
        c.table(["batch", "network images/s", "CLIP encoder images/s", "time / CLIP", "peak MB"], rows),
        f"training: {train['steps']} steps of {train['preset']} (batch {train['batch_size']}, AMP {train['amp']}) "
        f"in {train['seconds']:.1f} s, loss {train['loss_first']:.3f} -> {train['loss_last']:.3f}, "
        f"peak {train['peak_memory_mb']:.0f} MB",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry", action="store_true", help="CPU toy sizes even where CUDA is available")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON to write (default: benchmarks/results/gpu_check.json, or gpu_check_dry.json)")
    p.add_argument("--skip-tests", action="store_true", help="do not run the CUDA-marked tests")
    p.add_argument("--cost-curve", action="store_true",
                   help="also run bench_cost_curve.py's curve on the device (vitb16 on CUDA, tiny --quick dry)")
    args = p.parse_args(argv)
    dry = args.dry or not torch.cuda.is_available()
    out = args.out or c.RESULTS / ("gpu_check_dry.json" if dry else "gpu_check.json")
    result = run(dry, out, skip_tests=args.skip_tests, cost_curve=args.cost_curve)
    print(_report(result))
    print(f"wrote {out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
