"""``alignzeg app``: a web page (Gradio) that segments any image with typed class names.

    alignzeg app                                  # the shipped world model, world test images as examples
    alignzeg app --model DIR_OR_REPO --port 7860  # any trained checkpoint

    from alignzeg.app import SegmentApp, build_page
    app = SegmentApp.load()                       # the model, loaded once (or the reason it could not be)
    build_page(app).launch(server_name="127.0.0.1", server_port=7860)

The page: an image (upload, drag, paste, examples), class names (comma- or newline-separated, order
kept, ``|`` between synonyms), bias correction auto/on/off and the unlabelled threshold; out come the overlay with its legend, a
table of the classes with their pixel share (and IoU when the image is a world example with ground truth),
the probability map of a chosen class and the time taken. The named API endpoint ``/segment`` takes
(image, class names text) and returns (overlay image, table), for ``gradio_client``.

Class names are read as the CLI's ``--classes`` reads them: ``|`` joins synonyms of one class, a blank name
is refused. Bad input (no image, no, blank or duplicate class names, an unreadable or too-large image, a
model that failed to load) is a message, never a stack trace: on the page it replaces the previous result,
in the status line beside the outputs; the ``/segment`` endpoint raises ``gradio.Error`` with it. The model loads once;
requests run one at a time through Gradio's queue (and a lock), and the segmenter's vocabulary cache is
shared by all of them. Needs the ``app`` extra: ``pip install "alignzeg[app]"``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

try:
    import gradio as gr
except ImportError as _err:  # pragma: no cover - exercised by the CLI's own check
    raise ImportError('alignzeg.app needs Gradio: pip install "alignzeg[app]"') from _err

from .loader import DEMO_MODEL, load_segmenter
from .demo import DEMO_WORLD, DISCLAIMER, class_iou, load_demo_model
from .worlds.attributes import AttributeWorld, world_config
from .visualize import draw_overlay

logger = logging.getLogger(__name__)

__all__ = ["SegmentApp", "AppInputError", "Segmentation", "WorldExample", "build_page", "serve", "app_process",
           "free_port", "parse_class_names", "MAX_PIXELS", "MAX_CLASSES", "MAX_FILE_SIZE", "EXAMPLE_INDICES", "write_world_examples",
           "example_cache_dir", "error_outputs", "ERROR_PREFIX"]

MAX_PIXELS = 25_000_000
"""Largest image the page segments by default (width x height); ``alignzeg app --max-pixels`` changes it."""

MAX_CLASSES = 256
"""Most class names one request may type."""

MAX_FILE_SIZE = "25mb"
"""Largest upload Gradio accepts (its own message on the page above it)."""

EXAMPLE_INDICES = (13, 14, 17, 20, 0, 1, 2, 3)
"""World test images offered as examples with the shipped model (the first four hold "red striped" or
"blue dotted", the class box's placeholder)."""

BIAS_CHOICES = ("auto", "on", "off")
_BIAS = {"auto": None, "on": True, "off": False}
_DISPLAY_SIDE = 384  # small images (the world's 64 px) are drawn larger, nearest neighbour, so the legend reads
_CSS = "#input-image img, #overlay img { image-rendering: pixelated; }"  # small images stay crisp when enlarged
_CONCURRENCY_ID = "alignzeg-model"  # both events share one queue slot: the model runs one request at a time


class AppInputError(ValueError):
    """A request the page cannot serve; the message is shown to the user as is."""


@dataclass(frozen=True, eq=False)
class WorldExample:
    """A world test image written as PNG, with its ground truth.

    Attributes:
        path: the PNG file offered as an example.
        index: world test image index.
        labels: (H, W) int64 world class ids (indices into ``AttributeWorld.class_names``).
    """

    path: Path
    index: int
    labels: np.ndarray


@dataclass(frozen=True, eq=False)
class Segmentation:
    """What one request produced.

    Attributes:
        result: the ``SegmentationResult``.
        overlay: the overlay with its legend (small images drawn larger).
        table: the rows of the class table (see ``SegmentApp.table_headers``).
        headers: its column names; "IoU %" only when the image is a world example.
        seconds: wall time of the segmentation (decoding included).
        example: the world example the image was recognised as, else ``None``.
    """

    result: Any
    overlay: Image.Image
    table: list[list[Any]]
    headers: list[str]
    seconds: float
    example: WorldExample | None

    def status(self) -> str:
        """One markdown line: size, class count, bias correction, time."""
        h, w = self.result.size
        where = (f", world test image {self.example.index} (IoU against its ground truth, over the pixels whose true "
                 "class you typed)" if self.example else "")
        pbc = "on" if self.result.bias_correction else "off"
        return (f"Segmented {w}×{h} px with {len(self.result.class_names)} classes in {self.seconds:.2f} s "
                f"(bias correction {pbc}){where}.")


_SEPARATOR = re.compile(r",[ \t]*\r?\n|\r?\n|,")  # a comma, a line break, or a comma ending a line


def parse_class_names(text: str | None, max_classes: int = MAX_CLASSES) -> list[str | tuple[str, ...]]:
    """Class names typed in a box, read as the CLI reads ``--classes``: classes separated by commas or line
    breaks (a comma at the end of a line is one separator), the names of one class by ``|`` (synonyms,
    reported under the first: ``"red plain|red"`` -> ``("red plain", "red")``); stripped, order kept.

    Space around the whole text is ignored; a blank class or synonym in between is refused, as the CLI
    refuses it (a name left out by mistake would change what the other names mean). Duplicates are left
    for the segmenter to refuse with its own message.

    Raises:
        AppInputError: no name at all, a blank class or synonym, or more than ``max_classes`` classes.
    """
    entries = [tuple(n.strip() for n in part.split("|")) for part in _SEPARATOR.split((text or "").strip())]
    if not any(any(entry) for entry in entries):
        raise AppInputError("Type at least one class name, separated by commas or new lines "
                            "(for example: red striped, blue dotted).")
    for number, entry in enumerate(entries, 1):
        if not all(entry):
            raise AppInputError(_blank_message(number, len(entries), entry))
    if len(entries) > max_classes:
        raise AppInputError(f"{len(entries)} class names typed; this page takes at most {max_classes}.")
    return [entry[0] if len(entry) == 1 else entry for entry in entries]


def _blank_message(number: int, count: int, entry: tuple[str, ...]) -> str:
    """The message for a class (``number`` of ``count``) that is blank or has a blank synonym."""
    if not any(entry):
        return (f"Class {number} of {count} is blank (two separators in a row, an empty line or a comma at the "
                "end): type a name there or remove the separator.")
    return (f"Class {number} ({'|'.join(entry)!r}) has a blank name beside a '|': type the synonym or remove "
            "the '|'.")


def _pixel_key(rgb: np.ndarray) -> str:
    """Content hash of an (H, W, 3) uint8 image: how an example is recognised after Gradio copies its file."""
    return hashlib.sha256(repr(rgb.shape).encode() + np.ascontiguousarray(rgb).tobytes()).hexdigest()


def _world_uint8(image: np.ndarray) -> np.ndarray:
    """A world image (H, W, 3) float32 in [0, 1] as uint8, rounded."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def example_cache_dir() -> Path:
    """Where the example images are written: ``$XDG_CACHE_HOME/alignzeg/app-examples`` (``~/.cache`` by default).

    The same folder at every start (the files are rewritten, identically), so no temporary folder is left
    behind by a server that is killed.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "alignzeg" / "app-examples"


def write_world_examples(folder: str | Path, indices: Sequence[int] = EXAMPLE_INDICES) -> list[WorldExample]:
    """Write world ``DEMO_WORLD``'s test images ``indices`` as PNGs into ``folder`` (uint8, rounded).

    Each file is written under a temporary name and renamed, so two apps starting at once never read a
    half-written example.
    """
    world = AttributeWorld(world_config(DEMO_WORLD))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for index in indices:
        image, labels = world.sample("test", index)
        path = folder / f"world{DEMO_WORLD}_test{index}.png"
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".png", delete=False) as tmp:
            Image.fromarray(_world_uint8(image)).save(tmp, format="PNG")
        os.replace(tmp.name, path)
        examples.append(WorldExample(path, index, labels))
    return examples


