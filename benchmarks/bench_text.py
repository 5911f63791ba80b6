"""Benchmark 3: text encoding of a vocabulary: first (uncached) call vs cached call, and prompt batching.

ViT-B/16 text tower (random init), the 171 COCO-Stuff classes x the 8 default templates (1368 prompts).
Also: cutting each batch to its longest prompt (``CLIPBackbone.encode_text``) vs open_clip's full
77-token forward, and prompts per text-tower forward (``VocabularyEncoder.batch_size``).

    python benchmarks/bench_text.py [--reps 2] [--threads N]
"""

from __future__ import annotations

import time

import torch

import _common as c
from alignzeg import AlignZegSegmenter


def main() -> None:
    args = c.parser(__doc__.splitlines()[0], reps=2).parse_args()
    c.setup(args)
    seg = AlignZegSegmenter.from_preset("vitb16", seed=0, device="cpu")
    names = list(c.coco_stuff_names())
    templates = seg.config.templates
    backbone = seg.model.backbone

    start = time.perf_counter()
    seg.encode_vocabulary(names)
    first = time.perf_counter() - start
    cached = c.interleaved({"cached": lambda: seg.encode_vocabulary(names)}, reps=100, warmup=0)["cached"]

    prompts = [t.format(n) for n in names[:32] for t in templates]  # 256 prompts
    tokens = backbone.tokenize(prompts)
    with torch.no_grad():
        trim = c.interleaved({
            "cut_to_longest": lambda: backbone.encode_text(tokens[:64]),
            "full_77_tokens": lambda: backbone.clip.encode_text(tokens[:64], normalize=True),
        }, reps=args.reps, warmup=0)
        batching = c.interleaved({
            f"batch_{b}": (lambda b=b: [backbone.encode_text(tokens[i:i + b]) for i in range(0, len(tokens), b)])
            for b in (16, 64, 256)
        }, reps=args.reps, warmup=0)
    med_trim = {k: c.median(v) for k, v in trim.items()}
    med_batch = {k: c.median(v) for k, v in batching.items()}
    print(c.table(["171 classes x 8 templates", "seconds"],
                  [["first call (encode)", first], ["cached call (median of 100)", c.median(cached)],
                   ["first / cached", first / c.median(cached)]]))
    print(c.table(["64 prompts", "median s"], [[k, v] for k, v in med_trim.items()]))
    print(f"full 77 / cut: {c.paired_ratio(trim['full_77_tokens'], trim['cut_to_longest']):.2f}x")
    print(c.table(["256 prompts", "median s"], [[k, v] for k, v in med_batch.items()]))
    c.save("text", args, {"classes": len(names), "templates": len(templates), "first_call_s": first,
                          "cached_call_s": cached, "cached_median_s": c.median(cached),
                          "cut_vs_full_64_prompts_s": trim, "batching_256_prompts_s": batching,
                          "median_s": {**med_trim, **med_batch},
                          "speedup_cut_vs_full": c.paired_ratio(trim["full_77_tokens"], trim["cut_to_longest"])})


if __name__ == "__main__":
    main()
