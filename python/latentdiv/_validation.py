"""Input checks shared by every public function (the engine primitives, the losses, the normality
tests and the ``latentdiv check`` CLI): each failure is a TypeError or ValueError that names the
argument, so a bad call never reaches the engine (no segfault, no silent garbage). This module is the
one home of these checks; the other modules call it rather than re-implementing them."""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence

import torch

from . import _ext

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
    _check_weight_tensor(w, name, points, points_name, f"({points_name}.shape[0],)", [tuple(points.shape[:-1])])
    return w


def _check_weight_tensor(w: Any, name: str, points: torch.Tensor, points_name: str, type_shape: str,
                         allowed: list) -> None:
    """The checks every weight argument shares: a floating tensor of one of the ``allowed`` shapes
    (``type_shape`` names them in the TypeError) on ``points``' device."""
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {type_shape} or None, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {w.dtype}")
    if tuple(w.shape) not in allowed:
        want = " or ".join(str(s) for s in sorted(set(allowed), key=len))
        raise ValueError(f"{name} must have shape {want} (one weight per row of {points_name}), "
                         f"got {tuple(w.shape)}")
    if w.device != points.device:
        raise ValueError(f"{name} must be on {points_name}'s device {points.device}, got {w.device}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the engine computes in for inputs of ``dtype``."""
    return torch.float32 if dtype in _UPCAST_DTYPES else dtype


def check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """An integer >= ``minimum``: Python int or any ``numbers.Integral`` (numpy/torch integer scalars
    included), never a bool or a float. Returns a Python int."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {list(choices)}, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_samples(t: Any, name: str, min_rows: int = 1, why: str = "") -> torch.Tensor:
    """A loss input: (n, D) or (B, n, D) floating tensor with n >= min_rows, D >= 1, B >= 1. Its
    values are not inspected (non-finite values give a NaN result, see :func:`nan_if_nonfinite`)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (n, D) or (B, n, D), got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float16/bfloat16/float32/float64), got {t.dtype}")
    if t.dim() not in (2, 3):
        raise ValueError(f"{name} must have shape (n, D) or (B, n, D), got shape {tuple(t.shape)}")
    if t.shape[-1] < 1:
        raise ValueError(f"{name} must have D >= 1 columns, got shape {tuple(t.shape)}")
    if t.dim() == 3 and t.shape[0] < 1:
        raise ValueError(f"{name} has an empty batch dimension, shape {tuple(t.shape)}")
    if t.shape[-2] < min_rows:
        what = "is empty" if t.shape[-2] == 0 else f"has {t.shape[-2]} sample(s)"
        raise ValueError(f"{name} {what}; at least {min_rows} are needed{why}, shape {tuple(t.shape)}")
    return t


def _data_checks_possible(t: torch.Tensor) -> bool:
    """Value checks read the data on the host. They are skipped while torch.compile traces (a host
    read would break the graph) and for meta/fake tensors (no data)."""
    if torch.compiler.is_compiling() or t.device.type == "meta":
        return False
    return True


def check_relative_weights(w: Any, name: str, points: torch.Tensor, points_name: str, min_positive: int = 1,
                           why: str = "") -> Optional[torch.Tensor]:
    """None, or relative weights of the rows of ``points`` ((n, D) or (B, n, D)): a floating tensor
    of shape (n,) (shared by every batch element) or ``points.shape[:-1]``, on ``points``' device,
    finite, >= 0, with a positive sum per batch element (they are normalised to sum 1 inside, so a
    zero or signed sum has no meaning: mixed signs gave -inf, zero sums NaN), and at least
    ``min_positive`` positive entries per batch element (2 for a U-statistic: with all the weight on
    one point it has no pairs, as an unweighted sample of one row)."""
    if w is None:
        return None
    _check_weight_tensor(w, name, points, points_name, f"({points_name}.shape[-2],)",
                         [tuple(points.shape[:-1]), (points.shape[-2],)])
    if _data_checks_possible(w):
        v = w.detach()
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name} must be finite, got NaN or inf at index {_first_bad(~torch.isfinite(v))}")
        if bool((v < 0).any()):
            raise ValueError(f"{name} must be non-negative (relative weights), got {float(v.min()):.6g} "
                             f"at index {_first_bad(v < 0)}")
        sums = v.to(torch.float64).sum(dim=-1)
        if not bool((sums > 0).all()):
            where = "" if sums.dim() == 0 else f" for batch element {int((sums <= 0).nonzero()[0, 0])}"
            raise ValueError(f"{name} must have a positive sum{where} (they are normalised to sum 1), got all zeros")
        if min_positive > 1:
            count = (v > 0).sum(dim=-1)
            if not bool((count >= min_positive).all()):
                where = "" if count.dim() == 0 else f" for batch element {int((count < min_positive).nonzero()[0, 0])}"
                raise ValueError(f"{name} has {int(count.min())} positive weight(s){where}; at least {min_positive} "
                                 f"are needed{why}")
    return w


