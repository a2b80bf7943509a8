"""The generated ``report.md``: hypotheses first, then the verdicts with numbers and bootstrap
intervals, the tables and the figures. Everything is recomputed from the run results (cheap), so a
resumed study rewrites the report from all its runs."""

from __future__ import annotations

import math
import os
import platform
from typing import Any, Dict, List, Tuple

import numpy as np

from . import analysis as A
from . import figures as FIG
from .config import StudyConfig
from .models import MODELS
from .samplers import SAMPLER_LABELS, SAMPLERS

HYPOTHESES = [
    ("H1", "Under z ~ N(0, I) sampling, models whose test codes are further from N(0, I) (by the library's "
           "normality statistics) give worse samples: Spearman rho(statistic, FD) > 0 with a 95% interval "
           "above 0 for at least one statistic."),
    ("H2", "Hole measures (how much of the prior's mass lands on the code manifold: latent k-NN precision, "
           "coverage) predict sample quality better than normality statistics: the best |rho| of the hole "
           "group exceeds the best |rho| of the normality group, the paired interval of the difference above 0."),
    ("H3", "With a sampler fitted to the codes (GMM, flow) the dependence on normality vanishes: the "
           "normality statistic that predicts FD best under N(0, I) has an interval containing 0 under the "
           "GMM and the flow."),
    ("H4", "Ex-post density estimation rescues the plain autoencoder: the plain AE with a GMM sampler is at "
           "least as good (lower FD) as the best regularized model sampled from N(0, I) at matched distortion."),
    ("H5", "Most of the distance of regularized models sampled from N(0, I) is prior mismatch (FD(N(0, I)) - "
           "FD(best fitted sampler)) rather than density estimation or the decoder, for the majority of models."),
]


