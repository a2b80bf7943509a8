"""The report's figures (matplotlib, Agg backend, PNG): every axis labelled, legends on every plot."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence

import numpy as np
from scipy import stats as st

from ._deps import require
from .analysis import HOLE_STATS, NORMALITY_STATS, select
from .samplers import SAMPLER_LABELS, SAMPLERS


def _plt():
    mpl = require("matplotlib")
    mpl.use("Agg")
    return require("matplotlib.pyplot")


def _colours(labels: Sequence[str]) -> Dict[str, Any]:
    plt = _plt()
    cmap = plt.get_cmap("tab20")
    return {lab: cmap(i % 20) for i, lab in enumerate(sorted(labels))}


_MARKERS = ["o", "s", "^", "D", "v", "P"]


def _scatter_panels(rows, stats: Dict[str, str], path: str, title: str, log_x: bool) -> str:
    plt = _plt()
    pts = select(rows, sampler="prior")
    labels = sorted({r["label"] for r in pts})
    colour = _colours(labels)
    dims = sorted({r["dim"] for r in pts})
    names = list(stats)
    ncol = min(3, len(names))
    nrow = (len(names) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.7 * nrow), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for lab in labels:
            for di, dim in enumerate(dims):
                sel = [r for r in pts if r["label"] == lab and r["dim"] == dim]
                if sel:
                    ax.scatter([r[name] for r in sel], [r["fd"] for r in sel], color=colour[lab],
                               marker=_MARKERS[di % len(_MARKERS)], s=28, edgecolor="k", linewidth=0.3,
                               label=f"{lab}" if di == 0 else None)
        x = np.array([r[name] for r in pts], float)
        y = np.array([r["fd"] for r in pts], float)
        ok = np.isfinite(x) & np.isfinite(y)
        rho = st.spearmanr(x[ok], y[ok])[0] if ok.sum() > 2 and np.ptp(x[ok]) > 0 else float("nan")
        ax.set_title(f"{stats[name]}\nSpearman rho = {rho:.2f} (n = {ok.sum()})", fontsize=9)
        positive = x[ok] > 0
        if log_x and positive.all():
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(stats[name] + (" (log scale)" if log_x and positive.all() else ""), fontsize=8)
        ax.set_ylabel("FD of z ~ N(0, I) samples (log scale)", fontsize=8)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles, labs = axes.flat[0].get_legend_handles_labels()
    marker_note = ", ".join(f"{_MARKERS[i % len(_MARKERS)]} = D {d}" for i, d in enumerate(dims))
    fig.legend(handles, labs, loc="lower center", ncol=min(6, len(labs)), fontsize=8,
               title=f"model (marker: {marker_note})", title_fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * ((len(labs) - 1) // 6), 1, 0.96))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def normality_vs_quality(rows, path: str) -> str:
    keep = ["henze_zirkler", "energy_test", "mardia_skewness", "radii_test", "distances_cvm", "reject_mean"]
    return _scatter_panels(rows, {k: NORMALITY_STATS[k] for k in keep}, path,
                           "Latent normality statistic (test codes) vs sample quality under N(0, I) sampling (every run, latent sizes pooled)",
                           log_x=True)


def holes_vs_quality(rows, path: str) -> str:
    return _scatter_panels(rows, dict(HOLE_STATS), path,
                           "Latent holes (prior draws vs test codes, k-NN balls) vs sample quality under N(0, I) (every run, latent sizes pooled)",
                           log_x=False)


def quality_by_sampler(matched: List[Dict[str, Any]], floor: float, path: str, dim: int) -> str:
    """matched: one dict per model label with fd_<sampler> and fd_reconstruction."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(matched) + 2) + 2.0, 4.4))
    cols = list(SAMPLERS) + ["reconstruction"]
    width = 0.8 / len(cols)
    x = np.arange(len(matched))
    cmap = plt.get_cmap("tab10")
    for j, c in enumerate(cols):
        ax.bar(x + (j - (len(cols) - 1) / 2) * width, [m[f"fd_{c}"] for m in matched], width,
               color=cmap(j), label=SAMPLER_LABELS.get(c, "reconstructions (decoder ceiling)"))
    ax.axhline(floor, color="k", linestyle="--", linewidth=1, label="real vs real (noise floor)")
    ax.set_xticks(x)
    ax.set_xticklabels([m["label"] for m in matched], rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("FD in classifier feature space (log scale)")
    ax.set_title(f"Sample quality by sampler, D = {dim}, each model at matched distortion")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="sampler", title_fontsize=8)
    ax.grid(axis="y", alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def front(rows, dim: int, path: str) -> str:
    plt = _plt()
    pts = select(rows, dim=dim, codes="mean")
    labels = sorted({r["label"] for r in pts})
    colour = _colours(labels)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    for ax, sampler in zip(axes, ("prior", "gmm")):
        for lab in labels:
            sel = [r for r in pts if r["label"] == lab and r["sampler"] == sampler]
            ws = sorted({r["weight_multiple"] for r in sel})
            mse = [np.mean([r["val_mse"] for r in sel if r["weight_multiple"] == w]) for w in ws]
            fd = [np.mean([r["fd"] for r in sel if r["weight_multiple"] == w]) for w in ws]
            ax.plot(mse, fd, "-o", color=colour[lab], label=lab, markersize=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("validation reconstruction MSE per pixel (log scale)")
        ax.set_title(f"sampler: {SAMPLER_LABELS[sampler]}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("FD of generated samples (log scale)")
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(f"Reconstruction vs sample quality across regularizer weights, D = {dim} (mean over seeds)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _tile(images: np.ndarray, side: int, per_row: int = 4) -> np.ndarray:  # [k, P] -> [rows*side, per_row*side]
    k = min(len(images), per_row * per_row)
    canvas = np.full((per_row * (side + 1) - 1, per_row * (side + 1) - 1), 0.3)  # grey separators (gray_r: 0 = white)
    for i in range(k):
        r, c = divmod(i, per_row)
        canvas[r * (side + 1):r * (side + 1) + side, c * (side + 1):c * (side + 1) + side] = \
            np.asarray(images[i], float).reshape(side, side)
    return canvas


def sample_grids(runs: List[Dict[str, Any]], side: int, path: str, dim: int) -> str:
    """runs: dicts with 'label' and 'arrays' (the npz of the run) and 'codes'."""
    plt = _plt()
    cols = ["recon"] + list(SAMPLERS)
    fig, axes = plt.subplots(len(runs), len(cols), figsize=(1.6 * len(cols) + 1.2, 1.6 * len(runs) + 0.6),
                             squeeze=False)
    for i, run in enumerate(runs):
        for j, c in enumerate(cols):
            key = f"recon_{run['codes']}" if c == "recon" else f"samples_{run['codes']}_{c}"
            ax = axes[i, j]
            ax.imshow(_tile(run["arrays"][key], side), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("reconstructions" if c == "recon" else SAMPLER_LABELS[c], fontsize=8)
            if j == 0:
                ax.set_ylabel(run["label"], fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"Test reconstructions and generated samples, D = {dim}, matched distortion", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.975))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def radii_qq(runs: List[Dict[str, Any]], dim: int, path: str) -> str:
    plt = _plt()
    colour = _colours([r["label"] for r in runs])
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    top = 0.0
    for run in runs:
        radii = np.sort(run["arrays"][f"radii_{run['codes']}"])
        probs = (np.arange(1, radii.size + 1) - 0.5) / radii.size
        theory = st.chi.ppf(probs, dim)
        ax.plot(theory, radii, ".", markersize=2.5, color=colour[run["label"]], label=run["label"])
        top = max(top, float(theory[-1]))
    ax.plot([0.3, top], [0.3, top], "k--", linewidth=1, label="radii of N(0, I) (y = x)")
    ax.set_xlabel(f"chi_{dim} quantile (radius of N(0, I) in D = {dim}, log scale)")
    ax.set_ylabel("sorted radius |z| of test codes (log scale)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticker = require("matplotlib.ticker")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ticker.ScalarFormatter())
        axis.set_minor_formatter(ticker.NullFormatter())
    ax.set_title(f"QQ plot of code radii against chi_{dim}, matched distortion")
    ax.legend(fontsize=7, markerscale=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
