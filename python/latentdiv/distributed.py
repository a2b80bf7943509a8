r"""Global-batch divergences and normality tests under ``torch.distributed`` (docs/distributed.md).

Every loss of :mod:`latentdiv.functional` / :mod:`latentdiv.losses` and every normality test of
:mod:`latentdiv.stats` takes ``group=``: a ``torch.distributed`` process group, or :data:`WORLD` for
the default (world) group. Each rank passes its *local* batch; the result is the value on the
*global* batch, the concatenation of the ranks' batches in group-rank order, and it is the same on
every rank.

Gradients (the contract the tests check): on each rank, the gradient that reaches the local
inputs is ``W`` times the gradient of the global value with respect to those rows (``W`` = the
group's size). This is the gradient of the sum over ranks of the (identical) per-rank losses; DDP
and FSDP average parameter gradients over the ranks, which divides by ``W`` again, so after their
averaging the parameter gradients equal the single-process gradients on the global batch.

How the value is computed (sharded, not gathered):

- pair sums: each rank computes its own rows against the global columns,
  :math:`\sum_{i \in \text{rank}} \sum_{j} w_i w_j k(x_i, x_j)` (one engine call, memory
  O((n_local + N) D)); the columns are gathered without gradient. A self sum is symmetric, so the
  gradient of the whole sum with respect to row i is twice its row gradient: the rows carry it, no
  gradient flows back through the gathered columns. A cross sum X-Y runs twice, X rows against Y
  columns and Y rows against X columns, the second for its gradient only. The engine excludes a
  diagonal only for ``y is x``; here a rank's rows are a slice of the columns, so the U-statistics
  subtract the diagonal exactly, :math:`f(0) \sum_i w_i^2` (O(n D); the diagonal pairs are at
  distance 0, where every radial kernel's gradient is 0);
- the partial sums, the O(n) closed-form terms and the weight totals of all batch elements are
  combined by ONE differentiable all-reduce; the nonlinear assembly (divisions by the weight
  totals, the closed-form constants, the CWAE log) happens after it, identically on every rank;
- sorting-based losses (the EDF losses, sliced Wasserstein) need the global order: the ranks
  gather the O(N) values they sort (projections, radii, CDF values; the pairwise distances for
  ``distances_cvm``, which are O(N^2) values by definition), with gradient;
- random directions of ``sliced_wasserstein`` are drawn on every rank (so the ranks' RNG states
  stay in step) and rank 0's are used everywhere;
- uneven local batch sizes: the sizes are exchanged first, the gathered tensors are padded to the
  largest local size and the padding is dropped after the gather;
- bad input: every rank validates its own input with the single-process checks, then all ranks
  exchange a small metadata vector (validity, D, dtype, batch size, which arguments are given);
  if any rank failed or the ranks disagree (e.g. different D), every rank raises (the failing rank
  its own error, the others a ValueError naming that rank), so none is left waiting in a
  collective.

The normality tests gather the (detached) sample to every rank and run the single-process test on
it: the statistic and p-value are those of the global sample, on every rank.

The collectives are ``torch.distributed._functional_collectives.all_gather_single_autograd`` (its
backward is a reduce-scatter sum) and ``torch.distributed.all_gather_object`` (error messages
only), chosen in :func:`_all_gather` and :func:`_consensus`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import functional as F
from . import special
from ._registry import bandwidth_scales
from ._validation import check_choice, check_int, check_positive, compute_dtype, nan_if_nonfinite, sample_tensor
from .pairwise import pairwise_sum

__all__ = ["WORLD", "global_sample", "resolve_group"]


class _WorldGroup:
    """The sentinel type of :data:`WORLD`."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "latentdiv.distributed.WORLD"

    def __reduce__(self):
        return (_WorldGroup, ())


#: ``group=WORLD``: the default process group (``torch.distributed.group.WORLD``), resolved at call time.
WORLD = _WorldGroup()


def resolve_group(group: Any):
    """The ``torch.distributed.ProcessGroup`` that ``group`` names (:data:`WORLD`: the default group).

    Raises a ValueError naming ``group`` when torch.distributed is unavailable or no process group
    is initialized (a local check on each rank: no collective, so it cannot hang), a TypeError when
    ``group`` is neither a ProcessGroup nor :data:`WORLD`."""
    import torch.distributed as dist

    if not dist.is_available():
        raise ValueError(f"group={group!r} was given but this torch build has no torch.distributed")
    if not dist.is_initialized():
        raise ValueError(f"group={group!r} was given but no torch.distributed process group is initialized "
                         "(call torch.distributed.init_process_group first, e.g. through torchrun)")
    if group is WORLD:
        return dist.group.WORLD
    if not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"group must be a torch.distributed.ProcessGroup or latentdiv.distributed.WORLD, "
                        f"got {type(group).__name__}")
    return group


# ---------------------------------------------------------------------------------------------------
# collectives (the one place that chooses them)
# ---------------------------------------------------------------------------------------------------
class _Group:
    """A resolved group: the ProcessGroup, this rank's index in it and its size."""

    def __init__(self, group: Any) -> None:
        import torch.distributed as dist

        self.pg = resolve_group(group)
        self.rank = dist.get_rank(self.pg)
        self.world = dist.get_world_size(self.pg)


