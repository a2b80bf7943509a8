"""From run results to tables: flat rows, rank correlations with cluster-bootstrap intervals,
matched-distortion selection, and the decomposition of each model's distance."""

from __future__ import annotations

import csv
import math
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as st

from .samplers import SAMPLERS

# Latent statistics against sample quality. Normality: large = far from N(0, I). Holes: computed
# between prior draws and the test codes (k-NN balls around the codes).
NORMALITY_STATS = {
    "henze_zirkler": "Henze-Zirkler",
    "energy_test": "energy (test statistic)",
    "mardia_skewness": "Mardia skewness",
    "mardia_kurtosis_abs": "|Mardia kurtosis|",
    "radii_test": "CvM of radii vs chi_D",
    "distances_cvm": "CvM of distances vs sqrt2 chi_D",
    "coordinate_test": "CvM of coordinates vs N(0,1)",
    "mmd_to_normal": "MMD^2 to N(0,I) (closed form)",
    "cramer_wold": "Cramer-Wold d^2",
    "reject_mean": "rejection rate (mean of 6 tests)",
}
HOLE_STATS = {
    "hole_precision": "latent precision: prior draws on the codes",
    "hole_coverage": "latent coverage: codes reached by prior draws",
    "hole_density": "latent density",
    "hole_recall": "latent recall",
}
QUALITY = "fd"


def model_label(model: str, codes: str) -> str:
    return model if codes == "mean" else f"{model} (sampled codes)"


def flat_rows(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per (run, codes, sampler); sampler "reconstruction" is the decoder's ceiling."""
    rows = []
    for r in results:
        for codes, ev in r["evaluations"].items():
            base = {"run_id": r["run_id"], "model": r["model"], "label": model_label(r["model"], codes),
                    "dim": r["dim"], "weight_multiple": r["weight_multiple"], "weight": r["weight"],
                    "seed": r["seed"], "codes": codes, "recon_mse": ev["recon_mse"], "val_mse": ev["val_mse"]}
            for k, v in ev["latent"].items():
                base[k] = v
            for k, v in ev["latent_holes"].items():
                base[f"hole_{k}"] = v
            for sampler in SAMPLERS + ("reconstruction",):
                q = ev["recon_quality"] if sampler == "reconstruction" else ev["samplers"][sampler]
                row = dict(base, sampler=sampler)
                for k in ("fd", "kid", "kid_std", "feat_precision", "feat_recall", "feat_density", "feat_coverage",
                          "tv_to_uniform", "modes_covered"):
                    row[k] = q[k]
                row["class_counts"] = " ".join(str(c) for c in q["counts"])
                rows.append(row)
    return rows


def write_csv(path: str, rows: List[Dict[str, Any]]) -> None:
    if not rows:
        return
    keys = list(rows[0].keys())
    for row in rows[1:]:
        keys.extend(k for k in row if k not in keys)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def select(rows, **conditions) -> List[Dict[str, Any]]:
    return [r for r in rows if all(r.get(k) == v for k, v in conditions.items())]


# ---------------------------------------------------------------------------------------------------
# rank correlations with cluster bootstrap
# ---------------------------------------------------------------------------------------------------
def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(st.spearmanr(x, y)[0])


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(st.kendalltau(x, y)[0])


def bootstrap_indices(clusters: Sequence[str], n_boot: int, seed: int) -> List[np.ndarray]:
    """Cluster bootstrap: resample whole clusters (models, with all their weights, seeds and code
    variants) with replacement; points of one model are not independent."""
    names = sorted(set(clusters))
    members = {c: np.flatnonzero(np.asarray(clusters) == c) for c in names}
    rng = np.random.default_rng(seed)
    return [np.concatenate([members[names[j]] for j in rng.integers(0, len(names), len(names))])
            for _ in range(n_boot)]


def _ranks(a: np.ndarray) -> np.ndarray:  # [B, n] -> [B, n] average ranks per row
    return st.rankdata(a, axis=1)


def _rowwise_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # [B, n], [B, n] -> [B]
    rx, ry = _ranks(x), _ranks(y)
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    den = np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(1) / den, np.nan)


