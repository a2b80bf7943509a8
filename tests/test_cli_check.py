"""`latentdiv check`: loaders, exit statuses, JSON, plot, the built-in example."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentdiv.cli import main

FAST = ["--n-resamples", "49", "--tests", "radii,coordinates,energy", "--no-progress"]


@pytest.fixture
def gauss():
    return np.random.default_rng(0).standard_normal((64, 4))


def run(capsys, *argv):
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_npy_gaussian_passes(tmp_path, capsys, gauss):
    f = tmp_path / "z.npy"
    np.save(f, gauss)
    code, out, err = run(capsys, str(f), *FAST)
    assert code == 0, out + err
    assert "PASS" in out and "radii_cvm" in out


def test_non_gaussian_fails_with_status_1(tmp_path, capsys):
    f = tmp_path / "u.npy"
    np.save(f, (np.random.default_rng(1).random((400, 4)) - 0.5) * np.sqrt(12))
    code, out, _ = run(capsys, str(f), *FAST)
    assert code == 1 and "FAIL" in out


def test_json_output(tmp_path, capsys, gauss):
    f = tmp_path / "z.npy"
    np.save(f, gauss)
    code, out, _ = run(capsys, str(f), "--json", *FAST)
    d = json.loads(out)
    assert code == 0 and d["passed"] is True and d["correction"] == "holm"
    assert {t["test"] for t in d["tests"]} >= {"energy", "radii_ad", "coordinates_ks"}


def test_estimated_target(tmp_path, capsys, gauss):
    f = tmp_path / "z.npy"
    np.save(f, gauss * 3 + 1)  # Gaussian, not N(0, I)
    assert run(capsys, str(f), "--target", "estimated", *FAST)[0] == 0
    assert run(capsys, str(f), *FAST)[0] == 1


def test_npz_pt_csv_loaders(tmp_path, capsys, gauss):
    npz = tmp_path / "z.npz"
    np.savez(npz, first=gauss, other=np.zeros(3))
    # Several arrays: which one is the sample must be said (issue 10 item 13: it used the first silently).
    code, _, err = run(capsys, str(npz), *FAST)
    assert code == 2 and "2 arrays (first, other)" in err and "--key" in err
    assert run(capsys, str(npz), "--key", "first", *FAST)[0] == 0
    assert run(capsys, str(npz), "--key", "other", *FAST)[0] == 2  # 1-D array
    np.savez(npz, gauss)  # one array (arr_0): used as it is
    assert run(capsys, str(npz), *FAST)[0] == 0
    code, _, err = run(capsys, str(npz), "--key", "missing", *FAST)
    assert code == 2 and "missing" in err
    pt = tmp_path / "z.pt"
    torch.save(torch.from_numpy(gauss).float(), pt)
    assert run(capsys, str(pt), *FAST)[0] == 0
    ptd = tmp_path / "d.pt"
    torch.save({"mu": torch.from_numpy(gauss), "step": 3}, ptd)
    assert run(capsys, str(ptd), *FAST)[0] == 0
    torch.save({"a": torch.from_numpy(gauss), "b": torch.from_numpy(gauss)}, ptd)
    code, _, err = run(capsys, str(ptd), *FAST)
    assert code == 2 and "--key" in err
    assert run(capsys, str(ptd), "--key", "b", *FAST)[0] == 0
    csv = tmp_path / "z.csv"
    np.savetxt(csv, gauss, delimiter=",", header="a,b,c,d", comments="")
    assert run(capsys, str(csv), *FAST)[0] == 0


def test_bad_inputs_exit_2(tmp_path, capsys, gauss):
    code, _, err = run(capsys, str(tmp_path / "nope.npy"))
    assert code == 2 and "no such file" in err
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not an array")
    code, _, err = run(capsys, str(junk))
    assert code == 2 and "cannot read" in err
    one_d = tmp_path / "v.npy"
    np.save(one_d, gauss[:, 0])
    code, _, err = run(capsys, str(one_d))
    assert code == 2 and "2-D" in err
    small = tmp_path / "s.npy"
    np.save(small, gauss[:5])
    code, _, err = run(capsys, str(small))
    assert code == 2 and "n >= 8" in err
    nan = tmp_path / "nan.npy"
    g = gauss.copy()
    g[7, 2] = np.inf
    np.save(nan, g)
    code, _, err = run(capsys, str(nan))
    assert code == 2 and "NaN or inf" in err and "[7]" in err
    txt = tmp_path / "z.xyz"
    txt.write_text("1,2")
    code, _, err = run(capsys, str(txt))
    assert code == 2 and "extension" in err
    f = tmp_path / "z.npy"
    np.save(f, gauss)
    code, _, err = run(capsys, str(f), "--alpha", "2")
    assert code == 2 and "alpha" in err
    code, _, err = run(capsys, str(f), "--tests", "bogus")
    assert code == 2 and "bogus" in err


def test_plot(tmp_path, capsys, gauss):
    pytest.importorskip("matplotlib")
    f = tmp_path / "z.npy"
    np.save(f, gauss)
    png = tmp_path / "out.png"
    code, out, _ = run(capsys, str(f), "--plot", str(png), *FAST)
    assert code == 0 and png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_builtin_example(capsys):
    code, out, _ = run(capsys, "--n-resamples", "99", "--tests", "radii,coordinates", "--no-progress")
    assert code == 0
    assert "Gaussian N(0, I)" in out and "moment-matched mixture" in out
    gauss_part, mix_part = out.split("== moment-matched")
    assert "PASS" in gauss_part and "FAIL" in mix_part


# ---------------------------------------------------------------------------------------------------
# issue 10 items 10-13: waiting, plots, progress, the CLI as a person uses it
# ---------------------------------------------------------------------------------------------------
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from latentdiv import cli_check  # noqa: E402

_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [os.path.join(os.path.dirname(__file__), "..", "python"), os.environ.get("PYTHONPATH", "")]))


def _cli(*argv, timeout=600):
    """The CLI in a subprocess: stdout and stderr are pipes (not terminals), as in a log or CI."""
    return subprocess.run([sys.executable, "-m", "latentdiv", *argv], capture_output=True, text=True,
                          timeout=timeout, env=dict(_ENV, LATENTDIV_NULL_CACHE=os.environ["LATENTDIV_NULL_CACHE"]))


def test_max_n_subsample_is_seeded_and_reported(tmp_path, capsys):
    f = tmp_path / "big.npy"
    z = np.random.default_rng(3).standard_normal((1500, 3))
    np.save(f, z)
    code, out, _ = run(capsys, str(f), "--max-n", "200", *FAST)
    assert code == 0 and "subsample: 200 of 1500 rows" in out and "seed 0" in out
    assert "normality of 200 x 3 sample" in out
    code, out, _ = run(capsys, str(f), "--max-n", "200", "--json", *FAST)
    d = json.loads(out)
    assert d["n"] == 200 and d["subsample"] == {"rows_used": 200, "rows_total": 1500, "seed": 0,
                                                "method": "uniform without replacement"}
    again = json.loads(run(capsys, str(f), "--max-n", "200", "--json", *FAST)[1])
    assert again["tests"] == d["tests"]  # seeded: the same rows, the same statistics
    other = json.loads(run(capsys, str(f), "--max-n", "200", "--json", "--seed", "1", *FAST)[1])
    assert other["tests"][0]["statistic"] != d["tests"][0]["statistic"]
    # the default caps the size; 0 keeps every row
    assert json.loads(run(capsys, str(f), "--json", *FAST)[1])["n"] == cli_check.DEFAULT_MAX_N
    full = json.loads(run(capsys, str(f), "--max-n", "0", "--json", *FAST)[1])
    assert full["n"] == 1500 and full["subsample"] is None
    assert run(capsys, str(f), "--max-n", "3", *FAST)[0] == 2


def test_subsample_rows_are_drawn_without_replacement():
    z = np.arange(50.0 * 2).reshape(50, 2)
    sub, info = cli_check.subsample(z, 20, seed=4)
    rows = sub[:, 0] / 2
    assert sub.shape == (20, 2) and len(set(rows)) == 20 and np.all(np.diff(rows) > 0)
    assert info["rows_total"] == 50
    assert cli_check.subsample(z, 50, 4)[1] is None and cli_check.subsample(z, 0, 4)[1] is None


def test_time_estimate_and_progress_lines_on_stderr_in_json_mode(tmp_path):
    f = tmp_path / "z.npy"
    np.save(f, np.random.default_rng(0).standard_normal((40, 3)))
    r = _cli("check", str(f), "--json", "--n-resamples", "40", "--tests", "energy,radii_ad")
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)  # stdout stays pure JSON
    err = r.stderr
    assert "estimated time about" in err
    assert "\r" not in err  # not a terminal: whole lines
    counts = {}
    for line in err.splitlines():
        if ": " in line and "/40" in line:
            desc, rest = line.rsplit(": ", 1)[0], line.rsplit(": ", 1)[1]
            counts.setdefault(desc, []).append(int(rest.split("/")[0]))
    assert counts, err
    for desc, seen in counts.items():
        # the counter starts at 0, grows in equal steps of 10% and ends at the total: no jump
        assert seen == list(range(0, 41, 4)), (desc, seen)
    assert any(d.startswith("[1/2] ") for d in counts) and any(d.startswith("[2/2] ") for d in counts)


def test_line_progress_steps():
    import io

    from latentdiv.stats import _common as C

    buf = io.StringIO()
    bar = C.LineProgress(7, "null", buf)
    for _ in range(7):
        bar.update(1)
    bar.close()
    seen = [int(line.split(": ")[1].split("/")[0]) for line in buf.getvalue().splitlines()]
    assert seen == list(range(8)) and "\r" not in buf.getvalue()


def test_n_resamples_too_small_for_alpha_warns(tmp_path, capsys):
    f = tmp_path / "z.npy"
    np.save(f, np.random.default_rng(0).standard_normal((64, 4)) * 1e30)
    code, out, err = run(capsys, str(f), "--n-resamples", "10", "--tests", "energy,distances", "--no-progress")
    assert "n_resamples = 10 is too small for alpha = 0.05" in err and "use n_resamples >= 80" in err
    assert "PASS" in out and "some tests could not reject" in out and "warning:" in out
    d = json.loads(run(capsys, str(f), "--n-resamples", "10", "--tests", "energy", "--json", "--no-progress")[1])
    assert d["warnings"] and "too small" in d["warnings"][0]
    _, _, err = run(capsys, str(f), "--n-resamples", "80", "--tests", "energy,distances", "--no-progress")
    assert "too small" not in err
    # the bound is exact: with B = 79 the smallest Holm-adjusted p is 4/80 = alpha, which does not reject
    from latentdiv import stats
    assert stats.min_resamples(0.05, 4) == 80 and stats.min_resamples(0.05, 16) == 320


def test_plot_target_checked_before_the_work(tmp_path, capsys, gauss, monkeypatch):
    pytest.importorskip("matplotlib")
    f = tmp_path / "z.npy"
    np.save(f, gauss)
    calls = []
    monkeypatch.setattr(cli_check, "_report", lambda *a: calls.append(a))
    for target, word in ((tmp_path / "no" / "dir" / "out.png", "cannot write"), (tmp_path, "directory"),
                         (tmp_path / "out.xyz", "format")):
        code, out, err = run(capsys, str(f), "--plot", str(target), *FAST)
        assert code == 2 and word in err and not calls, (target, err)
    assert not (tmp_path / "out.xyz").exists()  # the check leaves nothing behind


def test_missing_matplotlib_reported_before_the_work(tmp_path, capsys, gauss, monkeypatch):
    import builtins

    f = tmp_path / "z.npy"
    np.save(f, gauss)
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    calls = []
    monkeypatch.setattr(cli_check, "_report", lambda *a: calls.append(a))
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code, _, err = run(capsys, str(f), "--plot", str(tmp_path / "out.png"), *FAST)
    assert code == 2 and "matplotlib" in err and not calls


def test_plot_failure_after_the_work_keeps_the_report(tmp_path, capsys, gauss, monkeypatch):
    pytest.importorskip("matplotlib")
    f = tmp_path / "z.npy"
    np.save(f, gauss)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cli_check, "write_plot", broken)
    code, out, err = run(capsys, str(f), "--plot", str(tmp_path / "out.png"), *FAST)
    assert code == cli_check.EXIT_PLOT == 3
    assert "PASS" in out and "radii_cvm" in out  # the finished work is printed
    assert "could not be written" in err and "disk full" in err


def test_no_subcommand_prints_help_and_version():
    from latentdiv import __version__

    r = _cli(timeout=300)
    assert r.returncode == 0 and "usage: latentdiv" in r.stdout and "check" in r.stdout
    assert "forward+backward" not in r.stdout  # the demo does not run
    r = _cli("--version", timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == f"latentdiv {__version__}"


def test_help_is_plain_text_and_documents_exit_status(capsys):
    for argv in (["--help"], ["check", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        out = capsys.readouterr().out
        for rest in ("``", ":func:", ":data:", ":math:"):
            assert rest not in out, (argv, rest)
    assert "exit status" in out and "3  the report was printed" in out and "built-in example" in out


def test_file_argument_errors(tmp_path, capsys, gauss):
    code, _, err = run(capsys, str(tmp_path))
    assert code == 2 and "is a directory" in err
    txt = tmp_path / "z.txt"
    np.savetxt(txt, gauss)  # numpy's default: whitespace-separated
    code, out, _ = run(capsys, str(txt), "--json", *FAST)
    assert code == 0 and json.loads(out)["n"] == 64 and json.loads(out)["dim"] == 4
    txt_commas = tmp_path / "c.txt"
    np.savetxt(txt_commas, gauss, delimiter=",")
    assert json.loads(run(capsys, str(txt_commas), "--json", *FAST)[1])["dim"] == 4
    binary = tmp_path / "b.csv"
    binary.write_bytes(bytes(range(256)) * 8)
    code, _, err = run(capsys, str(binary))
    assert code == 2 and "not a text file" in err and "codec" not in err
    latin = tmp_path / "l.txt"
    latin.write_bytes("1,2\n\xe9\xe8,3\n".encode("latin-1"))
    code, _, err = run(capsys, str(latin))
    assert code == 2 and "not a text file" in err
    words = tmp_path / "w.csv"
    words.write_text("a,b\n1,x\n2,3\n")
    code, _, err = run(capsys, str(words))
    assert code == 2 and "cannot parse" in err


def test_builtin_example_says_what_its_exit_status_means(capsys):
    code, out, _ = run(capsys, "--n-resamples", "99", "--tests", "radii", "--no-progress")
    assert code == 0 and "exits 0 when it ran" in out and "judges no data of yours" in out


def test_python_dash_m_latentdiv(tmp_path):
    f = tmp_path / "z.npy"
    np.save(f, np.random.default_rng(0).standard_normal((30, 2)))
    r = _cli("check", str(f), "--tests", "radii_cvm", "--no-progress")
    assert r.returncode == 0 and "PASS" in r.stdout, r.stderr


def test_check_imports_neither_dynamo_nor_scipy_stats(tmp_path):
    """The start-up budget of a warm check (benchmarks/README.md): a whole `latentdiv check` (engine
    pair sums, pdist with its forward, the special functions, every test family) runs without importing
    torch._dynamo (a custom op's first call would) or scipy.stats."""
    code = ("import sys; from latentdiv.cli import main; "
            "rc = main(['check', '--n-resamples', '9', '--no-progress']); "
            "print(rc, 'torch._dynamo' in sys.modules, 'scipy.stats' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), LATENTDIV_NULL_CACHE=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "0 False False", out.stdout[-2000:]
