"""Contrastive pre-training of a mini-CLIP on an attribute world: image-level captions of ALL classes, no masks.

Real zero-shot segmentation transfers to unseen classes because CLIP saw them in web image-text pairs.
This module gives the attribute world (``alignzeg.worlds.attributes``) the same: the ``tiny`` preset's CLIP
(image and text towers, open_clip's BPE tokenizer) is trained from scratch with the symmetric contrastive
loss on captioned images of every class, seen and unseen alike:

- most images show one texture, captioned with one of ``CAPTION_TEMPLATES`` ("a photo of a red striped.");
- with probability ``multi_prob`` an image holds 2-3 Voronoi cells of different classes, captioned with all
  of them ("a photo of a red striped and a blue dotted."): image-level text, never a mask;
- with probability ``closeup_prob`` (before the two above) an image is a *close-up*: one class's texture filling
  the frame (the world's ``closeup``), as web photos often show an object close up. The object world needs
  them: its objects cover 6-25 % of an image, and without close-ups the mini-CLIP learns the colours but
  confuses four of the six patterns (46.6 % zero-shot top-1).

Captions naming the same set of classes are positives of each other (a batch of 96 over 48 classes repeats
classes): the targets of the contrastive loss are spread evenly over them.

    clip = pretrain_clip(world, MiniClipConfig(steps=600, seed=0))  # open_clip.CLIP, ~2 min on 2 cores
    clip = pretrain_clip(my_pairs, MiniClipConfig(steps=600))  # any source: my_pairs(rng, batch_size)
    save_clip(clip, "clip.safetensors")        # loads with from_preset("tiny", clip_pretrained=<file>)
    zero_shot_accuracy(clip, world, 480)       # {"all": 0.97..., "unseen": ...}

The source of (image, caption) pairs can be any callable ``source(rng, batch_size)`` returning
``(images, captions)`` or ``(images, captions, keys)``: images a (B, 3, S, S) float tensor in [0, 1]
(square, any side S the tiny CLIP's 8-pixel patches divide), B caption strings, and optionally B hashable
keys (pairs with equal keys are positives of each other; default: equal captions). ``world_captions``
makes such a source of an attribute world with your own caption templates.

Everything is a function of ``seed``: the initialisation (``torch.manual_seed`` inside a forked RNG), the
images and captions (numpy generators keyed by ``(seed, step)``). The global RNGs are left untouched.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence, TypeGuard

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..config import AlignZegConfig, check_field_types, file_mode
from .attributes import World, keyed_rng, voronoi_labels
from ..modeling.clip_backbone import CLIPBackbone
from ..modeling.text_encoder import VocabularyEncoder
from ..presets import get_preset_config
from ..progress import advance, progress_bar

__all__ = ["CAPTION_TEMPLATES", "MiniClipConfig", "pretrain_clip", "save_clip", "zero_shot_accuracy",
           "render_captioned_batch", "world_captions", "CaptionSource"]

CaptionSource = Callable[[np.random.Generator, int], tuple]
"""``source(rng, batch_size) -> (images (B, 3, S, S) float in [0, 1], captions, [keys])``."""

logger = logging.getLogger(__name__)

CAPTION_TEMPLATES = ("a photo of a {}.", "there is a {} in the scene.", "a {} texture.", "a {} pattern.")
"""Caption templates of pre-training; the first two are the ``tiny`` preset's prompt templates."""


@dataclass(frozen=True)
class MiniClipConfig:
    """Settings of the contrastive pre-training.

    Attributes:
        steps: optimizer steps.
        batch_size: image-caption pairs per step.
        lr: AdamW peak learning rate (linear warm-up over ``warmup`` steps, then cosine to 0).
        weight_decay: AdamW weight decay.
        warmup: warm-up steps.
        multi_prob: probability that an image holds 2-3 textures (captioned with all of them).
        closeup_prob: probability that an image is a close-up of one class (``world.closeup``), drawn first;
            0 (the default) draws no extra random number, so files made before this setting are reproduced.
        seed: seeds the initialisation, the images and the captions.
        progress: show a tqdm bar.
    """

    steps: int = 600
    batch_size: int = 96
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 50
    multi_prob: float = 0.3
    closeup_prob: float = 0.0
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        check_field_types(self, "mini-CLIP config")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"mini-CLIP {name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("multi_prob", "closeup_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"mini-CLIP {name} must be in [0, 1], got {getattr(self, name)!r}")


def _caption(names: list[str], template: str) -> str:
    return template.format(" and a ".join(names))