def _fmt(v: float, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    a = abs(v)
    if a != 0 and (a < 1e-3 or a >= 1e4):
        return f"{v:.2e}"
    return f"{v:.{digits}g}"


def _ci(ci: Tuple[float, float]) -> str:
    return f"[{_fmt(ci[0], 2)}, {_fmt(ci[1], 2)}]"


def _table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _quality_maps(rows, dim: int) -> Dict[str, Dict[Tuple[str, str], float]]:
    out = {}
    for s in SAMPLERS:
        out[s] = {(r["run_id"], r["codes"]): r["fd"] for r in A.select(rows, dim=dim, sampler=s)}
    return out


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_outputs(out: str, cfg: StudyConfig, results: List[Dict[str, Any]], info: Dict[str, Any],
                  progress: bool = False) -> Tuple[str, str]:
    rows = A.flat_rows(results)
    A.write_csv(os.path.join(out, "results.csv"), rows)
    fig_dir = os.path.join(out, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    floor = info["real_vs_real"]["fd"]
    dims = sorted({r["dim"] for r in rows})
    main_dim = next((d for d in cfg.sweep_dims if d in dims), dims[0])
    lines: List[str] = []
    verdicts: Dict[str, Tuple[str, str]] = {}
    from tqdm.auto import tqdm

    bar = tqdm(total=2 + 4 * len(dims), desc="analysis + figures", disable=not progress, dynamic_ncols=True,
               leave=False)

    # ---- per latent size: matched distortion, correlations, decomposition ----
    per_dim_sections: List[str] = []
    matched_by_dim: Dict[int, List[Dict[str, Any]]] = {}
    corr_by_dim: Dict[int, Dict[str, Any]] = {}
    for dim in dims:
        target, picks = A.matched_weights(rows, dim, cfg.distortion_multiple)
        matched = []
        for model in [m for m in MODELS if m in picks]:
            codes_list = sorted({r["codes"] for r in A.select(rows, dim=dim, model=model)})
            for codes in codes_list:
                cond = dict(dim=dim, model=model, codes=codes, weight_multiple=picks[model])
                prior = A.mean_over_seeds(rows, sampler="prior", **cond)
                dec = A.decomposition(rows, model, codes, dim, picks[model], floor)
                rid = A.select(rows, sampler="prior", **cond)[0]["run_id"]
                matched.append(dict(label=A.model_label(model, codes), model=model, codes=codes,
                                    weight=MODELS[model].base_weight * picks[model], weight_multiple=picks[model],
                                    run_id=rid, prior=prior, **dec))
        matched_by_dim[dim] = matched
        ae_mse = next((m["prior"]["val_mse"] for m in matched if m["label"] == "ae"), float("nan"))
        sec = [f"### D = {dim}", ""]
        if target is not None and any(MODELS[m].sweep for m in picks) and dim in cfg.sweep_dims:
            sec.append(f"Matched distortion: for each model the weight whose validation MSE is closest to "
                       f"{cfg.distortion_multiple:g} x the plain AE's ({_fmt(ae_mse)} -> target {_fmt(target)}).")
        else:
            sec.append("One weight per model at this size (the middle of the grid; no sweep).")
        sec.append("")
        sec.append(_table(
            ["model", "weight", "val MSE", "x AE", "FD N(0,I)", "FD Gauss", "FD GMM", "FD flow", "FD recon",
             "KID N(0,I)", "latent precision", "latent coverage", "HZ", "reject rate", "modes (N(0,I))"],
            [[m["label"], _fmt(m["weight"]), _fmt(m["prior"]["val_mse"]), _fmt(m["prior"]["val_mse"] / ae_mse, 2),
              _fmt(m["fd_prior"]), _fmt(m["fd_gaussian"]), _fmt(m["fd_gmm"]), _fmt(m["fd_flow"]),
              _fmt(m["fd_reconstruction"]), _fmt(m["prior"]["kid"]), _fmt(m["prior"]["hole_precision"], 2),
              _fmt(m["prior"]["hole_coverage"], 2), _fmt(m["prior"]["henze_zirkler"]),
              _fmt(m["prior"]["reject_mean"], 2), _fmt(m["prior"]["modes_covered"], 2)] for m in matched]))
        sec.append("")
        # correlations under every sampler, all runs of this size (every weight and seed)
        points = A.select(rows, dim=dim, sampler="prior")
        stats = dict(A.NORMALITY_STATS, **A.HOLE_STATS)
        table = A.correlation_table(points, stats, _quality_maps(rows, dim), cfg.bootstrap, seed=dim)
        corr_by_dim[dim] = {"table": table, "points": points}
        bar.update(1)
        sec.append(f"Rank correlation of each latent statistic (test codes) with FD, over all {len(points)} "
                   f"(run, codes) points at D = {dim} (every weight and seed), 95% cluster-bootstrap intervals "
                   f"(clusters = models, {cfg.bootstrap} resamples):")
        sec.append("")
        sec.append(_table(
            ["statistic", "group", "Spearman (N(0,I))", "Kendall (N(0,I))", "Spearman (GMM)", "Spearman (flow)"],
            [[stats[s], "holes" if s in A.HOLE_STATS else "normality",
              f"{_fmt(table[f'{s}|prior']['spearman'], 2)} {_ci(table[f'{s}|prior']['spearman_ci'])}",
              f"{_fmt(table[f'{s}|prior']['kendall'], 2)} {_ci(table[f'{s}|prior']['kendall_ci'])}",
              f"{_fmt(table[f'{s}|gmm']['spearman'], 2)} {_ci(table[f'{s}|gmm']['spearman_ci'])}",
              f"{_fmt(table[f'{s}|flow']['spearman'], 2)} {_ci(table[f'{s}|flow']['spearman_ci'])}"]
             for s in stats]))
        sec.append("")
        sec.append("Decomposition at matched distortion: FD(N(0, I)) - floor = prior mismatch + density "
                   "estimation + decoder (floor = real vs real "
                   f"{_fmt(floor)}; best fitted sampler = lowest FD of Gaussian / GMM / flow):")
        sec.append("")
        sec.append(_table(["model", "FD N(0,I)", "prior mismatch", "density estimation", "decoder"],
                          [[m["label"], _fmt(m["fd_prior"]), _fmt(m["prior_mismatch"]),
                            _fmt(m["density_estimation"]), _fmt(m["decoder"])] for m in matched]))
        sec.append("")
        # figures of this size
        FIG.quality_by_sampler(matched, floor, os.path.join(fig_dir, f"quality_by_sampler_D{dim}.png"), dim)
        bar.update(1)
        arrays = {}
        for m in matched:
            with np.load(os.path.join(out, "runs", m["run_id"], "arrays.npz")) as z:
                arrays[m["run_id"]] = {k: z[k] for k in z.files}
        runs_for_fig = [dict(label=m["label"], codes=m["codes"], arrays=arrays[m["run_id"]]) for m in matched]
        FIG.sample_grids(runs_for_fig, info["side"], os.path.join(fig_dir, f"samples_D{dim}.png"), dim)
        bar.update(1)
        FIG.radii_qq(runs_for_fig, dim, os.path.join(fig_dir, f"radii_qq_D{dim}.png"))
        if dim in cfg.sweep_dims:
            FIG.front(rows, dim, os.path.join(fig_dir, f"front_D{dim}.png"))
        bar.update(1)
        figs = [f"quality_by_sampler_D{dim}.png", f"samples_D{dim}.png", f"radii_qq_D{dim}.png"]
        if dim in cfg.sweep_dims:
            figs.append(f"front_D{dim}.png")
        sec += [f"![{f}](figures/{f})" for f in figs] + [""]
        per_dim_sections.append("\n".join(sec))
    FIG.normality_vs_quality(rows, os.path.join(fig_dir, "normality_vs_quality.png"))
    FIG.holes_vs_quality(rows, os.path.join(fig_dir, "holes_vs_quality.png"))
    bar.update(2)
    bar.close()

    # ---- verdicts on the main latent size ----
    table = corr_by_dim[main_dim]["table"]
    norm, holes = list(A.NORMALITY_STATS), list(A.HOLE_STATS)
    best_norm = max(norm, key=lambda s: np.nan_to_num(table[f"{s}|prior"]["spearman"]))
    bn = table[f"{best_norm}|prior"]
    h1 = bn["spearman_ci"][0] > 0
    verdicts["H1"] = ("held" if h1 else "not held",
                      f"best normality statistic {A.NORMALITY_STATS[best_norm]}: rho = {_fmt(bn['spearman'], 2)} "
                      f"{_ci(bn['spearman_ci'])}")
    diff = A.best_group_difference(table, holes, norm, "prior")
    h2 = diff["ci"][0] > 0
    verdicts["H2"] = ("held" if h2 else ("not held" if diff["difference"] <= 0 else "not established"),
                      f"best |rho| holes ({A.HOLE_STATS[diff['best_a']]}) - best |rho| normality "
                      f"({A.NORMALITY_STATS[diff['best_b']]}) = {_fmt(diff['difference'], 2)} {_ci(diff['ci'])}")
    best_abs = max(norm, key=lambda s: abs(np.nan_to_num(table[f"{s}|prior"]["spearman"])))
    g, f_ = table[f"{best_abs}|gmm"], table[f"{best_abs}|flow"]
    vanish = all(t["spearman_ci"][0] <= 0 <= t["spearman_ci"][1] for t in (g, f_))
    verdicts["H3"] = ("held" if vanish else "not held",
                      f"{A.NORMALITY_STATS[best_abs]}: rho = {_fmt(table[f'{best_abs}|prior']['spearman'], 2)} under "
                      f"N(0, I), {_fmt(g['spearman'], 2)} {_ci(g['spearman_ci'])} under the GMM, "
                      f"{_fmt(f_['spearman'], 2)} {_ci(f_['spearman_ci'])} under the flow")
    matched = matched_by_dim[main_dim]
    ae = next((m for m in matched if m["label"] == "ae"), None)
    regs = [m for m in matched if m["model"] != "ae"]
    if ae is not None and regs:
        best_reg = min(regs, key=lambda m: m["fd_prior"])
        h4 = ae["fd_gmm"] <= best_reg["fd_prior"]
        verdicts["H4"] = ("held" if h4 else "not held",
                          f"plain AE + GMM FD {_fmt(ae['fd_gmm'])} (N(0, I): {_fmt(ae['fd_prior'])}) vs best "
                          f"regularized model under N(0, I): {best_reg['label']} {_fmt(best_reg['fd_prior'])}")
    else:
        verdicts["H4"] = ("not tested", "needs the plain AE and at least one regularized model")
    dominated = [m for m in regs if m["prior_mismatch"] > max(m["density_estimation"], m["decoder"])]
    verdicts["H5"] = ("held" if regs and len(dominated) > len(regs) / 2 else "not held",
                      f"prior mismatch is the largest part for {len(dominated)} of {len(regs)} regularized "
                      f"models ({', '.join(m['label'] for m in dominated) or 'none'})")
    n_models = len({p["model"] for p in corr_by_dim[main_dim]["points"]})
    if n_models < 3:  # rank correlations over one or two models (clusters) answer nothing
        verdicts = {h: ("not tested", f"needs at least 3 models, got {n_models}") for h, _ in HYPOTHESES}
        answer = (f"Not enough models for an answer ({n_models} at D = {main_dim}; the hypotheses need at "
                  "least 3): see the tables.")
    else:
        answer = _answer(verdicts, matched, floor, main_dim, bn, best_norm, diff, table)

    lines.append("# latentdiv study: does agreement of the codes with N(0, I) matter?")
    lines.append("")
    lines.append(f"Mode `{cfg.mode}`, data `{cfg.dataset}` ({info['n_train']} train / {info['n_val']} validation / "
                 f"{info['n_test']} test images, {info['side']} x {info['side']}), {len(results)} runs "
                 f"(models x latent sizes x weights x seeds), architecture `{cfg.architecture}` "
                 f"{list(cfg.hidden) if cfg.architecture == 'mlp' else ''}, {cfg.epochs} epochs. CPU: {_cpu()}.")
    lines.append("")
    lines.append("## Hypotheses (stated before the numbers)")
    lines.append("")
    lines += [f"- **{h}**: {text}" for h, text in HYPOTHESES]
    lines.append("")
    lines.append(f"## Answer (D = {main_dim})")
    lines.append("")
    lines.append(answer)
    lines.append("")
    lines.append(_table(["hypothesis", "verdict", "evidence"], [[h, verdicts[h][0], verdicts[h][1]] for h, _ in HYPOTHESES]))
    lines.append("")
    lines.append("## Protocol")
    lines.append("")
    lines.append(
        f"- Sample quality: Frechet distance (FD), KID and k-NN precision / recall / density / coverage "
        f"(k = {cfg.k}) in the feature space of a small classifier trained once on the training images "
        f"({info['feature_layer']}; test accuracy {info['test_accuracy']:.3f}), {min(cfg.n_generated, info['n_test'])} "
        f"generated images against the {info['n_test']} test images. Noise floor (training images vs test "
        f"images): FD {_fmt(floor)}, KID {_fmt(info['real_vs_real']['kid'])}. Distances in this feature space "
        f"are not comparable in value to Inception FIDs, only in ordering.")
    lines.append(
        f"- Samplers: {', '.join(SAMPLER_LABELS[s] for s in SAMPLERS)}; the last three fitted to the training "
        f"codes after training (flow: {cfg.flow_steps} Adam steps).")
    lines.append(
        f"- Latent statistics on the test codes at full n; rejection rates at alpha = {cfg.alpha} over "
        f"{cfg.n_subsamples} subsamples of n = {cfg.subsample_n} (Monte Carlo nulls of {cfg.subsample_resamples}). "
        f"Latent holes: k-NN precision / coverage between {info['n_test']} prior draws and the test codes.")
    lines.append(
        f"- Weights: each regularizer's weight is the base weight times {list(cfg.weight_grid)} at D in "
        f"{list(cfg.sweep_dims)} (the middle elsewhere); VAE with beta = 1. Seeds {list(cfg.seeds)}.")
    lines.append("")
    lines.append("## Figures")
    lines.append("")
    lines.append("![normality vs quality](figures/normality_vs_quality.png)")
    lines.append("")
    lines.append("![holes vs quality](figures/holes_vs_quality.png)")
    lines.append("")
    lines.append("## Tables by latent size")
    lines.append("")
    lines += per_dim_sections
    lines.append("Per-run numbers: `results.csv` (one row per run, codes and sampler) and `runs/*/result.json`.")
    path = os.path.join(out, "report.md")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)
    return path, answer


def _answer(verdicts, matched, floor, dim, bn, best_norm, diff, table) -> str:
    regs = [m for m in matched if m["model"] != "ae"]
    parts = []
    h1, h2, h3 = verdicts["H1"][0], verdicts["H2"][0], verdicts["H3"][0]
    parts.append(
        f"Under z ~ N(0, I) sampling, agreement with the prior does matter"
        if h1 == "held" else
        "Under z ~ N(0, I) sampling, no normality statistic predicts sample quality reliably")
    parts[-1] += (f" (best normality statistic: {A.NORMALITY_STATS[best_norm]}, Spearman rho = "
                  f"{_fmt(bn['spearman'], 2)} {_ci(bn['spearman_ci'])} with FD).")
    hd = diff
    if h2 == "held":
        parts.append(f"What matters is coverage without holes: {A.HOLE_STATS[hd['best_a']]} predicts quality "
                     f"better than any normality statistic (|rho| difference {_fmt(hd['difference'], 2)} {_ci(hd['ci'])}).")
    else:
        parts.append(f"Hole measures ({A.HOLE_STATS[hd['best_a']]}) are not clearly better predictors than the "
                     f"best normality statistic (|rho| difference {_fmt(hd['difference'], 2)} {_ci(hd['ci'])}).")
    if h3 == "held":
        parts.append("Once a density is fitted to the codes (GMM, flow) the dependence on latent normality "
                     "disappears: " + verdicts["H3"][1] + ".")
    else:
        parts.append("The dependence does not fully disappear with fitted samplers: " + verdicts["H3"][1] + ".")
    if regs:
        best_prior = min(matched, key=lambda m: m["fd_prior"])
        best_any = min(matched, key=lambda m: min(m["fd_gmm"], m["fd_flow"]))
        parts.append(f"At matched distortion the best model sampled from N(0, I) is {best_prior['label']} "
                     f"(FD {_fmt(best_prior['fd_prior'])}); the best with a fitted sampler is {best_any['label']} "
                     f"(FD {_fmt(min(best_any['fd_gmm'], best_any['fd_flow']))}; noise floor {_fmt(floor)}). "
                     + verdicts["H4"][1] + ".")
    return " ".join(parts)
