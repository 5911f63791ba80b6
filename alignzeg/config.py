"""The model configuration that travels with the weights (``config.json``).

One frozen dataclass holds everything needed to rebuild the architecture and run inference the way the
checkpoint was trained: CLIP variant, input size, normalisation, prompt templates, decoder sizes,
the training (seen) class names and the bias-correction settings. Training-only settings live in
``alignzeg.train``, never here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import WeightsError

__all__ = ["AlignZegConfig", "ENSEMBLE_VOID", "CALIBRATION_PROTOCOLS", "FrozenDict", "FORMAT_VERSION", "DEFAULT_TEMPLATES", "check_format_version",
           "check_field_types", "fields_to_dict"]

FORMAT_VERSION = 5
"""Version of the ``config.json`` layout. A file with another version is refused with a clear error."""

FORMAT_CHANGES = {
    1: "format 2 replaced the multiplicative PBC (pbc_factor, removed) by a masked softmax over "
       "logits (seen_score_offset), and added deep visual prompts (clip_prompt_tokens, clip_prompt_depth), "
       "the learnable encoder fused into the mask features (side_encoder on, side_fusion_stride), "
       "CLIP-grounded proposal classification (clip_grounding), soft background prototypes (bg_temperature) "
       "and indicator_trained; the weights of a format-1 checkpoint do not fit this architecture. "
       "No migration exists (none was published): train the model again with this alignzeg",
}
"""Why each older ``format_version`` is refused: what changed since (there is no migration)."""

_FORMAT_5_FIELDS: dict[str, Any] = {"refinement_gates": False}
_FORMAT_4_FIELDS: dict[str, Any] = {"ensemble_void": "joint", "calibration_protocol": "none",
                                    "calibration_classes": (), **_FORMAT_5_FIELDS}
FORMAT_MIGRATIONS: dict[int, dict[str, Any]] = {
    2: {"clip_readout": False, "clip_readout_layers": None, "readout_weight_seen": 0.0,
        "readout_weight_unseen": 0.0, "indicator_inputs": "embedding", "pbc_soft": False, **_FORMAT_4_FIELDS},
    3: dict(_FORMAT_4_FIELDS),
    4: dict(_FORMAT_5_FIELDS),
}
"""Older formats that load: the fields added since, with the values that keep such a checkpoint's model
exactly as it was (format 3 added the CLIP region readout, the vocabulary-aware class indicator and soft
PBC; a format-2 checkpoint is a format-3 one with all three off. Format 4 added the ensemble's background
handling, kept as it was (``"joint"``), and the calibration's provenance, which older files did not record
(``"none"``). Format 5 added MRPE's zero-initialised refinement gates, off in older files, whose weights
have none)."""

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a cropped photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "there is a {} in the scene.",
)
"""Prompt ensemble used to turn a class name into a text embedding (averaged, then L2-normalised)."""

CLIP_CFG_KEYS = frozenset({"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"})
"""Keys of ``clip_cfg`` that the backbone passes on to ``open_clip.CLIP`` (anything else would be ignored)."""


def unknown_fields(cls: type, data: Any, what: str) -> list[str]:
    """Sorted keys of ``data`` that are not fields of dataclass ``cls``.

    Raises:
        TypeError: ``data`` is not a dict (``what`` names the config in the message).
    """
    if not isinstance(data, dict):
        raise TypeError(f"{what} must be a JSON object, got {type(data).__name__}")
    return sorted(set(data) - {f.name for f in dataclasses.fields(cls)})


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented UTF-8 JSON with a trailing newline."""
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (0644 under the usual 022): for files
    that other writers create 0600 (``safetensors.save_file``, ``tempfile.mkstemp``)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def check_format_version(version: Any, what: str = "config") -> None:
    """Refuse a ``format_version`` other than ``FORMAT_VERSION`` (the one definition of the check), saying why.

    Raises:
        TypeError: not an integer. ValueError: newer (upgrade alignzeg), older (what changed since:
            ``FORMAT_CHANGES``; there is no migration) or otherwise unsupported.
    """
    if not isinstance(version, int) or isinstance(version, bool):
        raise TypeError(f"{what} format_version must be an integer, got {type(version).__name__} {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{what} format_version {version} is newer than this alignzeg supports ({FORMAT_VERSION}); "
                         "upgrade alignzeg to load this checkpoint")
    if version in FORMAT_CHANGES:
        raise ValueError(f"{what} format_version {version} is no longer supported (this alignzeg reads "
                         f"{FORMAT_VERSION}): {FORMAT_CHANGES[version]}")
    if version != FORMAT_VERSION:
        raise ValueError(f"{what} format_version {version} is not supported by this alignzeg "
                         f"(it reads format_version {FORMAT_VERSION})")


