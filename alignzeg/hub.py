"""Weights on disk and on the Hugging Face Hub: ``config.json`` + ``model.safetensors``, strictly loaded.

All Hub traffic goes through huggingface_hub (its cache, its offline mode, its endpoint setting); no
pickle is loaded unless the caller opts in, and then only with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from functools import partial
from pathlib import Path
from typing import Iterable, Mapping

import torch
from huggingface_hub import hf_hub_download as _hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    FileMetadataError,
    HFValidationError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .config import AlignZegConfig

logger = logging.getLogger(__name__)

__all__ = [
    "CLIP_PREFIX", "CONFIG_NAME", "WEIGHTS_NAME", "WeightsError", "resolve_checkpoint", "read_weights",
    "load_state_dict_strict",
    "save_checkpoint", "clip_fingerprint", "model_card", "card_metadata",
]

CLIP_PREFIX = "backbone.clip."
"""State-dict prefix of the frozen CLIP tensors in an ``AlignZegModel`` (absent from slim checkpoints)."""

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PICKLE_NAMES = ("pytorch_model.bin", "model.pt", "model.pth", "model.bin")

hf_hub_download = partial(_hf_hub_download, library_name="alignzeg", library_version=__version__)


class WeightsError(RuntimeError):
    """A checkpoint that cannot be found, read or matched to the model; the message says which and why."""


# Resolving where the files are ---------------------------------------------------------------------------
def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _download(repo_id: str, filename: str, revision: str | None, cache_dir: str | None,
              local_files_only: bool) -> Path:
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                    local_files_only=local_files_only))
    except LocalEntryNotFoundError as err:
        why = "HF_HUB_OFFLINE=1 is set" if _offline() else (
            "local_files_only=True was given" if local_files_only else _unreachable_reason(err))
        raise WeightsError(
            f"{filename} of {repo_id!r}{f' (revision {revision!r})' if revision else ''} is not in the local "
            f"Hugging Face cache and {why}. Download it once with network access "
            f"(`hf download {repo_id}`, or call from_pretrained online), or pass a local folder."
        ) from err
    except RepositoryNotFoundError as err:
        raise WeightsError(f"no repository {repo_id!r} on the Hub (or it is private: log in with `hf auth login`)") from err
    except RevisionNotFoundError as err:
        raise WeightsError(f"repository {repo_id!r} has no revision {revision!r}") from err
    except EntryNotFoundError as err:
        raise WeightsError(f"repository {repo_id!r} has no file {filename!r}") from err
    except HfHubHTTPError as err:
        raise WeightsError(f"downloading {filename} of {repo_id!r} failed: {err}") from err
    except OSError as err:  # broken connection, truncated body, disk errors
        raise WeightsError(
            f"downloading {filename} of {repo_id!r} failed (connection dropped, body truncated in transit, or a "
            f"disk error); nothing was cached, try again: {err}"
        ) from err


def _unreachable_reason(err: LocalEntryNotFoundError) -> str:
    """Why huggingface_hub fell back to a cache that did not have the file: HTTP status, bad endpoint, or network."""
    from huggingface_hub import constants

    cause = err.__cause__
    response = getattr(cause, "response", None)
    if isinstance(cause, HfHubHTTPError) and response is not None:
        return (f"the Hub at {constants.ENDPOINT} answered HTTP {response.status_code}"
                + (" (a server error: try again later)" if response.status_code >= 500 else ""))
    if isinstance(cause, FileMetadataError):
        return f"the server at {constants.ENDPOINT} did not answer like a Hugging Face Hub (check HF_ENDPOINT): {cause}"
    detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
    return f"the Hub at {constants.ENDPOINT} could not be reached{detail}"


def resolve_checkpoint(name_or_path: str | os.PathLike, revision: str | None = None, cache_dir: str | None = None,
                       local_files_only: bool = False, allow_pickle: bool = False) -> tuple[Path, Path]:
    """Find ``config.json`` and the weights file of a local folder or a Hub repo.

    Returns:
        (config path, weights path); the weights are ``model.safetensors``, or a pickle file only when
        ``allow_pickle`` is set and no safetensors file exists.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path / CONFIG_NAME, _local_weights(path, allow_pickle)
    if path.exists():
        raise WeightsError(f"{str(path)!r} is a file; from_pretrained takes a folder or a Hub repo id")
    repo_id = str(name_or_path)
    try:
        config_path = _download(repo_id, CONFIG_NAME, revision, cache_dir, local_files_only)
    except HFValidationError as err:
        raise WeightsError(
            f"{repo_id!r} is neither an existing local folder nor a valid Hub repo id ('org/name')"
        ) from err
    return config_path, _download(repo_id, WEIGHTS_NAME, revision, cache_dir, local_files_only)


