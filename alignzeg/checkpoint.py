"""Checkpoint assembly: a model <-> a folder of ``config.json`` + ``model.safetensors`` + model card.

``save_model`` records the CLIP fingerprint and the card's provenance (recipe, metrics) and can leave the
frozen CLIP tensors out (a *slim* checkpoint); ``load_model`` reads a local folder or a Hub repo, refuses
CLIP weights whose fingerprint differs from the recorded one, and fetches a slim checkpoint's CLIP
weights by ``config.clip_pretrained``. ``AlignZegSegmenter`` is only the front door over these two.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from .clip_weights import (
    clip_hub_repo, fit_clip_state, load_clip_into, locate_clip_weights, normalize_clip_pretrained, read_clip_state,
)
from .config import AlignZegConfig, file_mode
from .errors import WeightsError
from .hub import CONFIG_NAME, WEIGHTS_NAME, resolve_checkpoint
from .modeling.model import CLIP_PREFIX, AlignZegModel
from .state_dicts import load_state_dict_strict, read_weights

logger = logging.getLogger(__name__)

__all__ = [
    "CLIP_PREFIX", "build_model", "card_extra", "card_metadata", "clip_fingerprint", "load_model", "model_card",
    "save_checkpoint", "save_model",
]


# Building and fingerprinting -----------------------------------------------------------------------------
def build_model(config: AlignZegConfig, seed: int | None = None, clip_pretrained: str | None = None,
                cache_dir: str | None = None, local_files_only: bool = False) -> AlignZegModel:
    """A model of ``config``, randomly initialised; with ``seed`` reproducible (the global RNG state is left
    untouched). With ``clip_pretrained`` (a source as ``normalize_clip_pretrained`` returns it) its frozen
    CLIP gets those weights: they are located first (their config changes applied, the source recorded in
    ``config.clip_pretrained``), then the model is built once and the weights are loaded into its CLIP.

    Raises: as ``clip_weights.load_clip_weights`` for the CLIP weights.
    """
    located = None
    if clip_pretrained is not None:
        located = locate_clip_weights(config, clip_pretrained, cache_dir, local_files_only)
        config = located.apply_to(config)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = AlignZegModel(config)
    if located is not None:
        load_clip_into(model.backbone.clip, located, config)
        logger.info("loaded CLIP weights %s", located.source)
    return model


def clip_fingerprint(state: Mapping[str, torch.Tensor], prefix: str = CLIP_PREFIX) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of the CLIP tensors (those under ``prefix``)."""
    digest = hashlib.sha256()
    for name in sorted(k for k in state if k.startswith(prefix)):
        tensor = state[name].detach().cpu().contiguous().reshape(-1)  # 1-D: 0-dim tensors cannot be viewed as bytes
        digest.update(f"{name[len(prefix):]}|{tuple(state[name].shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _check_fingerprint(config: AlignZegConfig, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse CLIP tensors whose SHA-256 differs from ``config.clip_fingerprint`` (when one is recorded)."""
    if not config.clip_fingerprint:
        return
    found = clip_fingerprint(state, CLIP_PREFIX)
    if found != config.clip_fingerprint:
        raise WeightsError(
            f"CLIP weights from {what} have fingerprint {found}, but this checkpoint's heads were trained "
            f"with CLIP weights of fingerprint {config.clip_fingerprint} (config.json clip_fingerprint, "
            f"clip_pretrained={config.clip_pretrained!r}). Pass the CLIP weights it was trained with."
        )


# Loading -------------------------------------------------------------------------------------------------
def _saved_dtype(state: Mapping[str, torch.Tensor]) -> torch.dtype:
    """The floating dtype a checkpoint was saved in (float32 when mixed or none)."""
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def _slim_clip_state(model: AlignZegModel, state: Mapping[str, torch.Tensor], override: Any,
                     cache_dir: str | None, local_files_only: bool) -> dict[str, torch.Tensor]:
    """Fetch a slim checkpoint's CLIP tensors (prefixed, in the checkpoint's dtype, shaped like ``model``'s
    CLIP) and check their fingerprint."""
    config = model.config
    recorded = override is None or override is True  # True: the source config.json records
    source = config.clip_pretrained if recorded else normalize_clip_pretrained(override)
    if not source:
        raise WeightsError("the checkpoint holds no CLIP weights (slim) and config.json names no clip_pretrained "
                           "source; pass clip_pretrained='<open_clip tag | hf-hub:org/name | path>'")
    located = locate_clip_weights(config, source, cache_dir, local_files_only)
    weights = fit_clip_state(read_clip_state(located, config), model.backbone.clip, located, config.clip_model)
    dtype = _saved_dtype(state)
    clip_state = {CLIP_PREFIX + k: (v.to(dtype) if v.is_floating_point() else v) for k, v in weights.items()}
    if not config.clip_fingerprint:
        logger.warning("slim checkpoint records no clip_fingerprint: cannot check the CLIP weights %s", source)
    _check_fingerprint(config, clip_state, repr(located.source))
    return clip_state


def load_model(name_or_path: str | os.PathLike, revision: str | None = None, cache_dir: str | None = None,
               local_files_only: bool = False, allow_pickle: bool = False,
               clip_pretrained: str | os.PathLike | None = None) -> AlignZegModel:
    """The model of a folder written by ``save_model`` or of a Hub repo (arguments: ``from_pretrained``'s).

    Raises:
        WeightsError: missing, damaged or non-finite weights, a bad config.json (naming file and key), a
            key/shape mismatch, or CLIP weights of another fingerprint.
        ValueError: ``clip_pretrained`` given for a full checkpoint.
    """
    config_path, weights_path = resolve_checkpoint(name_or_path, revision, cache_dir, local_files_only,
                                                   allow_pickle)
    config = AlignZegConfig.from_json(config_path)
    state = read_weights(weights_path)
    full = any(k.startswith(CLIP_PREFIX) for k in state)
    if full and clip_pretrained is not None:
        raise ValueError(f"{str(name_or_path)!r} is a full checkpoint with its own CLIP weights; "
                         "clip_pretrained= is only for slim checkpoints (saved with include_clip=False)")
    if full:
        _check_fingerprint(config, state, f"{WEIGHTS_NAME} of {str(name_or_path)!r}")
    model = AlignZegModel(config)
    if not full:
        state = {**state, **_slim_clip_state(model, state, clip_pretrained, cache_dir, local_files_only)}
    load_state_dict_strict(model, state)
    return model


# Saving --------------------------------------------------------------------------------------------------
def card_extra(extra: Mapping[str, Any], recipe: Any, metrics: Any) -> dict[str, Any]:
    """``config.extra`` with ``recipe`` and ``metrics`` recorded (validated: they go into JSON and YAML).

    Raises:
        TypeError: ``recipe`` is neither a name nor a mapping, or ``metrics`` is not a mapping.
        ValueError: a metric that is not a number, or a non-string metric name.
    """
    extra = dict(extra)
    if recipe is not None:
        if not isinstance(recipe, (str, Mapping)):
            raise TypeError(f"recipe must be a recipe name or a mapping of its settings, got {type(recipe).__name__}")
        extra["recipe"] = recipe if isinstance(recipe, str) else dict(recipe)
    if metrics is not None:
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must map metric names to numbers, got {type(metrics).__name__}")
        bad = {k: v for k, v in metrics.items()
               if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float))}
        if bad:
            raise ValueError(f"metrics must map names to numbers; offending entries: {bad}")
        extra["metrics"] = {k: float(v) for k, v in metrics.items()}
    return extra


