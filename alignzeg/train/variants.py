"""Named training variants: the rows of the AlignZeg ablation as overrides of a ``TrainConfig``.

``alignzeg-train --variant NAME`` (and ``benchmarks/zeroshot_world.py``) apply one of these on top of a
recipe or config. Each variant sets model switches (``AlignZegConfig`` fields, through
``model_overrides``) and training switches (``TrainConfig`` fields); everything else is the config's.

- ``baseline``: ZegCLIP-like: one-way decoder, one background prototype, no learnable encoder, no
  GEPC training parts, no CLIP region readout, no class indicator (so no PBC at inference).
- ``+MRPE``: baseline + mutual refinement + the learnable encoder.
- ``+GEPC``: +MRPE + M background prototypes (the config's ``num_bg_prototypes``) + synthetic features
  + negative proposals + the CLIP region readout (classification grounded in CLIP); still no class indicator.
- ``full``: +GEPC + the vocabulary-aware class indicator (PBC at inference).
- switch rows, each ``full`` with one switch off: ``no-prompts``, ``no-grounding`` (neither the CLIP region
  readout nor the pooled-patch gate), ``no-learnable-encoder``; and ``full-vir-extra``: ``full`` with L_vir's
  target the synthetic feature's own mixed prototype.

    config = apply_variant(TrainConfig(preset="tiny"), "+MRPE")
"""

from __future__ import annotations

import os
from typing import Any

from .config import TrainConfig

__all__ = ["VARIANTS", "list_variants", "apply_variant", "variant_uses_pbc", "world_train_config",
           "WORLD_DECODER_DIM", "WORLD_CALIB_THRESHOLDS", "WORLD_CALIB_OFFSETS", "WORLD_CALIB_PBC",
           "WORLD_CALIB_READOUT"]

WORLD_DECODER_DIM = 64
"""Decoder width of the attribute-world models (the ``tiny`` preset has 32; see ``world_train_config``)."""

WORLD_CALIB_THRESHOLDS = (0.3, 0.5, 0.7, 0.9, 1.0)
"""PBC threshold grid of the world models' calibration on the world's val split; 1.0 flags no proposal
(scores are compared strictly), leaving the seen-score offset alone."""
WORLD_CALIB_OFFSETS = (0.0, 0.25, 0.5, 1.0, 2.0)
"""Seen-score offset grid (logits) of that calibration."""
WORLD_CALIB_PBC = WORLD_CALIB_THRESHOLDS + ("soft",)
"""PBC settings of the world calibration on cached outputs (``calibration_grid.search``): hard thresholds
and soft PBC."""
WORLD_CALIB_READOUT = ((0.0, 0.0), (0.0, 0.8), (0.3, 0.5), (0.3, 0.8), (0.3, 1.0), (0.6, 0.8), (0.6, 1.0))
"""(seen, unseen) weights of the CLIP readout in the geometric ensemble searched on val (FC-CLIP's default
is (0.4, 0.8))."""

_GEPC_OFF = dict(synthetic_features=False, negative_proposals=False, class_indicator=False)
_BASELINE: dict[str, Any] = dict(model=dict(mutual_refinement=False, num_bg_prototypes=1, side_encoder=False,
                                             clip_readout=False),
                                 train=_GEPC_OFF)
_MRPE: dict[str, Any] = dict(model=dict(mutual_refinement=True, num_bg_prototypes=1, side_encoder=True,
                                        clip_readout=False),
                             train=_GEPC_OFF)
_GEPC: dict[str, Any] = dict(model=dict(mutual_refinement=True, side_encoder=True, clip_readout=True,
                                        indicator_inputs="profile"),
                             train=dict(synthetic_features=True, negative_proposals=True, class_indicator=False))
_FULL: dict[str, Any] = dict(model=_GEPC["model"], train=dict(_GEPC["train"], class_indicator=True))



def _full_without(**model: Any) -> dict[str, Any]:
    """The ``full`` variant with one model switch changed."""
    return dict(model=dict(_FULL["model"], **model), train=_FULL["train"])


VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": _BASELINE,
    "+MRPE": _MRPE,
    "+GEPC": _GEPC,
    "full": _FULL,
    "no-learnable-encoder": _full_without(side_encoder=False),
    "no-prompts": _full_without(clip_prompt_tokens=0),
    "no-grounding": _full_without(clip_grounding=False, clip_readout=False),
    "full-vir-extra": dict(model=_FULL["model"], train=dict(_FULL["train"], vir_target="extra")),
}
"""Variant name -> ``{"model": AlignZegConfig overrides, "train": TrainConfig fields}``."""


def list_variants() -> list[str]:
    """The variant names, in ablation order."""
    return list(VARIANTS)


def apply_variant(config: TrainConfig, name: str) -> TrainConfig:
    """``config`` with variant ``name``'s model and training switches set (they win over the config's).

    Raises:
        ValueError: an unknown variant (the message lists the known ones).
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; variants are {', '.join(list_variants())}")
    variant = VARIANTS[name]
    return config.replace(model_overrides={**config.model_overrides, **variant["model"]}, **variant["train"])


def variant_uses_pbc(name: str) -> bool:
    """Whether the variant is evaluated with Proposal-based Bias Correction (it trains the class indicator)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; variants are {', '.join(list_variants())}")
    return bool(VARIANTS[name]["train"]["class_indicator"])


def world_train_config(world: Any, clip_pretrained: str | os.PathLike | None, **changes: Any) -> TrainConfig:
    """The training settings of the attribute-world ablation (before a variant is applied).

    The ``tiny`` preset on the world's mini-CLIP with a decoder twice as wide (``decoder_dim=64``: the
    preset's 32 learns the seen patterns poorly: world 0, seed 0, 1500 steps, baseline hIoU 22.5 at width
    32, 45.4 at 64, 51.2 at 128, which trains 1.8x slower in the full model), trained on the world's seen
    classes: 1500 AdamW steps, batch 8, lr 1e-3 (poly), no rescaling (the patterns' period is part of what
    CLIP learned), flips on (every pattern is a pattern of the same class when mirrored), 10 background
    prototypes, and negative
    proposals from the top-1 (not 5) by loss: the paper's K = 5 is 5 % of 100 queries, and 5 of the tiny
    preset's 8 queries made most proposals negatives (world 0, seed 0, 1500 steps: full hIoU 25.2 with
    K = 5, 33.5 with K = 1).

    Args:
        world: an ``AttributeWorld`` (its ``seen_classes`` are recorded).
        clip_pretrained: the world's mini-CLIP file (``alignzeg.train.miniclip.save_clip``); ``None`` keeps
            a random CLIP (tests).
        changes: ``TrainConfig`` fields to change.
    """
    clip = os.fspath(clip_pretrained) if clip_pretrained is not None else None
    base = dict(preset="tiny", clip_pretrained=clip, dataset="folder",
                seen_classes=tuple(world.seen_classes), iterations=1500, batch_size=8, lr=1e-3,
                crop_scale=(1.0, 1.0), flip=True, checkpoint_every=0, log_every=100, negative_topk=1,
                model_overrides=dict(num_bg_prototypes=10, decoder_dim=WORLD_DECODER_DIM))
    return TrainConfig(**{**base, **changes})