def _all_gather(t: torch.Tensor, g: _Group) -> torch.Tensor:  # [k, ...] -> [W k, ...]
    """Concatenation along dim 0 of every rank's t (same shape on every rank), in group-rank order.
    Differentiable: the backward sums, over the ranks, the gradients of each rank's slice."""
    from torch.distributed import _functional_collectives as fc

    out = fc.all_gather_single_autograd(t.contiguous(), 0, g.pg)
    if isinstance(out, fc.AsyncCollectiveTensor):
        out = out.wait()
    return out


def _all_reduce_sum(t: torch.Tensor, g: _Group) -> torch.Tensor:  # [...] -> [...]
    """Sum over the ranks, differentiable (the gradient of each rank's t is the sum over the ranks
    of the incoming gradients). Used on the small vectors of partial sums."""
    return _all_gather(t.unsqueeze(0), g).sum(dim=0)


def _gather_rows(t: torch.Tensor, sizes: Sequence[int], g: _Group) -> torch.Tensor:  # [n_r, ...] -> [N, ...]
    """The ranks' row blocks (rank r has sizes[r] rows) concatenated in rank order; uneven sizes are
    padded to the largest for the gather, the padding dropped after it. Differentiable."""
    big = max(sizes)
    if t.shape[0] < big:
        t = torch.cat([t, t.new_zeros((big - t.shape[0],) + tuple(t.shape[1:]))], dim=0)
    full = _all_gather(t, g)  # [W big, ...]
    if all(s == big for s in sizes):
        return full
    return torch.cat([full[r * big:r * big + s] for r, s in enumerate(sizes)], dim=0)


_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _dtype_code(t: Any) -> int:
    return _DTYPES.index(t.dtype) if isinstance(t, torch.Tensor) and t.dtype in _DTYPES else -1


def _device_for(g: _Group, t: Any) -> torch.device:
    """Where the metadata travels: the input's device, or the backend's (NCCL needs CUDA tensors)."""
    import torch.distributed as dist

    if isinstance(t, torch.Tensor):
        return t.device
    if dist.get_backend(g.pg) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _consensus(g: _Group, device: torch.device, check: Callable[[], Tuple[Dict[str, int], Dict[str, int]]],
               shared_names: Sequence[str], local_names: Sequence[str]) -> Dict[str, List[int]]:
    """Run ``check`` (the local validation) on every rank, then agree, in one small all-gather.
    ``check`` returns (shared, local) dicts with the keys ``shared_names`` / ``local_names``:
    shared values must be equal on every rank (D, dtype, which arguments are given, ...), local
    ones are exchanged (sizes). Returns {name: [value on rank 0, ..., rank W-1]} for the local
    ones. If a rank's check raised, or the shared values differ, every rank raises."""
    import torch.distributed as dist

    error: Optional[BaseException] = None
    shared: Dict[str, int] = {}
    local: Dict[str, int] = {}
    try:
        shared, local = check()
    except Exception as exc:  # any failure of the local checks must reach the other ranks
        error = exc
    vec = [0 if error is not None else 1] + [int(shared.get(k, 0)) for k in shared_names] \
        + [int(local.get(k, 0)) for k in local_names]
    table = _all_gather(torch.tensor(vec, dtype=torch.int64, device=device), g)
    table = table.reshape(g.world, len(vec)).cpu().tolist()
    if not all(row[0] == 1 for row in table):
        messages: List[Any] = [None] * g.world
        dist.all_gather_object(messages, None if error is None else f"{type(error).__name__}: {error}", group=g.pg)
        if error is not None:
            raise error
        bad = [r for r, row in enumerate(table) if row[0] != 1]
        raise ValueError(f"rank {bad[0]} of the process group rejected its input ({messages[bad[0]]}); "
                         "every rank raises")
    for i, name in enumerate(shared_names):
        values = [row[1 + i] for row in table]
        if len(set(values)) > 1:
            raise ValueError(f"{_DESCRIBE.get(name, name)} must be the same on every rank of the process group, "
                             f"got {values} on ranks 0..{g.world - 1}")
    at = 1 + len(shared_names)
    return {name: [row[at + i] for row in table] for i, name in enumerate(local_names)}


_DESCRIBE = {"dim": "the dimension D (x.shape[-1])", "dtype": "the dtype of x", "ndim": "x's number of dimensions",
             "batch": "the batch size B of a (B, n, D) input", "has_y": "whether y is given",
             "has_wx": "whether weights_x is given", "has_wy": "whether weights_y is given",
             "wx_ndim": "the shape kind of weights_x ((n,) or (B, n))",
             "wy_ndim": "the shape kind of weights_y ((m,) or (B, m))", "y_ndim": "y's number of dimensions",
             "directions": "the number of directions (n_projections or projections.shape[0])",
             "slices": "the SIGReg slice directions (seed or directions) and t_max", "knots": "the number of knots",
             "estimator": "the estimator"}
_LOSS_SHARED = ("ndim", "batch", "dim", "dtype", "has_y", "has_wx", "has_wy", "wx_ndim", "wy_ndim", "y_ndim",
                "directions")
_LOSS_LOCAL = ("n", "m", "pos_x", "pos_y")


