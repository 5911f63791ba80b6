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
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..config import unknown_fields, write_json

__all__ = ["TrainConfig", "apply_overrides"]

_SCHEDULES = ("poly", "cosine", "constant")
_MASK_LOSSES = ("bce", "focal")
_CLASS_COSTS = ("prob", "logprob")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings.

    Attributes:
        preset: model preset name (``alignzeg.list_models()``), used when no model is given to the trainer.
        model_overrides: ``AlignZegConfig`` fields to change in the preset (``num_queries``,
            ``mutual_refinement``, ``num_bg_prototypes``, ``side_encoder``...).
        clip_pretrained: the frozen CLIP's weights for a model built from the preset, passed to
            ``AlignZegSegmenter.from_preset(clip_pretrained=...)``: an open_clip tag (``"openai"``),
            ``"hf-hub:org/name"`` or a local file; ``None`` keeps the random initialisation (tests, timing).
        dataset: dataset name for the CLI (``voc``, ``coco-stuff``, ``context``, ``folder``); unused from Python.
        seen_classes: the training classes; ``None`` takes the dataset's ``seen_classes``.
        inductive: unseen names and pixels are never used in training (only inductive training is implemented).
        iterations: optimizer steps.
        batch_size: images per optimizer step over all processes and accumulation steps.
        grad_accum: micro-batches accumulated per optimizer step.
        lr / weight_decay: AdamW settings (over ``model.trainable_parameters()`` only).
        schedule: ``poly`` (power ``poly_power``), ``cosine`` or ``constant``, after ``warmup_iters`` linear warm-up.
        grad_clip: max norm of the gradient of all trainable parameters together (one global L2 norm, as
            Mask2Former clips the full model); ``None`` disables clipping.
        no_decay: weight decay is 0 for norms, biases, embeddings (query / position), prompt tokens,
            background prototypes and the logit scale (``alignzeg.train.optim.parameter_groups``); ``False``
            decays every trainable parameter (the old behaviour).
        amp: mixed precision on CUDA (bf16 where supported, else fp16 with a gradient scaler). Ignored on CPU.
        lambda_*: loss weights (see the module docstring).
        mask_loss: ``bce`` or ``focal`` (sigmoid focal, alpha 0.25, gamma 2) mask term; dice is always added.
        eos_coef: classification weight of proposals matched to nothing (trained toward background).
        deep_supervision: add matching + L_ce + L_mask of every earlier decoder layer.
        cost_class / cost_mask / cost_dice: matching cost weights (also the per-class loss used to rank
            proposals for negative selection).
        synthetic_features: GEPC's feature expansion (L_vir on mixed embeddings).
        num_synthetic: synthetic features per micro-batch.
        mixup_alpha: mixing weights are drawn from Beta(alpha, alpha).
        negative_proposals: GEPC's background diversity (negative proposals trained toward background).
        negative_topk: K of the top-K-by-loss ranking per seen class.
        negative_weight: classification weight of a negative proposal (instead of ``eos_coef``).
        class_indicator: train the class indicator (L_bc).
        reg: add L_reg.
        crop_scale: range of the random resize factor before the crop (relative to ``input_size``).
        flip: random horizontal flips.
        photometric: mmsegmentation's ``PhotoMetricDistortion`` (random brightness, contrast, saturation, hue;
            ``alignzeg.train.data.PhotoMetricDistortion``), seeded per sample like the crop.
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
    """

    preset: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    clip_pretrained: str | None = None
    dataset: str | None = None
    seen_classes: tuple[str, ...] | None = None
    inductive: bool = True
    iterations: int = 1000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 2e-4
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
    synthetic_features: bool = True
    num_synthetic: int = 16
    mixup_alpha: float = 2.0
    negative_proposals: bool = True
    negative_topk: int = 5
    negative_weight: float = 1.0
    class_indicator: bool = True
    indicator_angle: tuple[float, float] = (0.0, 0.0)
    indicator_holdout: tuple[float, float] = (0.1, 0.2)
    vir_target: str = "soft"
    reg: bool = True
    crop_scale: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    photometric: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    num_workers: int = 0
    seed: int = 0
    log_every: int = 20
    checkpoint_every: int = 1000
    progress: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        if self.seen_classes is not None:
            object.__setattr__(self, "seen_classes", tuple(self.seen_classes))
        object.__setattr__(self, "crop_scale", tuple(float(v) for v in self.crop_scale))
        object.__setattr__(self, "indicator_angle", tuple(float(v) for v in self.indicator_angle))
        object.__setattr__(self, "indicator_holdout", tuple(float(v) for v in self.indicator_holdout))
        if not isinstance(self.model_overrides, dict) or not isinstance(self.data, dict):
            raise TypeError(f"train config model_overrides and data must be dicts, got "
                            f"{type(self.model_overrides).__name__} and {type(self.data).__name__}")
        object.__setattr__(self, "model_overrides", dict(self.model_overrides))
        object.__setattr__(self, "data", dict(self.data))
        self._validate()

    def _validate(self) -> None:
        for name in ("iterations", "batch_size", "grad_accum", "negative_topk", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"train config {name} must be a positive integer, got {value!r}")
        for name in ("warmup_iters", "checkpoint_every", "num_workers", "num_synthetic", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"train config {name} must be a non-negative integer, got {value!r}")
        for name in ("lr", "weight_decay", "eos_coef", "negative_weight", "poly_power", "cost_class",
                     "cost_mask", "cost_dice") + tuple(f.name for f in dataclasses.fields(self)
                                                      if f.name.startswith("lambda_")):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"train config {name} must be a number >= 0, got {value!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"train config schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
        if self.mask_loss not in _MASK_LOSSES:
            raise ValueError(f"train config mask_loss must be one of {_MASK_LOSSES}, got {self.mask_loss!r}")
        if self.class_cost not in _CLASS_COSTS:
            raise ValueError(f"train config class_cost must be one of {_CLASS_COSTS}, got {self.class_cost!r}")
        lo, hi = self.indicator_angle if len(self.indicator_angle) == 2 else (1.0, 0.0)
        if not 0.0 <= lo <= hi <= 90.0:
            raise ValueError(f"train config indicator_angle must be (low, high) degrees with 0 <= low <= high <= 90, "
                             f"got {self.indicator_angle}")
        lo, hi = self.indicator_holdout if len(self.indicator_holdout) == 2 else (1.0, 0.0)
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"train config indicator_holdout must be (low, high) fractions with 0 < low <= high < 1, "
                             f"got {self.indicator_holdout}")
        if self.vir_target not in ("soft", "extra"):
            raise ValueError(f"train config vir_target must be 'soft' or 'extra', got {self.vir_target!r}")
        if self.mixup_alpha <= 0:
            raise ValueError(f"train config mixup_alpha must be > 0, got {self.mixup_alpha!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"train config grad_clip must be > 0 or None, got {self.grad_clip!r}")
        lo, hi = self.crop_scale if len(self.crop_scale) == 2 else (0.0, -1.0)
        if not 0 < lo <= hi:
            raise ValueError(f"train config crop_scale must be (low, high) with 0 < low <= high, got {self.crop_scale}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        if not self.inductive:
            raise ValueError("only inductive training (inductive=True) is implemented")

    # Serialisation -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["crop_scale"] = list(self.crop_scale)
        data["indicator_angle"] = list(self.indicator_angle)
        data["indicator_holdout"] = list(self.indicator_holdout)
        if self.seen_classes is not None:
            data["seen_classes"] = list(self.seen_classes)
        return data

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
    """Apply ``key=value`` strings (``--set`` on the command line) to a config.

    Values are read as JSON when they parse (``lr=1e-4``, ``reg=false``, ``crop_scale=[0.5,1.5]``), else as
    strings. ``model_overrides.num_queries=50`` sets one architecture override, ``data.label_dir=...`` one
    dataset option.

    Raises:
        ValueError: an assignment without ``=`` or with an unknown key.
    """
    data = config.to_dict()
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        prefix, dot, sub = key.partition(".")
        if dot and prefix in ("model_overrides", "data"):
            if not sub:
                raise ValueError(f"--set {item!r} names no {prefix} key")
            data[prefix] = {**data[prefix], sub: _parse_value(value)}
        elif key in data:
            data[key] = _parse_value(value)
        else:
            raise ValueError(f"unknown train config key {key!r} in --set {item!r}; known keys are {sorted(data)}")
    return TrainConfig.from_dict(data)
