"""``AlignZegSegmenter``: the front door. Load a model once, segment many images with any vocabulary.

    seg = AlignZegSegmenter.from_pretrained("org/name")       # or a local folder
    result = seg.segment("street.jpg", ["road", "tree", "car"])
    result.label_map, result.scores, result.overlay()

Class prototypes of a vocabulary are computed once and cached; every call is otherwise stateless, so one
segmenter can serve several threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import AlignZegConfig
from . import __version__
from .clip_weights import CLIP_PREFIX, clip_state_from_model, load_clip_weights, normalize_clip_pretrained
from .hub import (
    WeightsError, clip_fingerprint, load_state_dict_strict, read_weights, resolve_checkpoint, save_checkpoint,
)
from .modeling.model import AlignZegModel
from .modeling.semantic_map import semantic_probabilities, upsample_labels
from .modeling.text_encoder import VocabularyEncoder, class_name_key, validate_class_names
from .preprocess import LoadedImage, load_image, load_images
from .presets import get_preset_config, preset_info
from .result import SegmentationResult
from .sliding_window import cut_windows, plan_windows, stitch_windows

logger = logging.getLogger(__name__)

__all__ = ["AlignZegSegmenter", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks CUDA when available, else the CPU. A CUDA request without CUDA raises ``ValueError``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid device {device!r}: {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use device='cpu'")
    return device


_UNTRAINED_INDICATOR = ("this model's class indicator was never trained (config.indicator_trained is False), "
                        "so its unseen scores are arbitrary and PBC could suppress every seen class")


def _check_fingerprint(config: AlignZegConfig, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse CLIP tensors whose SHA-256 differs from ``config.clip_fingerprint`` (when one is recorded)."""
    if not config.clip_fingerprint:
        return
    found = clip_fingerprint(state, CLIP_PREFIX)
    if found != config.clip_fingerprint:
        raise WeightsError(
            f"CLIP weights from {what} have fingerprint {found}, but this checkpoint's heads were trained "
            f"with CLIP weights of fingerprint {config.clip_fingerprint} (config.json clip_fingerprint, "
            f"clip_pretrained={config.clip_pretrained!r}). Pass the CLIP weights it was trained with."
        )


def _saved_dtype(state: Mapping[str, torch.Tensor]) -> torch.dtype:
    """The floating dtype a checkpoint was saved in (float32 when mixed or none)."""
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def _slim_clip_state(config: AlignZegConfig, state: Mapping[str, torch.Tensor], override: Any,
                     cache_dir: str | None, local_files_only: bool) -> dict[str, torch.Tensor]:
    """Fetch a slim checkpoint's CLIP tensors (prefixed, in the checkpoint's dtype) and check their fingerprint."""
    recorded = override is None or override is True  # True: the source config.json records
    source = config.clip_pretrained if recorded else normalize_clip_pretrained(override)
    if not source:
        raise WeightsError("the checkpoint holds no CLIP weights (slim) and config.json names no clip_pretrained "
                           "source; pass clip_pretrained='<open_clip tag | hf-hub:org/name | path>'")
    weights = load_clip_weights(config, source, cache_dir=cache_dir, local_files_only=local_files_only)
    clip_state = clip_state_from_model(weights, _saved_dtype(state))
    if not config.clip_fingerprint:
        logger.warning("slim checkpoint records no clip_fingerprint: cannot check the CLIP weights %s", source)
    _check_fingerprint(config, clip_state, repr(weights.source))
    return clip_state