def _agree_on_samples(g: _Group, x: Any, y: Any, wx: Any, wy: Any,
                      check: Callable[[], Optional[int]]) -> Dict[str, List[int]]:
    """The consensus of a loss call: ``check`` (the single-process checks of the local input; it
    may return the number of random directions, which must agree too), then the metadata of x, y
    and the weights; per-rank sizes n, m and positive-weight counts."""

    def local():
        directions = check()
        shared, sizes = _sample_meta(x, y, wx, wy)
        shared["directions"] = directions or 0
        return shared, sizes

    return _consensus(g, _device_for(g, x), local, _LOSS_SHARED, _LOSS_LOCAL)


def _sample_meta(x: torch.Tensor, y: Optional[torch.Tensor], wx: Optional[torch.Tensor],
                 wy: Optional[torch.Tensor]) -> Tuple[Dict[str, int], Dict[str, int]]:
    """The metadata of a loss call, after its local checks passed."""
    shared = dict(ndim=x.dim(), batch=x.shape[0] if x.dim() == 3 else 0, dim=x.shape[-1], dtype=_dtype_code(x),
                  has_y=int(y is not None), has_wx=int(wx is not None), has_wy=int(wy is not None),
                  wx_ndim=0 if wx is None else wx.dim(), wy_ndim=0 if wy is None else wy.dim(),
                  y_ndim=0 if y is None else y.dim())
    local = dict(n=x.shape[-2], m=0 if y is None else y.shape[-2],
                 pos_x=_min_positive(wx, x.shape[-2]), pos_y=_min_positive(wy, 0 if y is None else y.shape[-2]))
    return shared, local


def _min_positive(w: Optional[torch.Tensor], rows: int) -> int:
    """The number of positive weights (the smallest over batch elements), or the row count."""
    if w is None:
        return rows
    if torch.compiler.is_compiling() or w.device.type == "meta":
        return rows
    return int((w.detach() > 0).sum(dim=-1).min())


# ---------------------------------------------------------------------------------------------------
# batching: (n, D) and (B, n, D) through one code path
# ---------------------------------------------------------------------------------------------------
def _element(t: Optional[torch.Tensor], b: int, batched_rank: int) -> Optional[torch.Tensor]:
    """Batch element b of t ([B, n, ...] when t.dim() == batched_rank, else shared)."""
    if t is None:
        return None
    return t[b] if t.dim() == batched_rank else t


def _columns(t: Optional[torch.Tensor], sizes: Sequence[int], g: _Group, batched_rank: int) -> Optional[torch.Tensor]:
    """The global columns of points ([n, D] / [B, n, D]) or weights ([n] / [B, n]), detached (the
    rows carry the gradients). Same layout as t, with N rows."""
    if t is None:
        return None
    t = t.detach()
    if t.dim() == batched_rank:
        return _gather_rows(t.transpose(0, 1), sizes, g).transpose(0, 1)
    return _gather_rows(t, sizes, g)


# ---------------------------------------------------------------------------------------------------
# pair-sum losses
# ---------------------------------------------------------------------------------------------------
# The partial vector of one batch element: sums over this rank's rows, summed over the ranks.
_T_XX, _DIAG_X, _SQ_X, _TOT_X, _T_YY, _DIAG_Y, _SQ_Y, _TOT_Y, _C_XY, _ORIGIN = range(10)
_PARTIALS = 10


def _self_half(x, w, cols, wcols, kernel, bw, opts):  # -> [] float64
    r""":math:`\sum_{i \in rows} w_i \sum_j w_j k(x_i, x_j)` with twice its row gradient: the
    gradient of the global self sum with respect to row i (the sum is symmetric in i, j)."""
    s = pairwise_sum(x, cols, kernel=kernel, bandwidth=bw, weights_x=w, weights_y=wcols, **opts).to(torch.float64)
    return 2.0 * s - s.detach()


def _cross_half(x, wx, y_cols, wy_cols, y, wy, x_cols, wx_cols, kernel, bw, opts):  # -> [] float64
    r""":math:`\sum_{i \in X rows} w_i \sum_{j \in Y} v_j k(x_i, y_j)`, plus the Y-rows pass for the
    gradient of this rank's y rows only (value 0): the cross sum is not symmetric in x and y."""
    c = pairwise_sum(x, y_cols, kernel=kernel, bandwidth=bw, weights_x=wx, weights_y=wy_cols, **opts).to(torch.float64)
    if y.requires_grad or (wy is not None and wy.requires_grad):
        back = pairwise_sum(y, x_cols, kernel=kernel, bandwidth=bw, weights_x=wy, weights_y=wx_cols,
                            **opts).to(torch.float64)
        c = c + (back - back.detach())
    return c


