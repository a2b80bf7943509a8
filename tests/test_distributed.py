"""group= on the whole catalog: on 2 and 3 gloo ranks (spawned once per world size for this module),
with rank-asymmetric data and uneven local sizes, every loss's value on each rank equals the
single-process value on the concatenated global batch, and the gradients after DDP's averaging
equal the single-process ones (float64, relative error < 1e-10). Plus: the normality tests, bad
input (an error on every rank, no hang), and a negative control (a naive gather's gradient is wrong)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import latentdiv.functional as F
from latentdiv import SIGRegLoss, losses, sigreg, stats
from latentdiv.distributed import WORLD

from _distributed_pool import Pool

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")

TOL = 1e-10
D = 5
# Uneven local sizes (rows of x, rows of y) per rank, for each world size.
SIZES = {2: ([5, 11], [9, 4]), 3: ([3, 8, 5], [6, 2, 7])}


# ---------------------------------------------------------------------------------------------------
# the catalog: name -> loss(inputs, group); inputs: z (the codes, x @ A), y, wx, wy, mu, logvar
# ---------------------------------------------------------------------------------------------------
def _sw_gen():
    return torch.Generator().manual_seed(1234)


CASES = {
    "mmd_gaussian_unbiased": lambda i, g: F.mmd(i["z"], i["y"], bandwidth=1.7, group=g),
    "mmd_wae_weighted": lambda i, g: F.mmd(i["z"], i["y"], preset="wae", weights_x=i["wx"], weights_y=i["wy"], group=g),
    "mmd_laplacian_biased_weighted": lambda i, g: F.mmd(i["z"], i["y"], kernel="laplacian", bandwidth=2.0,
                                                        estimator="biased", weights_x=i["wx"], group=g),
    "mmd_imq_median": lambda i, g: F.mmd(i["z"], i["y"], kernel="imq", bandwidth="median", group=g),
    "mmd_energy_unbiased_prior": lambda i, g: F.mmd(i["z"], kernel="energy", weights_x=i["wx"], group=g),
    "mmd_gaussian_prior_weighted": lambda i, g: F.mmd(i["z"], weights_x=i["wx"], scales=(0.5, 1.0, 2.0),
                                                      bandwidth=1.5, group=g),
    "mmd_to_normal_biased": lambda i, g: F.mmd_to_normal(i["z"], bandwidth=(1.0, 3.0), estimator="biased", group=g),
    "mmd_to_normal_unbiased_weighted": lambda i, g: F.mmd_to_normal(i["z"], weights=i["wx"], group=g),
    "cramer_wold_prior": lambda i, g: F.cramer_wold(i["z"], group=g),
    "cramer_wold_approx_two_sample_weighted": lambda i, g: F.cramer_wold(i["z"], i["y"], gamma=0.3, phi="approx",
                                                                         weights_x=i["wx"], weights_y=i["wy"], group=g),
    "cramer_wold_two_sample": lambda i, g: F.cramer_wold(i["z"], i["y"], group=g),
    "cwae_loss_weighted": lambda i, g: F.cwae_loss(i["z"], weights=i["wx"], group=g),
    "energy_prior_weighted": lambda i, g: F.energy_distance(i["z"], weights_x=i["wx"], group=g),
    "energy_two_sample": lambda i, g: F.energy_distance(i["z"], i["y"], weights_y=i["wy"], group=g),
    "sliced_prior": lambda i, g: F.sliced_wasserstein(i["z"], n_projections=7, generator=_sw_gen(), group=g),
    "sliced_two_sample_weighted": lambda i, g: F.sliced_wasserstein(i["z"], i["y"], n_projections=6,
                                                                    generator=_sw_gen(), weights_x=i["wx"],
                                                                    weights_y=i["wy"], group=g),
    "sliced_prior_weighted": lambda i, g: F.sliced_wasserstein(i["z"], n_projections=5, generator=_sw_gen(),
                                                               weights_x=i["wx"], group=g),
    "radii_cvm": lambda i, g: F.radii_cvm(i["z"], group=g),
    "distances_cvm": lambda i, g: F.distances_cvm(i["z"], group=g),
    "coordinates_cvm": lambda i, g: F.coordinates_cvm(i["z"], group=g),
    "kl_normal_mean": lambda i, g: F.kl_normal(i["z"], i["logvar"], group=g),
    "kl_normal_sum": lambda i, g: F.kl_normal(i["z"], i["logvar"], reduction="sum", group=g),
    "sigreg": lambda i, g: sigreg(i["z"], num_slices=9, knots=7, seed=3, group=g),
    "sigreg_unbiased_directions": lambda i, g: sigreg(i["z"], estimator="unbiased", t_max=2.5,
                                                      directions=torch.eye(D, 3, dtype=torch.float64), group=g),
    # modules
    "MMDLoss_imq": lambda i, g: losses.MMDLoss(kernel="imq", scales=(0.5, 2.0), group=g)(i["wx"], i["z"], None, i["y"]),
    "MMDToNormalLoss": lambda i, g: losses.MMDToNormalLoss(group=g)(i["z"]),
    "CramerWoldLoss_log": lambda i, g: losses.CramerWoldLoss(log=True, group=g)(i["z"]),
    "EnergyDistanceLoss": lambda i, g: losses.EnergyDistanceLoss(group=g)(i["z"], i["y"]),
    "SlicedWassersteinLoss": lambda i, g: losses.SlicedWassersteinLoss(n_projections=4, generator=_sw_gen(),
                                                                       group=g)(i["z"]),
    "RadiiCvMLoss": lambda i, g: losses.RadiiCvMLoss(group=g)(i["z"]),
    "DistancesCvMLoss": lambda i, g: losses.DistancesCvMLoss(group=g)(i["z"]),
    "CoordinatesCvMLoss": lambda i, g: losses.CoordinatesCvMLoss(group=g)(i["z"]),
    "KLNormalLoss": lambda i, g: losses.KLNormalLoss(group=g)(i["z"], i["logvar"]),
    "SIGRegLoss": lambda i, g: SIGRegLoss(num_slices=6, knots=5, seed=11, group=g)(i["z"]),
}
# (B, n, D) inputs: one value per batch element; the module reduces them.
BATCHED = {
    "mmd_batched_weighted": lambda i, g: F.mmd(i["z"], i["y"], weights_x=i["wx"], group=g),
    "mmd_to_normal_batched": lambda i, g: F.mmd_to_normal(i["z"], group=g),
    "cramer_wold_batched": lambda i, g: F.cramer_wold(i["z"], group=g),
    "energy_batched": lambda i, g: F.energy_distance(i["z"], i["y"], group=g),
    "sliced_batched": lambda i, g: F.sliced_wasserstein(i["z"], n_projections=3, generator=_sw_gen(), group=g),
    "radii_cvm_batched": lambda i, g: F.radii_cvm(i["z"], group=g),
    "MMDLoss_batched_sum": lambda i, g: losses.MMDLoss(reduction="sum", group=g)(i["z"]),
    "sigreg_batched": lambda i, g: sigreg(i["z"], num_slices=4, knots=6, group=g),
}
ALL = {**CASES, **BATCHED}


def _global_data(world: int, batched: bool, seed: int = 0) -> dict:
    """Rank-asymmetric data: rank r's rows are N(0.6 r, (1 + 0.4 r)^2) (x) and N(-0.3 r, 1) (y);
    positive weights, a different scale per rank."""
    rng = np.random.default_rng(seed + 17 * world + batched)
    nx, ny = SIZES[world]
    lead = (2,) if batched else ()

    def block(sizes, loc, scale):
        return np.concatenate([loc(r) + scale(r) * rng.standard_normal(lead + (s, D)) for r, s in enumerate(sizes)],
                              axis=-2)

    def weights(sizes):
        return np.concatenate([(1.0 + r) * rng.uniform(0.2, 1.0, lead + (s,)) for r, s in enumerate(sizes)], axis=-1)

    return dict(x=block(nx, lambda r: 0.6 * r, lambda r: 1.0 + 0.4 * r),
                y=block(ny, lambda r: -0.3 * r, lambda r: 1.0),
                wx=weights(nx), wy=weights(ny),
                logvar=0.3 * rng.standard_normal((sum(nx), D)),
                A=np.eye(D) + 0.2 * rng.standard_normal((D, D)))


def _leaves(data: dict, rows_x: slice, rows_y: slice) -> dict:
    """Leaf tensors of one rank's rows (or of the whole batch), and the shared parameter A."""
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in data.items()}
    leaves = dict(A=t["A"].requires_grad_(), x=t["x"][..., rows_x, :].clone().requires_grad_(),
                  y=t["y"][..., rows_y, :].clone().requires_grad_(),
                  wx=t["wx"][..., rows_x].clone().requires_grad_(), wy=t["wy"][..., rows_y].clone().requires_grad_(),
                  logvar=t["logvar"][rows_x].clone().requires_grad_())
    return leaves