def _load_failure(model: str | None, err: Exception) -> str:
    """Why the model did not load and how to fix it, as markdown."""
    if model is None:
        what = "the shipped world model"
        fix = ("its files (alignzeg/demo/assets/) are missing or damaged: reinstall alignzeg "
               "(`pip install --force-reinstall \"alignzeg[app]\"`), or start the app with `--model DIR_OR_REPO`.")
    else:
        what = f"the model `{model}`"
        fix = ("start the app with `--model` set to a folder written by `save_pretrained` (it holds "
               "`config.json` and `model.safetensors`), to an `.onnx` file written by `alignzeg export`, or to a Hugging Face Hub repo id; without a network, a Hub "
               "model must already be in the Hub cache. Without `--model` the app uses the shipped world model.")
    return (f"**The model could not be loaded.** Loading {what} failed: {type(err).__name__}: {err}\n\n"
            f"How to fix it: {fix}")


class SegmentApp:
    """The page's state and callbacks, without a server: one segmenter, loaded once, used by every request.

    Args:
        segmenter: an ``AlignZegSegmenter``, or ``None`` when loading failed (then ``load_error`` says why).
        model_name: how the page names the model.
        load_error: markdown saying why the model did not load and how to fix it.
        examples: world test images with ground truth (the shipped model only).
        default_classes: names pre-filled in the class box.
        max_pixels: largest image (width x height) the page segments.
        max_classes: most class names per request.
    """

    def __init__(self, segmenter: Any | None, model_name: str, *, load_error: str | None = None,
                 examples: Sequence[WorldExample] = (), default_classes: Sequence[str] = (),
                 max_pixels: int = MAX_PIXELS, max_classes: int = MAX_CLASSES) -> None:
        if segmenter is None and load_error is None:
            raise ValueError("SegmentApp needs a segmenter or the load_error that explains its absence")
        if not isinstance(max_pixels, int) or isinstance(max_pixels, bool) or max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
        self.segmenter = segmenter
        self.model_name = model_name
        self.load_error = load_error
        self.examples = list(examples)
        self.default_classes = tuple(default_classes)
        self.max_pixels = max_pixels
        self.max_classes = max_classes
        self.world = AttributeWorld(world_config(DEMO_WORLD)) if self.examples else None
        self._by_pixels = {_pixel_key(np.asarray(Image.open(e.path).convert("RGB"))): e for e in self.examples}
        self._example_size = {np.asarray(Image.open(e.path)).shape[:2] for e in self.examples}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model: str | None = None, device: str | None = None, *, example_dir: str | Path | None = None,
             max_pixels: int = MAX_PIXELS, max_classes: int = MAX_CLASSES) -> "SegmentApp":
        """Load ``model`` (default: the shipped world model, with world examples) once.

        A model that fails to load does not raise: the app is built with ``load_error`` set, so the page
        says why and how to fix it.
        """
        if model == DEMO_MODEL:
            model = None  # the shipped demo model, with its world's examples
        try:
            segmenter = load_demo_model(device) if model is None else load_segmenter(model, device=device)
            load_error = None
        except Exception as err:  # noqa: BLE001 - any failure is shown on the page, with the fix
            logger.warning("model %s failed to load: %s", model or "(shipped world model)", err)
            segmenter, load_error = None, _load_failure(model, err)
        if model is not None:
            return cls(segmenter, model, load_error=load_error, max_pixels=max_pixels, max_classes=max_classes)
        folder = Path(example_dir) if example_dir is not None else example_cache_dir()
        world = AttributeWorld(world_config(DEMO_WORLD))
        return cls(segmenter, "the shipped world model (tiny preset, synthetic world 0)", load_error=load_error,
                   examples=write_world_examples(folder), default_classes=world.class_names,
                   max_pixels=max_pixels, max_classes=max_classes)

    # What the page shows about the model --------------------------------------------------------------
    def model_markdown(self) -> str:
        """The model's name and what "seen" means for it (or why it did not load)."""
        if self.segmenter is None:
            return self.load_error or ""
        seen = self.segmenter.config.seen_classes
        text = f"**Model:** {self.model_name}, trained with the masks of {len(seen)} classes (its *seen* classes). "
        text += ("Every other name you type is *unseen*: segmented from its name alone."
                 if seen else "It records no seen classes: every name you type is treated as unseen.")
        if self.world is not None:
            text += (f" Of the world's 48 classes, these {len(self.world.unseen_classes)} are unseen: "
                     f"{', '.join(self.world.unseen_classes)}.\n\n{DISCLAIMER}")
        return text

    def seen_markdown(self) -> str:
        """The classes the model treats as seen, one comma-separated paragraph."""
        if self.segmenter is None:
            return ""
        seen = self.segmenter.config.seen_classes
        return ", ".join(seen) if seen else "(none recorded)"

    def example_rows(self) -> list[list[str]]:
        """[image path, class names text] per example."""
        text = ", ".join(self.default_classes)
        return [[str(e.path), text] for e in self.examples]

    # The request ---------------------------------------------------------------------------------------
    def _check_image(self, image: Any) -> tuple[str, WorldExample | None]:
        """The uploaded file's path, checked to be a readable image within ``max_pixels``, and its example."""
        if isinstance(image, dict):  # the events run with preprocess=False: Gradio's file record, unopened
            if image.get("path") is None and image.get("url"):
                raise AppInputError("The image did not arrive as a file; upload it again.")
            image = image.get("path")
        if image is None or (isinstance(image, str) and not image.strip()):
            raise AppInputError("Upload an image first (drag it in, paste it, or click one of the examples).")
        path = str(image)
        try:
            with Image.open(path) as img:
                width, height = img.size
                if width * height > self.max_pixels:
                    raise AppInputError(
                        f"The image is too large: {width}×{height} = {width * height:,} pixels; this page takes "
                        f"at most {self.max_pixels:,}. Make it smaller, or start the app with a larger --max-pixels.")
                example = None
                if (height, width) in self._example_size:
                    example = self._by_pixels.get(_pixel_key(np.asarray(img.convert("RGB"))))
        except AppInputError:
            raise
        except UnidentifiedImageError:
            raise AppInputError(f"The file {Path(path).name!r} is not an image this page can read. "
                                "Upload a PNG, JPEG, WebP, BMP or TIFF image.") from None
        except Image.DecompressionBombError as err:
            raise AppInputError(f"The image {Path(path).name!r} is too large to open: {err}") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise AppInputError(f"The image {Path(path).name!r} could not be decoded (truncated or corrupt?): "
                                f"{err}") from None
        return path, example

    def segment(self, image: Any, class_text: str | None, bias_correction: str = "auto",
                threshold: float | None = 0.0) -> Segmentation:
        """Segment one image with the typed class names.

        Args:
            image: path of the image file, or Gradio's record of an upload (a dict with ``"path"``).
            class_text: class names separated by commas or newlines.
            bias_correction: "auto" (PBC where the checkpoint's indicator was trained), "on" or "off".
            threshold: unlabelled threshold in [0, 1]; 0 or ``None``: every pixel gets a class.

        Raises:
            AppInputError: with the message the page shows.
        """
        if self.segmenter is None:
            raise AppInputError(self.load_error or "The model is not loaded.")
        names = parse_class_names(class_text, self.max_classes)
        if bias_correction not in _BIAS:
            raise AppInputError(f"bias correction must be one of {', '.join(BIAS_CHOICES)}, got {bias_correction!r}")
        try:
            threshold = None if threshold is None else float(threshold)
        except (TypeError, ValueError):
            threshold = math.nan
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise AppInputError(f"The unlabelled threshold must be a number in [0, 1], got {threshold!r}.")
        path, example = self._check_image(image)
        start = time.perf_counter()
        try:
            with self._lock:  # one request at a time on the model, even outside Gradio's queue
                result = self.segmenter.segment(path, names, bias_correction=_BIAS[bias_correction],
                                                unlabelled_threshold=threshold or None)
        except (ValueError, TypeError, OSError) as err:  # duplicates, undecodable pixels, PBC refused...
            raise AppInputError(str(err)) from None
        seconds = time.perf_counter() - start
        headers, rows = self._table(result, example)
        return Segmentation(result, self._overlay(result), rows, headers, seconds, example)

    def _table(self, result: Any, example: WorldExample | None) -> tuple[list[str], list[list[Any]]]:
        """Rows (class, seen/unseen, pixel %, [IoU %]), largest share first; unlabelled pixels last."""
        names = result.class_names
        total = result.label_map.size
        counts = np.bincount(result.label_map.ravel() + 1, minlength=len(names) + 1)
        headers = ["class", "split", "pixels %"]
        iou = None
        if example is not None:
            headers.append("IoU %")
            lut = np.array([names.index(n) if n in names else -1 for n in self.world.class_names])
            truth = lut[example.labels]  # world ids -> vocabulary indices; -1: not typed, left out
            iou = class_iou(result.label_map, np.where(truth < 0, 255, truth), len(names))
        rows = []
        for i, name in enumerate(names):
            row = [name, "seen" if result.seen[i] else "unseen", round(100.0 * float(counts[i + 1]) / total, 1)]
            if iou is not None:
                row.append(None if math.isnan(iou[i]) else round(100.0 * float(iou[i]), 1))
            rows.append(row)
        rows.sort(key=lambda r: -r[2])  # stable: vocabulary order among equal shares
        if counts[0]:
            share = round(100.0 * float(counts[0]) / total, 1)
            rows.append(["<unlabelled>", "", share] + ([None] if iou is not None else []))
        return headers, rows

    @staticmethod
    def _scale(result: Any) -> int:
        return max(1, math.ceil(_DISPLAY_SIDE / max(result.size)))

    def _overlay(self, result: Any) -> Image.Image:
        """The overlay with its legend; images under 384 px are drawn larger (nearest neighbour)."""
        s = self._scale(result)
        if s == 1:
            return result.overlay()
        big = lambda a: np.repeat(np.repeat(a, s, axis=0), s, axis=1)  # noqa: E731
        return draw_overlay(big(result.label_map), result.class_names, big(result.image))

    def probability_image(self, result: Any, name: str | None) -> Image.Image | None:
        """Probability of class ``name`` at every pixel as a heat map (viridis: dark purple 0, yellow 1), or None."""
        if result is None or not name or name not in result.class_names:
            return None
        import imgviz

        s = self._scale(result)
        prob = np.repeat(np.repeat(result.probability_map(name), s, axis=0), s, axis=1)
        if hasattr(imgviz, "colorize"):  # imgviz >= 2; depth2rgb is its deprecated older name
            return Image.fromarray(imgviz.colorize(prob, vmin=0.0, vmax=1.0, cmap="viridis"))
        return Image.fromarray(imgviz.depth2rgb(prob, min_value=0.0, max_value=1.0, colormap="viridis"))

    # Gradio callbacks ------------------------------------------------------------------------------------
    def page_callback(self, image: Any, class_text: str | None, bias_correction: str = "auto",
                      threshold: float | None = 0.0):
        """The page's Segment button: (overlay, table, status, probability-class dropdown, probability map, result).

        A bad input clears the outputs of the previous request and puts its message in the status line,
        beside the outputs (not in a corner toast next to the old result): see ``error_outputs``.
        """
        try:
            seg = self._run(image, class_text, bias_correction, threshold)
        except gr.Error as err:
            return error_outputs(err.message)
        present = [row[0] for row in seg.table if row[0] in seg.result.class_names and row[2] > 0]
        first = present[0] if present else seg.result.class_names[0]
        choices = list(seg.result.class_names)
        return (seg.overlay, _frame(seg.headers, seg.table), seg.status(),
                gr.update(choices=choices, value=first, interactive=True),
                self.probability_image(seg.result, first), seg.result)

    def api_callback(self, image: Any, class_text: str | None):
        """The ``/segment`` endpoint: (overlay image, table) for (image, class names text)."""
        seg = self._run(image, class_text, "auto", 0.0)
        return seg.overlay, _frame(seg.headers, seg.table)

    def _run(self, image: Any, class_text: str | None, bias_correction: str, threshold: float | None) -> Segmentation:
        try:
            return self.segment(image, class_text, bias_correction, threshold)
        except AppInputError as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:  # noqa: BLE001 - logged with its traceback; the page gets one line
            logger.exception("segmentation failed")
            raise gr.Error(f"Segmentation failed: {type(err).__name__}: {err}", print_exception=False) from None


