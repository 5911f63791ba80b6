"""Named training recipes (``alignzeg-train --recipe NAME``): the paper-family settings per benchmark.

Every recipe: the benchmark's standard seen/unseen split (inductive), crops of the preset's input size
(512 for ViT-B/16, 518 for ViT-L/14), global batch 16, OpenAI CLIP weights, every λ at the
``TrainConfig`` defaults, and the optimisation of ZegCLIP's configs (``configs/voc12/vpt_seg_zero_*``:
AdamW with an effective lr of 2e-4 for the trained parts, weight decay 0.01 but none on norms, poly
schedule with power 0.9 after a 1,500-iteration linear warm-up), plus what ZegCLIP's mmseg pipeline and
Mask2Former add: photometric distortion (mmseg's ``PhotoMetricDistortion``), the matching class cost
``-p`` and gradient clipping at a global norm of 0.01 (Mask2Former's ``full_model`` clipping; ZegCLIP's
configs do not clip). No weight decay on embeddings, prompts, prototypes and the logit scale either
(``alignzeg.train.optim``). 80k iterations on COCO-Stuff, 20k on VOC, 40k on PASCAL Context. Deep visual
prompts: 10 tokens per layer on VOC, 100 on COCO-Stuff (ZegCLIP's), 50 on Context (our choice).

VOC recipes read the 10,582-image augmented training set when ``VOC2012/SegmentationClassAug`` exists
(``data={"label_dir": "auto"}``; see ``datasets.voc_augmented_pairs`` for the two layouts), else VOC's own
1,464 images (a warning says so).
"""

from __future__ import annotations

from typing import Any

from .config import TrainConfig

__all__ = ["RECIPES", "list_recipes", "get_recipe"]

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
_BACKBONES = {"vitb16": "vitb16", "vitl14": "vitl14"}

RECIPES: dict[str, dict[str, Any]] = {
    f"{data}-{backbone}": dict(_COMMON, preset=preset, dataset=data, iterations=iters,
                               model_overrides={"num_queries": 100, "clip_prompt_tokens": _PROMPTS[data]},
                               data=dict(_DATA.get(data, {})))
    for data, iters in _BENCHMARKS.items() for backbone, preset in _BACKBONES.items()
}


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def get_recipe(name: str) -> TrainConfig:
    """The ``TrainConfig`` of recipe ``name``."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; available recipes: {', '.join(list_recipes())}")
    return TrainConfig.from_dict(dict(RECIPES[name]))
