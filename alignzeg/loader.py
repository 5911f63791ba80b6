"""One loader for every front end: a model argument -> the back-end that runs it.

    load_segmenter("org/name")        # a Hub repo id            -> AlignZegSegmenter (PyTorch)
    load_segmenter("runs/model")      # a save_pretrained folder -> AlignZegSegmenter (PyTorch)
    load_segmenter("model.onnx")      # an export_onnx file, float32 or int8 -> OnnxSegmenter (ONNX Runtime)
    load_segmenter("demo")            # the shipped demo model (alignzeg.demo.model_path())

The CLI (``alignzeg segment``, ``alignzeg app``), the web page and ``alignzeg.integrations.ray`` call it, so each
of them takes any of these; the back-end is chosen by what the path holds, never by a flag.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .pipeline.segment import SegmentPipeline

__all__ = ["DEMO_MODEL", "load_segmenter", "is_onnx_file", "resolve_model", "check_model_argument"]

DEMO_MODEL = "demo"
"""The model argument that names the shipped demo model (``alignzeg.demo.model_path()``)."""


def is_onnx_file(model: str | os.PathLike) -> bool:
    """Whether ``model`` names an ONNX file (a path ending in ``.onnx``, case-insensitive)."""
    return Path(model).suffix.lower() == ".onnx"


def resolve_model(model: str | os.PathLike) -> str:
    """``model`` as a loadable name: ``"demo"`` -> the shipped demo model's folder; anything else unchanged."""
    if str(model) == DEMO_MODEL:
        from .demo import model_path

        return str(model_path())
    return str(model)


def check_model_argument(model: str, option: str = "--model") -> None:
    """Refuse, before anything loads, a model argument that is a preset name or a missing local folder.

    A Hub repo id (``org/name``) passes; so does an existing folder with a ``config.json`` and an existing
    ``.onnx`` file.

    Raises:
        ValueError: a preset name (presets are built with ``AlignZegSegmenter.from_preset``), or a file or
            folder that is not a saved model.
        FileNotFoundError: a path whose parent folder exists locally but which does not.
    """
    from .presets import list_models

    path = Path(model).expanduser()
    if path.exists():
        if path.is_file() and is_onnx_file(path):
            return
        if not path.is_dir():
            raise ValueError(f"{option} {model!r} is a file but not an .onnx file; give the folder written by "
                             "save_pretrained (config.json + model.safetensors) or a file written by export_onnx")
        if not (path / "config.json").is_file():
            raise ValueError(f"{option} folder {model!r} has no config.json: it is not a folder written by "
                             "save_pretrained / alignzeg-train")
        return
    if model in list_models():
        raise ValueError(f"{option} {model!r} is a preset name, not a trained model: presets are built with "
                         f"AlignZegSegmenter.from_preset({model!r}) (list them with `alignzeg models`); "
                         f"{option} takes a folder written by save_pretrained or a Hub repo id")
    looks_local = model.startswith((".", "/", "~")) or "\\" in model or model.count("/") != 1
    if looks_local or (path.parent != Path(".") and path.parent.is_dir()):
        raise FileNotFoundError(f"{option} {model!r}: no such model folder (nor a Hub repo id 'org/name', nor an .onnx file); "
                                f"presets ({', '.join(list_models())}) are built with from_preset")


def load_segmenter(model: str | os.PathLike, *, device: str | None = None, revision: str | None = None,
                   batch_size: int = 8, progress: bool = False, **kwargs: Any) -> SegmentPipeline:
    """Load ``model`` with the back-end its path holds.

    Args:
        model: a folder written by ``save_pretrained``, a Hub repo id (``"org/name"``), an ``.onnx`` file written
            by ``export_onnx`` (float32 or int8), or ``"demo"`` (the shipped demo model).
        device: PyTorch device (``None``: CUDA when available); for an ONNX file ``"cuda"``/``"cuda:N"`` asks
            onnxruntime for its CUDA provider first, anything else runs on its CPU provider.
        revision: Hub revision (folders and Hub ids only).
        batch_size, progress: crops per forward pass; progress bars (PyTorch only).
        kwargs: passed to ``AlignZegSegmenter.from_pretrained`` (folders and Hub ids only).

    Returns:
        An ``AlignZegSegmenter`` or ``OnnxSegmenter``: the same ``segment`` / ``segment_batch`` /
        ``segment_iter`` and results.

    Raises:
        ValueError: a preset name, or a file that is neither a model folder nor an ``.onnx`` file.
        FileNotFoundError: a local path that does not exist.
    """
    name = resolve_model(model)
    check_model_argument(name)
    if is_onnx_file(name):
        from .onnx.runtime import OnnxSegmenter

        if revision is not None or kwargs:
            raise ValueError(f"an ONNX file takes no revision or from_pretrained options, got "
                             f"{sorted(kwargs) + (['revision'] if revision is not None else [])} for {name!r}")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if str(device or "").startswith("cuda") \
            else ["CPUExecutionProvider"]
        return OnnxSegmenter.load(name, providers=providers, batch_size=batch_size)
    from .segmenter import AlignZegSegmenter

    return AlignZegSegmenter.from_pretrained(name, revision=revision, device=device, batch_size=batch_size,
                                             progress=progress, **kwargs)
