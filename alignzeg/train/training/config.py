"""``TrainConfig``: every training setting in one dataclass, saved as ``train_config.json`` beside the run.

Architecture settings go to the model's own ``AlignZegConfig`` (through ``preset`` + ``model_overrides``);
everything here is training-only and never travels with the inference weights.

Loss weights (the paper's L = L_bc + λ1 L_ce + λ2 L_mask + λ3 L_vir + λ4 L_reg):

- ``lambda_bc`` (L_bc, class indicator BCE), ``lambda_ce`` (λ1), ``lambda_mask`` (λ2), ``lambda_vir`` (λ3),
  ``lambda_reg`` (λ4). A λ of 0 skips its term; the switches ``synthetic_features``,
  ``negative_proposals``, ``class_indicator`` and ``reg`` turn the GEPC/PBC parts off for ablations.
- L_reg (the paper does not give its form) is the package's choice: the mean squared cosine similarity
  between distinct background prototypes, which keeps the M prototypes apart (0 when M = 1).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ...config import AlignZegConfig, FrozenDict, check_field_types, fields_to_dict, unknown_fields, write_json
from ...presets import get_preset_config, preset_info

__all__ = ["TrainConfig", "apply_overrides", "assign_fields"]

# Ranges and choices of the fields (their types come from the annotations) -------------------------------
_POSITIVE = frozenset({"iterations", "batch_size", "grad_accum", "negative_topk", "log_every"})
_NON_NEGATIVE = frozenset({"warmup_iters", "checkpoint_every", "num_workers", "num_synthetic", "seed", "lr",
                           "weight_decay", "eos_coef", "negative_weight", "poly_power", "cost_class", "cost_mask",
                           "cost_dice"})  # and every lambda_*
_CHOICES = {"schedule": ("poly", "cosine", "constant"), "mask_loss": ("bce", "focal"),
            "class_cost": ("prob", "logprob"), "vir_target": ("soft", "extra")}
_PAIRS = {  # (low, high): the low and high checks and the rule in words
    "indicator_angle": (lambda v: v >= 0.0, lambda v: v <= 90.0, "0 <= low <= high <= 90 (degrees)"),
    "indicator_holdout": (lambda v: v > 0.0, lambda v: v < 1.0, "0 < low <= high < 1 (fractions)"),
    "crop_scale": (lambda v: v > 0.0, lambda v: True, "0 < low <= high"),
}
_NOT_OVERRIDDEN = {
    "clip_model": "the preset fixes the CLIP architecture (choose another preset)",
    "clip_cfg": "the preset fixes the CLIP architecture (choose another preset)",
    "clip_pretrained": "set the CLIP weights with the train config's clip_pretrained",
    "clip_fingerprint": "it is computed from the CLIP weights when the model is saved",
    "seen_classes": "the trainer records them (set the train config's seen_classes)",
    "indicator_trained": "the trainer records it (class_indicator and lambda_bc > 0)",
}
"""Model config fields that ``model_overrides`` may not set, and why."""


@dataclass(frozen=True)
class TrainConfig:
    """Training settings.

    Attributes:
        preset: model preset name (``alignzeg.list_models()``), used when no model is given to the trainer.
        model_overrides: ``AlignZegConfig`` fields to change in the preset (``num_queries``,
            ``mutual_refinement``, ``num_bg_prototypes``, ``side_encoder``...). The model config is built
            when this config is made (``model_config``), so an unknown key, a wrong type or a bad value
            raises at once, naming the key; ``clip_model``, ``clip_cfg``, ``clip_pretrained``,
            ``clip_fingerprint``, ``seen_classes`` and ``indicator_trained`` are refused (they come from the
            preset, the CLIP weights or the trainer).
        clip_pretrained: the frozen CLIP's weights for a model built from the preset, passed to
            ``AlignZegSegmenter.from_preset(clip_pretrained=...)``: an open_clip tag (``"openai"``),
            ``"hf-hub:org/name"`` or a local file; ``None`` keeps the random initialisation (tests, timing).
        dataset: dataset name for the CLI (``voc``, ``coco-stuff``, ``context``, ``folder``); unused from Python.
        seen_classes: the training classes; ``None`` takes the dataset's ``seen_classes``.
        validation_classes: seen classes held out of this run's segmentation training (their pixels are
            ignored, their names are not seen classes of the model): the run makes a *calibration model* on
            which the post-processing settings are chosen inductively, the held-out classes playing unseen
            (``alignzeg.train.evaluation.calibrate.calibrate_inductive``; ``pick_validation_classes`` draws them).
        inductive: unseen names and pixels are never used in training (only inductive training is implemented).
        iterations: optimizer steps.
        batch_size: images per optimizer step over all processes and accumulation steps.
        grad_accum: micro-batches accumulated per optimizer step.
        lr / weight_decay: AdamW settings (over ``model.trainable_parameters()`` only).
        lr_multipliers: ``{name prefix: factor}``: parameters whose dotted name is the prefix or starts with
            ``prefix + "."`` train at ``factor * lr`` (the longest matching prefix wins; mmsegmentation's
            ``paramwise_cfg.custom_keys`` ``lr_mult``), e.g. ``{"extractor.side": 0.1}`` for MRPE's learnable
            encoder. Empty: every parameter at ``lr``. A prefix that names no trainable parameter is refused
            when training starts.
        schedule: ``poly`` (power ``poly_power``), ``cosine`` or ``constant``, after ``warmup_iters`` linear warm-up.
        grad_clip: max norm of the gradient of all trainable parameters together (one global L2 norm, as
            Mask2Former clips the full model); ``None`` disables clipping.
        no_decay: weight decay is 0 for norms, biases, embeddings (query / position), prompt tokens,
            background prototypes and the logit scale (``alignzeg.train.training.optim.parameter_groups``); ``False``
            decays every trainable parameter (the old behaviour).
        amp: mixed precision on CUDA (bf16 where supported, else fp16 with a gradient scaler). Ignored on CPU.
        lambda_*: loss weights (see the module docstring).
        mask_loss: ``bce`` or ``focal`` (sigmoid focal, alpha 0.25, gamma 2) mask term; dice is always added.
        eos_coef: classification weight of proposals matched to nothing (trained toward background).
        deep_supervision: add matching + L_ce + L_mask of every earlier decoder layer.
        cost_class / cost_mask / cost_dice: matching cost weights (also the per-class loss used to rank
            proposals for negative selection).
        synthetic_features: GEPC's feature expansion (L_vir on mixed embeddings). Off by default, as
            ``negative_proposals``: under the inductive protocol GEPC's training parts with its M background
            prototypes added nothing over MRPE with the CLIP readout (attribute worlds, 3 worlds x 4 seeds: -0.3
            hIoU [-1.7, +1.0]; object worlds, 3 x 4: -0.9 [-2.4, +0.6]; docs/zeroshot_world.md); the ``+GEPC``
            and ``full`` variants turn both on with M = 10 background prototypes (the paper's model).
        num_synthetic: synthetic features per micro-batch.
        mixup_alpha: mixing weights are drawn from Beta(alpha, alpha).
        negative_proposals: GEPC's background diversity (negative proposals trained toward background).
        negative_topk: K of the top-K-by-loss ranking per seen class.
        negative_weight: classification weight of a negative proposal (instead of ``eos_coef``).
        class_indicator: train the class indicator (L_bc), so that PBC flags proposals at inference. Off by
            default: under the inductive protocol its flags added nothing over the calibrated seen-score offset
            (attribute worlds, 3 worlds x 4 seeds: -0.0 hIoU [-0.0, +0.0]; object worlds, 3 x 4: +0.02 [-0.01, +0.05];
            docs/zeroshot_world.md); the ``full``
            variant turns it on (the paper's model).
        reg: add L_reg.
        crop_scale: range of the random resize factor before the crop (relative to ``input_size``).
        flip: random horizontal flips.
        photometric: mmsegmentation's ``PhotoMetricDistortion`` (random brightness, contrast, saturation, hue;
            ``alignzeg.train.datasets.augmentation.PhotoMetricDistortion``), seeded per sample like the crop.
        class_cost: the class term of the matching cost: ``"prob"`` (``-p``, Mask2Former / ZegCLIP) or
            ``"logprob"`` (``-log p``, unbounded). Negative proposals are always ranked by the loss (``-log p``).
        indicator_angle: (low, high) degrees. The class indicator's positives are mixes of two matched
            proposals of different seen classes (drawn apart from L_vir's), rotated further off both seen
            prototypes by an angle drawn from this range (``gepc.off_prototype_features``). Default (0, 0):
            no rotation, the mixes themselves (measured better than (30, 60) on the synthetic world:
            docs/training.md).
        indicator_holdout: (low, high) fractions of the seen classes that each episode of the ``"profile"``
            class indicator's training holds out (drawn uniformly per episode): their matched proposals are the
            positives and their names the "other" names of the profile (``losses.holdout_profile_batch``).
        vir_target: L_vir's target for a synthetic feature: ``"soft"`` (the mix of its two seen classes) or
            ``"extra"`` (its own mixed prototype, added as one more class to its softmax: room for classes
            outside training).
        data: extra keyword arguments of the dataset loader (``build_dataset(..., **data)``), e.g.
            ``{"label_dir": "SegmentationClassAug"}``; set from the CLI with ``--set data.label_dir=...``.
        num_workers: DataLoader workers.
        seed: seeds the data order, the augmentation and the training randomness (results are reproducible).
        log_every / checkpoint_every: in optimizer steps; 0 disables checkpoints.
        progress: show a tqdm bar.
        device: ``None`` picks CUDA when available (each torchrun process uses its LOCAL_RANK GPU).

    Checked when made: each field's type from its annotation (``alignzeg.config.check_field_types``, as
    ``AlignZegConfig``; lists become tuples, ``model_overrides`` and ``data`` read-only ``FrozenDict``s),
    then ranges and choices, then the model config is built (``model_config``).

    Raises:
        TypeError: a field of the wrong type. ValueError: a value out of range, an unknown preset, or
            ``model_overrides`` the preset refuses (each message names the field or key and the value).
    """

    preset: str = "tiny"
    model_overrides: Mapping[str, Any] = field(default_factory=FrozenDict)
    clip_pretrained: str | None = None
    dataset: str | None = None
    seen_classes: tuple[str, ...] | None = None
    validation_classes: tuple[str, ...] = ()
    inductive: bool = True
    iterations: int = 1000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 2e-4
    lr_multipliers: Mapping[str, float] = field(default_factory=FrozenDict)
    weight_decay: float = 1e-2
    schedule: str = "poly"
    poly_power: float = 0.9
    warmup_iters: int = 0
    grad_clip: float | None = None
    no_decay: bool = True
    amp: bool = True
    lambda_bc: float = 1.0
    lambda_ce: float = 2.0
    lambda_mask: float = 5.0
    lambda_vir: float = 1.0
    lambda_reg: float = 0.1
    mask_loss: str = "bce"
    eos_coef: float = 0.1
    deep_supervision: bool = True
    cost_class: float = 2.0
    cost_mask: float = 5.0
    cost_dice: float = 5.0
    class_cost: str = "prob"
    synthetic_features: bool = False
    num_synthetic: int = 16
    mixup_alpha: float = 2.0
    negative_proposals: bool = False
    negative_topk: int = 5
    negative_weight: float = 1.0
    class_indicator: bool = False
    indicator_angle: tuple[float, float] = (0.0, 0.0)
    indicator_holdout: tuple[float, float] = (0.1, 0.2)
    vir_target: str = "soft"
    reg: bool = True
    crop_scale: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    photometric: bool = False
    data: Mapping[str, Any] = field(default_factory=FrozenDict)
    num_workers: int = 0
    seed: int = 0
    log_every: int = 20
    checkpoint_every: int = 1000
    progress: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        check_field_types(self, "train config")  # the model config's check, from the annotations
        self._validate()
        self.model_config  # built (and so checked) now; cached on the instance from here on

    def _validate(self) -> None:
        """Ranges and choices (the types are checked from the annotations)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _POSITIVE and value < 1:
                raise ValueError(f"train config {f.name} must be a positive integer, got {value!r}")
            if (f.name in _NON_NEGATIVE or f.name.startswith("lambda_")) and value < 0:
                expected = "a non-negative integer" if f.type == "int" else "a number >= 0"
                raise ValueError(f"train config {f.name} must be {expected}, got {value!r}")
            if f.name in _CHOICES and value not in _CHOICES[f.name]:
                raise ValueError(f"train config {f.name} must be one of {_CHOICES[f.name]}, got {value!r}")
        for name, (low, high, rule) in _PAIRS.items():
            pair = getattr(self, name)
            if len(pair) != 2 or not low(pair[0]) or not pair[0] <= pair[1] or not high(pair[1]):
                raise ValueError(f"train config {name} must be (low, high) with {rule}, got {pair}")
        for prefix, factor in self.lr_multipliers.items():
            if not prefix or isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
                raise ValueError("train config lr_multipliers maps parameter name prefixes to factors > 0 "
                                 f"({{'extractor.side': 0.1}}), got {prefix!r}: {factor!r}")
        if self.mixup_alpha <= 0:
            raise ValueError(f"train config mixup_alpha must be > 0, got {self.mixup_alpha!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"train config grad_clip must be > 0 or None, got {self.grad_clip!r}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        if not self.inductive:
            raise ValueError("only inductive training (inductive=True) is implemented")
        if len(set(self.validation_classes)) != len(self.validation_classes):
            raise ValueError(f"train config validation_classes has duplicates: {list(self.validation_classes)}")
        if self.seen_classes is not None:
            outside = [c for c in self.validation_classes if c not in self.seen_classes]
            if outside:
                raise ValueError(f"train config validation_classes {outside} are not seen classes; validation "
                                 f"classes are held out of the seen classes {list(self.seen_classes)}")
            if len(self.validation_classes) >= len(self.seen_classes):
                raise ValueError(f"train config validation_classes holds out all {len(self.seen_classes)} seen "
                                 "classes; at least one must stay in training")

    def _build_model_config(self) -> AlignZegConfig:
        """``preset`` with ``model_overrides``; a bad override raises here, naming the key."""
        try:
            preset_info(self.preset)
        except ValueError as err:
            raise ValueError(f"train config preset: {err}") from err
        overrides = self.model_overrides
        unknown = unknown_fields(AlignZegConfig, dict(overrides), "train config model_overrides")
        if unknown:
            known = sorted(f.name for f in dataclasses.fields(AlignZegConfig))
            raise ValueError(f"train config model_overrides has unknown keys {unknown}; the model config "
                             f"(AlignZegConfig) fields are {known}")
        for key in overrides:
            if key in _NOT_OVERRIDDEN:
                raise ValueError(f"train config model_overrides cannot set {key!r}: {_NOT_OVERRIDDEN[key]}")
        try:
            return get_preset_config(self.preset, **overrides)
        except (TypeError, ValueError) as err:
            raise type(err)(f"train config model_overrides (preset {self.preset!r}): {err}") from err

    @functools.cached_property  # writes the instance __dict__ directly, so it works on a frozen dataclass
    def model_config(self) -> AlignZegConfig:
        """The untrained model's config: ``preset`` with ``model_overrides``, built (and so checked) when this
        config was made. The ``Trainer`` builds its model from it (when no model is given) and then records
        ``seen_classes``, ``indicator_trained`` and the CLIP weights' ``clip_pretrained``."""
        return self._build_model_config()

    # Serialisation -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (``model_overrides`` and ``data`` as dicts, pairs and ``seen_classes`` as lists)."""
        return fields_to_dict(self)

    def to_json(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        unknown = unknown_fields(cls, data, "train config")
        if unknown:
            known = sorted(f.name for f in dataclasses.fields(cls))
            raise ValueError(f"train config has unknown keys {unknown}; known keys are {known}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _parse_value(text: str) -> Any:
    """JSON when it parses (numbers, booleans, null, lists), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(config: TrainConfig, assignments: Sequence[str]) -> TrainConfig:
    """Apply ``key=value`` strings (``--set`` on the command line) to a config (see ``assign_fields``).

    Raises:
        ValueError: an assignment without ``=`` or with an unknown key; TypeError/ValueError: a bad value.
    """
    return TrainConfig.from_dict(assign_fields(config.to_dict(), assignments))


def assign_fields(data: dict[str, Any], assignments: Sequence[str]) -> dict[str, Any]:
    """``data`` (``TrainConfig`` fields, not necessarily all) with ``key=value`` strings applied.

    Values are read as JSON when they parse (``lr=1e-4``, ``reg=false``, ``crop_scale=[0.5,1.5]``), else as
    strings. ``model_overrides.num_queries=50`` sets one architecture override, ``data.label_dir=...`` one
    dataset option. Nothing is checked but the keys: ``TrainConfig`` checks the values when it is made.

    Raises:
        ValueError: an assignment without ``=`` or with an unknown key.
    """
    data = dict(data)
    known = sorted(f.name for f in dataclasses.fields(TrainConfig))
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        prefix, dot, sub = key.partition(".")
        if dot and prefix in ("model_overrides", "data"):
            if not sub:
                raise ValueError(f"--set {item!r} names no {prefix} key")
            data[prefix] = {**(data.get(prefix) or {}), sub: _parse_value(value)}
        elif key in known:
            data[key] = _parse_value(value)
        else:
            raise ValueError(f"unknown train config key {key!r} in --set {item!r}; known keys are {known}")
    return data
