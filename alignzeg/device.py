"""Device and mixed-precision choices, defined once for inference and training."""

from __future__ import annotations

import torch

__all__ = ["autocast_dtype", "resolve_device"]


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


def autocast_dtype() -> torch.dtype:
    """The CUDA autocast dtype: bfloat16 where the GPU supports it, else float16 (which needs a GradScaler)."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