def save_model(model: AlignZegModel, directory: str | os.PathLike, include_clip: bool = True,
               recipe: str | Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None) -> Path:
    """Write ``model`` as a checkpoint folder (arguments: ``save_pretrained``'s); returns the folder."""
    if not isinstance(include_clip, bool):
        raise TypeError(f"include_clip must be True or False, got {include_clip!r}")
    state = model.state_dict()
    config = model.config.replace(clip_fingerprint=clip_fingerprint(state, CLIP_PREFIX),
                                  extra=card_extra(model.config.extra, recipe, metrics))
    if not include_clip:
        if not config.clip_pretrained:
            raise ValueError("include_clip=False needs CLIP weights that can be fetched again, but this model's "
                             "config.clip_pretrained is None (random init); save it with include_clip=True")
        state = {k: v for k, v in state.items() if not k.startswith(CLIP_PREFIX)}
    return save_checkpoint(directory, config, state)


def save_checkpoint(directory: str | os.PathLike, config: AlignZegConfig, state: Mapping[str, torch.Tensor]) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``directory`` (created if needed).

    Every file gets the mode a new file gets under the process umask (0644 under the usual 022).
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    config.to_json(directory / CONFIG_NAME)
    # One metadata key only: safetensors keeps metadata in a hash map whose order varies between calls, and
    # a checkpoint's bytes should depend on its tensors alone (reproducible hashes on the Hub).
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    os.chmod(directory / WEIGHTS_NAME, file_mode())  # save_file creates its file 0600
    slim = not any(k.startswith(CLIP_PREFIX) for k in tensors)
    (directory / "README.md").write_text(model_card(config, slim=slim), encoding="utf-8")
    return directory


