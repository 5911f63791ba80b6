"""Model presets: one small builder per size over one private builder, and a name -> builder registry.

A preset fixes the architecture (CLIP variant, decoder sizes) and names the CLIP weights it is meant to
start from (``clip_tag``). It never holds trained AlignZeg weights: those come from ``from_pretrained``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .config import AlignZegConfig

__all__ = ["list_models", "get_preset_config", "PresetInfo", "preset_info"]


@dataclass(frozen=True)
class PresetInfo:
    """What a preset is: its config builder and the CLIP weights it starts from (``None``: none exist)."""

    name: str
    build_config: Callable[..., AlignZegConfig]
    clip_tag: str | None
    description: str


def _config(clip_model: str, clip_cfg: dict[str, Any], **overrides: Any) -> AlignZegConfig:
    input_size = overrides.get("input_size", 512)
    vision = dict(clip_cfg["vision_cfg"], image_size=input_size)
    return AlignZegConfig(clip_model=clip_model, clip_cfg=dict(clip_cfg, vision_cfg=vision), **overrides)


def _openai_vit(layers: int, width: int, patch: int, text_width: int, text_heads: int, embed_dim: int):
    return {
        "embed_dim": embed_dim,
        "quick_gelu": True,  # OpenAI's CLIP weights were trained with QuickGELU
        "vision_cfg": {"layers": layers, "width": width, "patch_size": patch, "image_size": 224},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": text_width,
                     "heads": text_heads, "layers": 12},
    }


_READOUT = dict(clip_readout=True, clip_readout_layers=3, indicator_inputs="profile")
"""The CLIP region readout and the vocabulary-aware class indicator are on in every preset; the ViT presets
carry region tokens in their last 3 blocks (as SAN), the 2-layer tiny CLIP in both of its blocks."""


def _tiny(**overrides: Any) -> AlignZegConfig:
    clip_cfg = {
        "embed_dim": 64,
        "quick_gelu": False,
        "vision_cfg": {"layers": 2, "width": 64, "head_width": 32, "patch_size": 8, "image_size": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    # Every model part is on, at sizes that fit the small model: 4 prompt tokens in both layers, the
    # learnable encoder fused at stride 4 (half the 8-pixel patch, so masks keep stride 4 as before).
    defaults = dict(input_size=64, window_stride=48, max_long_side=256, decoder_dim=32, num_queries=8,
                    num_decoder_layers=2, num_heads=2, num_bg_prototypes=3, indicator_hidden=32,
                    clip_prompt_tokens=4, side_fusion_stride=4,
                    templates=("a photo of a {}.", "there is a {} in the scene."),
                    **dict(_READOUT, clip_readout_layers=None))
    return _config("tiny", clip_cfg, **{**defaults, **overrides})


def _vitb16(**overrides: Any) -> AlignZegConfig:
    return _config("ViT-B-16", _openai_vit(12, 768, 16, 512, 8, 512), **{**_READOUT, **overrides})


def _vitl14(**overrides: Any) -> AlignZegConfig:
    defaults = dict(input_size=518, window_stride=345, max_long_side=2072, **_READOUT)
    return _config("ViT-L-14", _openai_vit(24, 1024, 14, 768, 12, 768), **{**defaults, **overrides})


_PRESETS: dict[str, PresetInfo] = {
    "tiny": PresetInfo("tiny", _tiny, None, "2-layer width-64 CLIP, 64 px: for tests and examples only"),
    "vitb16": PresetInfo("vitb16", _vitb16, "openai", "CLIP ViT-B/16 at 512 px (the paper's setting)"),
    "vitl14": PresetInfo("vitl14", _vitl14, "openai", "CLIP ViT-L/14 at 518 px"),
}


def list_models() -> list[str]:
    """Names accepted by ``AlignZegSegmenter.from_preset``."""
    return sorted(_PRESETS)


def preset_info(name: str) -> PresetInfo:
    if not isinstance(name, str) or name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; available presets: {', '.join(list_models())}")
    return _PRESETS[name]


def get_preset_config(name: str, **overrides: Any) -> AlignZegConfig:
    """The config of preset ``name``, with any field overridden (e.g. ``seen_classes=(...)``)."""
    return preset_info(name).build_config(**overrides)
