"""Pure-torch implementations of the engine's primitives.

Two jobs: the fallback when the compiled engine is missing or the device has no kernels (a warning
says so once), and the oracle the tests compare the engine with (in float64). Memory stays
O(n * chunk): rows are processed in chunks, each under activation checkpointing, so autograd keeps
no n x m matrix either. Distances come from ``torch.cdist`` in its difference (non-matmul) mode: no
cancellation for near-duplicates, and its gradient at r = 0 is 0 (the subgradient we use).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch.utils.checkpoint import checkpoint

from ._registry import KernelSpec

# Elements of one chunk x m block of distances (about 32 MB in float64).
_BLOCK_ELEMENTS = 1 << 22


def _rows_per_chunk(m: int, chunk_size: Optional[int]) -> int:
    if chunk_size is not None:
        return max(1, int(chunk_size))
    return max(1, _BLOCK_ELEMENTS // max(1, m))


def _block_sum(
    xi: torch.Tensor,            # [c, D] rows i0 .. i0 + c
    y: torch.Tensor,             # [m, D]
    wxi: Optional[torch.Tensor],  # [c] or None
    wy: Optional[torch.Tensor],   # [m] or None
    i0: int,
    spec: KernelSpec,
    bandwidth: Any,
    dim: int,
    options: Dict[str, Any],
    exclude_diagonal: bool,
) -> torch.Tensor:
    r = torch.cdist(xi, y, compute_mode="donot_use_mm_for_euclid_dist")  # [c, m]
    k = spec.formula(r, bandwidth, dim, options)
    if not isinstance(k, torch.Tensor):  # a constant formula (none today) must still be a tensor
        k = torch.full_like(r, float(k))
    if exclude_diagonal:
        rows = torch.arange(xi.shape[0], device=xi.device)
        mask = torch.ones_like(k)
        mask[rows, rows + i0] = 0.0
        k = k * mask
    if wy is not None:
        k = k * wy.unsqueeze(0)
    row_sums = k.sum(dim=1)  # [c]
    if wxi is not None:
        row_sums = row_sums * wxi
    return row_sums.sum()


def pairwise_sum(
    x: torch.Tensor,             # [n, D]
    y: Optional[torch.Tensor],   # [m, D] or None (y is x)
    weights_x: Optional[torch.Tensor],  # [n] or None
    weights_y: Optional[torch.Tensor],  # [m] or None (y None: weights_x on both sides)
    spec: KernelSpec,
    bandwidth: Any,
    options: Dict[str, Any],
    exclude_diagonal: bool = False,
    chunk_size: Optional[int] = None,
) -> torch.Tensor:
    r"""$\sum_{i,j} w^x_i w^y_j k(x_i, y_j)$ in the dtype of x (float64 accumulation of the chunks)."""
    self_pairs = y is None
    if self_pairs:
        y, weights_y = x, weights_x
    dim = x.shape[1]
    rows = _rows_per_chunk(y.shape[0], chunk_size)
    total = x.new_zeros((), dtype=torch.float64)
    need_ckpt = torch.is_grad_enabled() and x.shape[0] > rows
    for i0 in range(0, x.shape[0], rows):
        xi = x[i0 : i0 + rows]
        wxi = None if weights_x is None else weights_x[i0 : i0 + rows]
        args = (xi, y, wxi, weights_y, i0, spec, bandwidth, dim, options, exclude_diagonal and self_pairs)
        part = checkpoint(_block_sum, *args, use_reentrant=False) if need_ckpt else _block_sum(*args)
        total = total + part.to(torch.float64)
    return total.to(x.dtype)


def pdist(x: torch.Tensor) -> torch.Tensor:  # [n, D] -> [n (n - 1) / 2]
    """Condensed pairwise distances in torch.pdist's order (torch.pdist itself: gradient 0 at 0)."""
    return torch.pdist(x)
