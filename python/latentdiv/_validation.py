"""Input checks shared by every public function: each failure is a TypeError or ValueError that
names the argument, so a bad call never reaches the engine (no segfault, no silent garbage)."""

from __future__ import annotations

from typing import Optional

import torch

# Dtypes computed as they are; half types are computed in float32 and returned in their own dtype.
_ENGINE_DTYPES = (torch.float32, torch.float64)
_UPCAST_DTYPES = (torch.float16, torch.bfloat16)


def check_points(t, name: str, min_rows: int = 1) -> torch.Tensor:
    """A (n, D) floating tensor with n >= min_rows and D >= 1."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (n, D), got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float16/bfloat16/float32/float64), got {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D with shape (n, D), got shape {tuple(t.shape)}")
    if t.shape[1] < 1:
        raise ValueError(f"{name} must have D >= 1 columns, got shape {tuple(t.shape)}")
    if t.shape[0] < min_rows:
        what = "is empty" if t.shape[0] == 0 else f"has {t.shape[0]} row(s)"
        raise ValueError(f"{name} {what}; at least {min_rows} sample(s) are needed, shape {tuple(t.shape)}")
    return t


def check_pair(x: torch.Tensor, y: torch.Tensor, x_name: str = "x", y_name: str = "y") -> None:
    if y.device != x.device:
        raise ValueError(f"{x_name} and {y_name} must be on the same device, got {x.device} and {y.device}")
    if y.dtype != x.dtype:
        raise TypeError(f"{x_name} and {y_name} must have the same dtype, got {x.dtype} and {y.dtype}")
    if y.shape[-1] != x.shape[-1]:
        raise ValueError(f"{x_name} and {y_name} must have the same dimension D, "
                         f"got {x_name}.shape={tuple(x.shape)} and {y_name}.shape={tuple(y.shape)}")


def check_weights(w, name: str, points: torch.Tensor, points_name: str) -> Optional[torch.Tensor]:
    """None, or a 1-D floating tensor with one weight per row of ``points``, on its device."""
    if w is None:
        return None
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({points_name}.shape[0],) or None, "
                        f"got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {w.dtype}")
    expected = points.shape[:-1]
    if w.shape != expected:
        raise ValueError(f"{name} must have shape {tuple(expected)} (one weight per row of {points_name}), "
                         f"got {tuple(w.shape)}")
    if w.device != points.device:
        raise ValueError(f"{name} must be on {points_name}'s device {points.device}, got {w.device}")
    return w


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the engine computes in for inputs of ``dtype``."""
    return torch.float32 if dtype in _UPCAST_DTYPES else dtype


def check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value