def side_fusion_upsample(patch_size: int, fusion_stride: int) -> int:
    """The ``mask_upsample`` that puts the masks at ``fusion_stride`` for a ViT of ``patch_size``.

    ``patch_size / fusion_stride`` rounded to a power of two (at least 1), since the learnable encoder
    halves the resolution at each stage: 16 -> 8 gives 2, 16 -> 4 gives 4, 14 -> 8 gives 2 (stride 7),
    8 -> 8 gives 1.
    """
    ratio = max(1.0, patch_size / fusion_stride)
    return 2 ** round(math.log2(ratio))


# Immutable nested values -----------------------------------------------------------------------------
class FrozenDict(Mapping[str, Any]):
    """A read-only, hashable mapping; nested dicts and lists inside it are frozen too (dicts -> FrozenDict,
    lists -> tuples). It compares equal to a dict with the same items; ``to_dict`` gives plain dicts/lists back.
    """

    __slots__ = ("_data", "_hash")
    _data: dict[str, Any]
    _hash: int | None

    def __init__(self, data: Mapping[str, Any] | tuple[()] = ()) -> None:
        object.__setattr__(self, "_data", {k: _freeze(v) for k, v in dict(data).items()})
        object.__setattr__(self, "_hash", None)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(frozenset(self._data.items())))
        return int(self._hash)  # type: ignore[arg-type]  # set just above

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"FrozenDict is read-only: cannot set {name!r}")

    def __repr__(self) -> str:
        return f"FrozenDict({self._data!r})"

    def __reduce__(self) -> tuple:
        return (FrozenDict, (self.to_dict(),))

    def __deepcopy__(self, memo: dict) -> "FrozenDict":
        return self  # immutable

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts and lists (for JSON and for APIs that want a ``dict``)."""
        return {k: _thaw(v) for k, v in self._data.items()}


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value if isinstance(value, FrozenDict) else FrozenDict(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, FrozenDict):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


# Field type checks (from the annotations, so a new field is checked as soon as it is declared) ----------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


_SCALARS = {"int": (_is_int, "an integer"), "float": (_is_real, "a finite number"),
            "bool": (lambda v: isinstance(v, bool), "true or false"), "str": (lambda v: isinstance(v, str), "a string")}


def _check_field(name: str, annotation: str, value: Any, what: str = "config") -> Any:
    """``value`` checked against ``annotation`` (as written in the dataclass); sequences become tuples (of
    floats for ``tuple[float, ...]``), mappings ``FrozenDict``s.

    Raises:
        TypeError: naming the field (``what`` names the config), the expected type and the value.
    """
    optional = annotation.endswith(" | None")
    kind = annotation[: -len(" | None")] if optional else annotation
    if optional and value is None:
        return None
    if kind.startswith("tuple["):
        item = kind[len("tuple["):].split(",")[0].rstrip("]").strip()
        check, expected = _SCALARS[item]
        if not isinstance(value, (list, tuple)) or not all(check(v) for v in value):
            raise TypeError(f"{what} {name} must be a list of {expected.split(' ', 1)[1]}s, got "
                            f"{type(value).__name__} {value!r}")
        return tuple(float(v) for v in value) if item == "float" else tuple(value)
    if kind.startswith(("dict[", "Mapping[")):
        if not isinstance(value, Mapping):
            raise TypeError(f"{what} {name} must be a JSON object, got {type(value).__name__} {value!r}")
        return FrozenDict(value)
    check, expected = _SCALARS[kind]
    if not check(value):
        raise TypeError(f"{what} {name} must be {expected}{' or null' if optional else ''}, "
                        f"got {type(value).__name__} {value!r}")
    return value


def check_field_types(instance: Any, what: str = "config") -> None:
    """Check every field of the frozen dataclass ``instance`` against its annotation, in place.

    The one type check of the package's configs (``AlignZegConfig``, ``alignzeg.train.TrainConfig``), read
    from the annotations so that a new field is checked as soon as it is declared. Annotations understood:
    ``int``, ``float`` (any finite real), ``bool``, ``str``, ``tuple[T, ...]`` of those, ``dict[...]`` /
    ``Mapping[...]``, each optionally ``| None``. Lists become tuples (of floats for ``tuple[float, ...]``)
    and mappings read-only ``FrozenDict``s, so configs compare and hash the same however they were made.
    Ranges and choices are the config's own ``_validate``.

    Raises:
        TypeError: ``"{what} {field} must be {expected}, got {type} {value!r}"``.
    """
    for f in dataclasses.fields(instance):
        object.__setattr__(instance, f.name, _check_field(f.name, str(f.type), getattr(instance, f.name), what))


def fields_to_dict(instance: Any) -> dict[str, Any]:
    """The fields of a dataclass checked by ``check_field_types`` as plain JSON types (``FrozenDict``s to
    dicts, tuples to lists)."""
    return {f.name: _thaw(getattr(instance, f.name)) for f in dataclasses.fields(instance)}


def _check_clip_cfg(clip_cfg: Mapping[str, Any]) -> None:
    """Refuse keys open_clip would not accept (or that alignzeg would silently drop), and wrong shapes."""
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in clip_cfg:
            raise ValueError(f"clip_cfg lacks {key!r}; it holds {sorted(clip_cfg)}")
    unknown = sorted(set(clip_cfg) - CLIP_CFG_KEYS)
    if unknown:
        raise ValueError(f"clip_cfg has unknown keys {unknown}; allowed: {sorted(CLIP_CFG_KEYS)}")
    if not _is_int(clip_cfg["embed_dim"]) or clip_cfg["embed_dim"] < 1:
        raise TypeError(f"clip_cfg embed_dim must be a positive integer, got {clip_cfg['embed_dim']!r}")
    if not isinstance(clip_cfg.get("quick_gelu", False), bool):
        raise TypeError(f"clip_cfg quick_gelu must be true or false, got {clip_cfg['quick_gelu']!r}")
    towers = _open_clip_tower_fields()
    for tower in ("vision_cfg", "text_cfg"):
        sub = clip_cfg[tower]
        if not isinstance(sub, Mapping):
            raise TypeError(f"clip_cfg {tower} must be a JSON object, got {type(sub).__name__} {sub!r}")
        unknown = sorted(set(sub) - towers[tower]) if towers is not None else []
        if unknown:
            raise ValueError(f"clip_cfg {tower} has keys open_clip does not accept: {unknown}")


def _open_clip_tower_fields() -> dict[str, frozenset[str]] | None:
    """Field names of open_clip's ``CLIPVisionCfg`` and ``CLIPTextCfg`` (open_clip imported here, lazily).

    ``None`` where open_clip cannot be imported (the torch-free ONNX runtime reads configs but builds no
    CLIP); wherever a model is built, open_clip is there and the nested keys are checked.
    """
    try:
        from open_clip.model import CLIPTextCfg, CLIPVisionCfg
    except ImportError:
        return None
    return {"vision_cfg": frozenset(f.name for f in dataclasses.fields(CLIPVisionCfg)),
            "text_cfg": frozenset(f.name for f in dataclasses.fields(CLIPTextCfg))}


ENSEMBLE_VOID = ("joint", "fcclip")
"""Background handling of the CLIP readout's ensemble (``AlignZegConfig.ensemble_void``)."""
CALIBRATION_PROTOCOLS = ("none", "inductive", "transductive", "fixed")
"""How a model's post-processing settings were chosen (``AlignZegConfig.calibration_protocol``)."""


