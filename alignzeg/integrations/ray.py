"""Scale-out on Ray Data: segment a ``ray.data.Dataset`` of images or paths on a pool of actors.

    import ray
    from alignzeg.integrations.ray import segment_dataset

    ray.init()                                         # local; on a cluster: ray.init(address="auto")
    ds = ray.data.read_images("s3://bucket/photos", include_paths=True)    # or rows {"path": ...}
    out = segment_dataset(ds, "org/alignzeg-vitb16", ["road", "tree", "car"], num_actors=4, num_gpus=1)
    for row in out.iter_rows():
        row["path"], row["label_map"]                  # (H, W) int32, indices into the vocabulary

Each actor loads the segmenter once (``alignzeg.loader.load_segmenter`` in the actor, or your factory) and segments
batches of rows with ``segment_batch``; Ray schedules the actors (``num_gpus`` each) over the machines.
Needs ``pip install "alignzeg[ray]"``; importing this module without Ray raises an ``ImportError`` that
says so.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

import numpy as np

try:
    import ray
    import ray.data
except ImportError as err:  # pragma: no cover - exercised only without ray
    raise ImportError('alignzeg.integrations.ray needs Ray Data: pip install "alignzeg[ray]"') from err

if TYPE_CHECKING:  # pragma: no cover
    from ..segmenter import AlignZegSegmenter

__all__ = ["SegmentBatch", "segment_dataset", "check_cluster_fits"]

ModelSource = Union[str, os.PathLike, Callable[[], "AlignZegSegmenter"]]


class SegmentBatch:
    """The callable class that ``map_batches`` runs in each actor: one segmenter per actor, many batches.

    Args:
        model: a folder written by ``save_pretrained``, a Hub repo id, an ``.onnx`` file written by ``export_onnx``
            (float32 or int8) or ``"demo"`` (loaded with ``alignzeg.loader.load_segmenter``
            in the actor), or a zero-argument callable returning an ``AlignZegSegmenter`` (runs in the actor;
            must be picklable, e.g. a module-level function or ``functools.partial``).
        vocabulary: class names, in order.
        column: the column holding the images: (H, W, C) uint8 arrays (``ray.data.read_images``) or paths.
        device: passed to ``load_segmenter``; ``None``: CUDA when the actor has a GPU, else the CPU.
        keep_input: keep an image column that holds arrays (default: drop it, the label map replaces it);
            a column of paths is always kept.
        segment_options: passed to ``segment_batch`` (``bias_correction``, ``unlabelled_threshold``, ``seen``).
    """

    def __init__(self, model: ModelSource, vocabulary: Sequence[str], column: str = "image",
                 device: str | None = None, keep_input: bool = False, **segment_options: Any) -> None:
        from ..loader import load_segmenter

        self.segmenter = model() if callable(model) else load_segmenter(model, device=device)
        self.vocabulary = list(vocabulary)
        self.column = column
        self.keep_input = keep_input
        self.options = segment_options
        self.segmenter.prepare_vocabulary(self.vocabulary)  # once per actor (checked here, encoded and cached)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``{column: images, ...}`` -> the same batch with ``label_map`` ((H, W) int32 per row) added."""
        if self.column not in batch:
            raise KeyError(f"column {self.column!r} not in the dataset (columns: {sorted(batch)}); "
                           "pass column=... to segment_dataset")
        images = [_as_input(item) for item in batch[self.column]]
        results = self.segmenter.segment_batch(images, self.vocabulary, keep_image=False, **self.options)
        drop = not self.keep_input and not all(isinstance(image, str) for image in images)  # paths are kept
        out = {k: v for k, v in batch.items() if k != self.column or not drop}
        out["label_map"] = [r.label_map for r in results]
        return out


def _as_input(item: Any) -> Any:
    """A Ray cell -> a ``segment`` input: numpy strings become ``str`` paths, arrays stay arrays."""
    if isinstance(item, (bytes, np.bytes_)):
        return os.fsdecode(item)
    if isinstance(item, np.str_):
        return str(item)
    return item


