"""Weight files -> state dicts, and strict loading of a state dict into a module.

No pickle is read unless the caller opted in (``alignzeg.hub`` only returns one then), and then only with
``torch.load(weights_only=True)``; every floating tensor must be finite; a load must match key for key
and shape for shape, and the error names what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import WeightsError

__all__ = ["read_weights", "check_finite", "state_dict_problems", "load_state_dict_strict"]


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a weights file, on the CPU. Damaged files raise ``WeightsError`` naming the file."""
    if path.suffix != ".safetensors":
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types for bad pickles
            raise WeightsError(f"cannot read pickle checkpoint {str(path)!r} with weights_only=True: {err}") from err
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"{str(path)!r} does not hold a flat name -> tensor state dict")
        return check_finite(dict(state), repr(str(path)))
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(
            f"{str(path)!r} is not a readable safetensors file (truncated or corrupt download?): {err}. "
            "Delete it and download again."
        ) from err
    return check_finite(state, repr(str(path)))


def check_finite(state: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """``state`` itself, after checking that every floating tensor is finite.

    Raises:
        WeightsError: naming ``what`` and the tensors holding NaN or infinite values.
    """
    bad = [name for name, tensor in state.items()
           if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise WeightsError(f"{what} holds NaN or infinite values in {len(bad)} tensor(s): {_list(bad)}; "
                           "the file is damaged or the training diverged")
    return state


def _list(names: Iterable[str], limit: int = 8) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def state_dict_problems(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps ``state`` from loading exactly where ``expected`` (a module's state dict) is: missing keys,
    unexpected keys, shape and dtype-kind mismatches (empty when it fits)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys: {_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_list(unexpected)}")
    wrong_shape = [f"{k} (checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)})"
                   for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if wrong_shape:
        problems.append(f"shape mismatches: {_list(wrong_shape)}")
    wrong_dtype = [f"{k} (checkpoint {v.dtype}, model {expected[k].dtype})" for k, v in state.items()
                   if k in expected and v.is_floating_point() != expected[k].is_floating_point()]
    if wrong_dtype:
        problems.append(f"dtype mismatches: {_list(wrong_dtype)}")
    return problems


def load_state_dict_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load ``state`` into ``model`` exactly: same keys, same shapes, floating tensors for floating slots.

    Raises:
        WeightsError: naming the missing keys, unexpected keys, or shape/dtype mismatches.
    """
    problems = state_dict_problems(model.state_dict(), state)
    if problems:
        raise WeightsError("checkpoint does not match the model architecture in config.json: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
