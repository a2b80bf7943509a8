"""The on-disk cache of Monte Carlo null tables (latentdiv/stats/_null_cache.py, docs/null_cache.md)
and the batched null replicates of the battery. conftest.py gives every test its own empty cache
directory through LATENTDIV_NULL_CACHE."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest

import latentdiv
from latentdiv import stats
from latentdiv.cli import main
from latentdiv.stats import _battery as B
from latentdiv.stats import _common as C
from latentdiv.stats import _null_cache as NC
from latentdiv.stats import report as R


class Counter:
    """compute(rng) for simulate_null that counts its calls: 2 statistics of one N(0, 1) draw."""

    def __init__(self):
        self.calls = 0

    def __call__(self, rng):
        self.calls += 1
        x = rng.standard_normal(5)
        return np.array([x.mean(), x.max()])


def _simulate(counter, key=("toy", "standard", 5, 1), b=20, seed=3):
    return C.simulate_null(key, counter, b, seed)


def _files(directory):
    return sorted(p for p in os.listdir(directory) if p.endswith(".npz"))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "nulls"
    monkeypatch.setenv(NC.ENV_VAR, str(d))
    C.clear_null_cache()
    yield d
    C.clear_null_cache()


def test_miss_then_hit_from_disk(cache_dir):
    first = Counter()
    table = _simulate(first)
    assert first.calls == 20 and len(_files(cache_dir)) == 1
    C.clear_null_cache()  # memory gone: the table must come from the file
    second = Counter()
    again = _simulate(second)
    assert second.calls == 0
    np.testing.assert_array_equal(again, table)
    assert not again.flags.writeable
    info = stats.null_cache_info()
    assert info["disk_dir"] == str(cache_dir) and info["disk_entries"] == 1


@pytest.mark.parametrize("change", ["n", "dim", "resamples", "seed", "test", "target", "option", "version"])
def test_any_key_change_misses(cache_dir, monkeypatch, change):
    key = ("toy", "standard", 5, 1, 0.5)
    _simulate(Counter(), key)
    C.clear_null_cache()
    b, seed = 20, 3
    if change == "n":
        key = ("toy", "standard", 6, 1, 0.5)
    elif change == "dim":
        key = ("toy", "standard", 5, 2, 0.5)
    elif change == "resamples":
        b = 21
    elif change == "seed":
        seed = 4
    elif change == "test":
        key = ("toy2", "standard", 5, 1, 0.5)
    elif change == "target":
        key = ("toy", "estimated", 5, 1, 0.5)
    elif change == "option":  # e.g. Henze-Zirkler's beta: floats keyed by their exact repr
        key = ("toy", "standard", 5, 1, 0.5000000000000001)
    else:
        monkeypatch.setattr(latentdiv, "__version__", latentdiv.__version__ + ".post1")
    counter = Counter()
    _simulate(counter, key, b, seed)
    assert counter.calls == b
    assert len(_files(cache_dir)) == 2


def test_numpy_generator_is_never_cached(cache_dir):
    counter = Counter()
    C.simulate_null(("toy", "standard", 5, 1), counter, 10, np.random.default_rng(0))
    assert counter.calls == 10 and not cache_dir.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "checksum", "shape", "pickle"])
def test_damaged_file_is_rebuilt_never_trusted(cache_dir, damage):
    table = _simulate(Counter())
    (name,) = _files(cache_dir)
    path = cache_dir / name
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a zip file" * 50)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with np.load(path) as f:
            key, digest, stored = str(f["key"]), str(f["sha256"]), f["table"].copy()
        if damage == "checksum":  # a changed value under the old checksum
            stored[3, 0] += 1.0
            np.savez(path, table=stored, key=np.array(key), sha256=np.array(digest))
        elif damage == "shape":  # a shorter table with its own valid checksum
            np.savez(path, table=stored[:10], key=np.array(key), sha256=np.array(NC._digest(stored[:10])))
        else:  # an object array needs pickle: refused by allow_pickle=False
            np.savez(path, table=np.array([stored], dtype=object), key=np.array(key), sha256=np.array(digest))
    C.clear_null_cache()
    counter = Counter()
    rebuilt = _simulate(counter)
    assert counter.calls == 20  # recomputed, not read
    np.testing.assert_array_equal(rebuilt, table)
    np.testing.assert_array_equal(NC.load(C.null_key(("toy", "standard", 5, 1), 20, 3), 20), table)  # file rewritten


def test_no_temporary_files_left(cache_dir):
    _simulate(Counter())
    assert sorted(os.listdir(cache_dir)) == _files(cache_dir)


def test_unwritable_cache_does_not_fail(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(NC.ENV_VAR, str(blocker / "nulls"))
    C.clear_null_cache()
    counter = Counter()
    assert _simulate(counter).shape == (20, 2) and counter.calls == 20


def _fill_same_entry(directory, barrier, rounds, queue):
    """One of two processes writing and reading the same entry as fast as they can."""
    os.environ[NC.ENV_VAR] = directory
    key = C.null_key(("race", "standard", 64, 3), 200, 5)
    expected = np.arange(200 * 3, dtype=np.float64).reshape(200, 3) / 7.0
    barrier.wait()
    bad = 0
    for _ in range(rounds):
        NC.store(key, expected)
        got = NC.load(key, 200)
        if got is None or not np.array_equal(got, expected):
            bad += 1
    table = C.simulate_null(key[:-2], lambda rng: rng.standard_normal(3), 200, 5)
    queue.put((bad, table.tobytes()))


def test_concurrent_writers_never_tear(cache_dir):
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_fill_same_entry, args=(str(cache_dir), barrier, 60, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert [bad for bad, _ in results] == [0, 0]  # every read saw a whole, valid table
    assert results[0][1] == results[1][1]  # both processes got the same table
    assert sorted(os.listdir(cache_dir)) == _files(cache_dir)  # no temporary file left behind


def test_env_var_off_and_argument_off(cache_dir, monkeypatch):
    z = np.random.default_rng(0).standard_normal((20, 3))
    for off in ("0", "off", "false", "no"):
        monkeypatch.setenv(NC.ENV_VAR, off)
        assert NC.cache_dir() is None
        C.clear_null_cache()
        stats.normality_report(z, tests=["henze_zirkler"], n_resamples=10)
    monkeypatch.setenv(NC.ENV_VAR, str(cache_dir))
    C.clear_null_cache()
    stats.normality_report(z, tests=["henze_zirkler"], n_resamples=10, null_cache=False)
    assert not cache_dir.exists()
    elsewhere = cache_dir.parent / "elsewhere"
    stats.normality_report(z, tests=["henze_zirkler"], n_resamples=11, null_cache=str(elsewhere))
    assert len(_files(elsewhere)) == 1 and not cache_dir.exists()
    with pytest.raises(TypeError, match="null_cache"):
        stats.normality_report(z, tests=["henze_zirkler"], n_resamples=10, null_cache=3)


def test_cli_no_cache_flag(cache_dir, tmp_path, capsys):
    path = tmp_path / "z.npy"
    np.save(path, np.random.default_rng(1).standard_normal((30, 3)))
    args = [str(path), "--tests", "henze_zirkler,energy", "--n-resamples", "20", "--no-progress"]
    assert main(["check", *args, "--no-cache"]) == 0
    assert not cache_dir.exists()
    out_uncached = capsys.readouterr().out
    C.clear_null_cache()
    assert main(["check", *args]) == 0
    assert len(_files(cache_dir)) == 2
    C.clear_null_cache()
    assert main(["check", *args]) == 0  # the second run: both nulls from disk
    assert capsys.readouterr().out == out_uncached * 2


@pytest.mark.parametrize("target", ["standard", "estimated"])
def test_cached_and_uncached_pvalues_identical(cache_dir, target):
    z = np.random.default_rng(2).standard_normal((24, 3))
    kw = dict(target=target, n_resamples=30, generator=7)
    fresh = stats.normality_report(z, null_cache=False, **kw)
    C.clear_null_cache()
    stats.normality_report(z, **kw)  # fills the disk cache
    C.clear_null_cache()
    from_disk = stats.normality_report(z, **kw)
    assert len(_files(cache_dir)) >= 6
    assert from_disk.to_dict() == fresh.to_dict()


@pytest.mark.parametrize("target", ["standard", "estimated"])
def test_batched_nulls_equal_one_at_a_time(cache_dir, monkeypatch, target):
    """Batched null replicates draw the same samples in the same order: the same tables (to
    rounding: Gram-matrix pair distances vs the engine's) and the same p-values. A batch of 7 also
    checks that the batch size does not matter."""
    z = np.random.default_rng(3).standard_normal((30, 4))
    kw = dict(target=target, n_resamples=25, generator=11, null_cache=False)
    monkeypatch.setattr(B, "_batch_size", lambda n, d, pairs: 7)
    C.clear_null_cache()
    batched = stats.normality_report(z, **kw)
    tables_batched = {k: v.copy() for k, v in C._NULL_CACHE.items()}
    monkeypatch.setattr(B, "_batch_size", lambda n, d, pairs: 0)
    C.clear_null_cache()
    single = stats.normality_report(z, **kw)
    assert [r["pvalue"] for r in batched.rows] == [r["pvalue"] for r in single.rows]
    assert tables_batched.keys() == C._NULL_CACHE.keys()
    for k, v in tables_batched.items():
        np.testing.assert_allclose(v, C._NULL_CACHE[k], rtol=1e-10, atol=1e-12, err_msg=str(k))


@pytest.mark.parametrize("target", ["standard", "estimated"])
def test_tables_do_not_depend_on_the_thread_count(cache_dir, monkeypatch, target):
    """Null batches computed by 1 or 3 threads at once (batches of 4, and one replicate at a time):
    bit-identical tables, the samples drawn in order in the calling thread (C.simulate_null)."""
    z = np.random.default_rng(6).standard_normal((30, 4))
    kw = dict(target=target, n_resamples=23, generator=5, null_cache=False)
    tables = {}
    for batch in (4, 0):
        monkeypatch.setattr(B, "_batch_size", lambda n, d, pairs, batch=batch: batch)
        for workers in (1, 3):
            monkeypatch.setattr(C, "null_workers", lambda workers=workers: workers)
            C.clear_null_cache()
            stats.normality_report(z, **kw)
            tables[batch, workers] = {k: v.copy() for k, v in C._NULL_CACHE.items()}
    for batch in (4, 0):
        serial, threaded = tables[batch, 1], tables[batch, 3]
        assert serial.keys() == threaded.keys() and len(serial) >= 6
        for k in serial:
            assert np.array_equal(serial[k], threaded[k]), (batch, k)


def test_threaded_null_error_propagates_and_stops(cache_dir, monkeypatch):
    """An error in one threaded batch reaches the caller; the batches queued after it never run."""
    monkeypatch.setattr(C, "null_workers", lambda: 2)
    ran = []

    def statistic(y):  # y: [b, 3]
        ran.append(float(y[0, 0]))
        if len(ran) == 3:
            raise RuntimeError("batch 3 failed")
        return y[:, :2]

    with pytest.raises(RuntimeError, match="batch 3 failed"):
        C.simulate_null(("toy-threads", 3), statistic, 200, 1, draw=lambda rng, b: rng.standard_normal((b, 3)),
                        batch_size=2)
    assert 3 <= len(ran) <= 5  # at most the two batches in flight beside the failing one
    assert not any(k[0] == "toy-threads" for k in C._NULL_CACHE)


def test_probe_does_not_simulate_cached_nulls(cache_dir, monkeypatch):
    """With every null of the real run on disk, estimate_seconds simulates no null replicate (its
    probe reads the cached tables) and estimates only the observed statistics' time."""
    z = np.random.default_rng(4).standard_normal((40, 4))
    kw = dict(n_resamples=60, tests=["henze_zirkler", "energy", "distances"])
    stats.normality_report(z, **kw)
    C.clear_null_cache()
    calls = []
    real_simulate = B._simulate
    monkeypatch.setattr(B, "_simulate", lambda *a, **k: calls.append(a[0]) or real_simulate(*a, **k))
    real_batch = C.standard_normal_batch
    monkeypatch.setattr(C, "standard_normal_batch", lambda *a: calls.append("drawn") or real_batch(*a))
    est = stats.estimate_seconds(z, **kw)
    assert "drawn" not in calls and len(calls) >= 3  # every null was asked for, none was drawn
    assert 0 < est < 5


def test_estimate_counts_cached_nulls_as_free(cache_dir):
    z = np.random.default_rng(4).standard_normal((40, 4))
    kw = dict(n_resamples=400, tests=["henze_zirkler", "energy"])
    cold = stats.estimate_seconds(z, **kw)
    assert not cache_dir.exists()  # the probe writes nothing to disk
    stats.normality_report(z, **kw)
    C.clear_null_cache()
    warm = stats.estimate_seconds(z, **kw)
    assert warm < cold


def test_sigreg_in_the_battery(cache_dir):
    z = np.random.default_rng(5).standard_normal((32, 4))
    rep = stats.normality_report(z, tests=["sigreg"], n_resamples=15, generator=2)
    direct = stats.sigreg_test(z, n_resamples=15, generator=2)
    (row,) = rep.rows
    assert row["test"] == "sigreg" and row["pvalue"] == direct.pvalue and row["statistic"] == direct.statistic
    assert "sigreg" not in {r["test"] for r in stats.normality_report(z, tests=["radii"], n_resamples=15).rows}
    assert "sigreg" not in R.TEST_IDS and "sigreg" in R.ALL_TEST_IDS
    assert "sigreg" in R.monte_carlo_tests(["sigreg"], "standard")


def test_default_directory_is_the_users_cache_dir(monkeypatch):
    """Only the path is computed here: nothing is written to the real user cache."""
    monkeypatch.delenv(NC.ENV_VAR, raising=False)
    try:
        import platformdirs
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        expected = os.path.join(base, "latentdiv", "nulls")
    else:
        expected = os.path.join(platformdirs.user_cache_dir("latentdiv"), "nulls")
    assert str(NC.cache_dir()) == expected
    with C.use_null_cache(False):
        assert NC.cache_dir() is None
        with C.use_null_cache(None):  # None keeps the enclosing setting
            assert NC.cache_dir() is None
        with C.use_null_cache(True):  # True follows the environment again
            assert str(NC.cache_dir()) == expected
