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
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ._version import __version__
from .checkpoint import build_model, card_extra, load_model, save_model
from .clip_weights import normalize_clip_pretrained
from .config import AlignZegConfig
from .device import autocast_dtype, resolve_device
from .errors import WeightsError
from .modeling.model import AlignZegModel, AlignZegOutput
from .modeling.semantic_map import output_probabilities, upsample_labels
from .modeling.text_encoder import VocabularyEncoder
from .pipeline.images import MAX_PIXELS, ImageInput
from .pipeline.options import check_bool
from .pipeline.segment import SegmentPipeline, check_batch_size, check_max_pixels
from .pipeline.vocabulary import Vocabulary, validate_class_names
from .torch_resize import resize_pixels
from .presets import get_preset_config, preset_info

logger = logging.getLogger(__name__)

__all__ = ["AlignZegSegmenter", "ImageInput", "Vocabulary", "WeightsError", "resolve_device"]

class AlignZegSegmenter(SegmentPipeline):
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
            (default ``alignzeg.pipeline.images.MAX_PIXELS``, 100 MP); ``None``: no limit.

    ``segment``, ``segment_batch`` and ``segment_iter`` come from ``alignzeg.pipeline.segment.SegmentPipeline``
    (shared with the ONNX Runtime back-end); this class adds the text tower and the PyTorch forward.
    """

    def __init__(self, model: AlignZegModel, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, batch_size: int = 8, autocast: bool = True,
                 progress: bool = False, max_pixels: int | None = MAX_PIXELS) -> None:
        if not isinstance(model, AlignZegModel):
            raise TypeError(f"model must be an AlignZegModel, got {type(model).__name__}")
        check_batch_size(batch_size)
        check_max_pixels(max_pixels)
        if dtype is not None and dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32, float16 or bfloat16, got {dtype}")
        self.device = resolve_device(device)
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.batch_size = batch_size
        self.autocast = bool(check_bool("autocast", autocast))
        self.progress = bool(check_bool("progress", progress))
        self.max_pixels = max_pixels
        self.array_module = torch  # crops and maps stay tensors from _resize to _upsample_labels
        self.vocabulary = VocabularyEncoder(self.model.backbone, self.config.templates,
                                            progress=lambda: self.progress)

    # Construction ------------------------------------------------------------------------------------
    @property
    def config(self) -> AlignZegConfig:  # type: ignore[override]  # the model's own config, not a copy
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
        model = build_model(config, seed, clip_pretrained=source, cache_dir=cache_dir,
                            local_files_only=local_files_only)
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

    # The back-end contract (SegmentPipeline's abstract methods) --------------------------------------
    def _encode_names(self, names: tuple[str, ...]) -> np.ndarray:
        return self.vocabulary.cached(names).float().cpu().numpy()  # read-only use of the cache: no copy on CPU

    def _embeddings(self, embeddings: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(embeddings).to(self.device)

    def _native_array(self, value: object) -> np.ndarray | None:
        if not isinstance(value, torch.Tensor):
            return None
        tensor = value.detach().cpu()
        return (tensor.float() if tensor.is_floating_point() else tensor).numpy()

    def _resize(self, pixels: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        # the image's one numpy -> torch crossing (a view on the CPU: no copy). torch's antialiased bilinear on
        # the CPU (it uses the intra-op threads; PIL's is single-threaded): 2 threads, 512x512 -> 64x64 0.7 vs
        # 1.6 ms, 1080x1920 -> 512x912 6.2 vs 17.6 ms (docs/performance.md)
        tensor = torch.from_numpy(pixels)
        return tensor if tuple(tensor.shape[1:]) == tuple(size) else resize_pixels(tensor, size)

    def _predict(self, crops: torch.Tensor, embeddings: torch.Tensor, seen: np.ndarray,
                 bias_correction: bool) -> torch.Tensor:
        return self._forward(crops, embeddings, torch.from_numpy(seen), bias_correction).float().cpu()

    def _upsample_labels(self, probs: torch.Tensor, size: tuple[int, int],
                         threshold: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # torch's banded upsample, measured faster than the numpy one where many classes stay candidates
        # (untrained or uncertain maps: 2.2x on the tiny preset with 171 classes; docs/performance.md); then the
        # image's one torch -> numpy crossing (views on the CPU)
        labels, confidence = upsample_labels(probs.contiguous(), size, threshold)
        return probs.numpy(), labels.numpy(), confidence.numpy()

    # Inference ---------------------------------------------------------------------------------------
    def autocast_context(self) -> contextlib.AbstractContextManager:
        """The mixed precision ``segment`` runs the network under: bf16/fp16 autocast on CUDA when ``autocast``
        is on, else none."""
        if self.device.type != "cuda" or not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=autocast_dtype())

    def predict_torch(self, crops: torch.Tensor, class_embeddings: torch.Tensor, seen_mask: torch.Tensor,
                      bias_correction: bool | None = None) -> torch.Tensor:
        """The torch twin of ``segment`` for ready-made crops.

        Args:
            crops: (B, 3, S, S) float RGB in [0, 1], S = ``config.input_size``, on any device.
            class_embeddings: (C, E) float, L2-normalised.
            seen_mask: (C,) bool (tensor or array).
            bias_correction: apply the bias correction; ``None`` (auto): when ``config.indicator_trained`` or a
                seen-score offset, as in ``segment``.

        Returns:
            (B, C + 1, S / mask_stride, S / mask_stride) float32 probabilities (channel C: background).
        """
        seen_mask = torch.as_tensor(seen_mask, dtype=torch.bool)
        decided = self._resolve_bias_correction(bias_correction, seen_mask.tolist())
        return self._forward(crops, class_embeddings, seen_mask, decided)

    def model_outputs(self, crops: torch.Tensor, class_embeddings: torch.Tensor,
                      seen_mask: torch.Tensor) -> AlignZegOutput:
        """The network's raw outputs on ready-made crops, run as ``segment`` runs it (on ``self.device``, in the
        weights' dtype, under ``autocast_context()`` and inference mode), before any post-processing: what
        ``predict_torch`` turns into probabilities and the calibration grid caches.

        Args:
            crops: (B, 3, S, S) float RGB in [0, 1], S = ``config.input_size``, on any device.
            class_embeddings: (C, E) float, L2-normalised, on any device.
            seen_mask: (C,) bool tensor, on any device.

        Returns:
            ``AlignZegOutput`` (B images, N proposals, C classes) on the device, in the autocast or weight dtype.
        """
        weight_dtype = next(self.model.extractor.parameters()).dtype
        with torch.inference_mode(), self.autocast_context():
            return self.model(crops.to(self.device, weight_dtype), class_embeddings.to(self.device, weight_dtype),
                              deep_supervision=False, seen_mask=seen_mask.to(self.device))

    def _forward(self, crops: torch.Tensor, class_embeddings: torch.Tensor, seen_mask: torch.Tensor,
                 bias_correction: bool) -> torch.Tensor:
        """``predict_torch`` with the bias correction already decided: (B, C + 1, h, w) float32 on the device."""
        seen_mask = seen_mask.to(self.device)
        out = self.model_outputs(crops, class_embeddings, seen_mask)
        with torch.inference_mode(), self.autocast_context():  # the post-processing under the same precision
            return output_probabilities(out, seen_mask, self.config, bias_correction)

    def export_onnx(self, path: str | os.PathLike, **kwargs: Any) -> str:
        """Write the image path as one ONNX graph for onnxruntime (dynamic batch and class count).

        A thin wrapper over ``alignzeg.onnx.export.export_onnx`` (see it and docs/onnx.md for
        ``opset``, ``vocabulary`` and ``int8``); run the file with ``alignzeg.onnx.OnnxSegmenter``.

        Returns:
            The path written.
        """
        from .onnx.export import export_onnx

        return export_onnx(self, path, **kwargs)

    def __repr__(self) -> str:
        cfg = self.config
        return (f"AlignZegSegmenter(clip={cfg.clip_model!r}, input_size={cfg.input_size}, "
                f"queries={cfg.num_queries}, seen_classes={len(cfg.seen_classes)}, device={str(self.device)!r})")

