"""Text vocabulary encoder: class names -> class prototypes (prompt ensemble), with a bounded cache.

Each name is put into every prompt template, encoded by the frozen CLIP text tower, the template
embeddings are averaged and the mean is L2-normalised: one prototype per class, in the user's order.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..errors import AlignZegWarning
from ..pipeline.vocabulary import class_name_key, validate_class_names
from .clip_backbone import CLIPBackbone

logger = logging.getLogger(__name__)

__all__ = ["VocabularyEncoder", "validate_class_names", "class_name_key"]


class VocabularyEncoder:
    """Encodes vocabularies with a prompt ensemble and caches the result (LRU, thread-safe).

    Args:
        backbone: the frozen CLIP backbone whose text tower is used.
        templates: prompt templates, each with one ``{}``.
        max_cache: number of vocabularies kept (least recently used dropped first).
        batch_size: prompts encoded per text-tower forward.
        progress: called before each encoding; when it returns True, a vocabulary of more than one
            batch of prompts shows a tqdm progress bar.
    """

    def __init__(self, backbone: CLIPBackbone, templates: Sequence[str], max_cache: int = 32,
                 batch_size: int = 256, progress: Callable[[], bool] | None = None) -> None:
        self.backbone = backbone
        self.templates = tuple(templates)
        self.max_cache = max_cache
        self.batch_size = batch_size
        self.progress = progress or (lambda: False)
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, names: Sequence[str], templates: Sequence[str] | None = None) -> torch.Tensor:
        """Class prototypes for ``names``.

        Returns:
            (C, E) float32 on the backbone's device, rows L2-normalised, row i for ``names[i]``: a copy
            of the cached tensor, so the caller may edit it without changing later results.
        """
        return self.cached(names, templates).clone()

    def cached(self, names: Sequence[str], templates: Sequence[str] | None = None) -> torch.Tensor:
        """``__call__`` without the copy: the tensor shared with the cache, for callers that only read it."""
        templates = self.templates if templates is None else tuple(templates)
        device = str(next(self.backbone.parameters()).device)
        names = validate_class_names(names)  # remembered per vocabulary (pipeline.vocabulary.parse_vocabulary)
        key = (names, templates, device)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            embeddings = self._encode(names, templates)
            self._cache[key] = embeddings
            while len(self._cache) > self.max_cache:
                self._cache.popitem(last=False)
        return embeddings

    def cache_clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def cache_size(self) -> int:
        return len(self._cache)

    def _warn_long(self, names: tuple[str, ...], templates: tuple[str, ...]) -> None:
        limit = self.backbone.context_length
        longest = max(templates, key=len)
        lengths = self.backbone.token_lengths([longest.format(n) for n in names])
        too_long = [n for n, length in zip(names, lengths) if length > limit]
        if too_long:
            warnings.warn(
                f"{len(too_long)} class name(s) exceed the text encoder's context of {limit} tokens once put "
                f"in a prompt and are truncated to it: {too_long[:3]}{'...' if len(too_long) > 3 else ''}",
                AlignZegWarning, stacklevel=4,
            )

    @torch.no_grad()  # not inference_mode: training uses these prototypes in autograd graphs
    def _encode(self, names: tuple[str, ...], templates: tuple[str, ...]) -> torch.Tensor:
        self._warn_long(names, templates)
        prompts = [t.format(n) for n in names for t in templates]  # class-major: (C * T)
        device = next(self.backbone.parameters()).device
        chunks = []
        starts = range(0, len(prompts), self.batch_size)
        show = len(starts) > 1 and bool(self.progress())
        for start in tqdm(starts, disable=not show, desc="alignzeg text", unit="batch"):
            tokens = self.backbone.tokenize(prompts[start:start + self.batch_size]).to(device)
            chunks.append(self.backbone.encode_text(tokens).float())
        per_prompt = torch.cat(chunks).view(len(names), len(templates), -1)
        prototypes = torch.nn.functional.normalize(per_prompt.mean(dim=1), dim=-1)
        logger.debug("encoded %d classes x %d templates", len(names), len(templates))
        return prototypes.clone()