def _evaluate(case: str, leaves: dict, group) -> dict:
    """The loss of the case on these leaves (z = x @ A: a parameter in front of the codes), its value
    and every leaf's gradient."""
    inputs = dict(leaves, z=leaves["x"] @ leaves["A"])
    value = ALL[case](inputs, group)
    value.sum().backward()
    return dict(value=value.detach().numpy().copy(),
                grads={k: (None if v.grad is None else v.grad.numpy().copy()) for k, v in leaves.items()})


def _bounds(sizes, rank):
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def _loss_job(rank: int, world: int, case: str, batched: bool) -> dict:
    nx, ny = SIZES[world]
    data = _global_data(world, batched)
    return _evaluate(case, _leaves(data, _bounds(nx, rank), _bounds(ny, rank)), WORLD)


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture(scope="module")
def _pools():
    """Both process groups, started together (the 3-rank one starts while the 2-rank tests run)."""
    pools = {world: Pool(world) for world in (2, 3)}
    yield pools
    for p in pools.values():
        p.close()


@pytest.fixture(scope="module", params=[2, 3], ids=["world2", "world3"])
def pool(request, _pools):
    return _pools[request.param]


def _case_errors(pool: Pool, case: str, batched: bool) -> dict:
    """Relative errors of the case on the pool's ranks against one process on the global batch: each
    rank's value, the DDP-averaged parameter gradient, and each input's gradient (every rank's rows are
    W times the global loss's gradient of them, docs/distributed.md); inf where an input the single
    process does not differentiate got a non-zero gradient on some rank."""
    world = pool.world
    nx, ny = SIZES[world]
    data = _global_data(world, batched)
    single = _evaluate(case, _leaves(data, slice(None), slice(None)), None)
    ranks = pool.values(_loss_job, case=case, batched=batched)
    errors = {f"value on rank {r}": _rel(res["value"], single["value"]) for r, res in enumerate(ranks)}
    errors["DDP-averaged grad of A"] = _rel(sum(res["grads"]["A"] for res in ranks) / world, single["grads"]["A"])
    for name, sizes in (("x", nx), ("y", ny), ("wx", nx), ("wy", ny), ("logvar", nx)):
        full = single["grads"][name]
        if full is None or not np.any(full):
            stray = any(res["grads"][name] is not None and np.any(res["grads"][name]) for res in ranks)
            errors[f"grad of {name}"] = math.inf if stray else 0.0
            continue
        got = np.concatenate([res["grads"][name] for res in ranks], axis=-1 if name[0] == "w" else
                             (0 if name == "logvar" else -2)) / world
        errors[f"grad of {name}"] = _rel(got, full)
    return errors


