"""Device and mixed-precision choices, defined once for inference and training."""

from __future__ import annotations

import torch

__all__ = ["autocast_dtype", "resolve_device"]


def resolve_device(device: str | torch.device | None, option: str | None = None) -> torch.device:
    """``None`` picks CUDA when available, else the CPU. A CUDA request without CUDA raises ``ValueError``.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device`` or ``None``.
        option: the command-line option that gave ``device`` (``"--device"``); the messages then name it
            (``use --device cpu``) instead of the Python argument (``use device='cpu'``).
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    given = f"{option} {str(device)!r}" if option else f"device {str(device)!r}"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{given} is not a device (expected cpu, cuda or cuda:N): {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        fix = f"{option} cpu" if option else "device='cpu'"
        raise ValueError(f"{given} requested but CUDA is not available; use {fix}")
    return device


def autocast_dtype() -> torch.dtype:
    """The CUDA autocast dtype: bfloat16 where the GPU supports it, else float16 (which needs a GradScaler)."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
