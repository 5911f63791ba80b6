"""Where the frozen CLIP weights come from: open_clip tags, ``hf-hub:`` repos and local files.

A preset names its CLIP architecture and the public weights it starts from (``openai`` for ``vitb16`` and
``vitl14``). Two steps, kept apart: ``locate_clip_weights`` (transport) turns a ``clip_pretrained`` value
into a local file and the config changes it implies; ``load_clip_into`` reads that file into a model's
CLIP, the ViT position embedding interpolated to the config's input grid, strictly.
``checkpoint.build_model(config, clip_pretrained=...)`` does both around building the model once.
``load_clip_weights`` gives the checked tensors without a model:

    weights = load_clip_weights(config, "openai")            # open_clip tag for config.clip_model
    weights = load_clip_weights(config, "hf-hub:org/name")   # open_clip_config.json + weights on the Hub
    weights = load_clip_weights(config, "clip.safetensors")  # a local open_clip state dict
    weights = load_clip_weights(config, "alignzeg:assets/world/clip.safetensors")  # a file shipped in the package

Downloads go through huggingface_hub (its cache, its offline mode, its endpoint setting) or, for the few
open_clip tags published only by URL, through open_clip's own downloader. Nothing here writes HTTP.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import torch
from .config import AlignZegConfig
from .errors import WeightsError
from .hub import HubUnreachable, hub_download, not_cached_message
from .modeling.clip_backbone import build_open_clip, interpolate_pos_embed
from .state_dicts import check_finite, state_dict_problems

logger = logging.getLogger(__name__)

__all__ = [
    "HF_HUB_PREFIX", "PACKAGE_PREFIX", "ClipSource", "ClipWeights", "normalize_clip_pretrained", "locate_clip_weights",
    "read_clip_state", "fit_clip_state", "load_clip_into", "load_clip_weights", "clip_hub_repo",
]

HF_HUB_PREFIX = "hf-hub:"
PACKAGE_PREFIX = "alignzeg:"
"""``alignzeg:<path>`` names a file inside the installed package (the bundled world model's mini-CLIP)."""
HUB_CONFIG_NAME = "open_clip_config.json"
HUB_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class ClipSource:
    """Where CLIP weights are on this machine (after any download), and what they imply for the config.

    Attributes:
        source: the value to record in ``config.clip_pretrained`` (a tag, ``hf-hub:org/name``,
            ``alignzeg:<path>`` or an absolute file path).
        path: the local weights file.
        config_changes: config fields the weights imply (``clip_cfg`` with the activation they were
            trained with, ``mean``/``std`` of their preprocessing); empty when nothing is known.
    """

    source: str
    path: Path
    config_changes: dict[str, Any] = field(default_factory=dict)

    def apply_to(self, config: AlignZegConfig) -> AlignZegConfig:
        """``config`` with ``clip_pretrained`` set to ``source`` and ``config_changes`` applied."""
        return config.replace(clip_pretrained=self.source, **self.config_changes)


@dataclass(frozen=True)
class ClipWeights(ClipSource):
    """A ``ClipSource`` with its tensors read (``load_clip_weights``).

    Attributes:
        state: open_clip CLIP state dict (no prefix), the visual position embedding already at the
            config's ``input_size / patch_size`` grid, checked against the architecture's shapes.
    """

    state: dict[str, torch.Tensor] = field(default_factory=dict)


# Parsing the user's value --------------------------------------------------------------------------------
def normalize_clip_pretrained(value: Any, preset_tag: str | None = None, preset_name: str | None = None
                              ) -> str | None:
    """Turn a ``clip_pretrained`` argument into a source string, or ``None`` for random initialisation.

    Args:
        value: ``False``/``None`` (random init), ``True`` (the preset's own tag), an open_clip tag,
            ``"hf-hub:org/name"`` or a path to a local weights file.
        preset_tag: the preset's CLIP tag (``PresetInfo.clip_tag``), used for ``True``.
        preset_name: the preset's name, for error messages.

    Raises:
        TypeError: ``value`` is not a bool, string or path.
        ValueError: ``True`` for a preset without a tag, or an empty string.
    """
    if value is None or value is False:
        return None
    if value is True:
        if preset_tag is None:
            raise ValueError(
                f"preset {preset_name!r} names no public CLIP weights, so clip_pretrained=True has nothing to "
                "load; pass an 'hf-hub:org/name' repo or a path to an open_clip weights file instead"
            )
        return preset_tag
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError(
            "clip_pretrained must be False, True, an open_clip tag, 'hf-hub:org/name' or a file path, "
            f"got {type(value).__name__} {value!r}"
        )
    if not value.strip():
        raise ValueError("clip_pretrained must not be an empty string")
    return value


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith(_FILE_SUFFIXES)


# Finding the weights file --------------------------------------------------------------------------------
def _hub_file(repo_id: str, filenames: tuple[str, ...], cache_dir: str | None, local_files_only: bool,
              source: str) -> Path:
    """The first of ``filenames`` that ``repo_id`` holds, from the Hub or huggingface_hub's cache."""
    from huggingface_hub.errors import (
        EntryNotFoundError, HFValidationError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
    )

    offline_miss: Exception | None = None
    for filename in filenames:
        try:
            return Path(hub_download(repo_id, filename, cache_dir=cache_dir, local_files_only=local_files_only))
        except (LocalEntryNotFoundError, HubUnreachable) as err:  # not cached, no network: another may be cached
            offline_miss = offline_miss or err
        except EntryNotFoundError:
            continue
        except HFValidationError as err:
            raise ValueError(f"{source!r}: {repo_id!r} is not a valid Hub repo id ('org/name')") from err
        except RepositoryNotFoundError as err:
            raise WeightsError(f"{source!r}: no repository {repo_id!r} on the Hub (or it is private: "
                               "log in with `hf auth login`)") from err
        except (HfHubHTTPError, OSError) as err:
            raise WeightsError(f"{source!r}: downloading {filename} of {repo_id!r} failed: {err}") from err
    if offline_miss is not None:
        raise WeightsError(not_cached_message(
            f"CLIP weights {source!r} ({filenames[0]} of Hub repo {repo_id!r})", repo_id, offline_miss,
            local_files_only,
            f"Download them once on a machine with network access: `hf download {repo_id} {filenames[0]}` "
            "(then copy the cache folder, see HF_HUB_CACHE, if this machine stays offline), or pass "
            "clip_pretrained='path/to/open_clip_model.safetensors' with a file you already have.")) from offline_miss
    raise WeightsError(f"{source!r}: repository {repo_id!r} has none of the CLIP weight files {list(filenames)}")


def _tag_file(arch: str, tag: str, cache_dir: str | None, local_files_only: bool) -> tuple[Path, dict]:
    import open_clip

    if arch not in open_clip.list_models():
        raise ValueError(
            f"clip_pretrained={tag!r} looks like an open_clip tag, but {arch!r} is not an open_clip "
            "architecture and has no tags; pass an 'hf-hub:org/name' repo or a local weights file"
        )
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ValueError(f"unknown open_clip pretrained tag {tag!r} for {arch}; valid tags: {', '.join(tags)}"
                         " (or pass 'hf-hub:org/name' or a local file path)")
    hub = cfg.get("hf_hub", "")
    if hub:
        if hub.endswith("/"):
            repo_id, filenames = hub.rstrip("/"), HUB_WEIGHT_NAMES
        else:
            repo_id, filename = os.path.split(hub)
            filenames = _with_safetensors_first(filename)
        return _hub_file(repo_id, filenames, cache_dir, local_files_only, tag), cfg
    if local_files_only:
        raise WeightsError(f"open_clip tag {tag!r} of {arch} is only published by URL ({cfg.get('url')}), "
                           "which local_files_only forbids; download it and pass the file path instead")
    try:
        return Path(open_clip.download_pretrained(cfg, cache_dir=cache_dir)), cfg
    except Exception as err:  # noqa: BLE001 - urllib raises many types
        raise WeightsError(f"downloading open_clip tag {tag!r} of {arch} from {cfg.get('url')} failed: {err}. "
                           "Download the file yourself and pass clip_pretrained='path/to/file'.") from err


def _with_safetensors_first(filename: str) -> tuple[str, ...]:
    if filename == "open_clip_pytorch_model.bin":
        return HUB_WEIGHT_NAMES
    stem, suffix = os.path.splitext(filename)
    return (filename,) if suffix == ".safetensors" else (stem + ".safetensors", filename)


def _hub_repo_files(repo_id: str, cache_dir: str | None, local_files_only: bool) -> tuple[Path, dict]:
    source = HF_HUB_PREFIX + repo_id
    config_path = _hub_file(repo_id, (HUB_CONFIG_NAME,), cache_dir, local_files_only, source)
    try:
        hub_cfg = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightsError(f"{source!r}: {HUB_CONFIG_NAME} is not valid JSON: {err}") from err
    if not isinstance(hub_cfg, dict) or not isinstance(hub_cfg.get("model_cfg"), dict):
        raise WeightsError(f"{source!r}: {HUB_CONFIG_NAME} has no 'model_cfg' object; is it an open_clip repo?")
    return _hub_file(repo_id, HUB_WEIGHT_NAMES, cache_dir, local_files_only, source), hub_cfg


# Checking and converting ---------------------------------------------------------------------------------
_ARCH_FIELDS = {
    "vision_cfg": ("layers", "width", "patch_size", "head_width"),
    "text_cfg": ("layers", "width", "heads", "context_length", "vocab_size"),
}


def _arch_differences(model_cfg: Mapping[str, Any], clip_cfg: Mapping[str, Any]) -> list[str]:
    """Architecture fields where a hub ``model_cfg`` disagrees with ``clip_cfg`` (image size excluded)."""
    diffs = []
    if model_cfg.get("embed_dim") != clip_cfg.get("embed_dim"):
        diffs.append(f"embed_dim {model_cfg.get('embed_dim')} != {clip_cfg.get('embed_dim')}")
    for tower, names in _ARCH_FIELDS.items():
        theirs, ours = model_cfg.get(tower, {}), clip_cfg.get(tower, {})
        for name in names:
            if name in theirs or name in ours:
                if theirs.get(name) != ours.get(name):
                    diffs.append(f"{tower}.{name} {theirs.get(name)} != {ours.get(name)}")
    return diffs


def _config_changes(config: AlignZegConfig, quick_gelu: bool | None, mean: Any, std: Any) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if quick_gelu is not None and bool(config.clip_cfg.get("quick_gelu", False)) != bool(quick_gelu):
        logger.info("CLIP weights were trained with quick_gelu=%s; setting it in clip_cfg", quick_gelu)
        changes["clip_cfg"] = dict(config.clip_cfg, quick_gelu=bool(quick_gelu))
    if mean is not None and std is not None:
        changes["mean"], changes["std"] = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    return changes


def _read_state(path: Path, source: str) -> dict[str, torch.Tensor]:
    from open_clip.factory import load_state_dict as open_clip_state_dict

    try:
        state = open_clip_state_dict(str(path), device="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - safetensors and torch.load raise many types
        raise WeightsError(f"cannot read CLIP weights {source!r} from {str(path)!r}: {err}. A pickle must "
                           "hold a plain state dict (it is read with weights_only=True); safetensors is preferred."
                           ) from err
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"CLIP weights {source!r} ({str(path)!r}) are not a flat name -> tensor state dict")
    return check_finite(dict(state), f"CLIP weights {source!r} ({str(path)!r})")


def read_clip_state(located: ClipSource, config: AlignZegConfig) -> dict[str, torch.Tensor]:
    """The CLIP tensors of ``located`` (float, CPU, finite), the visual position embedding interpolated to
    ``config``'s ``input_size / patch_size`` grid.

    Raises:
        WeightsError: an unreadable file, NaN/inf values, or a position embedding that cannot be resized.
    """
    state = _read_state(located.path, located.source)
    key = "visual.positional_embedding"
    if key in state:
        grid = config.input_size // config.patch_size
        try:
            state[key] = interpolate_pos_embed(state[key], (grid, grid))
        except ValueError as err:
            raise WeightsError(f"CLIP weights {located.source!r}: {err}") from err
    return state


def fit_clip_state(state: dict[str, torch.Tensor], clip: torch.nn.Module, located: ClipSource,
                   arch: str) -> dict[str, torch.Tensor]:
    """``state`` with ``logit_scale`` shaped like ``clip``'s (open_clip versions store it 0-d or (1,)), after
    checking that every key and shape fits ``clip`` (an ``open_clip.CLIP``; reads only its state dict).

    Raises:
        WeightsError: weights of another architecture than ``arch``, naming what differs.
    """
    if "logit_scale" in state and state["logit_scale"].dim() != clip.logit_scale.dim():
        state["logit_scale"] = state["logit_scale"].reshape(clip.logit_scale.shape)
    problems = state_dict_problems(clip.state_dict(), state)
    if problems:
        raise WeightsError(f"CLIP weights {located.source!r} do not fit the {arch} architecture of this "
                           "config: " + "; ".join(problems))
    return state


def load_clip_into(clip: torch.nn.Module, located: ClipSource, config: AlignZegConfig) -> None:
    """Read the weights of ``located`` and load them into ``clip`` (an ``open_clip.CLIP`` of ``config``), strictly.

    Raises:
        WeightsError: as ``read_clip_state``, or weights of another architecture (naming what differs).
    """
    state = fit_clip_state(read_clip_state(located, config), clip, located, config.clip_model)
    clip.load_state_dict(state, strict=True)


def load_clip_weights(config: AlignZegConfig, source: str, cache_dir: str | None = None,
                      local_files_only: bool = False) -> ClipWeights:
    """Fetch and check the CLIP weights named by ``source`` for ``config``'s architecture, without a model.

    Building a model with its CLIP weights is ``checkpoint.build_model(config, clip_pretrained=source)``,
    which loads them straight into the model's CLIP; this function gives the tensors alone (checked
    against the architecture's shapes on the meta device, which allocates nothing).

    Args:
        config: the model config; ``clip_model`` names the open_clip architecture for tags and
            ``clip_cfg`` the shapes the weights must have.
        source: an open_clip tag (``"openai"``), ``"hf-hub:org/name"`` or a local file path
            (``.safetensors``, or a plain state-dict pickle read with ``weights_only=True``).
        cache_dir: huggingface_hub cache folder (default: its own).
        local_files_only: never touch the network (``HF_HUB_OFFLINE=1`` does the same).

    Returns:
        ClipWeights with float tensors on the CPU.

    Raises:
        ValueError: an unknown tag (the message lists the valid ones) or a missing local file.
        WeightsError: not cached while offline (the message says what to download), unreadable files,
            or weights of another architecture.
    """
    located = locate_clip_weights(config, source, cache_dir, local_files_only)
    state = read_clip_state(located, config)
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        clip = build_open_clip(config)
    fit_clip_state(state, clip, located, config.clip_model)
    return ClipWeights(located.source, located.path, located.config_changes, state)


def locate_clip_weights(config: AlignZegConfig, source: str, cache_dir: str | None = None,
                        local_files_only: bool = False) -> ClipSource:
    """The local weights file named by ``source`` (downloaded into huggingface_hub's cache if needed),
    the value to record for it, and the config changes it implies. Reads no tensor.

    Raises: as ``load_clip_weights`` (all but the architecture check).
    """
    if source.startswith(HF_HUB_PREFIX):
        repo_id = source[len(HF_HUB_PREFIX):].strip("/")
        path, hub_cfg = _hub_repo_files(repo_id, cache_dir, local_files_only)
        diffs = _arch_differences(hub_cfg["model_cfg"], config.clip_cfg)
        if diffs:
            raise WeightsError(f"{source!r} holds another CLIP architecture than {config.clip_model}: "
                               + "; ".join(diffs))
        pre = hub_cfg.get("preprocess_cfg", {})
        return ClipSource(source, path, _config_changes(config, hub_cfg["model_cfg"].get("quick_gelu", False),
                                                        pre.get("mean"), pre.get("std")))
    if source.startswith(PACKAGE_PREFIX):
        path = Path(str(resources.files("alignzeg") / source[len(PACKAGE_PREFIX):]))
        if not path.is_file():
            raise ValueError(f"clip_pretrained {source!r}: the package has no file {str(path)!r}")
        return ClipSource(source, path)
    if Path(source).is_file():
        return ClipSource(os.path.abspath(source), Path(source))
    if _looks_like_path(source):
        raise ValueError(f"clip_pretrained file {source!r} does not exist (expected an open_clip weights file, "
                         "an open_clip tag or 'hf-hub:org/name')")
    path, cfg = _tag_file(config.clip_model, source, cache_dir, local_files_only)
    return ClipSource(source, path, _config_changes(config, cfg.get("quick_gelu", False), cfg.get("mean"),
                                                    cfg.get("std")))


# Model cards ---------------------------------------------------------------------------------------------
def clip_hub_repo(config: AlignZegConfig) -> str | None:
    """The Hub repo the config's CLIP weights come from (for a model card's ``base_model``), if known."""
    import open_clip

    source = config.clip_pretrained
    if not source:
        return None
    if source.startswith(HF_HUB_PREFIX):
        return source[len(HF_HUB_PREFIX):].strip("/")
    if _looks_like_path(source) or config.clip_model not in open_clip.list_models():
        return None
    hub = open_clip.get_pretrained_cfg(config.clip_model, source).get("hf_hub", "")
    if not hub:
        return None
    return hub.rstrip("/") if hub.endswith("/") else os.path.split(hub)[0]
