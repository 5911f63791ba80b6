"""Benchmark 1: cost of a full ``segment`` call over the floor, the bare open_clip ViT-B/16 image encoder.

ViT-B/16 (random init), one 512x512 image, CPU, batch 1, a cached vocabulary of the 171 COCO-Stuff
classes. Four sides interleaved (>= 5 rounds): the bare ``clip.encode_image`` forward (open_clip's own
image encoder) on a normalised 512x512 tensor with torch's fused multi-head-attention fast path on (the
default in inference) and off (``torch.backends.mha.set_fastpath_enabled(False)``: on some CPUs the fused
kernel is the slower one), ``segment`` (decode, MRPE, GEPC, class indicator, PBC, semantic map, upsample,
argmax), and ``segment`` of a model built with ``side_encoder=True``. The floor of each round is the faster
of the two bare encoders, so the ratios are against the fastest way this machine runs the encoder.

For each side the FLOP count (torch.utils.flop_counter, one call) is printed next to the wall-clock
time, so the FLOP ratio (the arithmetic the heads add) and the wall-clock ratio (what a user waits) are
side by side; their difference is the overhead that is not arithmetic. Target: wall ratio <= 1.15 against
the fastest bare encoder, without the side encoder, on a quiet machine. On a loaded shared CPU the floor itself varies a lot
between calls, so every ``segment`` call is also split: "segment / in-call backbone" compares two halves
of one call that saw the same load.

``--rotate`` starts round r with the r-th side, so that no side always follows the same one.

    python benchmarks/bench_overhead.py [--reps 5] [--threads N] [--rotate]
"""

from __future__ import annotations

import time

import torch

import _common as c
from alignzeg import AlignZegSegmenter
from alignzeg.train.datasets.splits import VOC_CLASSES


def main() -> None:
    p = c.parser(__doc__.splitlines()[0], reps=5)
    p.add_argument("--rotate", action="store_true", help="rotate the order of the sides from round to round")
    args = p.parse_args()
    c.setup(args)
    plain = AlignZegSegmenter.from_preset("vitb16", seed=0, device="cpu", seen_classes=VOC_CLASSES[:15],
                                          config_overrides={"side_encoder": False})
    side = AlignZegSegmenter.from_preset("vitb16", seed=0, device="cpu", seen_classes=VOC_CLASSES[:15])
    side.model.backbone.load_state_dict(plain.model.backbone.state_dict())
    side.vocabulary = plain.vocabulary  # same CLIP text tower: share the cache
    for model in (plain.model, side.model):  # inference only; FlopCounterMode's module hooks need this
        model.requires_grad_(False)
    names = list(c.coco_stuff_names())
    plain.encode_vocabulary(names)
    image = c.test_image((512, 512))
    clip = plain.model.backbone.clip
    pixels = plain.model.normalize(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)

    def floor() -> None:
        with torch.inference_mode():
            clip.encode_image(pixels)

    def floor_fastpath_off() -> None:
        with c.mha_fastpath(False):
            floor()

    sides = {
        "clip_image_encoder": floor,
        "clip_image_encoder_fastpath_off": floor_fastpath_off,
        "segment": lambda: plain.segment(image, names, keep_image=False),
        "segment_side_encoder": lambda: side.segment(image, names, keep_image=False),
    }
    flops = {name: c.count_flops(fn) for name, fn in sides.items()}

    in_call: dict[str, list[float]] = {"segment": [], "segment_side_encoder": []}
    for key, model in (("segment", plain.model), ("segment_side_encoder", side.model)):
        encode = model.backbone.encode_image_dense

        def timed(images, *args, encode=encode, key=key, **kwargs):
            start = time.perf_counter()
            out = encode(images, *args, **kwargs)
            in_call[key].append(time.perf_counter() - start)
            return out

        model.backbone.encode_image_dense = timed

    times = c.interleaved(sides, reps=args.reps, rotate=args.rotate)
    for key in in_call:
        in_call[key] = in_call[key][-args.reps:]  # drop the warm-up call
    times["fastest_clip_image_encoder"] = [min(on, off) for on, off in zip(
        times["clip_image_encoder"], times["clip_image_encoder_fastpath_off"])]  # paired by round
    med = {k: c.median(v) for k, v in times.items()}
    floor_flops = flops["clip_image_encoder"]
    rows = []
    for key in ("segment", "segment_side_encoder"):
        rows.append([f"{key} / fastest clip_image_encoder", flops[key] / floor_flops,
                     c.paired_ratio(times[key], times["fastest_clip_image_encoder"]),
                     c.paired_ratio(times[key], in_call[key])])
    rows.append(["segment / clip_image_encoder (fast path on)", flops["segment"] / floor_flops,
                 c.paired_ratio(times["segment"], times["clip_image_encoder"]),
                 c.paired_ratio(times["segment"], in_call["segment"])])
    print(c.table(["what", "GFLOP", "median s"], [[k, flops.get(k, floor_flops) / 1e9, med[k]] for k in times]))
    print(c.table(["ratio", "FLOP ratio", "wall ratio (median of paired rounds)", "wall / in-call backbone"],
                  rows))
    wall = rows[0][2]
    print(f"target segment / fastest clip_image_encoder wall ratio <= 1.15: {'met' if wall <= 1.15 else 'NOT met'} "
          f"(FLOP ratio {rows[0][1]:.3f}; {args.reps} interleaved rounds, load average at end "
          f"{c.environment()['loadavg_at_end']})")
    c.save("overhead", args, {
        "preset": "vitb16", "image": [512, 512], "classes": len(names), "reps": args.reps,
        "floor": "open_clip CLIP.encode_image", "flops": flops, "seconds": times, "in_call_backbone_s": in_call,
        "median_s": med, "rotate": args.rotate,
        "ratios": {r[0]: {"flop": r[1], "wall": r[2], "wall_in_call": r[3]} for r in rows},
        "target": "segment / fastest clip_image_encoder (MHA fast path on or off) wall ratio <= 1.15 (quiet machine)",
    })


if __name__ == "__main__":
    main()
