"""Property-based fuzzing of every loss (issue 10): shapes (n, D) and (B, n, D), dtypes, scales from
1e-30 to 1e30, duplicate rows and weights.

- A finite input whose answer is representable in its dtype gives a finite value and finite
  gradients. "Representable" is judged by the same loss on the float64 copy of the same numbers: if
  that answer (and its gradient) is finite and well inside the dtype's range, the dtype's own result
  must be finite too. float64 inputs must always give a finite value and gradient here.
- A non-finite input gives a NaN value (the documented policy), never a plausible number.
- Invalid weights give a ValueError that names the argument.

Examples are derandomized (the same cases on every run) so that the default suite cannot flake.
Float32/bfloat16 data whose squared distances overflow float32 (|x| >= ~1e19: issue 10 item 4, now
handled by the engine's power-of-two frame, docs/engine.md) are rare among the main property's
cases, so ``test_fuzz_engine_float32_range`` draws them on purpose.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from latentdiv import functional as F  # noqa: E402
from latentdiv import losses as L  # noqa: E402


def _gen():
    return torch.Generator().manual_seed(0)


def _prior_like(x):
    return torch.randn(x.shape, generator=_gen(), dtype=torch.float64).to(x.dtype) * 0.5 + x.detach().mean()


# name -> (loss(x, w), engine-backed, minimum n). w: weights of x's rows or None.
LOSSES = {
    "mmd": (lambda x, w: F.mmd(x, _prior_like(x), weights_x=w), True, 2),
    "mmd_biased_laplacian": (lambda x, w: F.mmd(x, _prior_like(x), kernel="laplacian", estimator="biased",
                                                weights_x=w), True, 1),
    "mmd_imq_multiscale": (lambda x, w: F.mmd(x, _prior_like(x), kernel="imq", scales=[0.5, 2.0], weights_x=w), True, 2),
    "mmd_wae": (lambda x, w: F.mmd(x, _prior_like(x), preset="wae", weights_x=w), True, 2),
    "mmd_energy_prior": (lambda x, w: F.mmd(x, kernel="energy", weights_x=w), True, 2),
    "mmd_to_normal": (lambda x, w: F.mmd_to_normal(x, weights=w), True, 2),
    "MMDLoss": (lambda x, w: L.MMDLoss()(x) if w is None else L.MMDLoss()(w, x), True, 2),
    "cramer_wold": (lambda x, w: F.cramer_wold(x, weights_x=w), True, 1),
    "cramer_wold_two_sample": (lambda x, w: F.cramer_wold(x, _prior_like(x), weights_x=w), True, 1),
    "cwae_loss": (lambda x, w: F.cwae_loss(x, weights=w), True, 1),
    "energy_distance": (lambda x, w: F.energy_distance(x, weights_x=w), True, 1),
    "energy_two_sample": (lambda x, w: F.energy_distance(x, _prior_like(x), weights_x=w), True, 1),
    "sliced_wasserstein": (lambda x, w: F.sliced_wasserstein(x, n_projections=8, generator=_gen(), weights_x=w), False, 1),
    "sliced_two_sample": (lambda x, w: F.sliced_wasserstein(x, _prior_like(x), n_projections=8, generator=_gen(),
                                                            weights_x=w), False, 1),
    "radii_cvm": (lambda x, w: F.radii_cvm(x), False, 1),
    "distances_cvm": (lambda x, w: F.distances_cvm(x), True, 2),
    "coordinates_cvm": (lambda x, w: F.coordinates_cvm(x), False, 1),
    "kl_normal": (lambda x, w: F.kl_normal(x, 0.5 * x), False, 1),
}
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


@st.composite
def cases(draw, min_n: int, scales=(-30, 30), dtypes=DTYPES, dims=(1, 12)):
    batched = draw(st.booleans())
    b = draw(st.integers(1, 3)) if batched else None
    n = draw(st.integers(max(min_n, 2), 9))
    d = draw(st.integers(*dims))
    dtype = draw(st.sampled_from(dtypes))
    exponent = draw(st.integers(*scales))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    shape = (b, n, d) if batched else (n, d)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 10.0 ** exponent
    if draw(st.booleans()):  # duplicate rows: zero distances, ties in sorts
        src = draw(st.integers(0, n - 1))
        x[..., : max(1, n // 2), :] = x[..., src: src + 1, :]
    weights = None
    if draw(st.booleans()):
        wshape = (n,) if (not batched or draw(st.booleans())) else (b, n)
        weights = torch.rand(wshape, generator=g, dtype=torch.float64) + 0.05
        if draw(st.booleans()):  # zeros on some rows, never all of them
            weights[..., 1:] = weights[..., 1:] * (torch.rand(wshape[:-1] + (n - 1,), generator=g) < 0.5)
        weights = weights * 10.0 ** draw(st.integers(-20, 20))  # weights are relative: any positive scale
    return x.to(dtype), weights, exponent


def _value_and_grad(loss, x, w):
    x = x.detach().clone().requires_grad_(True)
    value = loss(x, None if w is None else w.to(x.dtype))
    total = value.sum() if value.dim() else value
    (grad,) = torch.autograd.grad(total, x, allow_unused=True)
    return value.detach(), (torch.zeros_like(x) if grad is None else grad)


def _representable(t: torch.Tensor, dtype: torch.dtype) -> bool:
    return bool(torch.isfinite(t).all()) and float(t.abs().max()) < torch.finfo(dtype).max / 16


def _check_finite(name, x, w):
    loss, _, _ = LOSSES[name]
    assume(bool(torch.isfinite(x).all()))  # a half cast of 1e30 is inf: that is the non-finite case
    if w is not None:
        assume(bool(torch.isfinite(w.to(x.dtype)).all()) and bool((w.to(x.dtype).sum(-1) > 0).all()))
    try:
        value, grad = _value_and_grad(loss, x, w)
    except ValueError as exc:
        # The one invalid input the generator makes: zeros leaving a single positive weight, which a
        # U-statistic cannot use (no pairs): a named error is the contract.
        assert "positive weight(s)" in str(exc) and "weights" in str(exc), str(exc)
        return
    if x.dtype == torch.float64:
        assert torch.isfinite(value).all(), f"{name}: float64 value {value}"
        assert torch.isfinite(grad).all(), f"{name}: float64 gradient not finite"
        return
    ref_value, ref_grad = _value_and_grad(loss, x.double(), None if w is None else w.to(x.dtype).double())
    if _representable(ref_value, x.dtype):
        assert torch.isfinite(value).all(), f"{name}: {x.dtype} value {value} where float64 gives {ref_value}"
        if _representable(ref_grad, x.dtype):
            assert torch.isfinite(grad).all(), f"{name}: {x.dtype} gradient not finite where float64's is"


def _in_engine_float32_range(name, x) -> bool:
    """The cases of issue 10 item 4: an engine-backed loss on
    float32/bfloat16 data whose squared distances (or squared norms, on the engine's dot-product path)
    can overflow float32: 4 max_i |x_i|^2 >= float32's max, i.e. max |x_i| >= ~9.2e18 (before the
    engine's frame the energy kernel gave -inf - (-inf) = NaN there in every D, the others NaN for D >= 9)."""
    if not LOSSES[name][1] or x.dtype not in (torch.float32, torch.bfloat16):
        return False
    return 4.0 * float((x.double() ** 2).sum(-1).max()) >= torch.finfo(torch.float32).max


# Examples per loss and property: small in the default suite (it must stay fast on 2 cores); raise it
# with LATENTDIV_FUZZ_EXAMPLES=500 for a deep run. derandomize: the same cases on every run.
_EXAMPLES = int(os.environ.get("LATENTDIV_FUZZ_EXAMPLES", "10"))
_SETTINGS = settings(max_examples=2 * _EXAMPLES, deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
_SMALL = settings(_SETTINGS, max_examples=_EXAMPLES)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_fuzz_finite_input_gives_finite_value_and_gradient(name):
    @_SETTINGS
    @given(cases(LOSSES[name][2]))
    def prop(case):
        x, w, _ = case
        _check_finite(name, x, w)

    prop()


@pytest.mark.parametrize("name", sorted(n for n, (_, engine, _) in LOSSES.items() if engine))
def test_fuzz_engine_float32_range(name):
    @settings(_SMALL, phases=[Phase.explicit, Phase.generate])
    @given(cases(LOSSES[name][2], scales=(19, 30), dtypes=[torch.float32, torch.bfloat16]))
    def prop(case):
        x, w, _ = case
        assume(_in_engine_float32_range(name, x))
        _check_finite(name, x, w)

    prop()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_fuzz_non_finite_input_gives_nan(name):
    loss, _, min_n = LOSSES[name]

    @_SMALL
    @given(cases(min_n, scales=(-5, 5), dtypes=[torch.float64, torch.float32]),
           st.sampled_from([math.nan, math.inf, -math.inf]), st.integers(0, 10**6))
    def prop(case, bad, where):
        x, _, _ = case
        x = x.clone()
        x.view(-1)[where % x.numel()] = bad
        value = loss(x, None)
        if x.dim() == 3 and value.dim() == 1:  # per batch element: the element holding the bad value is NaN
            b = (where % x.numel()) // (x.shape[1] * x.shape[2])
            assert torch.isnan(value[b]), f"{name}: batch element {b} gives {value[b]}"
        else:
            assert torch.isnan(value).all(), f"{name}: {value} for an input holding {bad}"

    prop()


_WEIGHTED = sorted(n for n in LOSSES if n not in ("radii_cvm", "distances_cvm", "coordinates_cvm", "kl_normal"))


@pytest.mark.parametrize("name", _WEIGHTED)
def test_fuzz_invalid_weights_are_named_errors(name):
    loss, _, min_n = LOSSES[name]

    @_SMALL
    @given(cases(min_n, scales=(-3, 3), dtypes=[torch.float64, torch.float32]),
           st.sampled_from(["negative", "zero", "nan", "inf", "length"]))
    def prop(case, kind):
        x, _, _ = case
        n = x.shape[-2]
        w = torch.ones(n, dtype=x.dtype)
        if kind == "negative":
            w[n // 2] = -0.5
        elif kind == "zero":
            w.zero_()
        elif kind == "nan":
            w[0] = math.nan
        elif kind == "inf":
            w[-1] = math.inf
        else:
            w = torch.ones(n + 1, dtype=x.dtype)
        with pytest.raises(ValueError, match=r"weights(_x)?\b|\ba\b"):
            loss(x, w)

    prop()