@dataclass(frozen=True)
class AlignZegConfig:
    """Architecture and inference settings of one AlignZeg model.

    Attributes:
        clip_model: open_clip architecture name (``"ViT-B-16"``) or a local name for ``clip_cfg``.
        clip_cfg: keyword arguments of ``open_clip.CLIP`` (``embed_dim``, ``vision_cfg``, ``text_cfg``,
            ``quick_gelu``; the tower keys are checked against open_clip's ``CLIPVisionCfg``/``CLIPTextCfg``),
            held as a read-only ``FrozenDict``. ``vision_cfg["image_size"]`` equals ``input_size``: the position embeddings
            are stored already interpolated to the segmentation resolution.
        clip_pretrained: where the CLIP weights came from (open_clip tag, ``hf-hub:`` id, file name),
            or ``None`` for random initialisation. Provenance only, unless the checkpoint is slim.
        clip_fingerprint: SHA-256 over the CLIP tensors the heads were trained with, set by
            ``save_pretrained``; a slim checkpoint refuses CLIP weights with another fingerprint.
        input_size: side of the square crop the model sees, in pixels.
        window_stride: stride of the sliding window over images larger than ``input_size``, in pixels.
        max_long_side: the long side of the resized image is capped here (thin images are padded).
        mean / std: RGB normalisation applied inside the model to images in [0, 1].
        templates: prompt templates, each with one ``{}`` for the class name.
        decoder_dim: width of the MRPE decoder.
        num_queries: N, the number of mask proposals per image.
        num_decoder_layers: L, the number of MRPE layers (each gives masks for deep supervision).
        num_heads: attention heads in the decoder.
        mutual_refinement: MRPE's reverse direction (features attend to queries). ``False`` gives the
            one-way decoder of ZegCLIP-style baselines.
        side_encoder: the learnable conv encoder of MRPE: its stride-``patch`` features are added to the
            CLIP tokens and its finer stages reach the mask features (``side_fusion_stride``).
        mask_upsample: the per-pixel features are upsampled by this factor before the mask dot product,
            so masks have stride ``patch_size / mask_upsample``. With ``side_encoder`` it must be
            ``side_fusion_upsample(patch_size, side_fusion_stride)`` (masks at the fusion stride).
        num_bg_prototypes: M, the learnable background prototypes of GEPC (1 gives the baseline).
        logit_scale: initial inverse temperature of the cosine classifier (learnable).
        indicator_hidden: hidden width of the class-indicator MLP.
        seen_classes: the class names the checkpoint was trained on; every other vocabulary name is unseen.
        pbc_threshold: proposals whose unseen score is above this are flagged by the class indicator.
        clip_prompt_tokens: deep visual prompt tokens per CLIP ViT layer (VPT-deep); 0 = none.
        clip_prompt_depth: how many leading ViT layers get prompts; ``None`` = every layer.
        side_fusion_stride: finest stride (8 or 4 pixels) at which the learnable encoder's features are
            merged into the mask features (needs ``side_encoder``).
        clip_grounding: combine each proposal's query embedding with CLIP's projected patch features
            pooled under its mask (a learned per-proposal gate) before the cosine classifier.
        bg_temperature: background logit = ``t * logsumexp(cos / t)`` over the M background prototypes
            (a soft maximum that sends gradient to every prototype); 0 = hard max.
        seen_score_offset: subtracted from the seen-class logits of every proposal by the bias correction
            (ZegCLIP's calibration); 0 = none. It needs no class indicator: on a model whose indicator was
            not trained the bias correction is this offset alone.
        indicator_trained: the class indicator was trained (set by the Trainer). PBC's flags need it: on a
            model without, no proposal is flagged (the bias correction is the seen-score offset alone).
        clip_readout: read each proposal out of the frozen CLIP with a region token whose attention is
            masked to the proposal (SAN-style; ``modeling.clip_readout``) and combine its class scores with the
            decoder's (FC-CLIP's geometric ensemble). Adds no trained weight.
        clip_readout_layers: how many of the last ViT blocks carry the region tokens; ``None`` = every block.
        readout_weight_seen / readout_weight_unseen: the ensemble's weight of the CLIP readout for seen /
            unseen classes, in [0, 1] (0 = the decoder alone, 1 = the readout alone); chosen on validation data.
        indicator_inputs: what the class indicator reads: ``"embedding"`` (an MLP on the proposal embedding)
            or ``"profile"`` (a logistic model on the proposal's similarity profile to the vocabulary's seen
            and non-seen names, from the decoder and the CLIP readout: ``class_indicator.profile_features``).
        pbc_soft: PBC mixes the plain and the seen-masked softmax with the indicator's probability as weight
            instead of flagging proposals above ``pbc_threshold``.
        ensemble_void: how the readout's ensemble treats the background (void) column: ``"joint"`` (the
            decoder's softmax over classes + background, the background column kept as its log-probability) or
            ``"fcclip"`` (FC-CLIP's: the decoder's softmax over the classes alone enters the ensemble, the
            ensemble is renormalised over the classes and scaled by one minus the decoder's background
            probability, which is kept as it is).
        calibration_protocol: how the post-processing settings were chosen: ``"none"`` (not calibrated),
            ``"inductive"`` (on validation classes: seen classes held out of a calibration model's training;
            no label of a class outside ``calibration_classes`` was read), ``"transductive"`` (on labels that
            include classes unseen in training) or ``"fixed"`` (set in advance).
        calibration_classes: the class names whose labels chose the settings (empty for ``"none"`` and
            ``"fixed"``).
        refinement_gates: MRPE's additions to the CLIP tokens (the learnable encoder's features, the mutual
            refinement's updates) pass through per-channel gates that start at zero, so training starts from
            the one-way decoder on CLIP's features (``modeling.mrpe.ProposalExtractor``).
        format_version: layout version of this file.
        extra: free-form provenance (``recipe``, ``metrics``), held as a read-only ``FrozenDict``.

    The config is immutable all the way down (nested mappings are ``FrozenDict``, sequences tuples), so
    configs hash and compare like values; ``replace`` makes a changed copy and ``to_dict`` gives plain
    dicts and lists.
    """

    clip_model: str
    clip_cfg: Mapping[str, Any]
    clip_pretrained: str | None = None
    clip_fingerprint: str | None = None
    input_size: int = 512
    window_stride: int = 341
    max_long_side: int = 2048
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    decoder_dim: int = 256
    num_queries: int = 100
    num_decoder_layers: int = 3
    num_heads: int = 8
    mutual_refinement: bool = True
    side_encoder: bool = True
    mask_upsample: int = 2
    num_bg_prototypes: int = 10
    logit_scale: float = 1 / 0.07
    indicator_hidden: int = 256
    seen_classes: tuple[str, ...] = ()
    pbc_threshold: float = 0.5
    clip_prompt_tokens: int = 10
    clip_prompt_depth: int | None = None
    side_fusion_stride: int = 8
    clip_grounding: bool = True
    bg_temperature: float = 0.1
    seen_score_offset: float = 0.0
    indicator_trained: bool = False
    clip_readout: bool = False
    clip_readout_layers: int | None = None
    readout_weight_seen: float = 0.4
    readout_weight_unseen: float = 0.8
    indicator_inputs: str = "embedding"
    pbc_soft: bool = False
    ensemble_void: str = "joint"
    calibration_protocol: str = "none"
    calibration_classes: tuple[str, ...] = ()
    refinement_gates: bool = False
    format_version: int = FORMAT_VERSION
    extra: Mapping[str, Any] = field(default_factory=FrozenDict)

    def __post_init__(self) -> None:
        # Types are checked first; lists become tuples and mappings FrozenDicts, so configs compare and
        # hash the same however they were made, and nothing inside can be edited in place.
        check_field_types(self)
        self._validate()

    def _validate(self) -> None:
        check_format_version(self.format_version)
        for name in ("input_size", "window_stride", "decoder_dim", "num_queries", "num_decoder_layers",
                     "num_heads", "mask_upsample", "num_bg_prototypes", "indicator_hidden", "max_long_side"):
            value = getattr(self, name)  # an int: check_field_types ran first
            if value < 1:
                raise ValueError(f"config {name} must be a positive integer, got {value!r}")
        if self.window_stride > self.input_size:
            raise ValueError(
                f"config window_stride ({self.window_stride}) must not exceed input_size ({self.input_size})"
            )
        if self.decoder_dim % self.num_heads:
            raise ValueError(f"decoder_dim {self.decoder_dim} is not divisible by num_heads {self.num_heads}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std must be 3 numbers with std > 0, got mean={self.mean}, std={self.std}")
        if not self.templates or any(t.count("{}") != 1 for t in self.templates):
            raise ValueError(f"each prompt template needs exactly one '{{}}', got {self.templates!r}")
        if self.logit_scale <= 0:
            raise ValueError(f"config logit_scale must be positive, got {self.logit_scale!r}")
        if not self.clip_model:
            raise ValueError("config clip_model must not be empty")
        if not 0.0 <= self.pbc_threshold <= 1.0:
            raise ValueError(f"pbc_threshold must be in [0, 1], got {self.pbc_threshold}")
        self._validate_prompt_encoder_background_ranges()
        _check_clip_cfg(self.clip_cfg)
        image_size = self.clip_cfg["vision_cfg"].get("image_size")
        if image_size != self.input_size:
            raise ValueError(f"clip_cfg vision image_size {image_size} must equal input_size {self.input_size}")
        patch = self.patch_size
        if self.input_size % patch:
            raise ValueError(f"input_size {self.input_size} is not a multiple of the patch size {patch}")
        if patch % self.mask_upsample:
            raise ValueError(f"patch size {patch} is not divisible by mask_upsample {self.mask_upsample}")
        if self.side_encoder:
            wanted = side_fusion_upsample(patch, self.side_fusion_stride)
            if self.mask_upsample != wanted:
                raise ValueError(
                    f"with side_encoder=True the masks are at side_fusion_stride {self.side_fusion_stride}: "
                    f"mask_upsample must be {wanted} for patch size {patch}, got {self.mask_upsample}"
                )
        depth = self.clip_prompt_depth
        layers = int(self.clip_cfg["vision_cfg"].get("layers", 12))
        if depth is not None and depth > layers:
            raise ValueError(f"clip_prompt_depth {depth} exceeds the {layers} layers of the CLIP image encoder")

    def _validate_prompt_encoder_background_ranges(self) -> None:
        """Ranges of the prompt, learnable-encoder and background fields (types are checked from the annotations)."""
        if self.clip_prompt_tokens < 0:
            raise ValueError(f"config clip_prompt_tokens must be a non-negative integer, got {self.clip_prompt_tokens!r}")
        if self.clip_prompt_depth is not None and self.clip_prompt_depth < 1:
            raise ValueError(f"config clip_prompt_depth must be a positive integer or None, got {self.clip_prompt_depth!r}")
        if self.side_fusion_stride not in (4, 8):
            raise ValueError(f"config side_fusion_stride must be 8 or 4, got {self.side_fusion_stride!r}")
        if self.bg_temperature < 0:
            raise ValueError(f"config bg_temperature must be a finite number >= 0 (0: hard max), got {self.bg_temperature!r}")
        self._validate_readout_fields()

    def _validate_readout_fields(self) -> None:
        """Ranges of the CLIP readout and class-indicator fields."""
        layers = int(self.clip_cfg["vision_cfg"].get("layers", 12)) if isinstance(self.clip_cfg, Mapping) else 12
        k = self.clip_readout_layers
        if k is not None and not 1 <= k <= layers:
            raise ValueError(f"config clip_readout_layers must be None or in [1, {layers}] (the CLIP image "
                             f"encoder's layers), got {k!r}")
        for name in ("readout_weight_seen", "readout_weight_unseen"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"config {name} must be in [0, 1], got {value!r}")
        if self.indicator_inputs not in ("embedding", "profile"):
            raise ValueError(f"config indicator_inputs must be 'embedding' or 'profile', got {self.indicator_inputs!r}")
        if self.ensemble_void not in ENSEMBLE_VOID:
            raise ValueError(f"config ensemble_void must be one of {ENSEMBLE_VOID}, got {self.ensemble_void!r}")
        if self.calibration_protocol not in CALIBRATION_PROTOCOLS:
            raise ValueError(f"config calibration_protocol must be one of {CALIBRATION_PROTOCOLS}, got "
                             f"{self.calibration_protocol!r}")

    # Derived quantities ------------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        """Width of the joint CLIP embedding space (class prototypes and proposal embeddings)."""
        return int(self.clip_cfg["embed_dim"])

    @property
    def patch_size(self) -> int:
        return int(self.clip_cfg["vision_cfg"].get("patch_size", 16))

    @property
    def mask_stride(self) -> int:
        """Pixels of the model input per mask-logit cell."""
        return self.patch_size // self.mask_upsample

    @property
    def context_length(self) -> int:
        return int(self.clip_cfg["text_cfg"].get("context_length", 77))

    # Serialisation -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: dicts, lists, strings, numbers (``FrozenDict``s and tuples converted back)."""
        return fields_to_dict(self)

    def to_json(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AlignZegConfig":
        """A config from ``to_dict``'s output: every field must be present, no other key is allowed.

        Raises:
            TypeError: ``data`` is not a dict, or a field has the wrong type (the message names it).
            ValueError: a missing or unknown key, an unsupported ``format_version``, a bad value.
        """
        unknown = unknown_fields(cls, data, "config")
        if isinstance(data, dict) and data.get("format_version") in FORMAT_MIGRATIONS:
            added = FORMAT_MIGRATIONS[data["format_version"]]
            data = {**{k: v for k, v in added.items() if k not in data}, **data, "format_version": FORMAT_VERSION}
            unknown = unknown_fields(cls, data, "config")
        if "format_version" in data:
            check_format_version(data["format_version"])  # before the other checks: a newer file says so
        known = [f.name for f in dataclasses.fields(cls)]
        if unknown:
            raise ValueError(
                f"config has unknown fields {unknown}; known fields are {sorted(known)}. "
                "It may come from a newer alignzeg, or have been edited by hand."
            )
        missing = [name for name in known if name not in data]
        if missing:
            raise ValueError(f"config lacks required fields {missing} (a config.json written by save_pretrained "
                             "holds every field; missing ones are not filled with defaults)")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> "AlignZegConfig":
        """Read ``config.json``.

        Raises:
            WeightsError: the file is missing, not JSON, or any problem ``from_dict`` finds; the message
                starts with the file's path and names the key.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise WeightsError(f"{path}: cannot read the config: {err}") from err
        except json.JSONDecodeError as err:
            raise WeightsError(f"{path} is not valid JSON: {err}") from err
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise WeightsError(f"{path}: {err}") from err

    def replace(self, **changes: Any) -> "AlignZegConfig":
        """A copy with some fields changed (the config itself is immutable)."""
        return dataclasses.replace(self, **changes)