@pytest.mark.parametrize("case", sorted(CASES))
def test_catalog_matches_single_process(pool, case):
    errors = _case_errors(pool, case, batched=False)
    assert all(e < TOL for e in errors.values()), (case, errors)  # (NaN fails too)


@pytest.mark.parametrize("case", sorted(BATCHED))
def test_batched_matches_single_process(pool, case):
    errors = _case_errors(pool, case, batched=True)
    assert all(e < TOL for e in errors.values()), (case, errors)  # (NaN fails too)


# ---------------------------------------------------------------------------------------------------
# negative control: the common "gather, then compute as if single-process" layer
# ---------------------------------------------------------------------------------------------------
def _naive_gather_job(rank: int, world: int) -> np.ndarray:
    """torch.distributed.all_gather (no gradient) with the local slice put back as the live tensor:
    each rank gets the global value but only its own rows' share of the gradient, so DDP's average
    is off (by a factor of W for the rows' terms, and the cross-rank terms are lost)."""
    import torch.distributed as dist

    nx, _ = SIZES[world]
    data = _global_data(world, False)
    leaves = _leaves(data, _bounds(nx, rank), slice(None))
    z = leaves["x"] @ leaves["A"]
    big = max(nx)
    padded = torch.cat([z.detach(), z.new_zeros(big - z.shape[0], D)])
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    blocks = [p[:s] for p, s in zip(parts, nx)]
    blocks[rank] = z
    F.mmd(torch.cat(blocks), bandwidth=1.7).backward()
    return leaves["A"].grad.numpy().copy()