def segment_dataset(ds: "ray.data.Dataset", model: ModelSource, vocabulary: Sequence[str], *,
                    column: str = "image", num_actors: int = 1, num_gpus: float = 0, num_cpus: float = 1,
                    batch_size: int = 4, device: str | None = None, keep_input: bool = False,
                    **segment_options: Any) -> "ray.data.Dataset":
    """Segment every row of a Ray Dataset with an actor pool; lazy, like every Ray Data transform.

    Args:
        ds: a Dataset whose ``column`` holds images ((H, W, C) uint8/uint16/float arrays, as from
            ``ray.data.read_images``) or paths readable by the actors (``ray.data.from_items([{"path": p}])``
            with ``column="path"``; on a cluster, a shared file system).
        model: what ``SegmentBatch`` loads in each actor (a checkpoint folder/Hub id or a factory).
        vocabulary: class names, in order.
        column: the image column.
        num_actors: actors in the pool (``ray.data.ActorPoolStrategy(size=num_actors)``); one per GPU.
        num_gpus, num_cpus: resources per actor; with ``num_gpus > 0`` the segmenter picks CUDA.
        batch_size: rows per ``map_batches`` call (images of one call share forward passes).
        device: force a device in the actors (default: CUDA when the actor has a GPU, else the CPU).
        keep_input: keep an image column of arrays (default: drop it to save object-store memory); a
            column of paths is always kept.
        segment_options: ``bias_correction``, ``unlabelled_threshold``, ``seen`` (as ``segment``).

    Returns:
        The Dataset with a ``label_map`` column: (H, W) int32 per row at the image's size, indices into
        ``vocabulary`` (-1 = unlabelled with ``unlabelled_threshold``). Rows keep their other columns
        (e.g. ``path``, to match results to inputs); Ray Data may reorder rows unless
        ``ray.data.DataContext.get_current().execution_options.preserve_order = True``.

    Raises:
        ValueError: ``num_actors`` or ``batch_size`` not a positive integer, negative resources; or, on a
            running Ray cluster, actors that would take every CPU (Ray Data's read tasks would never get one:
            the job would wait for ever) or more GPUs than the cluster has (see ``check_cluster_fits``).
    """
    for name, value in (("num_actors", num_actors), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if num_gpus < 0 or num_cpus < 0:
        raise ValueError(f"num_gpus and num_cpus must be >= 0, got {num_gpus!r} and {num_cpus!r}")
    if not isinstance(model, (str, os.PathLike)) and not callable(model):
        raise TypeError(f"model must be a checkpoint folder, a Hub repo id, an .onnx file or a callable, got {type(model).__name__}")
    if ray.is_initialized():
        check_cluster_fits(ray.cluster_resources(), num_actors, num_cpus, num_gpus)
    return ds.map_batches(
        SegmentBatch,
        fn_constructor_kwargs=dict(model=model, vocabulary=list(vocabulary), column=column, device=device,
                                   keep_input=keep_input, **segment_options),
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_gpus=num_gpus, num_cpus=num_cpus,
    )


def check_cluster_fits(resources: dict[str, float], num_actors: int, num_cpus: float, num_gpus: float) -> None:
    """Refuse an actor pool with which the job could only wait: Ray schedules it and never runs it.

    Ray Data's other tasks (reading files, splitting blocks) need 1 CPU each, so the actors must leave at
    least one CPU free; and the actors' GPUs must exist.

    Args:
        resources: the cluster's totals (``ray.cluster_resources()``: ``{"CPU": 2.0, "GPU": 1.0, ...}``).
        num_actors, num_cpus, num_gpus: the pool and each actor's resources.

    Raises:
        ValueError: naming the resources asked for, the cluster's, and what would fit.
    """
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if num_actors * num_cpus > cpus - 1:
        raise ValueError(f"num_actors={num_actors} x num_cpus={num_cpus:g} takes {num_actors * num_cpus:g} of the "
                         f"Ray cluster's {cpus:g} CPUs; Ray Data needs 1 CPU left for its read tasks, or the job "
                         f"waits for ever: {_cpu_hint(cpus, num_actors, num_cpus)}")
    if num_actors * num_gpus > gpus:
        raise ValueError(f"num_actors={num_actors} x num_gpus={num_gpus:g} needs {num_actors * num_gpus:g} GPUs; the "
                         f"Ray cluster has {gpus:g}, so the actors would wait for ever")


def _cpu_hint(cpus: float, num_actors: int, num_cpus: float) -> str:
    """What would fit on ``cpus`` CPUs with one left free."""
    fits = int((cpus - 1) // num_cpus) if num_cpus else 0
    if fits < 1:
        return "use a cluster with more CPUs"
    return f"use num_actors={fits} or fewer, or num_cpus={(cpus - 1) / num_actors:g} per actor"
