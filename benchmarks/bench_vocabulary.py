"""Benchmark 2: cost versus vocabulary size, against CLIPSeg, which re-encodes the image per class.

AlignZeg ViT-B/16 (random init), one 512x512 image, cached vocabularies of 5, 20 and 171 COCO-Stuff
classes: the image is encoded once whatever the vocabulary, so target 171 / 5 <= 1.10.
CLIPSeg: ``CLIPSegForImageSegmentation(CLIPSegConfig())`` from transformers (random init; default config,
ViT-B/32), fed the same image replicated once per class with one prompt per class, as its API works:
at ``--clipseg-size`` px (default 512, the size alignzeg sees; 352 is CLIPSeg's native input size, what
its processor resizes to), resized from the 512x512 image with antialiased bilinear interpolation,
position embeddings interpolated when the size is not 352. CLIPSeg at 171 classes is slow on a CPU: by default it is timed at
5 and 20 classes and its 171-class time is extrapolated linearly from the per-class slope
(``--clipseg-171`` also times it directly, once). Target: alignzeg >= 20x faster at 171 classes.

    python benchmarks/bench_vocabulary.py [--reps 2] [--clipseg-171] [--clipseg-size 352] [--threads N]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import _common as c
from alignzeg import AlignZegSegmenter

COUNTS = (5, 20, 171)
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def clipseg_runner(names: list[str], image: torch.Tensor):
    """A closure running CLIPSeg on ``image`` (1, 3, H, W) in [0, 1] for every name (one prompt each)."""
    import open_clip
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    torch.manual_seed(0)
    model = CLIPSegForImageSegmentation(CLIPSegConfig()).eval()
    tokens = open_clip.tokenize([f"a photo of a {n}." for n in names])
    length = int(tokens.argmax(dim=-1).max()) + 1  # pad to the longest prompt, as the processor does
    input_ids = tokens[:, :length]
    attention_mask = (torch.arange(length)[None] <= input_ids.argmax(dim=-1)[:, None]).long()
    pixels = ((image - MEAN) / STD).expand(len(names), -1, -1, -1)

    def run() -> torch.Tensor:
        with torch.inference_mode():
            logits = model(input_ids=input_ids, pixel_values=pixels, attention_mask=attention_mask,
                           interpolate_pos_encoding=True).logits
            return logits.reshape(len(names), *logits.shape[-2:]).argmax(dim=0)

    return run


def main() -> None:
    p = c.parser(__doc__.splitlines()[0], reps=2)
    p.add_argument("--clipseg-171", action="store_true", help="also time CLIPSeg at 171 classes (slow)")
    p.add_argument("--clipseg-size", type=int, default=512,
                   help="side of the square image CLIPSeg gets (352: its native size; default 512, alignzeg's)")
    args = p.parse_args()
    c.setup(args)
    seg = AlignZegSegmenter.from_preset("vitb16", seed=0, device="cpu")
    coco = list(c.coco_stuff_names())
    image = c.test_image((512, 512))
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    if args.clipseg_size != pixels.shape[-1]:
        pixels = F.interpolate(pixels, size=(args.clipseg_size,) * 2, mode="bilinear", align_corners=False,
                               antialias=True).clamp(0, 1)
    fns = {}
    for n in COUNTS:
        seg.encode_vocabulary(coco[:n])  # cached: the timed calls never encode text
        fns[f"alignzeg_{n}"] = (lambda n=n: seg.segment(image, coco[:n], keep_image=False))
    for n in COUNTS[:2]:
        fns[f"clipseg_{n}"] = clipseg_runner(coco[:n], pixels)
    times = c.interleaved(fns, reps=args.reps)
    med = {k: c.median(v) for k, v in times.items()}
    per_class = (med["clipseg_20"] - med["clipseg_5"]) / 15
    clipseg_171 = med["clipseg_5"] + per_class * (171 - 5)
    measured_171 = None
    if args.clipseg_171:
        measured_171 = c.median(c.interleaved({"clipseg_171": clipseg_runner(coco, pixels)}, reps=1, warmup=0)
                                ["clipseg_171"])
        clipseg_171 = measured_171
    ratios = {
        "alignzeg 20 / 5": c.paired_ratio(times["alignzeg_20"], times["alignzeg_5"]),
        "alignzeg 171 / 5": c.paired_ratio(times["alignzeg_171"], times["alignzeg_5"]),
        "clipseg / alignzeg at 5": c.paired_ratio(times["clipseg_5"], times["alignzeg_5"]),
        "clipseg / alignzeg at 20": c.paired_ratio(times["clipseg_20"], times["alignzeg_20"]),
        "clipseg / alignzeg at 171" + ("" if measured_171 else " (clipseg extrapolated)"):
            clipseg_171 / med["alignzeg_171"],
    }
    rows = [[n, med[f"alignzeg_{n}"], med.get(f"clipseg_{n}", clipseg_171 if n == 171 else float("nan"))]
            for n in COUNTS]
    print(c.table(["classes", "alignzeg median s", "clipseg median s"], rows))
    print(f"clipseg per-class cost (slope 5 -> 20): {per_class:.3f} s; 171 classes "
          + (f"measured once: {measured_171:.1f} s" if measured_171 else f"extrapolated: {clipseg_171:.1f} s"))
    print(c.table(["ratio", "value"], [[k, v] for k, v in ratios.items()]))
    print(f"alignzeg at 512x512, CLIPSeg at {args.clipseg_size}x{args.clipseg_size}")
    c.save("vocabulary" if args.clipseg_size == 512 else f"vocabulary_clipseg{args.clipseg_size}", args, {
        "image": [512, 512], "clipseg_image": [args.clipseg_size] * 2, "reps": args.reps, "seconds": times,
        "median_s": med, "clipseg_per_class_s": per_class, "clipseg_171_s": clipseg_171,
        "clipseg_171_measured": measured_171 is not None, "ratios": ratios,
        "clipseg_config": "transformers CLIPSegConfig() defaults (ViT-B/32), random init, "
                          f"{args.clipseg_size}x{args.clipseg_size} input, one prompt per class"})


if __name__ == "__main__":
    main()