ERROR_PREFIX = "**Not segmented:** "
"""How the status line starts when a request failed (the message follows)."""


def error_outputs(message: str) -> tuple:
    """The page's outputs after a failed request: no overlay, an empty table, the message as the status,
    an empty probability dropdown and map, no result (nothing of the previous request is left showing)."""
    return (None, _frame(["class", "split", "pixels %"], []), ERROR_PREFIX + message,
            gr.update(choices=[], value=None, interactive=False), None, None)


def _frame(headers: list[str], rows: list[list[Any]]):
    import pandas as pd  # a Gradio dependency

    return pd.DataFrame(rows, columns=headers)


def build_page(app: SegmentApp) -> "gr.Blocks":
    """The Gradio page for ``app`` (call ``.launch()`` on it, or use ``serve``)."""
    # delete_cache: uploads and outputs older than an hour are removed from Gradio's cache every hour
    with gr.Blocks(title="alignzeg: zero-shot segmentation", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as page:
        gr.Markdown("# alignzeg: segment an image with the class names you type\n"
                    "Zero-shot semantic segmentation with AlignZeg (ECCV 2024): every pixel gets one of your "
                    "classes; names the model never saw masks of are *unseen* and still segmented from text.")
        gr.Markdown(app.model_markdown(), elem_id="model-info")
        if app.segmenter is not None:
            with gr.Accordion(f"Classes the model treats as seen ({len(app.segmenter.config.seen_classes)})",
                              open=False):
                gr.Markdown(app.seen_markdown(), elem_id="seen-classes")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                 label="Image", height=_DISPLAY_SIDE, elem_id="input-image")
                classes = gr.Textbox(value=", ".join(app.default_classes), lines=3, max_lines=12,
                                     label="Class names (comma- or newline-separated, in order; "
                                           "'|' between names of one class)",
                                     placeholder="red striped, blue dotted", elem_id="class-names")
                with gr.Accordion("Options", open=False):
                    bias = gr.Radio(list(BIAS_CHOICES), value="auto", label="Bias correction (PBC)",
                                    info="auto: on where the model's class indicator was trained")
                    threshold = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="Unlabelled threshold",
                                          info="pixels whose best class probability is below it stay "
                                               "unlabelled; 0: off")
                run = gr.Button("Segment", variant="primary", elem_id="segment-button",
                                interactive=app.segmenter is not None)
            with gr.Column():
                overlay = gr.Image(type="pil", format="png", label="Overlay", interactive=False,
                                   height=_DISPLAY_SIDE, elem_id="overlay")
                status = gr.Markdown(label="Status", elem_id="status")  # the label names it in view_api()
                table = gr.Dataframe(label="Classes", interactive=False, elem_id="class-table")
                with gr.Row():
                    prob_class = gr.Dropdown([], label="Probability map of", interactive=False)
                prob = gr.Image(type="pil", format="png", label="Probability (dark purple 0, yellow 1)",
                                interactive=False)
        if app.examples:
            gr.Examples(app.example_rows(), inputs=[image, classes], label="World test images (click one)")
        result = gr.State()
        # preprocess=False: the callbacks get the uploaded file's record and open it themselves, so a file
        # that is not an image gets the app's message rather than Gradio's preprocessing error
        run.click(app.page_callback, inputs=[image, classes, bias, threshold],
                  outputs=[overlay, table, status, prob_class, prob, result], api_name="segment_page",
                  concurrency_limit=1, concurrency_id=_CONCURRENCY_ID, preprocess=False)
        prob_class.input(app.probability_image, inputs=[result, prob_class], outputs=[prob], api_name=False)
        api_button = gr.Button(visible=False)  # carries the two-input /segment endpoint only
        api_button.click(app.api_callback, inputs=[image, classes], outputs=[overlay, table], api_name="segment",
                         concurrency_limit=1, concurrency_id=_CONCURRENCY_ID, preprocess=False)
    page.queue(default_concurrency_limit=1, max_size=64)
    return page


