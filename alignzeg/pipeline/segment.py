"""``SegmentPipeline``: the steps of ``segment`` that do not depend on the back-end, around its ``predict``.

    decode (images) -> vocabulary + options (vocabulary, options) -> plan + cut windows (windows)
      -> back-end: class embeddings of names, predict(crops) -> low-resolution probabilities
      -> stitch (windows) -> upsample + labels (labels) -> SegmentationResult

``SegmentPipeline`` is also the back-end contract: its six abstract methods (names -> prototypes, prototypes ->
the back-end's embeddings, the back-end's own array type, resize, predict, upsample + labels) are all a
back-end implements; the PyTorch and the ONNX Runtime back-ends implement them and override nothing else.
An image's data crosses into the back-end's arrays once (``_resize``) and back to numpy once
(``_upsample_labels``); cutting, batching and stitching in between run on the back-end's arrays.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from abc import ABC, abstractmethod
from contextlib import nullcontext
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from ..config import AlignZegConfig
from ..progress import advance, progress_bar
from .result import SegmentationResult
from .images import ImageInput, LoadedImage, SupportsArray, check_image_list, chw_images, decode_image, unsupported_image
from .options import check_bias_correction, check_bool, check_threshold, resolve_bias_correction, untrained_warning_due
from .streaming import ImageError
from .vocabulary import ClassList, Vocabulary, merge_synonyms, parse_vocabulary, prompt_text, seen_flags, trained_flags, \
    unit_rows, validate_class_names
from .windows import WindowPlan, WindowStitcher, cut_windows, plan_windows

logger = logging.getLogger(__name__)

__all__ = ["SegmentPipeline", "check_batch_size", "check_max_pixels"]


SINGLE_IMAGE_TYPES = (str, os.PathLike, Image.Image, np.ndarray, LoadedImage)
"""Inputs that are one image (``segment_batch`` also takes one of them, or a back-end's BCHW tensor, alone)."""


def check_batch_size(batch_size: Any) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def check_max_pixels(max_pixels: Any) -> int | None:
    if max_pixels is not None and (not isinstance(max_pixels, int) or isinstance(max_pixels, bool)
                                   or max_pixels < 1):
        raise ValueError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
    return max_pixels


class SegmentPipeline(ABC):
    """The back-end contract and everything ``segment`` does around it.

    A back-end (``alignzeg.segmenter.AlignZegSegmenter``: PyTorch, ``alignzeg.onnx.runtime.OnnxSegmenter``: ONNX
    Runtime) subclasses this class, sets ``config``, ``batch_size``, ``max_pixels`` and ``progress``, and
    implements the six abstract methods below; it overrides nothing else, and sets ``array_module`` when its
    arrays are not numpy. The pipeline calls only those hooks and decides the options (bias correction
    included) once, before calling them. Embeddings are the back-end's own type (``_embeddings``), made once
    per call. An image's data crosses between numpy and the back-end's arrays once each way: ``_resize`` takes
    the decoded numpy pixels and returns the back-end's array, ``_predict`` takes and returns the back-end's
    arrays (the pipeline cuts, batches and stitches them with ``array_module``), ``_upsample_labels`` returns
    numpy. For the PyTorch back-end on CUDA, the only host <-> device copies of an image's data are the crops
    going in and the probabilities coming out of ``_predict``, once per batch of crops.
    """

    config: AlignZegConfig
    batch_size: int = 8
    max_pixels: int | None = None
    progress: bool = False
    array_module: ModuleType = np
    """The back-end's array namespace (``numpy``, or ``torch``): what the crops and maps between ``_resize`` and
    ``_upsample_labels`` are, and what the pipeline stacks, concatenates and averages them with."""
    stored_names: tuple[str, ...] = ()
    """Class names the model file stores with their embeddings (an ONNX export's vocabulary), used when
    ``segment`` gets no vocabulary; empty: a vocabulary must be given."""
    _untrained_warned: bool = False

    # The back-end contract --------------------------------------------------------------------------
    @abstractmethod
    def _encode_names(self, names: tuple[str, ...]) -> np.ndarray:
        """Class prototypes of prompt texts (``vocabulary.prompt_text``): (K, E) float32 rows of unit length,
        E = ``config.embed_dim``, in the order of ``names`` (a text tower, or a vocabulary stored in the file).

        Raises:
            ValueError: a name the back-end cannot encode (the message names it).
        """

    @abstractmethod
    def _embeddings(self, embeddings: np.ndarray) -> Any:
        """(C, E) float32 unit rows -> the back-end's embeddings, what ``_predict`` and ``prepare_vocabulary`` use
        (a tensor on the model's device; the array itself)."""

    @abstractmethod
    def _native_array(self, value: object) -> np.ndarray | None:
        """``value`` as a CPU numpy array when it is the back-end's own array type (a torch tensor: an image
        as CHW/BCHW, float in [0, 1] or uint8, or (C, E) precomputed embeddings), else ``None``."""

    @abstractmethod
    def _resize(self, pixels: np.ndarray, size: tuple[int, int]) -> Any:
        """(3, H, W) float32 numpy in [0, 1] -> (3, h, w) float32 in [0, 1] as the back-end's array (``array_module``):
        bilinear, antialiased when shrinking (``windows.resize_bilinear`` or a back-end's implementation of the
        same function, agreeing within 1e-4). Called once per image, also when (h, w) = (H, W): then the pixels
        unchanged. The image's one crossing into the back-end's arrays."""

    @abstractmethod
    def _predict(self, crops: Any, embeddings: Any, seen: np.ndarray, bias_correction: bool) -> Any:
        """The network on one batch of crops, in and out as the back-end's arrays (on the host).

        Args:
            crops: (B, 3, S, S) float32 RGB in [0, 1], S = ``config.input_size`` (padded with the CLIP mean).
            embeddings: (C, E) unit class prototypes, from ``_embeddings``.
            seen: (C,) bool, the seen (training) classes.
            bias_correction: apply the bias correction (already decided by the pipeline; apply it as given).

        Returns:
            (B, C + 1, S / mask_stride, S / mask_stride) float32 probabilities summing to 1 over the channels
            (channel C: background).
        """

    @abstractmethod
    def _upsample_labels(self, probs: Any, size: tuple[int, int],
                         threshold: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(C + 1, h, w) float32 probabilities (the back-end's array) -> numpy: the same probabilities, (H, W)
        int32 labels in [0, C) (or -1 below ``threshold``) and (H, W) float32 confidence, bilinear with
        ``align_corners=False`` (``labels.upsample_labels`` or a back-end's implementation of the same
        function). The image's one crossing back to numpy."""

    # Windows -----------------------------------------------------------------------------------------
    def window_crops(self, image: LoadedImage) -> tuple[Any, WindowPlan]:
        """``segment``'s crops of one decoded image: (n, 3, S, S) float32 as the back-end's array (resized,
        padded with the CLIP mean, cut by the sliding-window plan) and that plan."""
        plan = plan_windows(image.size, self.config)
        return self._cut(image, plan), plan

    def _cut(self, image: LoadedImage, plan: WindowPlan) -> Any:
        """The (n, 3, S, S) crops of ``image`` by its window ``plan``, padded with the CLIP mean."""
        fill = np.asarray(self.config.mean, dtype=np.float32)
        return cut_windows(image.pixels, plan, fill, self._resize, self.array_module)

    # Images ------------------------------------------------------------------------------------------
    def load_image(self, image: ImageInput) -> list[LoadedImage]:
        """Decode one input (a BCHW tensor gives B images, everything else one), checked against ``max_pixels``."""
        loaded = decode_image(image, self.max_pixels)
        if loaded is not None:
            return [loaded]
        native = self._native_array(image)
        if native is None:
            raise unsupported_image(image)
        return chw_images(native)

    def load_images(self, images: Sequence[ImageInput] | ImageInput) -> list[LoadedImage]:
        """Decode a list of inputs (each may itself be a batch), or one input."""
        if isinstance(images, SINGLE_IMAGE_TYPES):
            return self.load_image(images)
        native = self._native_array(images)
        if native is not None:
            return chw_images(native)
        return [loaded for image in check_image_list(images) for loaded in self.load_image(image)]

    # Vocabulary --------------------------------------------------------------------------------------
    def prepare_vocabulary(self, vocabulary: Vocabulary | None, class_names: Sequence[str] | None = None,
                           seen: Sequence[Any] | None = None) -> tuple[Any, tuple[str, ...], np.ndarray]:
        """What ``segment`` makes of its vocabulary arguments (checked as there): the back-end's (C, E) unit
        class embeddings, the class names and the (C,) bool seen mask."""
        if vocabulary is None:
            if not self.stored_names:
                raise ValueError("no vocabulary given, and this model stores none: pass class names or (C, E) "
                                 "class embeddings")
            vocabulary = self.stored_names
        array = self._embeddings_array(vocabulary)
        if array is not None:
            embeddings = unit_rows(array, self.config.embed_dim)
            num = embeddings.shape[0]
            names = tuple(f"class_{i}" for i in range(num)) if class_names is None \
                else validate_class_names(class_names, "class_names")
            if len(names) != num:
                raise ValueError(f"class_names has {len(names)} names for {num} embeddings")
            default_seen = [False] * num
            embeddings = self._embeddings(embeddings)
        else:
            if class_names is not None:
                raise ValueError("class_names is only for precomputed embeddings; the vocabulary already names them")
            classes = parse_vocabulary(vocabulary)
            names = classes.names
            embeddings = self._class_embeddings(classes)
            default_seen = list(trained_flags(names, tuple(self.config.seen_classes)))
        flags = default_seen if seen is None else seen_flags(seen, names)
        return embeddings, names, np.asarray(flags, dtype=bool)

    def _embeddings_array(self, vocabulary: Any) -> np.ndarray | None:
        """``vocabulary`` as a numpy array when it is precomputed embeddings (numpy or the back-end's own
        array type), else ``None`` (names)."""
        if isinstance(vocabulary, np.ndarray):
            return vocabulary if vocabulary.dtype.kind not in "UOS" else None
        return self._native_array(vocabulary)

    def _class_embeddings(self, classes: ClassList) -> Any:
        if not classes.has_synonyms:
            return self._embeddings(self._encode_names(tuple(prompt_text(n) for n in classes.names)))
        rows = self._encode_names(tuple(prompt_text(n) for n in classes.all_names))
        return self._embeddings(merge_synonyms(rows, classes))

    def _resolve_bias_correction(self, bias_correction: Any, seen: Sequence[bool]) -> bool:
        """``resolve_bias_correction`` with this model's config, warning once per segmenter."""
        offset, calibrated = self.config.seen_score_offset, self.config.calibration_protocol != "none"
        due = not self._untrained_warned and untrained_warning_due(bias_correction, self.config.indicator_trained,
                                                                    seen, offset, calibrated)
        self._untrained_warned = self._untrained_warned or due
        return resolve_bias_correction(bias_correction, self.config.indicator_trained, seen, warn=due,
                                       stacklevel=5, seen_score_offset=offset, calibrated=calibrated)

    # Inference ---------------------------------------------------------------------------------------
    def _run(self, images: list[LoadedImage], embeddings: Any, seen: np.ndarray,
             bias_correction: bool) -> list[Any]:
        """Low-resolution probability maps (C + 1, h, w) of each image's resized frame (the back-end's arrays).

        Crops are cut one image at a time and go through ``_predict`` in batches of ``batch_size`` (a batch may
        span images, in input order); each batch's maps are added to their images' running averages
        (``WindowStitcher``) and dropped. So memory holds one image's crops, one batch's maps and each image's
        (C + 1, h, w) map at the mask stride, never an image's or a call's window maps all at once.
        With ``progress``, a bar counts windows and each batch is logged (INFO) as windows done / total.
        """
        plans = [plan_windows(img.size, self.config) for img in images]
        stitchers = [WindowStitcher(plan, self.array_module) for plan in plans]
        total = sum(len(plan.origins) for plan in plans)
        done = 0
        # no bar at all without progress: progress_bar swaps the root logger's handlers while it runs, which
        # concurrent segment calls (one segmenter serving several threads) must not do
        bar_context = progress_bar(total, desc="alignzeg", unit="window") if self.progress else nullcontext(None)
        with bar_context as bar:
            for crops, owners in self._crop_batches(images, plans):
                probs = self._predict(crops, embeddings, seen, bias_correction)
                for window, owner in zip(probs, owners):
                    stitchers[owner].add(window)
                done += len(owners)
                if bar is not None:
                    advance(bar, len(owners))
                    logger.info("windows %d/%d", done, total)
        return [stitcher.result() for stitcher in stitchers]

    def _crop_batches(self, images: list[LoadedImage],
                      plans: list[WindowPlan]) -> Iterator[tuple[Any, list[int]]]:
        """Batches of at most ``batch_size`` crops over ``images`` in input order, each image cut by its plan
        (``plans``, one per image) when its turn comes: (B, 3, S, S) float32 (the back-end's array) and, per
        crop, the index of its image."""
        xp, size = self.array_module, self.batch_size
        pieces: list[Any] = []
        owners: list[int] = []
        for index, (image, plan) in enumerate(zip(images, plans)):
            crops = self._cut(image, plan)
            start = 0
            while start < crops.shape[0]:
                take = min(size - len(owners), crops.shape[0] - start)
                pieces.append(crops[start:start + take])
                owners += [index] * take
                start += take
                if len(owners) == size:
                    yield (pieces[0] if len(pieces) == 1 else xp.concatenate(pieces)), owners
                    pieces, owners = [], []
        if owners:
            yield (pieces[0] if len(pieces) == 1 else xp.concatenate(pieces)), owners

    def _segment(self, images: list[LoadedImage], vocabulary: Vocabulary | None, seen: Sequence[Any] | None,
                 bias_correction: Any, unlabelled_threshold: Any, class_names: Sequence[str] | None,
                 keep_image: Any) -> list[SegmentationResult]:
        """``segment_batch`` on decoded images: options validated first, then one run over all crops."""
        check_bias_correction(bias_correction)
        keep_image = check_bool("keep_image", keep_image)
        threshold = check_threshold(unlabelled_threshold)
        embeddings, names, seen_mask = self.prepare_vocabulary(vocabulary, class_names, seen)
        bias_correction = self._resolve_bias_correction(bias_correction, seen_mask.tolist())
        maps = self._run(images, embeddings, seen_mask, bias_correction)
        results = []
        for img, native in zip(images, maps):
            probs, labels, confidence = self._upsample_labels(native, img.size, threshold)
            results.append(SegmentationResult(
                label_map=labels, scores=confidence, class_names=names, class_probs=probs, seen=seen_mask,
                bias_correction=bias_correction, image=img.to_uint8() if keep_image else None,
            ))
        return results

    def segment_batch(self, images: Sequence[ImageInput] | SupportsArray, vocabulary: Vocabulary | None = None, *,
                      seen: Sequence[str] | Sequence[bool] | None = None, bias_correction: bool | None = None,
                      unlabelled_threshold: float | None = None, class_names: Sequence[str] | None = None,
                      keep_image: bool = True) -> list[SegmentationResult]:
        """Segment several images with one vocabulary; all their crops share forward passes.

        Args: as ``segment``; ``images`` is a list of inputs (a BCHW tensor counts as B images).

        Returns:
            One ``SegmentationResult`` per image, in input order.
        """
        return self._segment(self.load_images(images), vocabulary, seen, bias_correction,
                             unlabelled_threshold, class_names, keep_image)

    def segment(self, image: ImageInput, vocabulary: Vocabulary | None = None, *,
                seen: Sequence[str] | Sequence[bool] | None = None, bias_correction: bool | None = None,
                unlabelled_threshold: float | None = None, class_names: Sequence[str] | None = None,
                keep_image: bool = True) -> SegmentationResult:
        """Segment one image.

        Args:
            image: path, PIL image, HWC numpy array (uint8/uint16/float in [0, 1], any byte order) or, in
                the PyTorch back-end, a CHW tensor in [0, 1]. Files and PIL images above ``max_pixels`` are
                refused before decoding; a URL or a folder is refused with a message that says so.
            vocabulary: class names in label order: a list, tuple or 1-D numpy array of str (duplicates,
                empty or invisible-only names, sets, generators and a bare string are refused). An entry may
                be a tuple of synonyms, ``("person", "man", "woman")``: one class, reported under its first
                name, whose prototype is the normalised mean of the names' prototypes; a mapping
                ``{"person": ["man", "woman"], "car": []}`` says the same. Or precomputed class embeddings
                (C, E) as an array (then ``class_names`` may name them).
            seen: which vocabulary entries are seen (training) classes for bias correction, as names or
                one bool per class; default: the names in the checkpoint's ``config.seen_classes``
                (none for embeddings).
            bias_correction: apply the bias correction: the seen-score offset (``config.seen_score_offset``)
                and Proposal-based Bias Correction's flags (PBC, with a trained class indicator only).
                ``None`` or ``"auto"`` (default): on when the checkpoint's class indicator was trained
                (``config.indicator_trained``) or its offset is not 0, else off with a warning (once per
                segmenter, when the vocabulary mixes seen and unseen classes). ``True`` on a model with
                neither raises ``ValueError``. The result's ``bias_correction`` says whether it was applied.
            unlabelled_threshold: pixels whose best class probability is below this number in [0, 1] get
                -1; ``None`` (default) labels every pixel.
            keep_image: keep a uint8 copy of the image in the result, for ``overlay()``; must be a bool.

        Returns:
            SegmentationResult with ``label_map`` (H, W) int32 at the input's size.

        Raises:
            TypeError: an option of the wrong type (the message names it and the value).
            ValueError: an option out of range, a bad vocabulary, or an image that cannot be used.
        """
        loaded = self.load_image(image)  # decoded once, here
        if len(loaded) != 1:
            raise ValueError(f"segment takes one image, got a batch of {len(loaded)}: use segment_batch")
        return self._segment(loaded, vocabulary, seen, bias_correction, unlabelled_threshold, class_names,
                             keep_image)[0]

    def segment_iter(self, images: Iterable[ImageInput], vocabulary: Vocabulary | None = None, *, prefetch: int = 4,
                     workers: int = 2, on_error: str = "raise",
                     **options: Any) -> Iterator[SegmentationResult | ImageError]:
        """Segment a stream of images lazily, in input order, decoding the next ones on background threads.

        Memory stays bounded (``prefetch`` decoded images wait at most). ``on_error="return"`` yields an
        ``alignzeg.streaming.ImageError`` for an image that cannot be read or decoded instead of raising.
        ``options``: those of ``segment``. See ``alignzeg.streaming.segment_iter``.
        """
        from .streaming import segment_iter  # streaming sits beside the pipeline: it only calls its methods

        return segment_iter(self, images, vocabulary, prefetch=prefetch, workers=workers, on_error=on_error,
                            **options)
