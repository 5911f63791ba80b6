"""Named training settings, one registry: the recipes (``--recipe``) and the ablation variants (``--variant``).

An entry (``NamedSettings``) is a set of ``TrainConfig`` fields plus model switches (``AlignZegConfig``
fields, merged into ``model_overrides``). A *recipe* is a whole run: its entry applied to ``TrainConfig``'s
defaults (``get_recipe``). A *variant* is a row of the AlignZeg ablation, applied on top of any config
(``apply_variant``); its switches win over the config's. ``lookup`` finds either kind by name, and an unknown
name is one ``ValueError`` listing the valid ones. ``alignzeg-train --recipe/--variant`` and
``benchmarks/zeroshot_world.py`` look names up here.

**Recipes**: the paper-family settings per benchmark. Every recipe: the benchmark's standard seen/unseen split
(inductive), crops of the preset's input size (512 for ViT-B/16, 518 for ViT-L/14), global batch 16, OpenAI
CLIP weights, every λ at the ``TrainConfig`` defaults, and the optimisation of ZegCLIP's configs
(``configs/voc12/vpt_seg_zero_*``: AdamW with an effective lr of 2e-4 for the trained parts, weight decay 0.01
but none on norms, poly schedule with power 0.9 after a 1,500-iteration linear warm-up), plus what ZegCLIP's
mmseg pipeline and Mask2Former add: photometric distortion (mmseg's ``PhotoMetricDistortion``), the matching
class cost ``-p`` and gradient clipping at a global norm of 0.01 (Mask2Former's ``full_model`` clipping;
ZegCLIP's configs do not clip). No weight decay on embeddings, prompts, prototypes and the logit scale either
(``alignzeg.train.training.optim``). 80k iterations on COCO-Stuff, 20k on VOC, 40k on PASCAL Context. Deep visual
prompts: 10 tokens per layer on VOC, 100 on COCO-Stuff (ZegCLIP's), 50 on Context (our choice). VOC recipes
read the 10,582-image augmented training set when ``VOC2012/SegmentationClassAug`` exists
(``data={"label_dir": "auto"}``; see ``datasets.voc_augmented_pairs`` for the two layouts), else VOC's own
1,464 images (a warning says so).

**Variants** (in ablation order):

- ``baseline``: ZegCLIP-like: one-way decoder, one background prototype, no learnable encoder, no GEPC training
  parts, no CLIP region readout, no class indicator (so no PBC at inference).
- ``+MRPE``: baseline + mutual refinement + the learnable encoder.
- ``+GEPC``: +MRPE + M background prototypes (the config's ``num_bg_prototypes``) + synthetic features
  + negative proposals + the CLIP region readout (classification grounded in CLIP); still no class indicator.
- ``full``: +GEPC + the vocabulary-aware class indicator (PBC at inference).
- switch rows, each ``full`` with one switch off: ``no-prompts``, ``no-grounding`` (neither the CLIP region
  readout nor the pooled-patch gate), ``no-learnable-encoder``; and ``full-vir-extra``: ``full`` with L_vir's
  target the synthetic feature's own mixed prototype.

    config = apply_variant(get_recipe("voc-vitb16"), "+MRPE")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ...config import FrozenDict
from .config import TrainConfig

__all__ = ["NamedSettings", "KINDS", "lookup", "names", "get_recipe", "list_recipes", "apply_variant",
           "list_variants", "variant_uses_pbc"]

KINDS = ("recipe", "variant")


@dataclass(frozen=True)
class NamedSettings:
    """One registry entry.

    Attributes:
        name: what ``--recipe`` / ``--variant`` takes.
        kind: ``"recipe"`` (a whole run, applied to ``TrainConfig``'s defaults) or ``"variant"`` (an ablation
            row, applied on top of a config).
        description: one line for listings.
        train: ``TrainConfig`` fields it sets (they replace the config's).
        model: ``AlignZegConfig`` fields it sets (merged into the config's ``model_overrides``; they win).
    """

    name: str
    kind: str
    description: str
    train: Mapping[str, Any]
    model: Mapping[str, Any]

    def fields(self, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``base`` (``TrainConfig`` fields as a dict, or none) with this entry's fields and model switches set."""
        base = dict(base or {})
        overrides = {**(base.get("model_overrides") or {}), **self.model}
        return {**base, **self.train, "model_overrides": overrides}

    def apply(self, config: TrainConfig) -> TrainConfig:
        """``config`` with this entry's fields and model switches set (checked, like any ``TrainConfig``)."""
        return config.replace(**self.fields({"model_overrides": config.model_overrides}))


# Recipes ---------------------------------------------------------------------------------------------------
_COMMON: dict[str, Any] = dict(batch_size=16, lr=2e-4, weight_decay=0.01, no_decay=True, schedule="poly",
                               poly_power=0.9, warmup_iters=1500, grad_clip=0.01, photometric=True,
                               class_cost="prob", clip_pretrained="openai", lambda_bc=1.0, lambda_ce=2.0,
                               lambda_mask=5.0, lambda_vir=1.0, lambda_reg=0.1, checkpoint_every=2000, log_every=50)
_BENCHMARKS = {"coco-stuff": 80_000, "voc": 20_000, "context": 40_000}
_DATA: dict[str, dict[str, Any]] = {"voc": {"label_dir": "auto"}}
# Deep visual prompt tokens per ViT layer: ZegCLIP's 10 (VOC) and 100 (COCO-Stuff). ZegCLIP ships no
# zero-shot Context config; 59 classes and ~5k images sit between the two, and the prompts cost grows with
# the token count, so Context takes 50 (our choice, not a peer's).
_PROMPTS = {"voc": 10, "coco-stuff": 100, "context": 50}
_BACKBONES = ("vitb16", "vitl14")


def _recipe(data: str, preset: str, iterations: int) -> NamedSettings:
    """A benchmark's recipe: the model the inductive tables support, MRPE with one background prototype and no
    GEPC training parts (``TrainConfig``'s defaults) nor class indicator; the variants add them."""
    train = dict(_COMMON, preset=preset, dataset=data, iterations=iterations, data=dict(_DATA.get(data, {})))
    model = {"num_queries": 100, "clip_prompt_tokens": _PROMPTS[data], "num_bg_prototypes": 1}
    return NamedSettings(f"{data}-{preset}", "recipe", f"preset={preset} dataset={data} iterations={iterations}",
                         FrozenDict(train), FrozenDict(model))


# Variants --------------------------------------------------------------------------------------------------
_GEPC_OFF = dict(synthetic_features=False, negative_proposals=False, class_indicator=False)
_GEPC_ON = dict(synthetic_features=True, negative_proposals=True, class_indicator=False)
_FULL_TRAIN = dict(_GEPC_ON, class_indicator=True)
GEPC_BG_PROTOTYPES = 10
"""M, GEPC's background prototypes in the variants that train GEPC (the paper's M)."""
_FULL_MODEL = dict(mutual_refinement=True, side_encoder=True, clip_readout=True, indicator_inputs="profile",
                   num_bg_prototypes=GEPC_BG_PROTOTYPES)


def _variant(name: str, description: str, train: dict[str, Any], model: dict[str, Any]) -> NamedSettings:
    return NamedSettings(name, "variant", description, FrozenDict(train), FrozenDict(model))


_VARIANTS = (
    _variant("baseline", "ZegCLIP-like: one-way decoder, 1 background prototype, no learnable encoder, no GEPC, "
             "no readout, no class indicator", _GEPC_OFF,
             dict(mutual_refinement=False, num_bg_prototypes=1, side_encoder=False, clip_readout=False)),
    _variant("+MRPE", "baseline + mutual refinement + the learnable encoder", _GEPC_OFF,
             dict(mutual_refinement=True, num_bg_prototypes=1, side_encoder=True, clip_readout=False)),
    _variant("+GEPC", "+MRPE + M background prototypes, synthetic features, negative proposals, the CLIP readout",
             _GEPC_ON, _FULL_MODEL),
    _variant("full", "+GEPC + the vocabulary-aware class indicator (PBC at inference)", _FULL_TRAIN, _FULL_MODEL),
    _variant("no-learnable-encoder", "full without the learnable encoder", _FULL_TRAIN,
             dict(_FULL_MODEL, side_encoder=False)),
    _variant("no-prompts", "full without deep visual prompts", _FULL_TRAIN, dict(_FULL_MODEL, clip_prompt_tokens=0)),
    _variant("no-grounding", "full without the CLIP region readout and the pooled-patch gate", _FULL_TRAIN,
             dict(_FULL_MODEL, clip_grounding=False, clip_readout=False)),
    _variant("full-vir-extra", "full with L_vir's target the synthetic feature's own mixed prototype",
             dict(_FULL_TRAIN, vir_target="extra"), _FULL_MODEL),
)

_REGISTRY: dict[str, NamedSettings] = {
    entry.name: entry
    for entry in (*sorted((_recipe(d, p, n) for d, n in _BENCHMARKS.items() for p in _BACKBONES),
                          key=lambda e: e.name), *_VARIANTS)
}
"""Name -> entry: recipes sorted by name, then variants in ablation order (the names never clash)."""


# Lookup ----------------------------------------------------------------------------------------------------
def names(kind: str) -> list[str]:
    """The names of one kind (``"recipe"`` or ``"variant"``): recipes sorted, variants in ablation order."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return [name for name, entry in _REGISTRY.items() if entry.kind == kind]


def lookup(name: str, kind: str) -> NamedSettings:
    """The entry ``name`` of ``kind``.

    Raises:
        ValueError: an unknown name (the message lists the names of that kind), or a name of the other kind.
    """
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None or entry.kind != kind:
        other = f" ({name!r} is a {entry.kind})" if entry is not None else ""
        raise ValueError(f"unknown {kind} {name!r}{other}; {kind}s are: {', '.join(names(kind))}")
    return entry


def list_recipes() -> list[str]:
    """The recipe names, sorted."""
    return names("recipe")


def get_recipe(name: str) -> TrainConfig:
    """The ``TrainConfig`` of recipe ``name`` (its fields over ``TrainConfig``'s defaults)."""
    return TrainConfig.from_dict(lookup(name, "recipe").fields())


def list_variants() -> list[str]:
    """The variant names, in ablation order."""
    return names("variant")


def apply_variant(config: TrainConfig, name: str) -> TrainConfig:
    """``config`` with variant ``name``'s model and training switches set (they win over the config's)."""
    return lookup(name, "variant").apply(config)


def variant_uses_pbc(name: str) -> bool:
    """Whether the variant is evaluated with Proposal-based Bias Correction (it trains the class indicator)."""
    return bool(lookup(name, "variant").train["class_indicator"])