def _first_bad(mask: torch.Tensor) -> Any:
    idx = mask.nonzero()[0].tolist()
    return idx[0] if len(idx) == 1 else tuple(idx)


def nonfinite_rows(t: torch.Tensor) -> torch.Tensor:
    """Indices of the rows of an (n, D) tensor (or array converted to one) holding NaN or inf. [k]"""
    return (~torch.isfinite(t)).any(dim=-1).nonzero().flatten()


def check_finite_rows(t: torch.Tensor, name: str, why: str) -> None:
    """ValueError naming the first rows of ``t`` ((n, D)) that hold NaN or inf. For the normality tests
    and the CLI, which answer a question about the data (the losses return NaN instead)."""
    bad = nonfinite_rows(t)
    if bad.numel():
        first = bad[:5].tolist()
        more = "..." if bad.numel() > 5 else ""
        raise ValueError(f"{name} contains NaN or inf in {bad.numel()} row(s) (rows {first}{more}); {why}")


def _host_checkable(value: torch.Tensor, inputs) -> bool:
    """Whether the non-finite check may be answered on the host: eager CPU tensors of the engine's
    dtypes, contiguous, with no compiler, torch.func transform or dispatch mode (fake tensors,
    make_fx) tracing the call, where a host answer would be baked into a graph."""
    if (_ext._C is None or not hasattr(_ext._C, "all_finite") or torch.compiler.is_compiling()
            or torch._C._are_functorch_transforms_active() or torch._C._len_torch_dispatch_stack() != 0):
        return False
    for t in (value, *inputs):
        if t is not None and (type(t) not in (torch.Tensor, torch.nn.Parameter) or t.device.type != "cpu"):
            return False
    return all(t is None or (t.dtype in _ENGINE_DTYPES and t.is_contiguous()) for t in inputs)


def nan_if_nonfinite(value: torch.Tensor, *inputs: Optional[torch.Tensor]) -> torch.Tensor:
    """The non-finite policy of every loss: if any input holds NaN or inf, the result is NaN (as
    torch's own losses), never a plausible finite number, and so is every gradient (the NaN factor
    multiplies the upstream gradient). ``value``: [] or [...] (any shape); ``inputs``: tensors whose
    every element must be finite.

    Eager CPU calls are answered on the host by the engine's ``all_finite`` (one pass over the
    memory, no tensor op, and for finite inputs ``value`` itself is returned: no autograd node);
    everything else (CUDA, torch.compile, torch.func) uses tensor ops: no host synchronisation,
    traceable."""
    if _host_checkable(value, inputs):
        for t in inputs:
            if t is not None and not _ext._C.all_finite(t.data_ptr(), t.numel(), _ext.dtype_code(t)):
                return value * value.new_full((), math.nan)
        return value
    ok = None
    for t in inputs:
        if t is None:
            continue
        f = torch.isfinite(t).all()
        ok = f if ok is None else ok & f
    if ok is None:
        return value
    factor = torch.where(ok, value.new_ones(()), value.new_full((), math.nan))
    return value * factor
