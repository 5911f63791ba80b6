"""AlignZegModel: the network of the paper's figure 2, wiring the boxes together.

images -> CLIPBackbone (frozen, deep prompts) -> ProposalExtractor (MRPE, with the learnable encoder)
-> ProposalClassifier (GEPC, grounded in CLIP's patch features under each mask) + ClassIndicator.
Bias correction and semantic-map assembly are post-processing (``semantic_map``), not part of ``forward``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import AlignZegConfig
from ..hub import CLIP_PREFIX
from .class_indicator import ClassIndicator
from .clip_backbone import CLIPBackbone
from .gepc import ProposalClassifier
from .mrpe import ProposalExtractor

__all__ = ["AlignZegModel", "AlignZegOutput"]


@dataclass
class AlignZegOutput:
    """Raw model outputs for a batch of B images, N proposals, C classes.

    Attributes:
        mask_logits: (B, N, h, w) float, the last layer's mask logits (h = H / mask_stride).
        class_logits: (B, N, C + 1) float, last column background.
        embeddings: (B, N, E) float, L2-normalised proposal embeddings.
        unseen_logits: (B, N) float, class-indicator logits (sigmoid: probability of an unseen class).
        aux: per earlier decoder layer, (mask_logits, class_logits) for deep supervision; empty in eval.
    """

    mask_logits: torch.Tensor
    class_logits: torch.Tensor
    embeddings: torch.Tensor
    unseen_logits: torch.Tensor
    aux: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


class AlignZegModel(nn.Module):
    """The AlignZeg network. Holds the CLIP normalisation as buffers; ``.device`` follows them.

    Args:
        config: architecture config.
    """

    def __init__(self, config: AlignZegConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = CLIPBackbone(config)
        self.extractor = ProposalExtractor(config)
        self.classifier = ProposalClassifier(config)
        self.indicator = ClassIndicator(config)
        self.register_buffer("pixel_mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> normalised with the CLIP mean/std."""
        return (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype)

    def forward(self, images: torch.Tensor, class_embeddings: torch.Tensor,
                deep_supervision: bool | None = None) -> AlignZegOutput:
        """Proposals and their scores.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1]; H and W multiples of the patch size.
            class_embeddings: (C, E) float, L2-normalised class prototypes.
            deep_supervision: return every decoder layer's outputs in ``aux``; defaults to ``self.training``.

        Returns:
            AlignZegOutput.
        """
        if deep_supervision is None:
            deep_supervision = self.training
        x = self.normalize(images)
        features = self.backbone.encode_image_dense(x)
        proposals = self.extractor(features.patches, x, all_layers=deep_supervision)
        patches = features.patches
        embeddings, class_logits = self.classifier(proposals.queries[-1], class_embeddings, patches,
                                                   proposals.mask_logits[-1])
        aux = []
        if deep_supervision:
            for queries, masks in zip(proposals.queries[:-1], proposals.mask_logits[:-1]):
                aux.append((masks, self.classifier(queries, class_embeddings, patches, masks)[1]))
        return AlignZegOutput(
            mask_logits=proposals.mask_logits[-1],
            class_logits=class_logits,
            embeddings=embeddings,
            unseen_logits=self.indicator(embeddings),
            aux=aux,
        )

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter outside the frozen CLIP (``backbone.clip.*``): heads, decoder, and the deep prompts."""
        return [p for n, p in self.named_parameters() if not n.startswith(CLIP_PREFIX)]
