"""Bad input: a ValueError or TypeError that names the offending argument; never a crash."""

from __future__ import annotations

import pytest
import torch

import latentdiv
from conftest import requires_compiled

X = torch.randn(5, 3)


@pytest.mark.parametrize(
    "kwargs, error, word",
    [
        (dict(x=torch.randn(5)), ValueError, "x"),                      # wrong rank
        (dict(x=torch.randn(2, 5, 3)), ValueError, "x"),
        (dict(x=torch.randn(0, 3)), ValueError, "empty"),                 # empty input
        (dict(x=torch.randn(5, 0)), ValueError, "x"),
        (dict(x=torch.arange(15).reshape(5, 3)), TypeError, "x"),        # non-floating
        (dict(x=[[1.0, 2.0]]), TypeError, "x"),
        (dict(x=X, y=torch.randn(4, 2)), ValueError, "dimension"),       # mismatched D
        (dict(x=X, y=torch.randn(4, 3, dtype=torch.float64)), TypeError, "dtype"),  # mixed dtypes
        (dict(x=X, y=torch.randn(0, 3)), ValueError, "y"),
        (dict(x=X, kernel="rbf"), ValueError, "unknown kernel"),
        (dict(x=X, kernel=3), TypeError, "kernel"),
        (dict(x=X, bandwidth=0.0), ValueError, "bandwidth"),
        (dict(x=X, bandwidth=-1.0), ValueError, "bandwidth"),
        (dict(x=X, bandwidth=float("nan")), ValueError, "bandwidth"),
        (dict(x=X, bandwidth=[1.0, 0.0]), ValueError, "bandwidth"),
        (dict(x=X, bandwidth=[]), ValueError, "bandwidth"),
        (dict(x=X, bandwidth="wide"), TypeError, "bandwidth"),
        (dict(x=X, bandwidth=[0.5] * 65), ValueError, "bandwidth"),
        (dict(x=X, weights_x=torch.ones(4)), ValueError, "weights_x"),
        (dict(x=X, weights_x=torch.ones(5, dtype=torch.int64)), TypeError, "weights_x"),
        (dict(x=X, y=X, weights_y=torch.ones(3)), ValueError, "weights_y"),
        (dict(x=X, weights_y=torch.ones(5)), ValueError, "weights_y"),
        (dict(x=X, y=X, exclude_diagonal=True), ValueError, "exclude_diagonal"),
        (dict(x=X, exclude_diagonal=1), TypeError, "exclude_diagonal"),
        (dict(x=X, kernel="cramer_wold"), ValueError, "gamma"),
        (dict(x=X, kernel="cramer_wold", gamma=0.0), ValueError, "gamma"),
        (dict(x=X, kernel="cramer_wold_approx", gamma=-1.0), ValueError, "gamma"),
        (dict(x=torch.randn(5, 1), kernel="cramer_wold_approx", gamma=1.0), ValueError, "dim"),
        (dict(x=X, kernel="gaussian", gamma=1.0), TypeError, "gamma"),   # option the kernel does not take
    ],
)
def test_bad_input_names_the_argument(kwargs, error, word):
    with pytest.raises(error, match=word):
        latentdiv.pairwise_sum(**kwargs)


def test_pdist_bad_input():
    with pytest.raises(ValueError, match="x"):
        latentdiv.pdist(torch.randn(4))
    with pytest.raises(TypeError, match="x"):
        latentdiv.pdist(torch.ones(4, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="empty"):
        latentdiv.pdist(torch.randn(0, 2))


def test_mixed_devices_rejected():
    meta = torch.empty(4, 3, device="meta")
    with pytest.raises(ValueError, match="device"):
        latentdiv.pairwise_sum(X, meta[:, :3].to("meta"))


def test_weights_on_other_device_rejected():
    with pytest.raises(ValueError, match="weights_x"):
        latentdiv.pairwise_sum(X, weights_x=torch.ones(5, device="meta"))


@requires_compiled
def test_engine_backstop_rejects_inconsistent_call():
    """Python validates first; the C++ validate() still refuses a call that slips through."""
    from latentdiv import _ext

    status = _ext._C.pair_reduce(device=0, isa=-1, mode=0, dtype=0, x=X.data_ptr(), y=X.data_ptr(), wx=0, wy=0,
                                 out_rows=0, out_total=0, out_grad=0, workspace=0, n=5, m=5, d=3, self_pairs=True,
                                 exclude_diagonal=False, num_threads=1, kernel=0, params=[0.5], stream=0)
    assert status == _ext._C.STATUS_BAD_ARGUMENT
    with pytest.raises(RuntimeError, match="bad argument"):
        _ext.check_status(status, "pair_reduce")
    out = torch.empty(5, dtype=torch.float64)
    total = torch.empty((), dtype=torch.float64)
    status = _ext._C.pair_reduce(device=0, isa=-1, mode=0, dtype=0, x=X.data_ptr(), y=X.data_ptr(), wx=0, wy=0,
                                 out_rows=out.data_ptr(), out_total=total.data_ptr(), out_grad=0, workspace=0, n=5,
                                 m=5, d=3, self_pairs=True, exclude_diagonal=False, num_threads=1, kernel=99,
                                 params=[], stream=0)
    assert status == _ext._C.STATUS_UNKNOWN_KERNEL