def refresh_model_card(directory: str | os.PathLike) -> Path:
    """Rewrite ``directory/README.md`` from the folder's ``config.json`` (after its settings changed, e.g. by
    calibration), slim or full as its ``model.safetensors`` holds CLIP tensors or not (only the key names are
    read)."""
    from safetensors import safe_open

    directory = Path(directory)
    config = AlignZegConfig.from_json(directory / CONFIG_NAME)
    with safe_open(str(directory / WEIGHTS_NAME), framework="pt") as weights:
        slim = not any(k.startswith(CLIP_PREFIX) for k in weights.keys())
    path = directory / "README.md"
    path.write_text(model_card(config, slim=slim), encoding="utf-8")
    return path


# The model card ------------------------------------------------------------------------------------------
def card_metadata(config: AlignZegConfig, slim: bool = False) -> dict:
    """The model card's YAML front matter: Hub fields, training classes, recipe and metrics when known.

    ``recipe`` and ``metrics`` are read from ``config.extra`` (``save_model`` records them there).
    """
    extra = json.loads(json.dumps(config.to_dict()["extra"], default=str))  # plain JSON types only, for YAML
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


def _calibration_line(config: AlignZegConfig) -> str:
    """How the post-processing settings were chosen (``config.calibration_protocol``), one card line."""
    protocol = config.calibration_protocol
    if protocol == "none":
        return ""
    what = {"inductive": "inductively, on seen classes held out of a calibration model's training (no label of "
                         "a class unseen here was read)",
            "transductive": "transductively, with labels of classes unseen in training",
            "fixed": "fixed in advance"}[protocol]
    names = f"; labels read: {', '.join(config.calibration_classes)}" if config.calibration_classes else ""
    weights = (f"; CLIP readout weights {config.readout_weight_seen} (seen) / {config.readout_weight_unseen} "
               f"(unseen)" if config.clip_readout else "")
    return f"- Post-processing settings chosen {what}{names}{weights}\n"


def model_card(config: AlignZegConfig, slim: bool = False) -> str:
    """The README.md written beside the weights (Hub model card with ``library_name: alignzeg``)."""
    from huggingface_hub import ModelCardData

    seen = ", ".join(config.seen_classes) if config.seen_classes else "none recorded (untrained or unknown)"
    front = "---\n" + ModelCardData(**card_metadata(config, slim)).to_yaml() + "\n---"
    extra = config.to_dict()["extra"]
    recipe = extra.get("recipe")
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
- Bias correction: threshold {config.pbc_threshold}{' (soft PBC)' if config.pbc_soft else ''}, seen-score offset {config.seen_score_offset}, class indicator trained: {'yes' if config.indicator_trained else 'no (PBC off by default)'}
{_calibration_line(config)}{recipe_line}{slim_line}{_metrics_lines(extra.get("metrics"))}"""
    return front + "\n" + body
