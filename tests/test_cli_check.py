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
