"""GPU throughput of AlignZeg at 512 px: images/s for a fixed-shape batch (default 8) under autocast.

Not run in this repository's CI (no GPU there); target >= 30 images/s at 512 px, ViT-B/16, on one H100.
Measures three things with CUDA events after warm-up: the bare CLIP image encoder (the floor), the
network + semantic map on ready-made crops (``predict_torch``, the device-side work), and the full
``segment_batch`` of uint8 images (including decoding, resizing and upsampled label maps on the CPU).
Shapes are fixed (batch x 3 x 512 x 512, a fixed vocabulary), so ``--compile`` (torch.compile, optionally
``--compile-mode reduce-overhead`` for CUDA graphs) compiles once.

    python benchmarks/gpu_throughput.py [--batch 8] [--dtype bf16|fp16|fp32] [--compile]
        [--compile-mode default|reduce-overhead|max-autotune] [--classes 171] [--iters 30]
"""

from __future__ import annotations

import argparse
import sys

import torch

import _common as c
from alignzeg import AlignZegSegmenter


def cuda_time(fn, iters: int, warmup: int) -> float:
    """Median seconds per call of ``fn`` measured with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return c.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="vitb16")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-mode", default="default")
    p.add_argument("--classes", type=int, default=171)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_throughput.py needs a CUDA GPU; none is available here")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True

    seg = AlignZegSegmenter.from_preset(args.preset, seed=0, device="cuda", autocast=args.dtype != "fp32",
                                        batch_size=args.batch)
    if args.dtype == "fp16":  # the segmenter picks bf16 where supported; force fp16 when asked
        seg._autocast = lambda: torch.autocast("cuda", dtype=torch.float16)
    names = list(c.coco_stuff_names())[: args.classes]
    embeddings = seg.encode_vocabulary(names)
    seen = torch.zeros(len(names), dtype=torch.bool)
    seen[: len(names) * 9 // 10] = True
    model = seg.model
    if args.compile:
        model.forward = torch.compile(model.forward, mode=args.compile_mode, fullgraph=False)
    size = seg.config.input_size
    crops = torch.rand(args.batch, 3, size, size, device="cuda")

    def floor() -> None:
        with torch.inference_mode(), seg.autocast_context():
            model.backbone.encode_image_dense(model.normalize(crops))

    def network() -> None:
        seg.predict_torch(crops, embeddings, seen)

    images = [c.test_image((size, size))] * args.batch

    def end_to_end() -> None:
        seg.segment_batch(images, names, keep_image=False)

    results = {}
    for name, fn in (("clip_image_encoder", floor), ("predict_torch", network), ("segment_batch", end_to_end)):
        seconds = cuda_time(fn, args.iters, args.warmup)
        results[name] = {"s_per_batch": seconds, "images_per_s": args.batch / seconds}
    rows = [[k, v["s_per_batch"] * 1000, v["images_per_s"]] for k, v in results.items()]
    print(f"{torch.cuda.get_device_name(0)}, {args.preset}, batch {args.batch}, {args.dtype}, "
          f"compile={args.compile} ({args.compile_mode}), {len(names)} classes")
    print(c.table(["what", "ms per batch", "images/s"], rows))
    ok = results["predict_torch"]["images_per_s"] >= 30
    print(f"target >= 30 images/s (predict_torch): {'met' if ok else 'NOT met'}")
    ns = argparse.Namespace(no_save=args.no_save)
    c.save("gpu_throughput", ns, {"args": vars(args), "results": results,
                                  "max_memory_allocated_mb": torch.cuda.max_memory_allocated() / 2**20})


if __name__ == "__main__":
    main()
