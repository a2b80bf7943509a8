"""Input checks shared by every public function (the engine primitives, the losses, the special
functions, the normality tests and the ``latentdiv check`` CLI): each failure is a TypeError or
ValueError that names the argument, so a bad call never reaches the engine (no segfault, no silent
garbage). This module is the one home of these checks; the other modules call it rather than
re-implementing them (the kernel-specific rules, such as the engine's limit on the number of
bandwidths, are in ``_registry``, built from the helpers here)."""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence, Tuple

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


def check_positive(value: Any, name: str) -> float:
    """A positive finite real number (never a bool). Returns a Python float."""
    if type(value) is float:  # the common case, without the ABC check below
        if not (math.isfinite(value) and value > 0.0):
            raise ValueError(f"{name} must be positive and finite, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    v = float(value)
    if not (math.isfinite(v) and v > 0.0):
        raise ValueError(f"{name} must be positive and finite, got {v!r}")
    return v


def check_positive_scales(value: Any, name: str = "bandwidth", max_count: Optional[int] = None) -> Tuple[float, ...]:
    """A positive finite number or a non-empty sequence (or tensor) of them, at most ``max_count``:
    a bandwidth or a list of scales summed over. Returns a tuple of Python floats."""
    if isinstance(value, torch.Tensor):
        if value.requires_grad and torch.is_grad_enabled():
            # Reached only where the value is used as a constant (pairwise_sum and mmd differentiate a
            # bandwidth tensor before it gets here): dropping its gradient silently would be wrong.
            raise ValueError(f"{name} requires grad, but this function uses it as a constant: pass "
                             f"{name}.detach() (or a float), or use pairwise_sum / mmd with a kernel that has "
                             "a bandwidth (a scale of the points), which differentiate it")
        if value.numel() == 0:
            raise ValueError(f"{name} must not be empty")
        values = [float(v) for v in value.detach().reshape(-1).tolist()]
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        values = [float(value)]
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        values = []
        for v in value:
            if not isinstance(v, numbers.Real) or isinstance(v, bool):
                raise TypeError(f"{name} must be a positive number or a sequence of them, got element {v!r}")
            values.append(float(v))
        if not values:
            raise ValueError(f"{name} must not be an empty sequence")
    else:
        raise TypeError(f"{name} must be a positive number or a sequence of them, got {type(value).__name__}")
    for v in values:
        # Comparisons rather than math.isfinite: under torch.compile a float argument that changes
        # between calls becomes a SymFloat, which math.isfinite cannot take (a graph break); the two
        # comparisons reject NaN, inf and v <= 0 alike and trace as guards.
        if not (v > 0.0 and v < math.inf):
            raise ValueError(f"{name} must be positive and finite, got {v!r}")
    if max_count is not None and len(values) > max_count:
        raise ValueError(f"{name}: at most {max_count} scales, got {len(values)}")
    return tuple(values)


def check_open_unit(value: Any, name: str) -> float:
    """A real number strictly between 0 and 1 (a level such as alpha). Returns a Python float."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


def check_float_tensor(x: Any, name: str) -> torch.Tensor:
    """Any torch.Tensor with a floating dtype (the elementwise special functions)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x


def check_real_at_least_one(value: Any, name: str) -> float:
    """A finite real number >= 1 (a dimension D of a closed form, which need not be an integer)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 1 and math.isfinite(value)):
        raise ValueError(f"{name} must be a number >= 1, got {value!r}")
    return float(value)


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


def check_member(value: Any, name: str, choices: tuple) -> Any:
    """``value`` is one of ``choices`` (any values, compared with ==), else a ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def sample_tensor(z: Any, name: str) -> torch.Tensor:
    """A data sample given as a torch tensor, numpy array or nested list, as a contiguous float64 CPU
    tensor [n, D] (detached): real numbers, 2-D, D >= 1; any n, values unchecked."""
    import numpy as np  # numpy is a dependency; imported here to keep this module's import light

    if isinstance(z, torch.Tensor):
        if not (z.is_floating_point() or z.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a real floating tensor of shape (n, D), got dtype {z.dtype}")
        t = z.detach().to(device="cpu", dtype=torch.float64)
    elif isinstance(z, np.ndarray) or isinstance(z, (list, tuple)):
        a = np.asarray(z)
        if a.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be a real numeric array of shape (n, D), got dtype {a.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (n, D), got {type(z).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D with shape (n, D), got shape {tuple(t.shape)}")
    if t.shape[1] < 1:
        raise ValueError(f"{name} must have D >= 1 columns, got shape {tuple(t.shape)}")
    return t.contiguous()


def check_sample_array(z: Any, name: str, min_rows: int, too_few: str, non_finite: str) -> torch.Tensor:
    """A data sample (:func:`sample_tensor`) with n >= ``min_rows`` and every value finite: a
    contiguous float64 CPU tensor [n, D]. ``too_few``: the end of the message for n < min_rows;
    ``non_finite``: why NaN/inf rows are refused. For the normality tests and the ``latentdiv check``
    CLI (the losses take tensors only)."""
    t = sample_tensor(z, name)
    n = t.shape[0]
    if n < min_rows:
        raise ValueError(f"{name} has {n} row(s); {too_few}")
    check_finite_rows(t, name, non_finite)
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


def check_second_sample(x: torch.Tensor, y: Optional[torch.Tensor], min_rows: int = 1, why: str = "") -> None:
    """None, or a second loss sample y for x ((n, D) or (B, n, D)): (m, D) (shared by a batch) or (B, m, D)."""
    if y is None:
        return
    check_samples(y, "y", min_rows, why)
    check_pair(x, y)
    if x.dim() == 2 and y.dim() == 3:
        raise ValueError(f"y is batched (B, m, D) but x is not: got x.shape={tuple(x.shape)}, y.shape={tuple(y.shape)}")
    if x.dim() == 3 and y.dim() == 3 and y.shape[0] != x.shape[0]:
        raise ValueError(f"x and y must have the same batch size B, got x.shape={tuple(x.shape)}, y.shape={tuple(y.shape)}")


def check_loss_weights(w: Optional[torch.Tensor], name: str, points: Optional[torch.Tensor], points_name: str,
                       unbiased: bool = False) -> None:
    """None, or the relative weights of a loss sample (:func:`check_relative_weights`); ``unbiased``: the
    U-statistic needs two positive weights."""
    if w is None:
        return
    if points is None:
        raise ValueError(f"{name} was given but {points_name} is None")
    check_relative_weights(w, name, points, points_name, 2 if unbiased else 1,
                           " by the unbiased estimator (use estimator='biased')" if unbiased else "")


def check_directions(projections: torch.Tensor) -> None:  # [L, D]
    """Each row is a direction: finite and non-zero (a zero row used to give the constant 1.0)."""
    if torch.compiler.is_compiling() or projections.device.type == "meta":
        return
    p = projections.detach()
    bad = ~torch.isfinite(p).all(dim=1)
    if bool(bad.any()):
        raise ValueError(f"projections must be finite; row {int(bad.nonzero()[0, 0])} holds NaN or inf")
    zero = (p == 0).all(dim=1)
    if bool(zero.any()):
        raise ValueError(f"projections rows are directions and must be non-zero; row {int(zero.nonzero()[0, 0])} "
                         "is all zeros")


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
    if _ext._C is None or not hasattr(_ext._C, "all_finite") or not _ext.plain_eager(value, *inputs):
        return False
    if any(t is not None and t.device.type != "cpu" for t in (value, *inputs)):
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