def render_captioned_batch(world: World, size: int, multi_prob: float, rng: np.random.Generator,
                           templates: Sequence[str] = CAPTION_TEMPLATES, closeup_prob: float = 0.0
                           ) -> tuple[torch.Tensor, list[str], list[frozenset]]:
    """A batch of captioned images drawn from ALL classes (seen and unseen); captions use ``templates``
    (each with one ``{}`` for the class names). With probability ``closeup_prob`` an image is
    ``world.closeup`` of one class.

    Returns:
        images (B, 3, S, S) float32 in [0, 1], captions (B strings), and the set of class ids each
        caption names (captions with equal sets are positives of each other).
    """
    s = world.config.image_size
    images, captions, keys = [], [], []
    for _ in range(size):
        if closeup_prob and rng.random() < closeup_prob:
            classes = rng.choice(world.num_classes, 1)
            images.append(world.closeup(rng, int(classes[0])))
        else:
            count = int(rng.integers(2, 4)) if rng.random() < multi_prob else 1
            classes = rng.choice(world.num_classes, count, replace=False)
            cells = (voronoi_labels(rng.uniform(0, s, (count, 2)), s) if count > 1
                     else np.zeros((s, s), dtype=np.int64))
            images.append(world.render(rng, classes, cells))
        template = templates[int(rng.integers(len(templates)))]
        captions.append(_caption([world.class_names[c] for c in classes], template))
        keys.append(frozenset(int(c) for c in classes))
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return batch, captions, keys


