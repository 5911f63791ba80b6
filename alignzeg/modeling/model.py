"""AlignZegModel: the network of the paper's figure 2, wiring the boxes together.

images -> CLIPBackbone (frozen, deep prompts) -> ProposalExtractor (MRPE, with the learnable encoder)
-> ProposalClassifier (GEPC, grounded in CLIP's patch features under each mask) + ClassIndicator;
with ``clip_readout`` each proposal is also read out of the frozen CLIP (``clip_readout``).
Bias correction and semantic-map assembly are post-processing (``semantic_map``), not part of ``forward``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import AlignZegConfig
from .class_indicator import ClassIndicator, profile_features
from .clip_backbone import CLIPBackbone
from .gepc import ProposalClassifier
from .mrpe import ProposalExtractor

__all__ = ["AlignZegModel", "AlignZegOutput", "CLIP_PREFIX"]

CLIP_PREFIX = "backbone.clip."
"""State-dict prefix of the frozen CLIP tensors (fingerprinted; left out of slim checkpoints)."""


@dataclass
class AlignZegOutput:
    """Raw model outputs for a batch of B images, N proposals, C classes.

    Attributes:
        mask_logits: (B, N, h, w) float, the last layer's mask logits (h = H / mask_stride).
        class_logits: (B, N, C + 1) float, last column background.
        embeddings: (B, N, E) float, L2-normalised proposal embeddings.
        unseen_logits: (B, N) float, class-indicator logits (sigmoid: probability of an unseen class).
        aux: per earlier decoder layer, (mask_logits, class_logits) for deep supervision; empty in eval.
        readout_logits: (B, N, C) float, the CLIP region readout's class logits (CLIP's logit scale times
            cosine), with ``clip_readout``; else ``None``. Computed without gradient.
    """

    mask_logits: torch.Tensor
    class_logits: torch.Tensor
    embeddings: torch.Tensor
    unseen_logits: torch.Tensor
    aux: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    readout_logits: torch.Tensor | None = None


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

    @property
    def readout_layers(self) -> int:
        """ViT blocks that carry the CLIP readout's region tokens (0 without ``clip_readout``)."""
        if not self.config.clip_readout:
            return 0
        k = self.config.clip_readout_layers
        return self.backbone.num_layers if k is None else k

    def forward(self, images: torch.Tensor, class_embeddings: torch.Tensor,
                deep_supervision: bool | None = None, seen_mask: torch.Tensor | None = None) -> AlignZegOutput:
        """Proposals and their scores.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1]; H and W multiples of the patch size.
            class_embeddings: (C, E) float, L2-normalised class prototypes.
            deep_supervision: return every decoder layer's outputs in ``aux``; defaults to ``self.training``.
            seen_mask: (C,) bool, the vocabulary's seen classes, read by a ``"profile"`` class indicator;
                ``None``: every class is seen.

        Returns:
            AlignZegOutput.
        """
        if deep_supervision is None:
            deep_supervision = self.training
        x = self.normalize(images)
        features = self.backbone.encode_image_dense(x, self.readout_layers)
        proposals = self.extractor(features.patches, x, all_layers=deep_supervision)
        patches = features.patches
        embeddings, class_logits = self.classifier(proposals.queries[-1], class_embeddings, patches,
                                                   proposals.mask_logits[-1])
        aux = []
        if deep_supervision:
            for queries, masks in zip(proposals.queries[:-1], proposals.mask_logits[:-1]):
                aux.append((masks, self.classifier(queries, class_embeddings, patches, masks)[1]))
        readout = None
        if self.readout_layers:
            with torch.no_grad():
                regions = self.backbone.read_regions(features, proposals.mask_logits[-1])
                readout = self.backbone.clip_logit_scale.to(regions.dtype) * (
                    regions @ class_embeddings.to(regions.dtype).t())
        return AlignZegOutput(
            mask_logits=proposals.mask_logits[-1],
            class_logits=class_logits,
            embeddings=embeddings,
            unseen_logits=self.unseen_logits(embeddings, class_embeddings, readout, seen_mask),
            aux=aux,
            readout_logits=readout,
        )

    def unseen_logits(self, embeddings: torch.Tensor, class_embeddings: torch.Tensor,
                      readout_logits: torch.Tensor | None, seen_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, N) class-indicator logits from the embeddings, or from the similarity profile (see ``forward``)."""
        if self.indicator.inputs != "profile":
            return self.indicator(embeddings)
        if seen_mask is None:
            seen_mask = torch.ones(class_embeddings.shape[0], dtype=torch.bool, device=embeddings.device)
        decoder_cos = embeddings @ class_embeddings.to(embeddings.dtype).t()
        readout_cos = None if readout_logits is None else readout_logits / self.backbone.clip_logit_scale.to(
            readout_logits.dtype)
        return self.indicator(profile_features(decoder_cos, readout_cos, seen_mask))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter outside the frozen CLIP (``backbone.clip.*``): heads, decoder, and the deep prompts."""
        return [p for n, p in self.named_parameters() if not n.startswith(CLIP_PREFIX)]
