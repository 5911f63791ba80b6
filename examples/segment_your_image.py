"""Segment an image with your own class names.

    python examples/segment_your_image.py IMAGE --classes cat,sofa,wall --model DIR_OR_REPO [--out overlay.png]

Without --model, an UNTRAINED tiny model is used (random weights: the masks are meaningless), so the script
runs anywhere; no trained AlignZeg checkpoint has been published yet.
"""

import argparse

from alignzeg import AlignZegSegmenter
from alignzeg.cli import example_image_path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("image", nargs="?", default=str(example_image_path()))
    parser.add_argument("--classes", default="person,chair,diningtable,bottle,wall")
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default="overlay.png")
    args = parser.parse_args()

    if args.model:
        seg = AlignZegSegmenter.from_pretrained(args.model)
    else:
        print("no --model: using an UNTRAINED tiny model (random weights)")
        seg = AlignZegSegmenter.from_preset("tiny", seed=0)
    result = seg.segment(args.image, args.classes.split(","), unlabelled_threshold=None)
    for name, count in result.pixel_counts().items():
        print(f"{name:>16s}: {count} px")
    result.overlay().save(args.out)
    print(f"overlay: {args.out}")


if __name__ == "__main__":
    main()