def world_captions(world: World, templates: Sequence[str] = CAPTION_TEMPLATES,
                   multi_prob: float = 0.3, closeup_prob: float = 0.0) -> CaptionSource:
    """A caption source of ``world`` for ``pretrain_clip``: ``render_captioned_batch`` with ``templates``.

    Raises:
        ValueError: no templates, a template without exactly one ``{}``, or a probability outside [0, 1].
    """
    templates = tuple(templates)
    if not templates or any(not isinstance(t, str) or t.count("{}") != 1 for t in templates):
        raise ValueError(f"caption templates must be strings with one '{{}}' each, got {templates!r}")
    for name, value in (("multi_prob", multi_prob), ("closeup_prob", closeup_prob)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return lambda rng, size: render_captioned_batch(world, size, multi_prob, rng, templates, closeup_prob)


def _tiny_config(world: World) -> AlignZegConfig:
    return _tiny_config_for(world.config.image_size)


def _tiny_config_for(image_size: int) -> AlignZegConfig:
    return get_preset_config("tiny", input_size=image_size, window_stride=min(48, image_size))


def _check_batch(batch: Any, size: int) -> tuple[torch.Tensor, list[str], list[Hashable]]:
    """A source's batch as (images, captions, keys), or ``ValueError``/``TypeError`` saying what is wrong."""
    if not isinstance(batch, tuple) or len(batch) not in (2, 3):
        raise TypeError(f"a caption source must return (images, captions) or (images, captions, keys), got "
                        f"{type(batch).__name__}")
    images, captions = batch[0], list(batch[1])
    keys = list(batch[2]) if len(batch) == 3 and batch[2] is not None else captions
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.dim() != 4 \
            or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"caption source images must be a (B, 3, S, S) float tensor, got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    if not len(images) == len(captions) == len(keys) == size or not all(isinstance(c, str) for c in captions):
        raise ValueError(f"a caption source asked for {size} pairs returned {len(images)} images, "
                         f"{len(captions)} captions and {len(keys)} keys (captions must be strings)")
    return images, captions, keys


def _lr(config: MiniClipConfig, step: int) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor,
                      keys: list[Hashable]) -> torch.Tensor:
    """Symmetric InfoNCE with multi-positive targets (pairs naming the same class set)."""
    logits = scale * image_emb @ text_emb.t()
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    ids = torch.tensor([index[k] for k in keys])
    same = (ids[:, None] == ids[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    return 0.5 * (torch.sum(-targets * F.log_softmax(logits, 1), 1).mean()
                  + torch.sum(-targets * F.log_softmax(logits.t(), 1), 1).mean())


def _is_world(source: object) -> TypeGuard[World]:
    """Whether ``source`` is a world (attribute, object, ...) rather than a caption source: it has the
    world's ``render`` and ``class_names``."""
    return hasattr(source, "render") and hasattr(source, "class_names")


def pretrain_clip(source: World | CaptionSource, config: MiniClipConfig | None = None,
                  templates: Sequence[str] | None = None) -> torch.nn.Module:
    """Train the ``tiny`` preset's CLIP contrastively on (image, caption) pairs.

    Args:
        source: a world, ``AttributeWorld`` or ``ObjectWorld`` (captioned images of all its classes,
            ``world_captions``), or any caption source ``source(rng, batch_size)`` (see the module
            docstring); the image side S of its first batch sets the CLIP's input size.
        config: steps, batch size, learning rate, seed...
        templates: caption templates for a world source (default ``CAPTION_TEMPLATES``); a callable
            source writes its own captions.

    Returns:
        The trained ``open_clip.CLIP`` (float32, CPU, eval mode); its state dict is what ``save_clip`` writes.

    Raises:
        ValueError / TypeError: a source whose batches are not (B, 3, S, S) images with B captions, or
            templates given with a callable source.
    """
    config = config or MiniClipConfig()
    if _is_world(source):
        source = world_captions(source, CAPTION_TEMPLATES if templates is None else templates, config.multi_prob,
                                config.closeup_prob)
    elif not callable(source):
        raise TypeError(f"source must be a world (class_names, render) or a callable source(rng, batch_size), "
                        f"got {type(source).__name__}")
    elif templates is not None:
        raise ValueError("templates apply to a world source; a callable source writes its own captions")
    first = _check_batch(source(keyed_rng(config.seed, "clip", 0), config.batch_size), config.batch_size)
    model_config = _tiny_config_for(int(first[0].shape[-1]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        backbone = CLIPBackbone(model_config)
    clip: Any = backbone.clip.requires_grad_(True)  # open_clip's CLIP (untyped)
    mean = torch.tensor(model_config.mean).view(1, 3, 1, 1)
    std = torch.tensor(model_config.std).view(1, 3, 1, 1)
    decay = [p for n, p in clip.named_parameters() if p.dim() >= 2 and "embedding" not in n]
    rest = [p for n, p in clip.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=config.lr, foreach=True)
    with progress_bar(config.steps, disable=not config.progress, desc="mini-CLIP") as bar:
        for step in range(config.steps):
            images, captions, keys = first if step == 0 else _check_batch(
                source(keyed_rng(config.seed, "clip", step), config.batch_size), config.batch_size)
            for group in optimizer.param_groups:
                group["lr"] = _lr(config, step)
            image_emb = clip.encode_image((images - mean) / std, normalize=True)
            text_emb = backbone.encode_text(backbone.tokenize(captions))
            loss = _contrastive_loss(image_emb, text_emb, clip.logit_scale.exp().clamp(max=100), keys)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
            if step % 50 == 0 or step == config.steps - 1:
                logger.info("mini-CLIP step %d/%d loss %.4f", step + 1, config.steps, value)
            advance(bar)
    return clip.requires_grad_(False).eval()


def save_clip(clip: torch.nn.Module, path: str | os.PathLike, dtype: torch.dtype = torch.float16) -> Path:
    """Write ``clip``'s open_clip state dict as safetensors (floating tensors in ``dtype``).

    The file loads through ``AlignZegSegmenter.from_preset("tiny", clip_pretrained=path)``. float16 (the
    default) halves the file; models trained on top of the file see exactly its values.
    """
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in clip.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    os.chmod(path, file_mode())  # save_file creates the file 0600
    return path


@torch.no_grad()
def zero_shot_accuracy(clip: torch.nn.Module, world: World, num_images: int, seed: int = 12345,
                       templates: tuple[str, ...] | None = None) -> dict[str, float]:
    """Zero-shot top-1 over all classes on fresh single-texture images (class ``i % C`` for image i).

    Class prototypes are the prompt ensemble of ``templates`` (default: the tiny preset's), computed the
    way the segmenter computes them (``VocabularyEncoder``).

    Returns:
        ``{"all": accuracy over every image, "unseen": over images of unseen classes, "seen": ...}``.
    """
    model_config = _tiny_config(world)
    backbone = CLIPBackbone(model_config)
    backbone.clip.load_state_dict(clip.state_dict())
    prototypes = VocabularyEncoder(backbone, templates or model_config.templates)(list(world.class_names))
    rng = keyed_rng(seed, "zero-shot")
    s = world.config.image_size
    labels = np.arange(num_images) % world.num_classes
    cells = np.zeros((s, s), dtype=np.int64)
    images = torch.from_numpy(np.stack([world.render(rng, [int(c)], cells) for c in labels])).permute(0, 3, 1, 2)
    mean = torch.tensor(model_config.mean).view(1, 3, 1, 1)
    std = torch.tensor(model_config.std).view(1, 3, 1, 1)
    clip_model: Any = backbone.clip  # open_clip's CLIP (untyped)
    emb = clip_model.encode_image((images - mean) / std, normalize=True)
    correct = (emb @ prototypes.t()).argmax(1).numpy() == labels
    unseen = ~world.seen[labels]
    return {"all": float(correct.mean()), "unseen": float(correct[unseen].mean()) if unseen.any() else float("nan"),
            "seen": float(correct[~unseen].mean())}
