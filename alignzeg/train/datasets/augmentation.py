"""Training-time data: random resize/crop/flip, photometric distortion, and a resumable sharded sampler with
its ``collate``, for datasets that follow the protocol of ``alignzeg.train.datasets``.

Augmentation is driven by a per-sample seed the sampler hands out, so a run is reproducible with any
number of DataLoader workers and resumes mid-epoch exactly.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, DistributedSampler, Sampler

__all__ = ["IGNORE_INDEX", "to_tensors", "RandomResizeCrop", "PhotoMetricDistortion", "AugmentedView",
           "ResumableBatchSampler", "collate", "derived_seed"]

IGNORE_INDEX = 255


def to_tensors(item: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """A dataset item -> ((3, H, W) float32 in [0, 1], (H, W) int64 label)."""
    image, label = item["image"], item["label"]
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"dataset image arrays must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        image = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float() / 255.0
    elif isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise ValueError(f"dataset image tensors must be (3, H, W) float, got {tuple(image.shape)} {image.dtype}")
        image = image.float()
    else:
        raise TypeError(f"dataset image must be a numpy array or a tensor, got {type(image).__name__}")
    label = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label).long()
    if label.shape != image.shape[1:]:
        raise ValueError(f"label shape {tuple(label.shape)} does not match image size {tuple(image.shape[1:])}")
    return image, label


class RandomResizeCrop:
    """Random rescale (short side = ``size * s``, ``s ~ U(scale)``), pad to ``size``, random crop, random flip.

    Padding uses 0 for the image and 255 (ignore) for the label. Labels are resized with nearest neighbour.

    Args:
        size: output side S in pixels (the model's ``input_size``).
        scale: (low, high) range of ``s``.
        flip: flip horizontally with probability 0.5.
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.5, 2.0), flip: bool = True) -> None:
        self.size = size
        self.scale = scale
        self.flip = flip

    def __call__(self, image: torch.Tensor, label: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(3, H, W) float, (H, W) int64 -> (3, S, S) float, (S, S) int64."""
        lo, hi = self.scale
        s = lo + (hi - lo) * float(torch.rand((), generator=generator))
        h, w = image.shape[1:]
        ratio = self.size * s / min(h, w)
        nh, nw = max(1, round(h * ratio)), max(1, round(w * ratio))
        if (nh, nw) != (h, w):  # at the same size both resamplings are the identity
            image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False,
                                  antialias=ratio < 1)[0]
            label = F.interpolate(label[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
        image = image.clamp(0, 1)
        ph, pw = max(0, self.size - nh), max(0, self.size - nw)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0.0)
            label = F.pad(label, (0, pw, 0, ph), value=IGNORE_INDEX)
        top = int(torch.randint(image.shape[1] - self.size + 1, (), generator=generator))
        left = int(torch.randint(image.shape[2] - self.size + 1, (), generator=generator))
        image = image[:, top:top + self.size, left:left + self.size]
        label = label[top:top + self.size, left:left + self.size]
        if self.flip and float(torch.rand((), generator=generator)) < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        return image.contiguous(), label.contiguous()


def derived_seed(seed: int, stream: int) -> int:
    """An independent seed for a second random stream of the same sample (numpy's ``SeedSequence`` mixing)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0] % (2 ** 63 - 1))


class PhotoMetricDistortion:
    """mmsegmentation's ``PhotoMetricDistortion`` on (3, H, W) float tensors in [0, 1], driven by a generator.

    In order, each step with probability 0.5 (as mmseg): brightness (add ``U(-delta, delta) / 255``),
    contrast (multiply by ``U(contrast_range)``; before or after the next two steps, chosen at random),
    saturation (``torchvision``'s ``adjust_saturation`` by ``U(saturation_range)``: a blend with the grey
    image, where mmseg scales HSV saturation), hue (``adjust_hue`` by ``U(-hue_delta, hue_delta) / 180`` of
    a turn: mmseg's ``hue_delta`` is in OpenCV's 0..180 hue units). The result is clipped to [0, 1].

    Args:
        brightness_delta: in 0..255 units (mmseg: 32).
        contrast_range / saturation_range: multiplicative ranges (mmseg: (0.5, 1.5)).
        hue_delta: in OpenCV hue units, 0..180 for a full turn (mmseg: 18).
    """

    def __init__(self, brightness_delta: float = 32, contrast_range: tuple[float, float] = (0.5, 1.5),
                 saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: float = 18) -> None:
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = float(hue_delta)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(3, H, W) float in [0, 1] -> the distorted image, same shape, float in [0, 1]."""
        from torchvision.transforms.v2 import functional as TF

        def draw(lo: float, hi: float) -> float | None:  # a coin, then the value: two draws either way
            coin, value = torch.rand(2, generator=generator).tolist()
            return lo + (hi - lo) * value if coin < 0.5 else None

        image = image.clamp(0.0, 1.0)
        delta = draw(-self.brightness_delta, self.brightness_delta)
        if delta is not None:
            image = (image + delta / 255.0).clamp(0.0, 1.0)
        contrast_last = float(torch.rand((), generator=generator)) < 0.5
        contrast = draw(*self.contrast_range)
        if contrast is not None and not contrast_last:
            image = (image * contrast).clamp(0.0, 1.0)
        saturation = draw(*self.saturation_range)
        if saturation is not None:
            image = TF.adjust_saturation(image, saturation)
        hue = draw(-self.hue_delta, self.hue_delta)
        if hue is not None:
            image = TF.adjust_hue(image, hue / 180.0)
        if contrast is not None and contrast_last:
            image = (image * contrast).clamp(0.0, 1.0)
        return image.clamp(0.0, 1.0)


class AugmentedView(Dataset):
    """Wraps a protocol dataset for training: keys are ``(index, seed)``; labels are remapped by ``lut``.

    Args:
        dataset: a protocol dataset.
        augment: the augmentation.
        lut: (256,) int64 mapping dataset label values to training-class indices (255 elsewhere).
        photometric: colour distortion applied to the whole image before the crop (its steps are per-pixel,
            so the order matters only through resampling), with its own generator seeded by
            ``derived_seed(seed, 1)``: turning it on or off leaves the crops unchanged.
    """

    def __init__(self, dataset: Any, augment: RandomResizeCrop, lut: torch.Tensor,
                 photometric: PhotoMetricDistortion | None = None) -> None:
        self.dataset = dataset
        self.augment = augment
        self.lut = lut
        self.photometric = photometric

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        image, label = to_tensors(self.dataset[index])
        if label.numel() and (label.min() < 0 or label.max() > 255):
            raise ValueError(f"dataset item {index} has label values outside [0, 255]")
        label = self.lut[label]
        if self.photometric is not None:
            image = self.photometric(image, torch.Generator().manual_seed(derived_seed(seed, 1)))
        generator = torch.Generator().manual_seed(seed)
        return self.augment(image, label, generator)


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])


class ResumableBatchSampler(Sampler):
    """Micro-batches of ``(index, seed)`` keys from a ``DistributedSampler``, starting at any micro-batch.

    Epoch ``e`` uses the DistributedSampler's shuffled shard for ``set_epoch(e)``; the last incomplete
    micro-batch of an epoch is dropped. Micro-batch ``m`` of the run is the same whatever ``start`` is,
    which is what makes resuming exact.

    Args:
        sampler: the DistributedSampler (one replica for a single process).
        batch_size: samples per micro-batch on this process.
        start: index of the first micro-batch to yield.
        stop: index one past the last.
        seed: base of the per-sample augmentation seeds.
    """

    def __init__(self, sampler: DistributedSampler, batch_size: int, start: int, stop: int, seed: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.start, self.stop, self.seed = start, stop, seed
        self.per_epoch = len(sampler) // batch_size
        if self.per_epoch < 1:
            raise ValueError(
                f"the dataset gives {len(sampler)} samples per process, fewer than one micro-batch of {batch_size}"
            )

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, indices = -1, []
        rank = getattr(self.sampler, "rank", 0)
        for m in range(self.start, self.stop):
            e, offset = divmod(m, self.per_epoch)
            if e != epoch:
                epoch = e
                self.sampler.set_epoch(e)
                indices = list(self.sampler)
            chunk = indices[offset * self.batch_size:(offset + 1) * self.batch_size]
            yield [(int(i), self._seed(m, rank, j)) for j, i in enumerate(chunk)]

    def _seed(self, micro: int, rank: int, position: int) -> int:
        return (self.seed * 1_000_003 + micro * 7_919 + rank * 104_729 + position) % (2 ** 63 - 1)
