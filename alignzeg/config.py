"""The model configuration that travels with the weights (``config.json``).

One frozen dataclass holds everything needed to rebuild the architecture and run inference the way the
checkpoint was trained: CLIP variant, input size, normalisation, prompt templates, decoder sizes,
the training (seen) class names and the bias-correction settings. Training-only settings live in
``alignzeg.train``, never here.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 2
"""Version of the ``config.json`` layout. A file with another version is refused with a clear error."""

FORMAT_CHANGES = {
    1: "format 2 (issue 12) replaced the multiplicative PBC (pbc_factor, removed) by a masked softmax over "
       "logits (seen_score_offset), and added deep visual prompts (clip_prompt_tokens, clip_prompt_depth), "
       "the learnable encoder fused into the mask features (side_encoder on, side_fusion_stride), "
       "CLIP-grounded proposal classification (clip_grounding), soft background prototypes (bg_temperature) "
       "and indicator_trained; the weights of a format-1 checkpoint do not fit this architecture. "
       "No migration exists (none was published): train the model again with this alignzeg",
}
"""Why each older ``format_version`` is refused: what changed since (there is no migration)."""

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


def check_format_version(version: Any) -> None:
    """Refuse a ``config.json`` layout other than ``FORMAT_VERSION``, saying why.

    Raises:
        ValueError: ``version`` is newer (upgrade alignzeg), older (what changed: ``FORMAT_CHANGES``) or invalid.
    """
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ValueError(
            f"config format_version {version} is newer than this alignzeg supports ({FORMAT_VERSION}); "
            "upgrade alignzeg to load this checkpoint"
        )
    if version in FORMAT_CHANGES and not isinstance(version, bool):
        raise ValueError(f"config format_version {version} is no longer supported (this alignzeg reads "
                         f"{FORMAT_VERSION}): {FORMAT_CHANGES[version]}")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ValueError(f"config format_version {version!r} is not supported by this alignzeg "
                         f"(it reads format_version {FORMAT_VERSION})")


def side_fusion_upsample(patch_size: int, fusion_stride: int) -> int:
    """The ``mask_upsample`` that puts the masks at ``fusion_stride`` for a ViT of ``patch_size``.

    ``patch_size / fusion_stride`` rounded to a power of two (at least 1), since the learnable encoder
    halves the resolution at each stage: 16 -> 8 gives 2, 16 -> 4 gives 4, 14 -> 8 gives 2 (stride 7),
    8 -> 8 gives 1.
    """
    ratio = max(1.0, patch_size / fusion_stride)
    return 2 ** round(math.log2(ratio))


@dataclass(frozen=True)
class AlignZegConfig:
    """Architecture and inference settings of one AlignZeg model.

    Attributes:
        clip_model: open_clip architecture name (``"ViT-B-16"``) or a local name for ``clip_cfg``.
        clip_cfg: keyword arguments of ``open_clip.CLIP`` (``embed_dim``, ``vision_cfg``, ``text_cfg``,
            ``quick_gelu``). ``vision_cfg["image_size"]`` equals ``input_size``: the position embeddings
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
        seen_score_offset: subtracted from the seen-class logits of every proposal by PBC (ZegCLIP's
            calibration); 0 = none.
        indicator_trained: the class indicator was trained (set by the Trainer). PBC needs it: on a
            model without, ``segment`` turns PBC off (with a warning) unless asked for explicitly (error).
        format_version: layout version of this file.
    """

    clip_model: str
    clip_cfg: dict[str, Any]
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
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Lists from JSON become tuples, so configs compare and hash the same however they were made.
        for name in ("mean", "std", "templates", "seen_classes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "clip_cfg", copy.deepcopy(dict(self.clip_cfg)))
        self._validate()

    def _validate(self) -> None:
        check_format_version(self.format_version)
        for name in ("input_size", "window_stride", "decoder_dim", "num_queries", "num_decoder_layers",
                     "num_heads", "mask_upsample", "num_bg_prototypes", "indicator_hidden", "max_long_side"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
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
        if not 0.0 <= self.pbc_threshold <= 1.0:
            raise ValueError(f"pbc_threshold must be in [0, 1], got {self.pbc_threshold}")
        self._validate_issue12_fields()
        for key in ("embed_dim", "vision_cfg", "text_cfg"):
            if key not in self.clip_cfg:
                raise ValueError(f"clip_cfg lacks {key!r}; it holds {sorted(self.clip_cfg)}")
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

    def _validate_issue12_fields(self) -> None:
        tokens, depth = self.clip_prompt_tokens, self.clip_prompt_depth
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise ValueError(f"config clip_prompt_tokens must be a non-negative integer, got {tokens!r}")
        if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
            raise ValueError(f"config clip_prompt_depth must be a positive integer or None, got {depth!r}")
        if self.side_fusion_stride not in (4, 8) or isinstance(self.side_fusion_stride, bool):
            raise ValueError(f"config side_fusion_stride must be 8 or 4, got {self.side_fusion_stride!r}")
        for name in ("side_encoder", "clip_grounding", "mutual_refinement", "indicator_trained"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"config {name} must be true or false, got {getattr(self, name)!r}")
        t = self.bg_temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t < float("inf"):
            raise ValueError(f"config bg_temperature must be a finite number >= 0 (0: hard max), got {t!r}")
        off = self.seen_score_offset
        if isinstance(off, bool) or not isinstance(off, (int, float)) or off != off or abs(off) == float("inf"):
            raise ValueError(f"config seen_score_offset must be a finite number, got {off!r}")

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
        data = dataclasses.asdict(self)
        for name in ("mean", "std", "templates", "seen_classes"):
            data[name] = list(data[name])
        return data

    def to_json(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AlignZegConfig":
        unknown = unknown_fields(cls, data, "config")
        known = {f.name for f in dataclasses.fields(cls)}
        check_format_version(data.get("format_version", FORMAT_VERSION))
        if unknown:
            raise ValueError(
                f"config has unknown fields {unknown}; known fields are {sorted(known)}. "
                "It may come from a newer alignzeg, or have been edited by hand."
            )
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.name in ("clip_model", "clip_cfg") and f.name not in data)
        if missing:
            raise ValueError(f"config lacks required fields {missing}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> "AlignZegConfig":
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{path}: {err}") from err

    def replace(self, **changes: Any) -> "AlignZegConfig":
        """A copy with some fields changed (the config itself is immutable)."""
        return dataclasses.replace(self, **changes)
