"""``AlignZegSegmenter``: the front door. Load a model once, segment many images with any vocabulary.

    seg = AlignZegSegmenter.from_pretrained("org/name")       # or a local folder
    result = seg.segment("street.jpg", ["road", "tree", "car"])
    result.label_map, result.scores, result.overlay()

Class prototypes of a vocabulary are computed once and cached; every call is otherwise stateless, so one
segmenter can serve several threads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import contextlib
import logging
import os
import tempfile
from numbers import Real
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from ._version import __version__
from .checkpoint import build_model, card_extra, load_model, save_model
from .clip_weights import load_clip_weights, normalize_clip_pretrained
from .config import AlignZegConfig
from .device import autocast_dtype, resolve_device
from .errors import WeightsError
from .modeling.model import AlignZegModel
from .modeling.semantic_map import output_probabilities, upsample_labels
from .modeling.text_encoder import VocabularyEncoder, class_name_key, validate_class_names
from .names import resolve_bias_correction, seen_flags
from .preprocess import MAX_PIXELS, ImageInput, LoadedImage, load_image, load_images
from .presets import get_preset_config, preset_info
from .result import SegmentationResult
from .sliding_window import cut_windows, plan_windows, stitch_windows
from .streaming import ImageError, segment_iter

logger = logging.getLogger(__name__)

__all__ = ["AlignZegSegmenter", "ImageInput", "Vocabulary", "WeightsError", "resolve_device"]

Vocabulary = Union[Sequence[str], torch.Tensor, np.ndarray]
"""A vocabulary: class names (a list or tuple, in label order), or precomputed (C, E) class embeddings."""


def _check_bool(name: str, value: Any, allow_none: bool = False) -> bool | None:
    if allow_none and value is None:
        return None
    if not isinstance(value, (bool, np.bool_)):
        what = "True, False or None (auto)" if allow_none else "True or False"
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}")
    return bool(value)



def _check_threshold(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise TypeError(f"unlabelled_threshold must be a number in [0, 1] or None, got {type(value).__name__} {value!r}")
    if not 0.0 <= float(value) <= 1.0:  # NaN fails too
        raise ValueError(f"unlabelled_threshold must be in [0, 1] or None, got {value!r}")
    return float(value)


class AlignZegSegmenter:
    """Zero-shot semantic segmentation with an AlignZeg model.

    Args:
        model: the network (its config travels with it).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA when available.
        dtype: weight dtype; ``None`` keeps float32. On CUDA, inference runs under bf16 autocast
            (fp16 where bf16 is unsupported) unless ``autocast=False``.
        batch_size: crops per forward pass.
        autocast: use mixed precision on CUDA.
        progress: show progress bars over crops and over the text encoding of large vocabularies.
        max_pixels: image files and PIL images with more pixels are refused before decoding
            (default ``alignzeg.preprocess.MAX_PIXELS``, 100 MP); ``None``: no limit.
    """

    def __init__(self, model: AlignZegModel, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, batch_size: int = 8, autocast: bool = True,
                 progress: bool = False, max_pixels: int | None = MAX_PIXELS) -> None:
        if not isinstance(model, AlignZegModel):
            raise TypeError(f"model must be an AlignZegModel, got {type(model).__name__}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if max_pixels is not None and (not isinstance(max_pixels, int) or isinstance(max_pixels, bool)
                                       or max_pixels < 1):
            raise ValueError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
        if dtype is not None and dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32, float16 or bfloat16, got {dtype}")
        self.device = resolve_device(device)
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.batch_size = batch_size
        self.autocast = _check_bool("autocast", autocast)
        self.progress = _check_bool("progress", progress)
        self.max_pixels = max_pixels
        self.vocabulary = VocabularyEncoder(self.model.backbone, self.config.templates,
                                            progress=lambda: self.progress)

    # Construction ------------------------------------------------------------------------------------
    @property
    def config(self) -> AlignZegConfig:
        return self.model.config

    @classmethod
    def from_config(cls, config: AlignZegConfig, seed: int | None = None, **kwargs: Any) -> "AlignZegSegmenter":
        """A randomly initialised (untrained) segmenter of ``config``; ``seed`` makes the weights reproducible."""
        return cls(build_model(config, seed), **kwargs)

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
        if config_overrides is not None and not isinstance(config_overrides, Mapping):
            raise TypeError(f"config_overrides must be a mapping of config fields, got {type(config_overrides).__name__}")
        overrides = dict(config_overrides or {})
        if seen_classes is not None:
            overrides["seen_classes"] = validate_class_names(seen_classes)
        config = get_preset_config(name, **overrides)
        source = normalize_clip_pretrained(clip_pretrained, preset_info(name).clip_tag, name)
        if source is None:
            return cls.from_config(config, seed=seed, **kwargs)
        weights = load_clip_weights(config, source, cache_dir=cache_dir, local_files_only=local_files_only)
        config = weights.apply_to(config)
        model = build_model(config, seed)
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
            WeightsError: the checkpoint is missing, not cached offline, damaged, holds NaN/inf tensors
                (named), does not match, its config.json has a problem (the message names the file and the
                key), or its CLIP weights' fingerprint differs from the recorded one. An unreachable Hub
                (name resolution, refused connection) fails at once; see ``alignzeg.hub.HUB_CONNECT_TIMEOUT``.
            ValueError: a URL (download it first).
        """
        model = load_model(name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                           allow_pickle=allow_pickle, clip_pretrained=clip_pretrained)
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
        return str(save_model(self.model, directory, include_clip=include_clip, recipe=recipe, metrics=metrics))

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
        card_extra(self.config.extra, recipe, metrics)  # bad recipe/metrics fail before the repo is created
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
        """Class prototypes, (C, E) float32 L2-normalised on ``self.device``; cached per vocabulary.

        Returns a new tensor on every call (a copy of the cached one): editing it changes no later result.
        """
        return self.vocabulary(names, templates)

    def _vocabulary(self, vocabulary: Vocabulary, class_names: Sequence[str] | None,
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
            embeddings = self.vocabulary.cached(names)  # read-only use: no copy
            trained = {class_name_key(n) for n in self.config.seen_classes}
            default_seen = [class_name_key(n) in trained for n in names]
        seen_mask = default_seen if seen is None else seen_flags(seen, names)
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

    def segment_iter(self, images: Iterable[Any], vocabulary: Any, *, prefetch: int = 4, workers: int = 2,
                     on_error: str = "raise", **options: Any) -> Iterator[SegmentationResult | ImageError]:
        """Segment a stream of images lazily, in input order, decoding the next ones on background threads.

        Memory stays bounded (``prefetch`` decoded images wait at most). ``on_error="return"`` yields an
        ``alignzeg.streaming.ImageError`` for an image that cannot be read or decoded instead of raising.
        ``options``: those of ``segment``. See ``alignzeg.streaming.segment_iter``.
        """
        return segment_iter(self, images, vocabulary, prefetch=prefetch, workers=workers, on_error=on_error,
                            **options)

    # Inference ---------------------------------------------------------------------------------------
    def _resolve_bias_correction(self, bias_correction: bool | None, seen_mask: torch.Tensor) -> bool:
        """Whether PBC runs (``alignzeg.names.resolve_bias_correction``: ``None`` = if the indicator was trained)."""
        return resolve_bias_correction(bias_correction, self.config.indicator_trained, seen_mask.tolist(),
                                       stacklevel=4)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type != "cuda" or not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=autocast_dtype())

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
            seen_mask = seen_mask.to(self.device)
            out = self.model(crops.to(self.device, weight_dtype), class_embeddings.to(self.device, weight_dtype),
                             deep_supervision=False, seen_mask=seen_mask)
            return output_probabilities(out, seen_mask, cfg, bias_correction)

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

    def _segment(self, images: list[LoadedImage], vocabulary: Vocabulary, seen: Sequence[Any] | None,
                 bias_correction: Any, unlabelled_threshold: Any, class_names: Sequence[str] | None,
                 keep_image: Any) -> list[SegmentationResult]:
        """``segment_batch`` on decoded images: options validated first, then one run over all crops."""
        bias_correction = _check_bool("bias_correction", bias_correction, allow_none=True)
        keep_image = _check_bool("keep_image", keep_image)
        threshold = _check_threshold(unlabelled_threshold)
        embeddings, names, seen_mask = self._vocabulary(vocabulary, class_names, seen)
        bias_correction = self._resolve_bias_correction(bias_correction, seen_mask)
        maps = self._run(images, embeddings, seen_mask, bias_correction)
        results = []
        for img, probs in zip(images, maps):
            labels, confidence = upsample_labels(probs, img.size, threshold)
            results.append(SegmentationResult(
                label_map=labels.numpy(), scores=confidence.numpy(), class_names=names,
                class_probs=probs.numpy(), seen=seen_mask.numpy(), bias_correction=bias_correction,
                image=img.to_uint8() if keep_image else None,
            ))
        return results

    def segment_batch(self, images: Sequence[ImageInput], vocabulary: Vocabulary, *,
                      seen: Sequence[str] | Sequence[bool] | None = None, bias_correction: bool | None = None,
                      unlabelled_threshold: float | None = None, class_names: Sequence[str] | None = None,
                      keep_image: bool = True) -> list[SegmentationResult]:
        """Segment several images with one vocabulary; all their crops share forward passes.

        Args: as ``segment``; ``images`` is a list of inputs (a BCHW tensor counts as B images).

        Returns:
            One ``SegmentationResult`` per image, in input order.
        """
        return self._segment(load_images(images, self.max_pixels), vocabulary, seen, bias_correction,
                             unlabelled_threshold, class_names, keep_image)

    def segment(self, image: ImageInput, vocabulary: Vocabulary, *,
                seen: Sequence[str] | Sequence[bool] | None = None, bias_correction: bool | None = None,
                unlabelled_threshold: float | None = None, class_names: Sequence[str] | None = None,
                keep_image: bool = True) -> SegmentationResult:
        """Segment one image.

        Args:
            image: path, PIL image, HWC numpy array (uint8/uint16/float in [0, 1]) or CHW tensor in [0, 1].
                Files and PIL images above ``max_pixels`` are refused before decoding; a URL or a folder
                is refused with a message that says so.
            vocabulary: class names as a list or tuple (order kept and used as label indices; duplicates,
                empty names, sets, dicts, generators and a bare string are refused), or precomputed class
                embeddings (C, E) as a tensor/array (then ``class_names`` may name them).
            seen: which vocabulary entries are seen (training) classes for bias correction, as names or
                one bool per class; default: the names in the checkpoint's ``config.seen_classes``
                (none for embeddings).
            bias_correction: apply Proposal-based Bias Correction (PBC). ``None`` (default, auto): on when
                the checkpoint's class indicator was trained (``config.indicator_trained``), else off with a
                warning (when the vocabulary mixes seen and unseen classes). ``True`` on a model whose
                indicator was not trained raises ``ValueError``. The result's ``bias_correction`` says
                whether PBC was applied.
            unlabelled_threshold: pixels whose best class probability is below this number in [0, 1] get
                -1; ``None`` (default) labels every pixel.
            keep_image: keep a uint8 copy of the image in the result, for ``overlay()``; must be a bool.

        Returns:
            SegmentationResult with ``label_map`` (H, W) int32 at the input's size.

        Raises:
            TypeError: an option of the wrong type (the message names it and the value).
            ValueError: an option out of range, a bad vocabulary, or an image that cannot be used.
        """
        loaded = load_image(image, self.max_pixels)  # decoded once, here
        if len(loaded) != 1:
            raise ValueError(f"segment takes one image, got a batch of {len(loaded)}: use segment_batch")
        return self._segment(loaded, vocabulary, seen, bias_correction, unlabelled_threshold, class_names,
                             keep_image)[0]

    def export_onnx(self, path: str | os.PathLike, **kwargs: Any) -> str:
        """Write the image path as one ONNX graph for onnxruntime (dynamic batch and class count).

        A thin wrapper over ``alignzeg.onnx.export.export_onnx`` (see it and docs/onnx.md for
        ``opset``, ``vocabulary``, ``seen`` and ``dynamo``); run the file with ``alignzeg.onnx.OnnxSegmenter``.

        Returns:
            The path written.
        """
        from .onnx.export import export_onnx

        return export_onnx(self, path, **kwargs)

    def __repr__(self) -> str:
        cfg = self.config
        return (f"AlignZegSegmenter(clip={cfg.clip_model!r}, input_size={cfg.input_size}, "
                f"queries={cfg.num_queries}, seen_classes={len(cfg.seen_classes)}, device={str(self.device)!r})")

