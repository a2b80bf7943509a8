"""latentdiv.study end to end on load_digits at a tiny budget: every model trains, every sampler
samples, every metric is finite, the report and figures are written, a second start recomputes
nothing, the same seed gives the same numbers; and bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import pytest
import torch

for _mod in ("sklearn", "mlxtend", "zuko", "matplotlib", "tqdm"):
    pytest.importorskip(_mod, reason="the study extra is not installed: pip install '.[study]'")

import latentdiv.study as study  # noqa: E402
from latentdiv import cli  # noqa: E402
from latentdiv.study import _deps  # noqa: E402
from latentdiv.study.run import RunSpec, execute_run  # noqa: E402
from latentdiv.study.runner import check_out_dir, prepare_classifier  # noqa: E402

TINY = study.StudyConfig(
    mode="quick", dataset="digits", latent_dims=(4,), seeds=(0,), sweep_dims=(4,), weight_grid=(1.0,),
    hidden=(32,), epochs=2, batch_size=100, classifier_epochs=1, flow_steps=5, n_generated=100,
    n_resamples=20, subsample_n=40, n_subsamples=2, subsample_resamples=20, bootstrap=30)


def _finite(obj, path="result"):
    if isinstance(obj, dict):
        for k, v in obj.items():
            _finite(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _finite(v, f"{path}[{i}]")
    elif isinstance(obj, float):
        assert math.isfinite(obj), f"{path} = {obj}"


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if not k.startswith("seconds")}
    return obj


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("study"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster, and immune to a busy machine
    try:
        summary = study.run_study(TINY, out, jobs=1, progress=False, log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    return out, summary


def test_every_model_trains_samples_and_is_measured(tiny_study):
    out, summary = tiny_study
    assert summary["computed"] == summary["runs"] == len(study.MODELS)
    for name in study.MODELS:
        with open(os.path.join(out, "runs", f"{name}-D4-w1-s0", "result.json")) as f:
            result = json.load(f)
        _finite(result)
        history = result["history"]
        assert len(history) == TINY.epochs
        assert history[-1]["bce"] < history[0]["bce"], name  # reconstruction improves
        for codes, ev in result["evaluations"].items():
            assert set(ev["samplers"]) == set(study.SAMPLERS)
            for sampler, q in ev["samplers"].items():
                assert q["fd"] >= 0 and sum(q["counts"]) == TINY.n_generated, (name, codes, sampler)
            assert 0 <= ev["latent_holes"]["precision"] <= 1
            assert 0 <= ev["latent"]["reject_mean"] <= 1
        assert set(result["evaluations"]) == ({"mean", "sample"} if name == "vae" else {"mean"})


def test_report_figures_and_csv_are_written(tiny_study):
    out, summary = tiny_study
    with open(summary["report"]) as f:
        report = f.read()
    assert report.index("## Hypotheses") < report.index("## Answer")
    assert "Spearman" in report and "Kendall" in report
    for fig in ("normality_vs_quality.png", "holes_vs_quality.png", "quality_by_sampler_D4.png",
                "samples_D4.png", "radii_qq_D4.png", "front_D4.png"):
        path = os.path.join(out, "figures", fig)
        assert os.path.getsize(path) > 5000, fig
        assert f"figures/{fig}" in report
    with open(os.path.join(out, "results.csv")) as f:
        lines = f.read().splitlines()
    # one row per (run, codes, sampler + reconstruction): every model, the VAE twice
    assert len(lines) - 1 == (len(study.MODELS) + 1) * (len(study.SAMPLERS) + 1)
    assert summary["answer"] and summary["answer"] in report


def test_second_start_recomputes_nothing(tiny_study):
    out, _ = tiny_study
    results = [os.path.join(out, "runs", d, "result.json") for d in os.listdir(os.path.join(out, "runs"))]
    stamps = {p: os.stat(p).st_mtime_ns for p in results}
    clf = os.stat(os.path.join(out, "classifier.pt")).st_mtime_ns
    again = study.run_study(TINY, out, jobs=1, progress=False, log=lambda s: None)
    assert again["computed"] == 0 and again["reused"] == len(study.MODELS)
    assert {p: os.stat(p).st_mtime_ns for p in results} == stamps
    assert os.stat(os.path.join(out, "classifier.pt")).st_mtime_ns == clf
    # another training configuration in the same directory is refused, not mixed
    with pytest.raises(ValueError, match="another configuration"):
        study.run_study(dataclasses.replace(TINY, epochs=4), out, progress=False, log=lambda s: None)


def test_same_seed_same_numbers(tiny_study, tmp_path):
    out, _ = tiny_study
    fresh = check_out_dir(str(tmp_path / "again"))
    # one thread, as in the fixture (another thread count reorders float sums: differences ~1e-10);
    # conftest restores the thread count after the test
    torch.set_num_threads(1)
    prepare_classifier(fresh, TINY)
    for name in ("wae", "vae", "sigreg"):  # prior draws, a stochastic encoder, slices redrawn per step
        a = execute_run(fresh, TINY, RunSpec(name, 4, 1.0, 0), os.path.join(fresh, "classifier.pt"), threads=1)
        with open(os.path.join(out, "runs", f"{name}-D4-w1-s0", "result.json")) as f:
            b = json.load(f)
        a = json.loads(json.dumps(a, default=float))
        assert a["history"] == b["history"]
        assert _without_timings(a["evaluations"]) == _without_timings(b["evaluations"])


def test_sigreg_model_lowers_its_regularizer_and_moves_codes_toward_the_prior(tiny_study):
    out, _ = tiny_study
    results = {}
    for name in ("ae", "sigreg"):
        with open(os.path.join(out, "runs", f"{name}-D4-w1-s0", "result.json")) as f:
            results[name] = json.load(f)
    history = results["sigreg"]["history"]
    assert history[-1]["reg"] < history[0]["reg"]  # SIGReg of the training batches decreases
    # the test codes end closer to N(0, I) than the plain AE's (Cramer-Wold, not the trained statistic)
    cw = {k: r["evaluations"]["mean"]["latent"]["cramer_wold"] for k, r in results.items()}
    assert cw["sigreg"] < cw["ae"], cw


def test_sigreg_regularizer_redraws_its_slices_every_step_reproducibly():
    from latentdiv.study.models import make_regularizer

    z = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))
    first = make_regularizer("sigreg", 4, torch.Generator().manual_seed(7))
    again = make_regularizer("sigreg", 4, torch.Generator().manual_seed(7))
    values = [float(first(z)) for _ in range(3)]
    assert len(set(values)) == 3  # new slices at every call (one call per training step)
    assert [float(again(z)) for _ in range(3)] == values  # the same run seed, the same slices
    other = make_regularizer("sigreg", 4, torch.Generator().manual_seed(8))
    assert float(other(z)) != values[0]


def test_plan_sweeps_only_at_the_sweep_sizes():
    cfg = dataclasses.replace(TINY, latent_dims=(4, 6), weight_grid=(0.1, 1.0, 10.0))
    specs = study.plan_runs(cfg)
    swept = [s for s in specs if s.dim == 4 and s.model == "wae"]
    assert sorted(s.weight_multiple for s in swept) == [0.1, 1.0, 10.0]
    assert [s.weight_multiple for s in specs if s.dim == 6 and s.model == "wae"] == [1.0]
    assert [s.weight_multiple for s in specs if s.model in ("ae", "vae")] == [1.0] * 4


def test_bad_input(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        dataclasses.replace(TINY, models=("ae", "nope"))
    with pytest.raises(ValueError, match="latent_dims must be integers >= 1"):
        dataclasses.replace(TINY, latent_dims=(0,))
    with pytest.raises(ValueError, match="jobs"):
        study.run_study(TINY, str(tmp_path), jobs=0)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="out directory .* is not writable"):
        study.run_study(TINY, str(blocker / "sub"), progress=False)
    # the command line: exit status 2 and the message
    assert cli.main(["study", "--models", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert cli.main(["study", "--latent-dims", "0", "--out", str(tmp_path / "o")]) == 2
    assert "latent_dims" in capsys.readouterr().err


def test_missing_optional_dependency_names_the_extra(monkeypatch, tmp_path, capsys):
    real_import = _deps.importlib.import_module

    def fake_import(name, *args):
        if name.split(".")[0] == "zuko":
            raise ImportError("No module named 'zuko'")
        return real_import(name, *args)

    monkeypatch.setattr(_deps.importlib, "import_module", fake_import)
    with pytest.raises(study.MissingDependencyError, match=r"'zuko'.*latentdiv\[study\]"):
        study.run_study(TINY, str(tmp_path), progress=False)
    assert cli.main(["study", "--quick", "--out", str(tmp_path / "o")]) == 2
    assert 'pip install "latentdiv[study]"' in capsys.readouterr().err


def test_conv_architecture_of_full_mode():
    from latentdiv.study.models import Autoencoder

    for side in (8, 28):
        for stochastic in (False, True):
            net = Autoencoder(side, 5, (), stochastic, "conv")
            mu, logvar = net.encode(torch.rand(3, side * side))
            assert mu.shape == (3, 5) and (logvar is None) == (not stochastic)
            assert net.decode(mu).shape == (3, side * side)
    with pytest.raises(ValueError, match="divisible by 4"):
        Autoencoder(10, 5, (), False, "conv")
    with pytest.raises(ValueError, match="architecture"):
        Autoencoder(8, 5, (), False, "transformer")
    assert study.preset("full").architecture == "conv"
