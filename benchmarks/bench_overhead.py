"""Benchmark 1: cost of a full ``segment`` call over the floor, the bare CLIP image encoder.

ViT-B/16 (random init), one 512x512 image, CPU, batch 1, cached vocabulary (the 20 VOC classes).
Three sides interleaved: the bare ``backbone.encode_image_dense`` forward on a normalised 512x512 tensor,
``segment`` of a model built with ``side_encoder=False`` (decode, MRPE, GEPC, class indicator, PBC, semantic
map, upsample, argmax), and ``segment`` of the preset as it is (the learnable encoder on, issue 12).
Target: segment / floor <= 1.15. ``bench_cost.py`` measures the preset with every issue-12 part (FLOPs too).
On a loaded shared CPU the floor itself varies by 2x between calls, so the benchmark also splits every
``segment`` call: the time spent inside its own backbone pass is measured in the same call, and
"segment / in-call backbone" compares two halves of one call that saw the same load.

    python benchmarks/bench_overhead.py [--reps 3] [--threads N]
"""

from __future__ import annotations

import time

import torch

import _common as c
from alignzeg import AlignZegSegmenter
from alignzeg.train.splits import VOC_CLASSES


def main() -> None:
    args = c.parser(__doc__.splitlines()[0], reps=3).parse_args()
    c.setup(args)
    plain = AlignZegSegmenter.from_preset("vitb16", seed=0, device="cpu", seen_classes=VOC_CLASSES[:15],
                                          config_overrides={"side_encoder": False})
    side = AlignZegSegmenter.from_preset("vitb16", seed=0, device="cpu", seen_classes=VOC_CLASSES[:15])
    side.model.backbone.load_state_dict(plain.model.backbone.state_dict())
    side.vocabulary = plain.vocabulary  # same CLIP text tower: share the cache
    names = list(VOC_CLASSES)
    plain.encode_vocabulary(names)
    image = c.test_image((512, 512))
    encode_plain = plain.model.backbone.encode_image_dense
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255

    in_call: dict[str, list[float]] = {"segment": [], "segment_side_encoder": []}
    for key, model in (("segment", plain.model), ("segment_side_encoder", side.model)):
        encode = model.backbone.encode_image_dense

        def timed(images, encode=encode, key=key):
            start = time.perf_counter()
            out = encode(images)
            in_call[key].append(time.perf_counter() - start)
            return out

        model.backbone.encode_image_dense = timed

    def floor() -> None:
        with torch.inference_mode():
            encode_plain(plain.model.normalize(pixels))

    times = c.interleaved({
        "clip_image_encoder": floor,
        "segment": lambda: plain.segment(image, names, keep_image=False),
        "segment_side_encoder": lambda: side.segment(image, names, keep_image=False),
    }, reps=args.reps)
    for key in in_call:
        in_call[key] = in_call[key][-args.reps:]  # drop the warm-up call
    med = {k: c.median(v) for k, v in times.items()}
    ratios = {
        "segment / floor": c.paired_ratio(times["segment"], times["clip_image_encoder"]),
        "segment_side_encoder / floor": c.paired_ratio(times["segment_side_encoder"], times["clip_image_encoder"]),
        "segment_side_encoder / segment": c.paired_ratio(times["segment_side_encoder"], times["segment"]),
        "segment / its in-call backbone": c.paired_ratio(times["segment"], in_call["segment"]),
        "segment_side_encoder / its in-call backbone": c.paired_ratio(times["segment_side_encoder"],
                                                                      in_call["segment_side_encoder"]),
    }
    print(c.table(["what", "median s"], [[k, v] for k, v in med.items()]))
    print(c.table(["ratio (median of paired rounds)", "value"], [[k, v] for k, v in ratios.items()]))
    for key in ("segment / floor", "segment / its in-call backbone"):
        print(f"target {key} <= 1.15: {'met' if ratios[key] <= 1.15 else 'NOT met'}")
    c.save("overhead", args, {"preset": "vitb16", "image": [512, 512], "classes": len(names), "reps": args.reps,
                              "seconds": times, "in_call_backbone_s": in_call, "median_s": med, "ratios": ratios, "target": "segment / floor <= 1.15"})


if __name__ == "__main__":
    main()