def _local_weights(folder: Path, allow_pickle: bool) -> Path:
    if not (folder / CONFIG_NAME).is_file():
        raise WeightsError(f"{str(folder)!r} has no {CONFIG_NAME}; is it a folder written by save_pretrained?")
    weights = folder / WEIGHTS_NAME
    if weights.is_file():
        return weights
    pickles = [folder / n for n in PICKLE_NAMES if (folder / n).is_file()]
    if pickles and allow_pickle:
        logger.warning("loading pickle checkpoint %s with torch.load(weights_only=True)", pickles[0])
        return pickles[0]
    if pickles:
        raise WeightsError(
            f"{str(folder)!r} holds a pickle checkpoint ({pickles[0].name}) but no {WEIGHTS_NAME}. Pickles can "
            "run code when loaded, so alignzeg refuses them by default; if you trust the file, pass "
            "allow_pickle=True (it is then read with torch.load(weights_only=True)), or convert it to safetensors."
        )
    raise WeightsError(f"{str(folder)!r} has no {WEIGHTS_NAME}")


# Reading and matching tensors ----------------------------------------------------------------------------
def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a weights file, on the CPU. Damaged files raise ``WeightsError`` naming the file."""
    if path.suffix != ".safetensors":
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types for bad pickles
            raise WeightsError(f"cannot read pickle checkpoint {str(path)!r} with weights_only=True: {err}") from err
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"{str(path)!r} does not hold a flat name -> tensor state dict")
        return dict(state)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(
            f"{str(path)!r} is not a readable safetensors file (truncated or corrupt download?): {err}. "
            "Delete it and download again."
        ) from err


def _list(names: Iterable[str], limit: int = 8) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def load_state_dict_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor],
                           ignore_missing_prefix: str | None = None) -> None:
    """Load ``state`` into ``model`` exactly: same keys, same shapes, floating tensors for floating slots.

    Args:
        ignore_missing_prefix: keys under this prefix may be absent (a slim checkpoint's CLIP tensors,
            loaded separately).

    Raises:
        WeightsError: naming the missing keys, unexpected keys, or shape/dtype mismatches.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state
               and not (ignore_missing_prefix and k.startswith(ignore_missing_prefix))]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys: {_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_list(unexpected)}")
    wrong_shape = [f"{k} (checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)})"
                   for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if wrong_shape:
        problems.append(f"shape mismatches: {_list(wrong_shape)}")
    wrong_dtype = [f"{k} (checkpoint {v.dtype}, model {expected[k].dtype})" for k, v in state.items()
                   if k in expected and v.is_floating_point() != expected[k].is_floating_point()]
    if wrong_dtype:
        problems.append(f"dtype mismatches: {_list(wrong_dtype)}")
    if problems:
        raise WeightsError("checkpoint does not match the model architecture in config.json: " + "; ".join(problems))
    model.load_state_dict(state, strict=ignore_missing_prefix is None)


# Writing -------------------------------------------------------------------------------------------------
def clip_fingerprint(state: Mapping[str, torch.Tensor], prefix: str = CLIP_PREFIX) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of the CLIP tensors (those under ``prefix``)."""
    digest = hashlib.sha256()
    for name in sorted(k for k in state if k.startswith(prefix)):
        tensor = state[name].detach().cpu().contiguous().reshape(-1)  # 1-D: 0-dim tensors cannot be viewed as bytes
        digest.update(f"{name[len(prefix):]}|{tuple(state[name].shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def card_metadata(config: AlignZegConfig, slim: bool = False) -> dict:
    """The model card's YAML front matter: Hub fields, training classes, recipe and metrics when known.

    ``recipe`` and ``metrics`` are read from ``config.extra`` (``save_pretrained`` records them there).
    """
    from .clip_weights import clip_hub_repo  # clip_weights imports this module

    extra = json.loads(json.dumps(config.extra, default=str))  # plain JSON types only, for YAML
    alignzeg = {"clip_model": config.clip_model, "clip_pretrained": config.clip_pretrained,
                "clip_fingerprint": config.clip_fingerprint, "checkpoint": "slim" if slim else "full",
                "input_size": config.input_size}
    for key in ("recipe", "metrics"):
        if extra.get(key) is not None:
            alignzeg[key] = extra[key]
    meta = {"library_name": "alignzeg", "pipeline_tag": "image-segmentation",
            "tags": ["zero-shot-semantic-segmentation", "open-vocabulary", "alignzeg"],
            "training_classes": list(config.seen_classes), "alignzeg": alignzeg}
    base = clip_hub_repo(config)
    if base:
        meta["base_model"] = base
    return meta


def _metrics_lines(metrics: Mapping | None) -> str:
    if not metrics:
        return ""
    rows = "\n".join(f"| {name} | {value:g} |" if isinstance(value, (int, float)) else f"| {name} | {value} |"
                     for name, value in metrics.items())
    return f"\n## Evaluation\n\n| metric | value |\n|---|---|\n{rows}\n"


def model_card(config: AlignZegConfig, extra: str = "", slim: bool = False) -> str:
    """The README.md written beside the weights (Hub model card with ``library_name: alignzeg``)."""
    from huggingface_hub import ModelCardData

    seen = ", ".join(config.seen_classes) if config.seen_classes else "none recorded (untrained or unknown)"
    front = "---\n" + ModelCardData(**card_metadata(config, slim)).to_yaml() + "\n---"
    recipe = config.extra.get("recipe")
    recipe_line = f"- Training recipe: `{recipe if isinstance(recipe, str) else json.dumps(recipe)}`\n" if recipe else ""
    slim_line = ("- Slim checkpoint: the CLIP weights are not included; `from_pretrained` fetches them by "
                 "`clip_pretrained` and checks `clip_fingerprint`\n" if slim else "")
    body = f"""
# AlignZeg ({config.clip_model})

Zero-shot semantic segmentation with [alignzeg](https://arxiv.org/abs/2404.05667).

```python
from alignzeg import AlignZegSegmenter
seg = AlignZegSegmenter.from_pretrained("<this repo or folder>")
result = seg.segment("image.jpg", ["cat", "sofa", "wall"])
```

- CLIP backbone: `{config.clip_model}` (weights: `{config.clip_pretrained or 'random init'}`)
- Input size: {config.input_size} px, {config.num_queries} proposals, {config.num_bg_prototypes} background prototypes
- Seen (training) classes: {seen}
- Bias correction: threshold {config.pbc_threshold}, seen-score offset {config.seen_score_offset}, class indicator trained: {'yes' if config.indicator_trained else 'no (PBC off by default)'}
{recipe_line}{slim_line}{_metrics_lines(config.extra.get("metrics"))}{extra}"""
    return front + "\n" + body


def save_checkpoint(directory: str | os.PathLike, config: AlignZegConfig, state: Mapping[str, torch.Tensor],
                    card_extra: str = "") -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    # One metadata key only: safetensors keeps metadata in a hash map whose order varies between calls, and
    # a checkpoint's bytes should depend on its tensors alone (reproducible hashes on the Hub).
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    config.to_json(directory / CONFIG_NAME)
    slim = not any(k.startswith(CLIP_PREFIX) for k in tensors)
    (directory / "README.md").write_text(model_card(config, card_extra, slim=slim), encoding="utf-8")
    return directory
