"""Streaming inference over many images: decode ahead on threads, segment in order, hold a bounded window.

    for result in seg.segment_iter(paths, ["road", "tree", "car"]):
        ...                                   # one SegmentationResult per input, in input order

The inputs are read lazily (a generator of a million paths is fine). While the model works on image ``i``,
images ``i + 1 ... i + prefetch`` are decoded by a ``concurrent.futures.ThreadPoolExecutor`` (PIL and
numpy release the GIL while decoding), so decoding overlaps compute. At most ``prefetch`` decoded images
wait at any time, so memory does not grow with the number of images.

Each image goes through ``AlignZegSegmenter.segment_batch([image], ...)``, the code path of ``segment``:
``segment_iter`` gives the same results as calling ``segment`` image by image.
"""

from __future__ import annotations

import collections
import inspect
import itertools
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from .result import SegmentationResult
from .images import LoadedImage, decode_image, unsupported_image

logger = logging.getLogger(__name__)

__all__ = ["ImageError", "segment_iter", "decode_ahead"]

ON_ERROR = ("raise", "return")


@dataclass(frozen=True)
class ImageError:
    """An input that could not be read or decoded (yielded in its place when ``on_error="return"``).

    Attributes:
        index: position of the input in the iterable (0-based).
        source: the input as given (a path, an array...).
        error: the exception raised while reading/decoding it (``FileNotFoundError``, ``ValueError``...).
    """

    index: int
    source: Any
    error: BaseException

    @property
    def message(self) -> str:
        """``"ExceptionType: text"``, for logs and ``errors.jsonl``."""
        return f"{type(self.error).__name__}: {self.error}"


def _shared_decode(image: Any) -> list[LoadedImage]:
    loaded = decode_image(image)
    if loaded is None:
        raise unsupported_image(image)
    return [loaded]


def _decode(image: Any, decode: Callable[[Any], list[LoadedImage]]) -> LoadedImage:
    loaded = decode(image)
    if len(loaded) != 1:
        raise ValueError(f"segment_iter takes one image per item, got a batch of {len(loaded)} (split the BCHW tensor)")
    return loaded[0]


def decode_ahead(images: Iterable[Any], prefetch: int = 4, workers: int = 2,
                 decode: Callable[[Any], list[LoadedImage]] | None = None
                 ) -> Iterator[tuple[int, Any, LoadedImage | BaseException]]:
    """Decode ``images`` on ``workers`` threads, at most ``prefetch`` ahead of the consumer, in input order.

    Args:
        images: any iterable of image inputs (paths, PIL images, arrays, CHW tensors); read lazily.
        prefetch: how many images may be decoded (or decoding) ahead of the one being consumed (>= 1).
        workers: decoding threads (>= 1).
        decode: one input -> its decoded images (a segmenter's ``load_image``, which applies its pixel
            limit and back-end types); default: the shared decoder with the default pixel limit.

    Yields:
        ``(index, source, decoded)`` where ``decoded`` is a ``LoadedImage`` ((3, H, W) float32 in [0, 1]) or
        the exception its decoding raised (returned, not raised, so the consumer decides).
    """
    _check_positive("prefetch", prefetch)
    _check_positive("workers", workers)
    return _decode_stream(images, prefetch, workers, decode or _shared_decode)


def _decode_stream(images: Iterable[Any], prefetch: int, workers: int,
                   decode: Callable[[Any], list[LoadedImage]]) -> Iterator[tuple[int, Any, LoadedImage | BaseException]]:
    sources = enumerate(images)
    window: collections.deque[tuple[int, Any, Future]] = collections.deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="alignzeg-decode") as pool:
        try:
            for index, source in itertools.islice(sources, prefetch):
                window.append((index, source, pool.submit(_decode, source, decode)))
            while window:
                index, source, future = window.popleft()
                for nxt, nxt_source in itertools.islice(sources, 1):  # refill: keep ``prefetch`` in flight
                    window.append((nxt, nxt_source, pool.submit(_decode, nxt_source, decode)))
                try:
                    decoded: LoadedImage | BaseException = future.result()
                except Exception as err:  # noqa: BLE001 - handed to the consumer, who raises or records it
                    decoded = err
                yield index, source, decoded
                del decoded
        finally:  # the consumer stopped early (break, exception): drop what was queued
            for _, _, future in window:
                future.cancel()


def segment_iter(segmenter: Any, images: Iterable[Any], vocabulary: Any, *, prefetch: int = 4,
                 workers: int = 2, on_error: str = "raise", **options: Any) -> Iterator[SegmentationResult | ImageError]:
    """Segment a stream of images with one vocabulary, yielding results in input order.

    Args:
        segmenter: an ``AlignZegSegmenter`` or ``OnnxSegmenter`` (a ``SegmentPipeline``).
        images: any iterable of image inputs (see ``segment``); each item is one image (a BCHW tensor item
            is refused: split it). Read lazily.
        vocabulary: as ``segment``.
        prefetch: images decoded ahead of the model (the memory bound: ``prefetch`` decoded images).
        workers: decoding threads.
        on_error: what to do with an image that cannot be read or decoded (missing, not an image,
            truncated, refused by the decoder's checks): ``"raise"`` (default) raises its exception;
            ``"return"`` yields an ``ImageError`` in its place and goes on. Errors of the vocabulary, the
            options or the model are not per-image: they always raise.
        options: the keyword options of ``segment`` (``seen``, ``bias_correction``, ``unlabelled_threshold``,
            ``class_names``, ``keep_image``), passed unchanged to ``segment_batch`` for every image; those not
            given keep ``segment``'s defaults.

    Yields:
        One ``SegmentationResult`` per input (or ``ImageError`` with ``on_error="return"``), in input order.

    Raises:
        ValueError: bad ``on_error``, ``prefetch`` or ``workers`` (at the call); a bad vocabulary or option
            value when the first image is segmented.
        TypeError: an option ``segment`` does not have (at the call).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    _check_positive("prefetch", prefetch)
    _check_positive("workers", workers)
    accepted = set(inspect.signature(segmenter.segment_batch).parameters) - {"images", "vocabulary"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(f"segment_iter got unknown options {unknown}; segment's options are {sorted(accepted)}")
    # The segmenter's decoder: its pixel limit (checked before decoding) and its back-end's image types.
    return _segment_stream(segmenter, decode_ahead(images, prefetch, workers, segmenter.load_image), vocabulary,
                           on_error, options)


def _segment_stream(segmenter: Any, decoded_stream: Iterator[tuple[int, Any, Any]],
                    vocabulary: Any, on_error: str, options: dict[str, Any]) -> Iterator[SegmentationResult | ImageError]:
    for index, source, decoded in decoded_stream:
        if isinstance(decoded, BaseException):
            if on_error == "raise":
                raise decoded
            # Not a warning: the caller gets the error in the image's place and decides (nothing is skipped).
            logger.debug("image %d (%s) returned as an ImageError: %s", index, _describe(source), decoded)
            yield ImageError(index, source, decoded)
            continue
        yield segmenter.segment_batch([decoded], vocabulary, **options)[0]


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _describe(source: Any) -> str:
    """A short name for logs: the path, or the type of an in-memory image."""
    return repr(str(source)) if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__") \
        else type(source).__name__