def _totals(x: torch.Tensor, w: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(sum w_i, sum w_i^2) over the rows (float64 []), n and n for uniform weights."""
    if w is None:
        n = torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device)
        return n, n
    w64 = w.to(torch.float64)
    return w64.sum(), (w64 * w64).sum()


def _kernel_at_zero(kernel: str, bw: Any, opts: dict, dim: int, like: torch.Tensor) -> float:
    """f(0) = k(x, x) as the engine evaluates it (the diagonal of a U-statistic)."""
    origin = like.new_zeros((1, dim))
    return float(pairwise_sum(origin, origin.clone(), kernel=kernel, bandwidth=bw, **opts))


class _PairPlan:
    """One loss's pair terms: kernel, bandwidth, options, U-statistic or not, and the O(n) term
    against N(0, I) (``origin(x, w) -> sum_i w_i g(x_i)``, float64 []) when y is None."""

    def __init__(self, kernel: str, bw: Any, opts: dict, unbiased: bool,
                 origin: Optional[Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]] = None) -> None:
        self.kernel, self.bw, self.opts, self.unbiased, self.origin = kernel, bw, opts, unbiased, origin


def _pair_partials(plan: _PairPlan, x, wx, xc, wxc, y, wy, yc, wyc, f0: float) -> torch.Tensor:  # -> [10]
    """This rank's partial sums for one batch element (x, y: local rows; xc, yc: global columns)."""
    k, bw, o = plan.kernel, plan.bw, plan.opts
    zero = torch.zeros((), dtype=torch.float64, device=x.device)
    parts = [zero] * _PARTIALS
    parts[_T_XX] = _self_half(x, wx, xc, wxc, k, bw, o)
    parts[_TOT_X], parts[_SQ_X] = _totals(x, wx)
    if plan.unbiased:
        parts[_DIAG_X] = f0 * parts[_SQ_X]
    if y is None:
        parts[_ORIGIN] = plan.origin(x, wx)
    else:
        parts[_T_YY] = _self_half(y, wy, yc, wyc, k, bw, o)
        parts[_TOT_Y], parts[_SQ_Y] = _totals(y, wy)
        if plan.unbiased:
            parts[_DIAG_Y] = f0 * parts[_SQ_Y]
        parts[_C_XY] = _cross_half(x, wx, yc, wyc, y, wy, xc, wxc, k, bw, o)
    return torch.stack(parts)


def _self_mean(p: torch.Tensor, t: int, diag: int, sq: int, tot: int, unbiased: bool) -> torch.Tensor:  # [B]
    """E k(X, X') from the reduced partials: T / W^2, or (T - diag) / (W^2 - sum w^2) (U-statistic)."""
    if unbiased:
        return (p[:, t] - p[:, diag]) / (p[:, tot] ** 2 - p[:, sq])
    return p[:, t] / p[:, tot] ** 2


def _pair_loss(g: _Group, sizes: Dict[str, List[int]], plan: _PairPlan, x, y, wx, wy,
               assemble: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Partials of every batch element (one engine call per term), one all-reduce, ``assemble``
    ([B, 10] reduced partials -> [B] values). Returns [] for (n, D) input, [B] for (B, n, D)."""
    work = compute_dtype(x.dtype)
    xw, yw = x.to(work), None if y is None else y.to(work)
    ax, ay = None if wx is None else wx.to(work), None if wy is None else wy.to(work)
    xc, yc = _columns(xw, sizes["n"], g, 3), _columns(yw, sizes["m"], g, 3)
    axc, ayc = _columns(ax, sizes["n"], g, 2), _columns(ay, sizes["m"], g, 2)
    f0 = _kernel_at_zero(plan.kernel, plan.bw, plan.opts, x.shape[-1], xw) if plan.unbiased else 0.0
    batch = x.shape[0] if x.dim() == 3 else None
    rows = []
    for b in range(batch or 1):
        pick = (lambda t, r: _element(t, b, r)) if batch else (lambda t, r: t)
        part = _pair_partials(plan, pick(xw, 3), pick(ax, 2), pick(xc, 3), pick(axc, 2),
                              pick(yw, 3), pick(ay, 2), pick(yc, 3), pick(ayc, 2), f0)
        rows.append(part)
    local = nan_if_nonfinite(torch.stack(rows), x, y)  # [B, 10]; a NaN on any rank poisons every rank
    value = assemble(_all_reduce_sum(local, g))  # [B]
    value = value.to(x.dtype)
    return value if batch else value[0]


def _discrepancy(p: torch.Tensor, unbiased: bool) -> torch.Tensor:  # [B, 10] -> [B]
    """E k(X, X') + E k(Y, Y') - 2 E k(X, Y) (MMD^2 with kernel k)."""
    return (_self_mean(p, _T_XX, _DIAG_X, _SQ_X, _TOT_X, unbiased)
            + _self_mean(p, _T_YY, _DIAG_Y, _SQ_Y, _TOT_Y, unbiased)
            - 2.0 * p[:, _C_XY] / (p[:, _TOT_X] * p[:, _TOT_Y]))


def _origin_sum(kernel: str, bw: Any, opts: dict, coef: float):
    """origin(x, w) = coef * sum_i w_i k(x_i, 0) through the engine (the closed forms of
    functional against N(0, I) are kernels at another scale evaluated at the origin)."""

    def origin(x: torch.Tensor, w: Optional[torch.Tensor]) -> torch.Tensor:
        zero = x.new_zeros((1, x.shape[1]))
        return coef * pairwise_sum(x, zero, kernel=kernel, bandwidth=bw, weights_x=w, **opts).to(torch.float64)

    return origin


def _need_global(cond: bool, message: str) -> None:
    # Checks of the global batch run after the consensus, on the same numbers on every rank.
    if not cond:
        raise ValueError(message)


def mmd(x, y=None, kernel=None, bandwidth=None, scales=None, estimator=None, weights_x=None, weights_y=None,
        preset=None, *, group) -> torch.Tensor:
    """:func:`latentdiv.functional.mmd` on the global batch (see the module doc)."""
    g = _Group(group)
    resolved = {}

    def check():
        kern, est = F._check_mmd_args(kernel, bandwidth, scales, estimator, preset)
        resolved.update(kernel=kern, unbiased=est == "unbiased")
        F._check_samples(x, "x")
        F._check_w(weights_x, "weights_x", x, "x")
        if y is None:
            if weights_y is not None:
                raise ValueError("weights_y was given but y is None (the prior N(0, I) has no weights)")
            if not F._mmd_prior_closed_form(kern, bandwidth, preset):
                raise ValueError("y=None means N(0, I) in closed form, which exists for the gaussian kernel with a "
                                 "numeric bandwidth and for the energy kernel only (latentdiv.functional.mmd); pass "
                                 "a prior sample y")
        else:
            F._check_y(x, y)
            F._check_w(weights_y, "weights_y", y, "y")

    sizes = _agree_on_samples(g, x, y, weights_x, weights_y, check)
    kern, unbiased = resolved["kernel"], resolved["unbiased"]
    if unbiased:
        for name, key, pos in (("x", "n", "pos_x"), ("y", "m", "pos_y")):
            if name == "y" and y is None:
                continue
            _need_global(sum(sizes[pos]) >= 2, f"the unbiased estimator needs at least 2 points (with positive "
                                               f"weight) in the global {name}, got {sum(sizes[pos])}")
    dim = x.shape[-1]
    if isinstance(bandwidth, str) and preset is None:  # "median": of each batch element's pooled global sample
        if x.dim() == 3:
            return torch.stack([mmd(x[b], _element(y, b, 3), kernel, bandwidth, scales, estimator,
                                    _element(weights_x, b, 2), _element(weights_y, b, 2), preset, group=group)
                                for b in range(x.shape[0])])
        work = compute_dtype(x.dtype)
        pool_x = _gather_rows(x.detach().to(work), sizes["n"], g)
        pool_y = None if y is None else _gather_rows(y.detach().to(work), sizes["m"], g)
        bw = F._mmd_bandwidth(kern, bandwidth, scales, preset, dim, pool_x, pool_y)
    else:
        bw = F._mmd_bandwidth(kern, bandwidth, scales, preset, dim, x, y)
    if y is not None:
        plan = _PairPlan(kern, bw, {}, unbiased)
        return _pair_loss(g, sizes, plan, x, y, weights_x, weights_y, lambda p: _discrepancy(p, unbiased))
    if kern == "energy":
        return _energy_to_normal(g, sizes, x, weights_x, unbiased)
    return _gaussian_to_normal(g, sizes, x, weights_x, bandwidth_scales(bw, "bandwidth"), unbiased)


def mmd_to_normal(z, bandwidth=None, estimator="unbiased", weights=None, *, group) -> torch.Tensor:
    """:func:`latentdiv.functional.mmd_to_normal` on the global batch."""
    g = _Group(group)

    def check():
        check_choice(estimator, "estimator", F._ESTIMATORS)
        F._check_samples(z, "z")
        F._check_w(weights, "weights", z, "z")
        if isinstance(bandwidth, str):
            raise TypeError(f"mmd_to_normal needs a numeric bandwidth, got {bandwidth!r}")
        if bandwidth is not None:
            bandwidth_scales(bandwidth, "bandwidth")

    sizes = _agree_on_samples(g, z, None, weights, None, check)
    unbiased = estimator == "unbiased"
    if unbiased:
        _need_global(sum(sizes["pos_x"]) >= 2, "the unbiased estimator needs at least 2 points (with positive "
                                               f"weight) in the global z, got {sum(sizes['pos_x'])}")
    hs = bandwidth_scales(F._default_bandwidth("gaussian", z.shape[-1]) if bandwidth is None else bandwidth,
                            "bandwidth")
    return _gaussian_to_normal(g, sizes, z, weights, hs, unbiased)


def _gaussian_to_normal(g, sizes, z, w, hs: Tuple[float, ...], unbiased: bool) -> torch.Tensor:
    r"""MMD^2 to N(0, I), gaussian kernel (functional.mmd_to_normal): self term, the cross term
    :math:`-2 \sum_h (h^2/(1+h^2))^{D/2} E_w e^{-|z|^2/(2(1+h^2))}` (a gaussian of bandwidth
    sqrt(1 + h^2) at the origin), the constant :math:`\sum_h (h^2/(2+h^2))^{D/2}`."""
    dim = z.shape[-1]
    terms = [_origin_sum("gaussian", math.sqrt(1.0 + h * h), {}, math.exp(-0.5 * dim * math.log1p(1.0 / (h * h))))
             for h in hs]
    prior = sum(math.exp(-0.5 * dim * math.log1p(2.0 / (h * h))) for h in hs)
    plan = _PairPlan("gaussian", hs if len(hs) > 1 else hs[0], {}, unbiased,
                     origin=lambda x, w: sum(t(x, w) for t in terms))

    def assemble(p):
        return (_self_mean(p, _T_XX, _DIAG_X, _SQ_X, _TOT_X, unbiased) - 2.0 * p[:, _ORIGIN] / p[:, _TOT_X] + prior)

    return _pair_loss(g, sizes, plan, z, None, w, None, assemble)


def _energy_to_normal(g, sizes, x, w, unbiased: bool) -> torch.Tensor:
    r"""Energy distance to N(0, I) (functional._energy_impl, y = None):
    2 E||x - Y|| - E||X - X'|| - E||Y - Y'|| with the closed forms of latentdiv.special; the
    per-point E||x_i - Y|| through the same evaluation as the single-process path."""
    dim = x.shape[-1]

    def origin(xr, wr):
        rows = None if unbiased else _fused_expected_distance(xr, dim)
        if rows is None:
            rows = special.expected_distance_to_normal(F._sq_norms(xr), dim)
        return (rows * wr.to(torch.float64)).sum() if wr is not None else rows.sum()

    plan = _PairPlan("energy", 1.0, {}, unbiased, origin=origin)
    eyy = special.expected_pair_distance_normal(dim)

    def assemble(p):  # kernel "energy" is -r: the self mean is -E||X - X'||
        return 2.0 * p[:, _ORIGIN] / p[:, _TOT_X] + _self_mean(p, _T_XX, _DIAG_X, _SQ_X, _TOT_X, unbiased) - eyy

    return _pair_loss(g, sizes, plan, x, None, w, None, assemble)


def _fused_expected_distance(x: torch.Tensor, dim: int) -> Optional[torch.Tensor]:
    from . import _fused_ops

    return _fused_ops.expected_distance_to_normal(x, dim)


def energy_distance(x, y=None, weights_x=None, weights_y=None, *, group) -> torch.Tensor:
    """:func:`latentdiv.functional.energy_distance` on the global batch."""
    g = _Group(group)

    def check():
        F._check_samples(x, "x")
        F._check_y(x, y)
        F._check_w(weights_x, "weights_x", x, "x")
        F._check_w(weights_y, "weights_y", y, "y")

    sizes = _agree_on_samples(g, x, y, weights_x, weights_y, check)
    if y is None:
        return _energy_to_normal(g, sizes, x, weights_x, False)
    plan = _PairPlan("energy", 1.0, {}, False)
    return _pair_loss(g, sizes, plan, x, y, weights_x, weights_y, lambda p: _discrepancy(p, False))


def cramer_wold(x, y=None, gamma=None, phi="exact", weights_x=None, weights_y=None, *, group) -> torch.Tensor:
    """:func:`latentdiv.functional.cramer_wold` on the global batch (the default gamma is that of
    the global batch size N)."""
    g = _Group(group)

    def check():
        check_choice(phi, "phi", ("exact", "approx"))
        F._check_samples(x, "x")
        F._check_y(x, y)
        F._check_w(weights_x, "weights_x", x, "x")
        F._check_w(weights_y, "weights_y", y, "y")
        if gamma is not None:
            check_positive(gamma, "gamma")
        if phi == "approx" and x.shape[-1] < 2:
            raise ValueError(f"phi='approx' needs D >= 2 (its 1/(2D-3) factor), got D = {x.shape[-1]}; use phi='exact'")

    sizes = _agree_on_samples(g, x, y, weights_x, weights_y, check)
    gam = check_positive(F.default_gamma(sum(sizes["n"])) if gamma is None else gamma, "gamma")
    exact = phi == "exact"
    kernel = "cramer_wold" if exact else "cramer_wold_approx"
    # The approximate kernel (gamma + r2/(2D-3))^{-1/2} already carries the 1/sqrt(gamma) factor.
    norm = (1.0 / math.sqrt(gam) if exact else 1.0) / (2.0 * F._SQRT_PI)
    opts = {"gamma": gam}
    if y is not None:
        plan = _PairPlan(kernel, 1.0, opts, False)
        return _pair_loss(g, sizes, plan, x, y, weights_x, weights_y, lambda p: norm * _discrepancy(p, False))
    # sum_i w_i phi_D(|x_i|^2 / (2 + 4 gamma)) / sqrt(gamma + 1/2): the kernel with gamma + 1/2 at the
    # origin (the engine's fitted phi, as the single-process CPU path); approx: (gamma + 1/2 + |x|^2/(2D-3))^{-1/2}.
    coef = 1.0 / math.sqrt(gam + 0.5) if exact else 1.0
    plan = _PairPlan(kernel, 1.0, opts, False, origin=_origin_sum(kernel, 1.0, {"gamma": gam + 0.5}, coef))
    const = 1.0 / math.sqrt(1.0 + gam) / (2.0 * F._SQRT_PI)

    def assemble(p):
        return norm * p[:, _T_XX] / p[:, _TOT_X] ** 2 + const - 2.0 * p[:, _ORIGIN] / p[:, _TOT_X] / (2.0 * F._SQRT_PI)

    return _pair_loss(g, sizes, plan, x, None, weights_x, None, assemble)


# ---------------------------------------------------------------------------------------------------
# sorting-based losses: gather the O(N) sorted values with gradient
# ---------------------------------------------------------------------------------------------------
def _agree_on_codes(g: _Group, z: Any) -> List[int]:
    """The consensus of a one-sample loss without weights (the EDF losses): per-rank sizes n."""

    def check():
        F._check_samples(z, "z")

    return _agree_on_samples(g, z, None, None, None, check)["n"]


def _per_element(z: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    return torch.stack([fn(z[b]) for b in range(z.shape[0])]) if z.dim() == 3 else fn(z)


def radii_cvm(z, *, group) -> torch.Tensor:
    """:func:`latentdiv.functional.radii_cvm` on the global batch: the radii (N values) are gathered."""
    g = _Group(group)
    sizes = _agree_on_codes(g, z)

    def one(zb):  # [n, D] -> []
        r = nan_if_nonfinite(F._safe_sqrt(F._sq_norms(zb)), zb)  # [n] float64 (NaN rows poison every rank)
        radii = _gather_rows(r, sizes, g)  # [N]
        return F._cvm(special.chi_cdf(radii, z.shape[-1]))

    return _per_element(z, one).to(z.dtype)


def coordinates_cvm(z, *, group) -> torch.Tensor:
    """:func:`latentdiv.functional.coordinates_cvm` on the global batch: the CDF values (N D) are gathered."""
    g = _Group(group)
    sizes = _agree_on_codes(g, z)

    def one(zb):
        u = nan_if_nonfinite(torch.special.ndtr(zb.to(torch.float64)), zb)  # [n, D]
        return F._cvm(_gather_rows(u, sizes, g).T).mean()

    return _per_element(z, one).to(z.dtype)


def distances_cvm(z, *, group) -> torch.Tensor:
    """:func:`latentdiv.functional.distances_cvm` on the global batch. Each rank computes the
    distances of its rows to the later global points (i < j), in blocks of rows; the N(N-1)/2
    values are gathered (the statistic sorts them all: O(N^2) values by definition)."""
    g = _Group(group)
    sizes = _agree_on_codes(g, z)
    total = sum(sizes)
    _need_global(total >= 2, f"distances_cvm needs at least 2 points in the global batch, got {total}")
    offset = sum(sizes[:g.rank])
    counts = [sum(total - 1 - i for i in range(sum(sizes[:r]), sum(sizes[:r + 1]))) for r in range(g.world)]
    dim = z.shape[-1]

    def one(zb):  # [n, D] -> []
        work = zb.to(compute_dtype(zb.dtype))
        cols = _gather_rows(work, sizes, g)  # [N, D] with gradient (each pair appears once)
        pieces = []
        block = max(1, (1 << 22) // max(1, total * dim))
        for start in range(0, zb.shape[0], block):
            rows = work[start:start + block]  # [c, D]
            diff = (rows.unsqueeze(1) - cols.unsqueeze(0)).to(torch.float64)  # [c, N, D]
            d = F._safe_sqrt((diff * diff).sum(-1))  # [c, N]
            gi = torch.arange(offset + start, offset + start + rows.shape[0], device=zb.device)
            keep = torch.arange(total, device=zb.device).unsqueeze(0) > gi.unsqueeze(1)  # j > i
            pieces.append(d[keep])
        local = nan_if_nonfinite(torch.cat(pieces), zb)  # [counts[rank]]
        dist = _gather_rows(local, counts, g)  # [N (N - 1) / 2]
        return F._cvm(special.chi_cdf(dist / math.sqrt(2.0), dim))

    return _per_element(z, one).to(z.dtype)


def sliced_wasserstein(x, y=None, n_projections=50, generator=None, projections=None, weights_x=None,
                       weights_y=None, *, group) -> torch.Tensor:
    """:func:`latentdiv.functional.sliced_wasserstein` on the global batch. Directions: rank 0's
    (every rank draws ``n_projections`` with its ``generator`` so the RNG states stay in step; given
    ``projections`` are also taken from rank 0). The projections (N L values) are gathered."""
    g = _Group(group)

    def check():
        F._check_samples(x, "x")
        F._check_y(x, y)
        F._check_w(weights_x, "weights_x", x, "x")
        F._check_w(weights_y, "weights_y", y, "y")
        if projections is None:
            check_int(n_projections, "n_projections", 1)
            if generator is not None and not isinstance(generator, torch.Generator):
                raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        else:
            if not isinstance(projections, torch.Tensor) or not projections.is_floating_point():
                raise TypeError("projections must be a floating torch.Tensor of shape (L, D)")
            if projections.dim() != 2 or projections.shape[1] != x.shape[-1] or projections.shape[0] < 1:
                raise ValueError(f"projections must have shape (L, D) = (L, {x.shape[-1]}) with L >= 1, "
                                 f"got {tuple(projections.shape)}")
            if projections.device != x.device:
                raise ValueError(f"projections must be on x's device {x.device}, got {projections.device}")
            F._check_directions(projections)
        return int(n_projections) if projections is None else projections.shape[0]

    sizes = _agree_on_samples(g, x, y, weights_x, weights_y, check)
    work = compute_dtype(x.dtype)
    dim = x.shape[-1]
    if projections is None:
        theta = torch.randn(int(n_projections), dim, generator=generator, device=x.device, dtype=work)
    else:
        theta = projections.detach().to(work)
    # Rank 0's directions everywhere (the same gather as the data; L D values).
    theta = _all_gather(theta.contiguous(), g)[:theta.shape[0]]
    theta = torch.nn.functional.normalize(theta, dim=1)  # [L, D]
    eye = torch.eye(theta.shape[0], dtype=torch.float64, device=x.device)

    def project(t, count):  # [n, D] -> [N, L] global projections, with gradient
        p = nan_if_nonfinite(t.to(work) @ theta.T, t)  # [n, L]
        return _gather_rows(p, count, g)

    def gweights(w, count):
        return None if w is None else _gather_rows(w, count, g)

    def one(xb, yb, wxb, wyb):
        px = project(xb, sizes["n"])
        py = None if yb is None else project(yb, sizes["m"])
        # functional's own assembly on the global projections (the identity directions project nothing).
        return F._sliced_impl(px, py, gweights(wxb, sizes["n"]), gweights(wyb, sizes["m"]), eye)

    if x.dim() == 3:
        out = torch.stack([one(x[b], _element(y, b, 3), _element(weights_x, b, 2), _element(weights_y, b, 2))
                           for b in range(x.shape[0])])
    else:
        out = one(x, y, weights_x, weights_y)
    return out.to(x.dtype)


# ---------------------------------------------------------------------------------------------------
# KL (per sample: a global mean or sum)
# ---------------------------------------------------------------------------------------------------
def kl_normal(mu, logvar, reduction="mean", max_logvar=50.0, *, group) -> torch.Tensor:
    """:func:`latentdiv.functional.kl_normal` with ``reduction="mean"`` / ``"sum"`` over the global
    batch (samples = every leading index of every rank); ``"none"`` returns this rank's per-sample
    values (no collective is needed)."""
    g = _Group(group)

    holder: Dict[str, torch.Tensor] = {}

    def check():  # the single-process function validates and computes the local per-sample values
        holder["kl"] = F.kl_normal(mu, logvar, reduction="none", max_logvar=max_logvar)
        check_choice(reduction, "reduction", ("mean", "sum", "none"))
        return dict(ndim=mu.dim(), dim=mu.shape[-1], dtype=_dtype_code(mu)), {}

    _consensus(g, _device_for(g, mu), check, ("ndim", "dim", "dtype"), ())
    per_sample = holder["kl"]
    if reduction == "none":
        return per_sample
    s = per_sample.to(torch.float64)
    total = _all_reduce_sum(torch.stack([s.sum(), torch.tensor(float(s.numel()), dtype=torch.float64,
                                                                device=s.device)]), g)
    out = total[0] / total[1] if reduction == "mean" else total[0]
    return out.to(per_sample.dtype)


def sigreg(z, *, num_slices, t_max, knots, estimator, seed, directions, group) -> torch.Tensor:
    """:func:`latentdiv.sigreg` on the global batch: the same slices on every rank (from the seed, or
    the given directions; checked bit for bit, with t_max, knots and the estimator), each rank's sums
    of cos(t u_i) and sin(t u_i) over its samples all-reduced (LeJEPA's all-reduce of the ECF means,
    here of the sums, so uneven ranks weigh by their sizes), then the statistic of the N-sample ECF."""
    import zlib

    from . import _sigreg as S

    g = _Group(group)
    holder: Dict[str, Any] = {}

    def local():
        F._check_samples(z, "z")
        holder["estimator"] = est = S._check_args(z, num_slices, t_max, knots, estimator)
        holder["directions"] = dirs = S.resolve_directions(z, num_slices, seed, directions)
        shared, sizes = _sample_meta(z, None, None, None)
        fingerprint = (dirs.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
                       + repr(float(t_max)).encode())
        shared.update(directions=dirs.shape[1], slices=zlib.crc32(fingerprint), knots=int(knots),
                      estimator=S.ESTIMATORS.index(est))
        return shared, sizes

    sizes = _consensus(g, _device_for(g, z), local, _LOSS_SHARED + ("slices", "knots", "estimator"), _LOSS_LOCAL)["n"]
    t, phi, weights = S.quadrature(float(t_max), int(knots), z.dtype, z.device)
    sums = _all_reduce_sum(S.ecf_sums(z, holder["directions"], t), g)  # [2, (B,) S, K] over the N samples
    return S.statistics_from_ecf(sums, sum(sizes), phi, weights, holder["estimator"]).mean(dim=-1)


# ---------------------------------------------------------------------------------------------------
# normality tests: the global sample on every rank
# ---------------------------------------------------------------------------------------------------
def global_sample(z: Any, group: Any) -> torch.Tensor:  # [n_local, D] -> [N, D] float64 CPU
    """The concatenation of every rank's sample (in group-rank order), detached, as a float64 CPU
    tensor, on every rank: what the normality tests run on with ``group=``. ``z`` is a tensor or
    array-like of shape (n_local, D) with finite values; the ranks must agree on D."""
    g = _Group(group)
    holder: Dict[str, torch.Tensor] = {}

    def check():
        t = sample_tensor(z, "z")  # the values are checked by the test, on the global sample
        holder["t"] = t
        return dict(dim=t.shape[1]), dict(n=t.shape[0])

    device = _device_for(g, z)
    sizes = _consensus(g, device, check, ("dim",), ("n",))["n"]
    if max(sizes) == 0:
        return holder["t"]
    return _gather_rows(holder["t"].to(device), sizes, g).cpu()
