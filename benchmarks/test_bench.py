"""Speed and memory of the fused engine against plain torch, chunked torch, pykeops and geomloss.

Run (default grid, a few minutes on 2 cores; the README's table comes from this):
    PYTHONPATH=python python -m pytest benchmarks/test_bench.py --benchmark-json=benchmarks/results.json
    python benchmarks/report.py benchmarks/results.json
Each case checks its value against the float64 engine (n <= 4096) before timing; cases over the
memory or time budget (bench_lib.MEM_BUDGET_BYTES / TIME_BUDGET_S) are recorded with status "oom" /
"too_slow" instead of being run; unavailable implementations are recorded as "unavailable".
"""

from __future__ import annotations

import time

import pytest
import torch

import bench_lib as bl
import latentdiv

_SGEMM = {}
_MEASURED = {}  # (impl, kernel, d, mode) -> (n, seconds): for n^2 time estimates


def _sgemm():
    if "gflops" not in _SGEMM:
        _SGEMM["gflops"] = bl.sgemm_gflops()
    return _SGEMM["gflops"]


def test_sgemm_rate(benchmark):
    """torch.mm float32 2048^3 on this machine, in this run: the 'peak' the others are compared to."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    benchmark.pedantic(torch.mm, args=(a, b), rounds=5, iterations=1)
    gflops = 2.0 * 2048 ** 3 / benchmark.stats.stats.min / 1e9
    _SGEMM["gflops"] = gflops
    benchmark.extra_info.update(kind="sgemm", gflops=gflops, threads=torch.get_num_threads())


def _record_skip(benchmark, status, **info):
    benchmark.extra_info.update(status=status, **info)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


def _inputs(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g) * 1.1 + 0.2


def test_mmd(benchmark, mmd_case):
    kname, impl, n, d, mode = mmd_case
    info = dict(kind="mmd", kernel=kname, impl=impl, n=n, d=d, mode=mode, threads=torch.get_num_threads(),
                sgemm_gflops=_sgemm(), model_flops=bl.mmd_flops(kname, d, n, mode))
    if kname == "cramer_wold_approx" and d < 2:
        return _record_skip(benchmark, "unavailable", **info)
    fn = bl.mmd_fn(impl, kname, d, n)
    if fn is None:
        return _record_skip(benchmark, "unavailable", **info)
    if impl in ("torch_matmul", "torch_cdist"):
        need = bl.plain_torch_bytes(n, mode, impl)
        info["estimated_bytes"] = need
        if need > bl.MEM_BUDGET_BYTES:
            return _record_skip(benchmark, "oom", **info)
    prev = _MEASURED.get((impl, kname, d, mode))
    if prev is not None:
        est = prev[1] * (n / prev[0]) ** 2
        info["estimated_seconds"] = est
        if est > bl.TIME_BUDGET_S:
            return _record_skip(benchmark, "too_slow", **info)

    x, y = _inputs(n, d)
    # Warm-up on a small problem (pykeops JIT-compiles its formula on first use).
    xs, ys = _inputs(min(n, 256), d, 1)
    xs.requires_grad_(mode == "fwdbwd")
    v = bl.mmd_fn(impl, kname, d, xs.shape[0])(xs, ys)
    if mode == "fwdbwd":
        v.backward()

    # Correctness before timing: against the float64 engine (itself tested against the float64
    # reference in tests/) on the benchmark's own inputs.
    if n <= 4096:
        want = bl.mmd_fn("latentdiv", kname, d, n)(x.double(), y.double()).item()
        got = fn(x, y).item()
        rel = abs(got - want) / max(abs(want), 1e-30)
        info["rel_error_vs_float64"] = rel
        # MMD^2 is a difference of large sums: the tolerance is relative to the sum of the terms' sizes.
        if rel > 1e-3 and abs(got - want) > 1e-4 * n * n:
            info["status"] = "wrong"

    xg = x.clone().requires_grad_(mode == "fwdbwd")
    peak = [0]

    def run():
        with bl.PeakMemory() as pm:
            out = fn(xg, y)
            if mode == "fwdbwd":
                out.backward()
                xg.grad = None
        if pm.extra_bytes is not None:
            peak[0] = max(peak[0], pm.extra_bytes)

    if n > 16384:  # one timed call (minutes at n = 65536): no separate probe run
        rounds = 1
    else:
        t0 = time.perf_counter()
        run()
        first = time.perf_counter() - t0
        rounds = 1 if first > 2.0 else (3 if first > 0.2 else 7)
    benchmark.pedantic(run, rounds=rounds, iterations=1)
    best = benchmark.stats.stats.min
    _MEASURED[(impl, kname, d, mode)] = (n, best)
    info.setdefault("status", "ok")
    info.update(peak_extra_bytes=peak[0], gflops_model=info["model_flops"] / best / 1e9)
    info["percent_of_sgemm"] = 100.0 * info["gflops_model"] / info["sgemm_gflops"]
    benchmark.extra_info.update(info)


def test_pdist(benchmark, pdist_case):
    impl, n, d, mode = pdist_case
    info = dict(kind="pdist", kernel="pdist", impl=impl, n=n, d=d, mode=mode, threads=torch.get_num_threads(),
                sgemm_gflops=_sgemm(), model_flops=bl.pdist_flops(d, n, mode))
    x, _ = _inputs(n, d)
    f = latentdiv.pdist if impl == "latentdiv" else torch.pdist
    want = torch.pdist(x.double())
    got = f(x)
    info["rel_error_vs_float64"] = float(((got.double() - want).abs().max() / want.abs().max()).item())
    xg = x.clone().requires_grad_(mode == "fwdbwd")
    peak = [0]

    def run():
        with bl.PeakMemory() as pm:
            out = f(xg)
            if mode == "fwdbwd":
                out.sum().backward()
                xg.grad = None
            del out
        if pm.extra_bytes is not None:
            peak[0] = max(peak[0], pm.extra_bytes)

    run()
    benchmark.pedantic(run, rounds=3, iterations=1)
    best = benchmark.stats.stats.min
    info.update(status="ok", peak_extra_bytes=peak[0], gflops_model=info["model_flops"] / best / 1e9)
    info["percent_of_sgemm"] = 100.0 * info["gflops_model"] / info["sgemm_gflops"]
    benchmark.extra_info.update(info)


def test_two_sample_script_small(tmp_path, monkeypatch):
    """bench_two_sample.py end to end on a small case (alibi-detect and KeOps columns off): the plain-torch
    loop's statistic is the engine's (float32 kernel matrix vs double accumulation), both p-values lie on
    the (1 + k) / (1 + B) grid, and the JSON holds every column the README's table is made from."""
    import json

    import bench_two_sample

    out = tmp_path / "two_sample.json"
    perms = 40
    monkeypatch.setattr("sys.argv", ["bench_two_sample.py", "--sizes", "150", "--dim", "8", "--perms", str(perms),
                                     "--shift", "0.5", "--no-alibi", "--no-keops", "--out", str(out)])
    bench_two_sample.main()
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert result["info"]["keops_error"] == "not requested (--no-keops)"
    assert row["n"] == 150 and row["perms"] == perms and row["baseline_perms_run"] == perms
    assert abs(row["torch_stat"] - row["latentdiv_stat"]) <= 1e-4 * abs(row["latentdiv_stat"])
    for p in (row["latentdiv_p"], row["torch_p"]):
        k = p * (1 + perms) - 1
        assert abs(k - round(k)) < 1e-9 and 0 <= round(k) <= perms
    # A 0.5 shift in each of 8 coordinates at n = 150 is far outside the permutation null.
    assert row["latentdiv_p"] == row["torch_p"] == 1 / (1 + perms)
    assert "alibi_seconds" not in row and "keops_seconds" not in row