def _build_model(config: AlignZegConfig, seed: int | None) -> AlignZegModel:
    """A randomly initialised model; with ``seed`` reproducible, and the global RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return AlignZegModel(config)


def _card_extra(extra: Mapping[str, Any], recipe: Any, metrics: Any) -> dict[str, Any]:
    """``config.extra`` with ``recipe`` and ``metrics`` recorded (validated: they go into JSON and YAML)."""
    extra = dict(extra)
    if recipe is not None:
        if not isinstance(recipe, (str, Mapping)):
            raise TypeError(f"recipe must be a recipe name or a mapping of its settings, got {type(recipe).__name__}")
        extra["recipe"] = recipe if isinstance(recipe, str) else dict(recipe)
    if metrics is not None:
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must map metric names to numbers, got {type(metrics).__name__}")
        bad = {k: v for k, v in metrics.items()
               if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float))}
        if bad:
            raise ValueError(f"metrics must map names to numbers; offending entries: {bad}")
        extra["metrics"] = {k: float(v) for k, v in metrics.items()}
    return extra


class AlignZegSegmenter:
    """Zero-shot semantic segmentation with an AlignZeg model.

    Args:
        model: the network (its config travels with it).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA when available.
        dtype: weight dtype; ``None`` keeps float32. On CUDA, inference runs under bf16 autocast
            (fp16 where bf16 is unsupported) unless ``autocast=False``.
        batch_size: crops per forward pass.
        autocast: use mixed precision on CUDA.
        progress: show a progress bar over crops.
    """

    def __init__(self, model: AlignZegModel, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, batch_size: int = 8, autocast: bool = True,
                 progress: bool = False) -> None:
        if not isinstance(model, AlignZegModel):
            raise TypeError(f"model must be an AlignZegModel, got {type(model).__name__}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if dtype is not None and dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32, float16 or bfloat16, got {dtype}")
        self.device = resolve_device(device)
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.batch_size = batch_size
        self.autocast = autocast
        self.progress = progress
        self.vocabulary = VocabularyEncoder(self.model.backbone, self.config.templates)

    # Construction ------------------------------------------------------------------------------------
    @property
    def config(self) -> AlignZegConfig:
        return self.model.config

    @classmethod
    def from_config(cls, config: AlignZegConfig, seed: int | None = None, **kwargs: Any) -> "AlignZegSegmenter":
        """A randomly initialised (untrained) segmenter of ``config``; ``seed`` makes the weights reproducible."""
        return cls(_build_model(config, seed), **kwargs)

    @classmethod
    def from_preset(cls, name: str, seen_classes: Sequence[str] | None = None, seed: int | None = None,
                    config_overrides: dict[str, Any] | None = None, clip_pretrained: bool | str | os.PathLike = False,
                    cache_dir: str | None = None, local_files_only: bool = False,
                    **kwargs: Any) -> "AlignZegSegmenter":
        """An UNTRAINED segmenter of preset ``name`` (see ``alignzeg.list_models()``), the start of training.

        Its decoder, heads and prototypes are random: use it for tests, timing and as the start of
        training, not for real segmentation. ``seen_classes`` records the classes it will be trained on
        (they drive bias correction).

        Args:
            clip_pretrained: the frozen CLIP's weights. ``False`` (default): random init. ``True``: the
                preset's own weights (``openai`` for ``vitb16``/``vitl14``; ``tiny`` has none). A string:
                an open_clip tag of the preset's architecture (``"laion2b_s34b_b88k"``), ``"hf-hub:org/name"``
                (an open_clip repo) or a local weights file. The ViT position embedding is interpolated
                to the preset's input grid and the source is recorded in ``config.clip_pretrained``.
            cache_dir: huggingface_hub cache folder for the CLIP download (default: its own).
            local_files_only: never touch the network for the CLIP weights (``HF_HUB_OFFLINE=1`` does the same).

        Raises:
            ValueError: unknown preset, unknown CLIP tag (the valid ones are listed), missing file.
            WeightsError: CLIP weights not cached while offline (the message says what to download),
                unreadable, or of another architecture.
        """
        overrides = dict(config_overrides or {})
        if seen_classes is not None:
            overrides["seen_classes"] = validate_class_names(seen_classes)
        config = get_preset_config(name, **overrides)
        source = normalize_clip_pretrained(clip_pretrained, preset_info(name).clip_tag, name)
        if source is None:
            return cls.from_config(config, seed=seed, **kwargs)
        weights = load_clip_weights(config, source, cache_dir=cache_dir, local_files_only=local_files_only)
        config = weights.apply_to(config)
        model = _build_model(config, seed)
        model.backbone.clip.load_state_dict(weights.state, strict=True)
        logger.info("loaded CLIP weights %s into preset %s", weights.source, name)
        return cls(model, **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, revision: str | None = None,
                        device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                        cache_dir: str | None = None, local_files_only: bool = False, allow_pickle: bool = False,
                        clip_pretrained: str | os.PathLike | None = None, **kwargs: Any) -> "AlignZegSegmenter":
        """Load trained weights from a local folder or a Hugging Face Hub repo.

        A slim checkpoint (saved with ``include_clip=False``) holds no CLIP tensor: its CLIP weights are
        fetched from ``config.clip_pretrained`` (or ``clip_pretrained``) and must hash to the recorded
        ``config.clip_fingerprint``.

        Args:
            name_or_path: a folder written by ``save_pretrained`` or a Hub repo id (``"org/name"``).
            revision: Hub branch, tag or commit.
            cache_dir: Hub cache folder (default: huggingface_hub's).
            local_files_only: never touch the network (``HF_HUB_OFFLINE=1`` does the same).
            allow_pickle: accept a ``.bin``/``.pt`` pickle when no safetensors file exists
                (read with ``torch.load(weights_only=True)``).
            clip_pretrained: for slim checkpoints only, where to take the CLIP weights from instead of
                the recorded source (an open_clip tag, ``"hf-hub:org/name"`` or a local file).

        Raises:
            WeightsError: the checkpoint is missing, not cached offline, damaged, does not match, or its
                CLIP weights' fingerprint differs from the recorded one.
        """
        config_path, weights_path = resolve_checkpoint(name_or_path, revision, cache_dir, local_files_only,
                                                       allow_pickle)
        config = AlignZegConfig.from_json(config_path)
        state = read_weights(weights_path)
        if any(k.startswith(CLIP_PREFIX) for k in state):
            if clip_pretrained is not None:
                raise ValueError(f"{str(name_or_path)!r} is a full checkpoint with its own CLIP weights; "
                                 "clip_pretrained= is only for slim checkpoints (saved with include_clip=False)")
            _check_fingerprint(config, state, "model.safetensors of " + repr(str(name_or_path)))
        else:
            state = {**state, **_slim_clip_state(config, state, clip_pretrained, cache_dir, local_files_only)}
        model = AlignZegModel(config)
        load_state_dict_strict(model, state)
        return cls(model, device=device, dtype=dtype, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike, include_clip: bool = True,
                        recipe: str | Mapping[str, Any] | None = None,
                        metrics: Mapping[str, float] | None = None) -> str:
        """Write ``config.json``, ``model.safetensors`` (in the model's dtype) and a model card ``README.md``.

        Args:
            directory: the folder (created if needed).
            include_clip: ``True`` (default): a self-contained checkpoint. ``False``: a slim one without
                the frozen CLIP tensors (``from_pretrained`` fetches them by ``config.clip_pretrained``).
            recipe: the training recipe (a name or a mapping), recorded in ``config.extra`` and the card.
            metrics: evaluation numbers (e.g. ``{"hIoU": 45.1, "mIoU_unseen": 40.2}``), likewise.

        Returns:
            The folder, as a string. ``config.json`` records ``clip_fingerprint`` either way.

        Raises:
            ValueError: ``include_clip=False`` for a CLIP that cannot be fetched again (random init).
        """
        state = self.model.state_dict()
        config = self.config.replace(clip_fingerprint=clip_fingerprint(state, CLIP_PREFIX),
                                     extra=_card_extra(self.config.extra, recipe, metrics))
        if not include_clip:
            if not config.clip_pretrained:
                raise ValueError("include_clip=False needs CLIP weights that can be fetched again, but this model's "
                                 "config.clip_pretrained is None (random init); save it with include_clip=True")
            state = {k: v for k, v in state.items() if not k.startswith(CLIP_PREFIX)}
        return str(save_checkpoint(directory, config, state))

    def push_to_hub(self, repo_id: str, private: bool = False, revision: str | None = None,
                    commit_message: str = "Upload AlignZeg model", token: str | bool | None = None,
                    include_clip: bool = True, recipe: str | Mapping[str, Any] | None = None,
                    metrics: Mapping[str, float] | None = None, create_pr: bool = False) -> Any:
        """Upload ``save_pretrained``'s folder to a Hugging Face Hub model repo (created if needed).

        Args:
            repo_id: ``"user/name"`` or ``"org/name"``.
            private: create the repo private (an existing repo keeps its visibility).
            revision: branch to commit to (created from the default branch if missing); ``None``: main.
            commit_message: the commit's message.
            token: Hub token; ``None`` uses the logged-in one (``hf auth login``) or ``HF_TOKEN``.
            include_clip, recipe, metrics: as in ``save_pretrained`` (the card shows recipe and metrics).
            create_pr: open a pull request instead of committing directly.

        Returns:
            huggingface_hub's ``CommitInfo`` of the upload.
        """
        from huggingface_hub import HfApi

        if not isinstance(repo_id, str) or repo_id.count("/") != 1:
            raise ValueError(f"repo_id must look like 'user/name', got {repo_id!r}")
        _card_extra(self.config.extra, recipe, metrics)  # bad recipe/metrics fail before the repo is created
        api = HfApi(token=token, library_name="alignzeg", library_version=__version__)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory(prefix="alignzeg-push-") as folder:
            self.save_pretrained(folder, include_clip=include_clip, recipe=recipe, metrics=metrics)
            info = api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", revision=revision,
                                     commit_message=commit_message, create_pr=create_pr)
        logger.info("uploaded %s to %s", "slim checkpoint" if not include_clip else "checkpoint", repo_id)
        return info

    # Vocabulary --------------------------------------------------------------------------------------
    def encode_vocabulary(self, names: Sequence[str], templates: Sequence[str] | None = None) -> torch.Tensor:
        """Class prototypes, (C, E) float32 L2-normalised on ``self.device``; cached per vocabulary."""
        return self.vocabulary(names, templates)

    def _vocabulary(self, vocabulary: Any, class_names: Sequence[str] | None,
                    seen: Sequence[Any] | None) -> tuple[torch.Tensor, tuple[str, ...], torch.Tensor]:
        if isinstance(vocabulary, (torch.Tensor, np.ndarray)):
            embeddings = self._check_embeddings(torch.as_tensor(vocabulary))
            num = embeddings.shape[0]
            names = tuple(f"class_{i}" for i in range(num)) if class_names is None else validate_class_names(class_names)
            if len(names) != num:
                raise ValueError(f"class_names has {len(names)} names for {num} embeddings")
            default_seen = [False] * num
        else:
            if class_names is not None:
                raise ValueError("class_names is only for precomputed embeddings; the vocabulary already names them")
            names = validate_class_names(vocabulary)
            embeddings = self.encode_vocabulary(names)
            trained = {class_name_key(n) for n in self.config.seen_classes}
            default_seen = [class_name_key(n) in trained for n in names]
        seen_mask = default_seen if seen is None else self._seen_mask(seen, names)
        return embeddings, names, torch.tensor(seen_mask, dtype=torch.bool)

    def _check_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        dim = self.config.embed_dim
        if embeddings.dim() != 2 or embeddings.shape[1] != dim or embeddings.shape[0] < 1:
            raise ValueError(f"class embeddings must have shape (C, {dim}) with C >= 1, got {tuple(embeddings.shape)}")
        if not embeddings.is_floating_point():
            raise TypeError(f"class embeddings must be floating point, got {embeddings.dtype}")
        embeddings = embeddings.detach().float()
        if not torch.isfinite(embeddings).all():
            raise ValueError("class embeddings contain NaN or infinite values")
        norms = embeddings.norm(dim=1)
        if (norms == 0).any():
            raise ValueError(f"class embedding rows {norms.eq(0).nonzero().flatten().tolist()} are all zeros")
        return torch.nn.functional.normalize(embeddings, dim=1).to(self.device)

    @staticmethod
    def _seen_mask(seen: Sequence[Any], names: tuple[str, ...]) -> list[bool]:
        seen = list(seen)
        if all(isinstance(s, (bool, np.bool_)) for s in seen) and seen:
            if len(seen) != len(names):
                raise ValueError(f"seen has {len(seen)} flags for {len(names)} classes")
            return [bool(s) for s in seen]
        if not all(isinstance(s, str) for s in seen):
            raise TypeError("seen must be a list of class names or a list of booleans, one per class")
        keys = {class_name_key(n) for n in names}
        unknown = [s for s in seen if class_name_key(s) not in keys]
        if unknown:
            raise ValueError(f"seen names {unknown} are not in the vocabulary {list(names)}")
        wanted = {class_name_key(s) for s in seen}
        return [class_name_key(n) in wanted for n in names]

    # Inference ---------------------------------------------------------------------------------------
    def _resolve_bias_correction(self, bias_correction: bool | None, seen_mask: torch.Tensor) -> bool:
        """Whether PBC runs: ``None`` (auto) means "if the class indicator was trained".

        Auto on a model whose ``config.indicator_trained`` is False turns PBC off, with a warning when the
        vocabulary mixes seen and unseen classes (otherwise PBC would be the identity anyway).

        Raises:
            TypeError: ``bias_correction`` is not None or a bool.
            ValueError: ``bias_correction=True`` on a model whose indicator was not trained.
        """
        if bias_correction is not None and not isinstance(bias_correction, (bool, np.bool_)):
            raise TypeError(f"bias_correction must be True, False or None (auto), got {bias_correction!r}")
        trained = self.config.indicator_trained
        if bias_correction is None:
            if not trained and bool(seen_mask.any()) and not bool(seen_mask.all()):
                warnings.warn(_UNTRAINED_INDICATOR + "; bias correction (PBC) is off for this call. Pass "
                              "bias_correction=False to silence this.", UserWarning, stacklevel=3)
            return trained
        if bias_correction and not trained:
            raise ValueError("bias_correction=True needs a trained class indicator: " + _UNTRAINED_INDICATOR
                             + ". Leave bias_correction=None (auto) or pass False.")
        return bool(bias_correction)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type != "cuda" or not self.autocast:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def predict_torch(self, crops: torch.Tensor, class_embeddings: torch.Tensor, seen_mask: torch.Tensor,
                      bias_correction: bool | None = None) -> torch.Tensor:
        """The torch twin of ``segment`` for ready-made crops.

        Args:
            crops: (B, 3, S, S) float RGB in [0, 1], S = ``config.input_size``, on any device.
            class_embeddings: (C, E) float, L2-normalised.
            seen_mask: (C,) bool.
            bias_correction: apply PBC; ``None`` (auto): when ``config.indicator_trained``, as in ``segment``.

        Returns:
            (B, C + 1, S / mask_stride, S / mask_stride) float32 probabilities (channel C: background).
        """
        cfg = self.config
        bias_correction = self._resolve_bias_correction(bias_correction, seen_mask)
        weight_dtype = next(self.model.extractor.parameters()).dtype
        with torch.inference_mode(), self._autocast():
            out = self.model(crops.to(self.device, weight_dtype), class_embeddings.to(self.device, weight_dtype),
                             deep_supervision=False)
            return semantic_probabilities(out.class_logits, out.mask_logits, out.unseen_logits, seen_mask,
                                          bias_correction, cfg.pbc_threshold, cfg.seen_score_offset)

    def _run(self, images: list[LoadedImage], embeddings: torch.Tensor, seen_mask: torch.Tensor,
             bias_correction: bool) -> list[torch.Tensor]:
        """Low-resolution probability maps (C + 1, h, w) of each image's resized frame."""
        fill = torch.tensor(self.config.mean)
        plans = [plan_windows(img.size, self.config) for img in images]
        crops = torch.cat([cut_windows(img.pixels, plan, fill) for img, plan in zip(images, plans)])
        outputs = []
        starts = range(0, crops.shape[0], self.batch_size)
        for start in tqdm(starts, disable=not self.progress, desc="alignzeg", unit="batch"):
            batch = crops[start:start + self.batch_size]
            outputs.append(self.predict_torch(batch, embeddings, seen_mask, bias_correction).cpu())
        probs = torch.cat(outputs)
        maps, offset = [], 0
        for plan in plans:
            maps.append(stitch_windows(probs[offset:offset + len(plan.origins)], plan))
            offset += len(plan.origins)
        return maps

    def segment_batch(self, images: Sequence[Any], vocabulary: Any, *, seen: Sequence[Any] | None = None,
                      bias_correction: bool | None = None, unlabelled_threshold: float | None = None,
                      class_names: Sequence[str] | None = None, keep_image: bool = True) -> list[SegmentationResult]:
        """Segment several images with one vocabulary; all their crops share forward passes.

        Args: as ``segment``; ``images`` is a list of inputs (a BCHW tensor counts as B images).

        Returns:
            One ``SegmentationResult`` per image, in input order.
        """
        if unlabelled_threshold is not None and not 0.0 <= float(unlabelled_threshold) <= 1.0:
            raise ValueError(f"unlabelled_threshold must be in [0, 1] or None, got {unlabelled_threshold!r}")
        embeddings, names, seen_mask = self._vocabulary(vocabulary, class_names, seen)
        loaded = load_images(images)
        bias_correction = self._resolve_bias_correction(bias_correction, seen_mask)
        maps = self._run(loaded, embeddings, seen_mask, bias_correction)
        results = []
        for img, probs in zip(loaded, maps):
            labels, confidence = upsample_labels(probs, img.size, unlabelled_threshold)
            results.append(SegmentationResult(
                label_map=labels.numpy(), scores=confidence.numpy(), class_names=names,
                class_probs=probs.numpy(), seen=seen_mask.numpy(), bias_correction=bias_correction,
                image=img.to_uint8() if keep_image else None,
            ))
        return results

    def segment(self, image: Any, vocabulary: Any, *, seen: Sequence[Any] | None = None,
                bias_correction: bool | None = None, unlabelled_threshold: float | None = None,
                class_names: Sequence[str] | None = None, keep_image: bool = True) -> SegmentationResult:
        """Segment one image.

        Args:
            image: path, PIL image, HWC numpy array (uint8/uint16/float in [0, 1]) or CHW tensor in [0, 1].
            vocabulary: class names (order kept; duplicates are refused), or precomputed class embeddings
                (C, E) as a tensor/array (then ``class_names`` may name them).
            seen: which vocabulary entries are seen (training) classes for bias correction, as names or
                one bool per class; default: the names in the checkpoint's ``config.seen_classes``
                (none for embeddings).
            bias_correction: apply Proposal-based Bias Correction (PBC). ``None`` (default, auto): on when
                the checkpoint's class indicator was trained (``config.indicator_trained``), else off with a
                warning (when the vocabulary mixes seen and unseen classes). ``True`` on a model whose
                indicator was not trained raises ``ValueError``. The result's ``bias_correction`` says
                whether PBC was applied.
            unlabelled_threshold: pixels whose best class probability is below this get -1; ``None``
                (default) labels every pixel.
            keep_image: keep a uint8 copy of the image in the result, for ``overlay()``.

        Returns:
            SegmentationResult with ``label_map`` (H, W) int32 at the input's size.
        """
        loaded = load_image(image)
        if len(loaded) != 1:
            raise ValueError(f"segment takes one image, got a batch of {len(loaded)}: use segment_batch")
        return self.segment_batch([loaded[0]], vocabulary, seen=seen, bias_correction=bias_correction,
                                  unlabelled_threshold=unlabelled_threshold, class_names=class_names,
                                  keep_image=keep_image)[0]

    def __repr__(self) -> str:
        cfg = self.config
        return (f"AlignZegSegmenter(clip={cfg.clip_model!r}, input_size={cfg.input_size}, "
                f"queries={cfg.num_queries}, seen_classes={len(cfg.seen_classes)}, device={str(self.device)!r})")


__all__ += ["WeightsError"]