def test_negative_control_naive_gather_gradient_is_wrong(pool):
    world = pool.world
    data = _global_data(world, False)
    leaves = _leaves(data, slice(None), slice(None))
    F.mmd(leaves["x"] @ leaves["A"], bandwidth=1.7).backward()
    naive = sum(pool.values(_naive_gather_job)) / world
    # The check that the catalog test applies (rel. error < 1e-10) fails by far for the naive gather.
    assert _rel(naive, leaves["A"].grad.numpy()) > 1e-2


# ---------------------------------------------------------------------------------------------------
# normality tests on the global sample
# ---------------------------------------------------------------------------------------------------
N_TEST = {2: [30, 19], 3: [12, 25, 9]}


def _test_sample(world: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.concatenate([0.2 * r + (1.0 + 0.1 * r) * rng.standard_normal((s, 4)) for r, s in enumerate(N_TEST[world])])


STAT_CALLS = {
    "mardia": lambda z, g: stats.mardia(z, n_resamples=40, group=g),
    "henze_zirkler": lambda z, g: stats.henze_zirkler(z, n_resamples=40, group=g),
    "energy_test": lambda z, g: stats.energy_test(z, n_resamples=40, group=g),
    "radii_test": lambda z, g: stats.radii_test(z, group=g),
    "distance_test_estimated": lambda z, g: stats.distance_test(z, target="estimated", n_resamples=30, group=g),
    "projection_test": lambda z, g: stats.projection_test(z, statistic="ks", n_projections=5, n_resamples=30, group=g),
    "coordinate_test": lambda z, g: stats.coordinate_test(z, statistic="ad", n_resamples=30, group=g),
}


def _summary(result) -> list:
    if hasattr(result, "rows"):  # NormalityReport
        return [(row["test"], row["statistic"], row["pvalue"]) for row in result.rows]
    return [result.statistic, result.pvalue]


def _stats_job(rank: int, world: int) -> dict:
    z = _test_sample(world)[_bounds(N_TEST[world], rank)]
    out = {name: _summary(call(torch.from_numpy(z), WORLD)) for name, call in STAT_CALLS.items()}
    out["report"] = _summary(stats.normality_report(z, n_resamples=20, tests=["radii", "energy"], group=WORLD))
    return out


def test_normality_tests_on_the_global_sample(pool):
    z = torch.from_numpy(_test_sample(pool.world))
    expected = {name: _summary(call(z, None)) for name, call in STAT_CALLS.items()}
    expected["report"] = _summary(stats.normality_report(z, n_resamples=20, tests=["radii", "energy"]))
    for res in pool.values(_stats_job):
        assert res == expected


# ---------------------------------------------------------------------------------------------------
# bad input: an error on every rank, no hang
# ---------------------------------------------------------------------------------------------------
def _bad_dim_job(rank: int, world: int):
    x = torch.randn(4, D + (rank == world - 1), dtype=torch.float64)
    return F.mmd(x, group=WORLD)


def _bad_weights_job(rank: int, world: int):
    x = torch.randn(4, D, dtype=torch.float64)
    w = torch.ones(4, dtype=torch.float64) * (-1.0 if rank == 1 else 1.0)
    return F.energy_distance(x, weights_x=w, group=WORLD)


def _bad_sample_job(rank: int, world: int):
    return stats.radii_test(np.zeros((5, 3 + rank)), group=WORLD)


def _bad_directions_job(rank: int, world: int):
    x = torch.randn(4, D, dtype=torch.float64)
    return F.sliced_wasserstein(x, n_projections=3 + rank, group=WORLD)


def _bad_sigreg_seed_job(rank: int, world: int):
    # different slices on the ranks would silently mix statistics: refused on every rank
    return sigreg(torch.randn(4, D, dtype=torch.float64), num_slices=5, seed=rank, group=WORLD)


def _empty_rank_job(rank: int, world: int):
    # an empty local batch is refused (every rank needs at least one row), on every rank
    x = torch.randn(0 if rank == 0 else 3, D, dtype=torch.float64)
    return F.mmd_to_normal(x, group=WORLD)


def _ok_after_errors_job(rank: int, world: int) -> float:
    return float(F.mmd_to_normal(torch.ones(3, D, dtype=torch.float64) * rank, group=WORLD))


def test_bad_input_raises_on_every_rank(pool):
    res = pool.run(_bad_dim_job, timeout=60)
    assert all(not ok and payload[0] == "ValueError" and "dimension D" in payload[1] for ok, payload in res), res
    res = pool.run(_bad_weights_job, timeout=60)
    assert all(not ok and payload[0] == "ValueError" for ok, payload in res), res
    assert "non-negative" in res[1][1][1] and "rank 1" in res[0][1][1], res
    res = pool.run(_bad_sample_job, timeout=60)
    assert all(not ok and payload[0] == "ValueError" and "the same on every rank" in payload[1] for ok, payload in res)
    res = pool.run(_bad_directions_job, timeout=60)
    assert all(not ok and "number of directions" in payload[1] for ok, payload in res), res
    res = pool.run(_bad_sigreg_seed_job, timeout=60)
    assert all(not ok and "SIGReg slice directions" in payload[1] for ok, payload in res), res
    res = pool.run(_empty_rank_job, timeout=60)
    assert all(not ok and payload[0] == "ValueError" for ok, payload in res), res
    assert "is empty" in res[0][1][1] and "rank 0" in res[1][1][1], res
    # the group is still usable afterwards (no rank was left inside a collective)
    values = pool.values(_ok_after_errors_job)
    assert len(set(values)) == 1


def test_group_without_process_group_is_a_clear_error(monkeypatch):
    assert not torch.distributed.is_initialized()
    x = torch.randn(6, 3)
    for call in (lambda: F.mmd(x, group=WORLD), lambda: F.radii_cvm(x, group=WORLD),
                 lambda: losses.MMDLoss(group=WORLD)(x), lambda: stats.radii_test(x, group=WORLD)):
        with pytest.raises(ValueError, match="no torch.distributed process group is initialized"):
            call()
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    with pytest.raises(TypeError, match="group must be a torch.distributed.ProcessGroup"):
        F.mmd(x, group="world")


# ---------------------------------------------------------------------------------------------------
# float32 / float16 inputs: computed as the single-process losses compute them
# ---------------------------------------------------------------------------------------------------
LOW_PRECISION = {
    "mmd": lambda z, g: F.mmd(z, bandwidth=2.0, group=g),
    "cwae_loss": lambda z, g: F.cwae_loss(z, group=g),
    "sliced": lambda z, g: F.sliced_wasserstein(z, n_projections=4, generator=_sw_gen(), group=g),
}


def _low_precision_run(x: torch.Tensor, group) -> dict:  # name -> (dtype, value, gradient of x as float32)
    out = {}
    for name, fn in LOW_PRECISION.items():
        leaf = x.clone().requires_grad_()
        value = fn(leaf, group)
        value.backward()
        out[name] = (value.dtype, value.item(), leaf.grad.float().numpy())
    return out


def _low_precision_job(rank: int, world: int, dtype: str) -> dict:
    nx, _ = SIZES[world]
    x = torch.tensor(_global_data(world, False)["x"], dtype=getattr(torch, dtype))[_bounds(nx, rank)]
    return _low_precision_run(x, WORLD)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float16", 2e-3)])
def test_low_precision_inputs(pool, dtype, tol):
    x = torch.tensor(_global_data(pool.world, False)["x"], dtype=getattr(torch, dtype))
    single = _low_precision_run(x, None)
    ranks = pool.values(_low_precision_job, dtype=dtype)
    for name, (dtype_1, value_1, grad_1) in single.items():
        for res in ranks:
            assert res[name][0] == dtype_1
            assert abs(res[name][1] - value_1) <= tol * max(1.0, abs(value_1)), (name, res[name][1], value_1)
        got = np.concatenate([res[name][2] for res in ranks]) / pool.world
        assert _rel(got, grad_1) < 50 * tol, name