def serve(model: str | None = None, host: str = "127.0.0.1", port: int = 7860, device: str | None = None,
          max_pixels: int = MAX_PIXELS, block: bool = True):
    """Load the model once, build the page and serve it on ``host:port``.

    Returns:
        The launched ``gradio.Blocks`` (when ``block`` is False; otherwise this call serves until stopped).
    """
    app = SegmentApp.load(model, device, max_pixels=max_pixels)
    page = build_page(app)
    allowed = sorted({str(e.path.parent) for e in app.examples})
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    page.launch(server_name=host, server_port=port, share=False, show_error=True, max_file_size=MAX_FILE_SIZE,
                allowed_paths=allowed, prevent_thread_lock=not block, ssr_mode=False, theme=theme,
                footer_links=["api"], css=_CSS)
    return page


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def app_process(args: Sequence[str] = (), port: int | None = None, env: Mapping[str, str] | None = None,
                log: str | os.PathLike | None = None, timeout: float = 240.0) -> Iterator[str]:
    """``alignzeg app --port PORT ARGS`` in a child process: yields the page's URL once it answers HTTP 200,
    and stops the process when the block ends (for scripts, benchmarks and tests that talk to a live page).

    Args:
        args: further ``alignzeg app`` options (``["--device", "cpu"]``).
        port: loopback port (default: a free one).
        env: the child's environment (default: this process's).
        log: file for the child's output (default: discarded).
        timeout: seconds to wait for the page.

    Raises:
        RuntimeError: the page did not answer within ``timeout`` or the process ended first (naming the URL,
            the exit status and, with ``log``, its last lines).
    """
    port = free_port() if port is None else port
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, "-m", "alignzeg.cli", "app", "--port", str(port), *args]
    with open(log if log is not None else os.devnull, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=None if env is None else dict(env))
    start = time.monotonic()
    try:
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() - start > timeout:
                tail = Path(log).read_text(errors="replace")[-3000:] if log is not None else ""
                raise RuntimeError(f"alignzeg app did not serve {url} within {timeout:.0f} s (exit status "
                                   f"{proc.poll()})" + (f":\n{tail}" if tail else ""))
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(url: str) -> bool:
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    return False