def _rowwise_kendall(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # [B, n], [B, n] -> [B]
    """Kendall's tau-b (as scipy.stats.kendalltau): sum sign(dx) sign(dy) / sqrt(#untied x * #untied y)."""
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    den = np.sqrt(np.abs(sx).sum((1, 2)) * np.abs(sy).sum((1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sx * sy).sum((1, 2)) / den, np.nan)


def correlation_table(points: List[Dict[str, Any]], stats: Dict[str, str], quality_of: Dict[str, Dict[str, float]],
                      n_boot: int, seed: int = 0) -> Dict[str, Dict[str, Any]]:
    """Spearman and Kendall of each statistic with each quality column (quality_of: name ->
    {(run_id, codes): value}), 95% percentile intervals from the cluster bootstrap (clusters =
    models, the same resamples for every statistic)."""
    keys = [(p["run_id"], p["codes"]) for p in points]
    clusters = [p["model"] for p in points]
    boots = bootstrap_indices(clusters, n_boot, seed)
    table: Dict[str, Dict[str, Any]] = {}
    for qname, qmap in quality_of.items():
        y = np.array([qmap[k] for k in keys], dtype=float)
        for sname in stats:
            x = np.array([p[sname] for p in points], dtype=float)
            ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
            rho, tau = _spearman(x[ok], y[ok]), _kendall(x[ok], y[ok])
            keep = set(ok.tolist())
            idx = [np.array([i for i in b if i in keep], dtype=int) for b in boots]
            size = min(len(i) for i in idx) if idx else 0
            bs = bk = np.full(len(idx), np.nan)
            if size >= 3:
                # resamples differ in size (clusters differ in size): group them by length
                bs, bk = np.full(len(idx), np.nan), np.full(len(idx), np.nan)
                for length in sorted({len(i) for i in idx}):
                    rows_ = [j for j, i in enumerate(idx) if len(i) == length]
                    mat = np.stack([idx[j] for j in rows_])
                    bs[rows_] = _rowwise_spearman(x[mat], y[mat])
                    bk[rows_] = _rowwise_kendall(x[mat], y[mat])
            table[f"{sname}|{qname}"] = {"stat": sname, "quality": qname, "n": int(ok.size),
                                         "spearman": rho, "spearman_ci": _ci(bs), "kendall": tau,
                                         "kendall_ci": _ci(bk), "spearman_boot": np.asarray(bs)}
    return table


def _ci(values) -> Tuple[float, float]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 10:
        return (float("nan"), float("nan"))
    return (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))


def best_group_difference(table, group_a: Sequence[str], group_b: Sequence[str], quality: str) -> Dict[str, Any]:
    """max |rho| over group a minus max |rho| over group b, with its bootstrap interval (the same
    cluster resamples for both groups, so the difference's interval is paired)."""
    def best(group):
        return max(group, key=lambda s: abs(np.nan_to_num(table[f"{s}|{quality}"]["spearman"])))

    ba, bb = best(group_a), best(group_b)
    point = abs(table[f"{ba}|{quality}"]["spearman"]) - abs(table[f"{bb}|{quality}"]["spearman"])
    with warnings.catch_warnings():  # a resample where every statistic is constant gives NaN: dropped by _ci
        warnings.simplefilter("ignore", RuntimeWarning)
        boot_a = np.nanmax(np.abs(np.stack([table[f"{s}|{quality}"]["spearman_boot"] for s in group_a])), axis=0)
        boot_b = np.nanmax(np.abs(np.stack([table[f"{s}|{quality}"]["spearman_boot"] for s in group_b])), axis=0)
    return {"best_a": ba, "best_b": bb, "difference": float(point), "ci": _ci(boot_a - boot_b)}


# ---------------------------------------------------------------------------------------------------
# matched distortion and decomposition
# ---------------------------------------------------------------------------------------------------
def matched_weights(rows, dim: int, multiple: float) -> Tuple[Optional[float], Dict[str, float]]:
    """For each model at latent size dim: the weight multiple whose validation MSE (mean over seeds,
    codes = means) is closest in log ratio to ``multiple`` x the plain AE's. Returns (target, picks)."""
    base = select(rows, dim=dim, codes="mean", sampler="prior")
    ae = [r["val_mse"] for r in base if r["model"] == "ae"]
    target = multiple * float(np.mean(ae)) if ae else None
    picks: Dict[str, float] = {}
    for model in sorted({r["model"] for r in base}):
        by_w: Dict[float, List[float]] = {}
        for r in base:
            if r["model"] == model:
                by_w.setdefault(r["weight_multiple"], []).append(r["val_mse"])
        if target is None:
            picks[model] = sorted(by_w)[len(by_w) // 2]
        else:
            picks[model] = min(by_w, key=lambda w: abs(math.log(np.mean(by_w[w]) / target)))
    return target, picks


def mean_over_seeds(rows, **conditions) -> Dict[str, float]:
    sel = select(rows, **conditions)
    if not sel:
        return {}
    out = {}
    for k, v in sel[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(np.mean([r[k] for r in sel]))
    out["n_seeds"] = len(sel)
    return out


def decomposition(rows, model: str, codes: str, dim: int, weight_multiple: float, floor: float) -> Dict[str, float]:
    """FD(prior) - floor = prior mismatch + density estimation + decoder, where
    decoder = FD(reconstructions) - floor, density estimation = FD(best fitted sampler) - FD(recon),
    prior mismatch = FD(N(0, I)) - FD(best fitted sampler)."""
    cond = dict(model=model, codes=codes, dim=dim, weight_multiple=weight_multiple)
    fd = {s: mean_over_seeds(rows, sampler=s, **cond).get("fd", float("nan")) for s in SAMPLERS + ("reconstruction",)}
    fitted = min(fd[s] for s in ("gaussian", "gmm", "flow"))
    return {"fd_prior": fd["prior"], "fd_best_fitted": fitted, "fd_reconstruction": fd["reconstruction"],
            "decoder": fd["reconstruction"] - floor, "density_estimation": fitted - fd["reconstruction"],
            "prior_mismatch": fd["prior"] - fitted, **{f"fd_{s}": fd[s] for s in SAMPLERS}}
