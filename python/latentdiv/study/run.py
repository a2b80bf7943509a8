"""One run of the study: train one autoencoder (model, D, weight, seed), then evaluate it on the
held-out test set, and write ``runs/<run_id>/result.json`` (atomically: a run either has its
complete result or is recomputed)."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch.nn import functional as TF

from .. import functional as LF
from .. import stats as LS
from . import metrics as M
from .config import StudyConfig
from .data import Split, load_split
from .models import MODELS, Autoencoder, make_regularizer
from .samplers import FITTERS, SAMPLERS


@dataclasses.dataclass(frozen=True)
class RunSpec:
    model: str
    dim: int
    weight_multiple: float  # multiple of the model's base weight (1 for models without a sweep)
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.model}-D{self.dim}-w{self.weight_multiple:g}-s{self.seed}"

    @property
    def weight(self) -> float:
        return MODELS[self.model].base_weight * self.weight_multiple


@functools.lru_cache(maxsize=4)
def cached_split(dataset: str, split_seed: int) -> Split:
    return load_split(dataset, split_seed=split_seed)


def write_json_atomic(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=float)
    os.replace(tmp, path)


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------
def train_model(spec: RunSpec, split: Split, cfg: StudyConfig, progress: bool = False):
    """Adam on the model's objective (see latentdiv.study.models). Returns (net, history)."""
    torch.manual_seed(spec.seed)
    model = MODELS[spec.model]
    gen = torch.Generator().manual_seed(10_000 + spec.seed)  # prior draws / projections inside the losses
    net = Autoencoder(split.side, spec.dim, cfg.hidden, model.stochastic, cfg.architecture)
    regularizer = make_regularizer(spec.model, spec.dim, gen)
    if spec.model == "rae":
        # RAE-L2 (Ghosh et al. 2020): L2 penalty on the codes and weight decay on the decoder
        groups = [{"params": net.encoder.parameters()},
                  {"params": net.decoder.parameters(), "weight_decay": 1e-4}]
    else:
        groups = [{"params": net.parameters()}]
    opt = torch.optim.Adam(groups, lr=cfg.lr)
    x = split.x_train
    pixels = split.pixels
    perm_gen = torch.Generator().manual_seed(spec.seed)
    history: List[Dict[str, float]] = []
    bar = _progress(progress, cfg.epochs, f"train {spec.run_id}")
    for _epoch in range(cfg.epochs):
        perm = torch.randperm(x.shape[0], generator=perm_gen)
        sums = {"loss": 0.0, "bce": 0.0, "reg": 0.0}
        batches = 0
        for i in range(0, x.shape[0] - cfg.batch_size // 2, cfg.batch_size):
            xb = x[perm[i:i + cfg.batch_size]]
            mu, logvar = net.encode(xb)
            if model.stochastic:
                z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
                reg = LF.kl_normal(mu, logvar)
                penalty = reg  # beta = 1: the ELBO
            else:
                z = mu
                reg = regularizer(z) if regularizer is not None else torch.zeros(())
                penalty = spec.weight * pixels * reg
            bce = TF.binary_cross_entropy_with_logits(net.decode_logits(z), xb, reduction="sum") / xb.shape[0]
            loss = bce + penalty
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{spec.run_id}: non-finite loss at epoch {_epoch}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            sums["loss"] += float(loss.detach())
            sums["bce"] += float(bce.detach())
            sums["reg"] += float(reg.detach())
            batches += 1
        history.append({k: v / batches for k, v in sums.items()})
        if bar is not None:
            bar.set_postfix(bce=f"{history[-1]['bce']:.2f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    net.eval()
    return net, history


# ---------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def _codes(net: Autoencoder, x: torch.Tensor, variant: str, seed: int) -> torch.Tensor:  # [n, P] -> [n, D]
    mu, logvar = net.encode(x)
    if variant == "mean":
        return mu
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed))
    return mu + torch.exp(0.5 * logvar) * eps


def latent_statistics(z: torch.Tensor, cfg: StudyConfig, seed: int) -> Dict[str, float]:
    """Agreement of codes z [n, D] with N(0, I): divergences (latentdiv.functional) and test
    statistics (latentdiv.stats) at full n, and rejection rates over subsamples of moderate n."""
    z64 = z.double()
    d = z.shape[1]
    out: Dict[str, float] = {}
    out["mmd_to_normal"] = float(LF.mmd_to_normal(z64, bandwidth=math.sqrt(d)))
    out["cramer_wold"] = float(LF.cramer_wold(z64))
    out["energy_distance"] = float(LF.energy_distance(z64))
    out["radii_cvm"] = float(LF.radii_cvm(z64))
    out["distances_cvm"] = float(LF.distances_cvm(z64))
    out["coordinates_cvm"] = float(LF.coordinates_cvm(z64))
    # at full n the p-values are all ~0 (recorded, not used); the distance test's Monte Carlo null
    # at n = 1,000 (500k distances per replicate) is the costly one: its statistic is distances_cvm
    tests = {k: v for k, v in _tests(cfg.n_resamples).items() if k != "distance_test"}
    for name, test in tests.items():
        res = test(z64)
        if name == "mardia":
            out["mardia_skewness"] = float(res.skewness.statistic)
            out["mardia_kurtosis_abs"] = abs(float(res.kurtosis.statistic))
        else:
            out[name] = float(res.statistic)
        out[f"p_{name}"] = float(res.pvalue)
    # rejection rates: at n = 1,000 every test rejects every model; at moderate n they rank them
    rng = np.random.default_rng(seed)
    m = min(cfg.subsample_n, z.shape[0])
    sub_tests = _tests(cfg.subsample_resamples)
    rejections = {name: 0 for name in sub_tests}
    for _ in range(cfg.n_subsamples):
        zs = z64[torch.from_numpy(rng.choice(z.shape[0], m, replace=False))]
        for name, test in sub_tests.items():
            rejections[name] += int(test(zs).pvalue < cfg.alpha)
    for name, count in rejections.items():
        out[f"reject_{name}"] = count / cfg.n_subsamples
    out["reject_mean"] = float(np.mean([out[f"reject_{n}"] for n in sub_tests]))
    return out


def _tests(n_resamples: int):
    kw = dict(n_resamples=n_resamples)
    return {
        "henze_zirkler": lambda z: LS.henze_zirkler(z, **kw),
        "energy_test": lambda z: LS.energy_test(z, **kw),
        "mardia": lambda z: LS.mardia(z, **kw),
        "radii_test": lambda z: LS.radii_test(z, **kw),
        "distance_test": lambda z: LS.distance_test(z, **kw),
        "coordinate_test": lambda z: LS.coordinate_test(z, **kw),
    }


def image_quality(images: torch.Tensor, classifier: M.FeatureClassifier, test_features: torch.Tensor,
                  cfg: StudyConfig, seed: int) -> Dict[str, Any]:
    """FD, KID, PRDC (feature space of the classifier) and the class histogram of images [m, P]
    against the test set's features [n, 128]."""
    feats = classifier.features(images)
    kid, kid_std = M.kernel_inception_distance(feats, test_features, subset_size=min(500, feats.shape[0]),
                                               seed=seed)
    out: Dict[str, Any] = {"fd": M.frechet_distance(feats, test_features), "kid": kid, "kid_std": kid_std}
    out.update({f"feat_{k}": v for k, v in M.prdc(test_features, feats, k=cfg.k).items()})
    out.update(M.class_histogram(classifier.predict(images)))
    return out


def evaluate_model(net: Autoencoder, spec: RunSpec, split: Split, classifier: M.FeatureClassifier,
                   cfg: StudyConfig, progress: bool = False):
    """Returns (evaluations, arrays): one evaluation per code variant (VAE: "mean" and "sample"),
    and small arrays for the figures (sample grids, test radii)."""
    variants = ["mean", "sample"] if MODELS[spec.model].stochastic else ["mean"]
    test_features = classifier.features(split.x_test)
    m = min(cfg.n_generated, split.x_test.shape[0])
    evaluations: Dict[str, Any] = {}
    arrays: Dict[str, np.ndarray] = {}
    bar = _progress(progress, len(variants) * (3 + len(SAMPLERS)), f"eval {spec.run_id}")

    def tick():
        if bar is not None:
            bar.update(1)

    for vi, variant in enumerate(variants):
        ev: Dict[str, Any] = {}
        z_train = _codes(net, split.x_train, variant, 1 + spec.seed)
        z_val = _codes(net, split.x_val, variant, 2 + spec.seed)
        z_test = _codes(net, split.x_test, variant, 3 + spec.seed)
        recon_test = net.decode(z_test)
        ev["recon_mse"] = float(((recon_test - split.x_test) ** 2).mean())
        ev["val_mse"] = float(((net.decode(z_val) - split.x_val) ** 2).mean())
        ev["recon_quality"] = image_quality(recon_test, classifier, test_features, cfg, spec.seed)
        tick()
        ev["latent"] = latent_statistics(z_test, cfg, spec.seed)
        tick()
        prior = torch.randn(z_test.shape, generator=torch.Generator().manual_seed(4 + spec.seed))
        ev["latent_holes"] = M.prdc(z_test, prior, k=cfg.k)  # real = codes, fake = prior draws
        tick()
        ev["samplers"] = {}
        for si, sampler in enumerate(SAMPLERS):
            t0 = time.perf_counter()
            fitter = FITTERS[sampler]
            sample = fitter(z_train, seed=spec.seed, steps=cfg.flow_steps)
            z_gen = sample(m, 100 + spec.seed)
            images = net.decode(z_gen)
            q = image_quality(images, classifier, test_features, cfg, spec.seed)
            if sampler != "prior":
                q["latent_holes"] = M.prdc(z_test, z_gen[:z_test.shape[0]], k=cfg.k)
            q["seconds"] = time.perf_counter() - t0
            ev["samplers"][sampler] = q
            arrays[f"samples_{variant}_{sampler}"] = images[:16].numpy().astype(np.float16)
            tick()
        arrays[f"radii_{variant}"] = torch.linalg.vector_norm(z_test, dim=1).numpy()
        arrays[f"recon_{variant}"] = recon_test[:16].numpy().astype(np.float16)
        evaluations[variant] = ev
    if bar is not None:
        bar.close()
    return evaluations, arrays


def execute_run(out_dir: str, cfg: StudyConfig, spec: RunSpec, classifier_path: str, progress: bool = False,
                threads: Optional[int] = None) -> Dict[str, Any]:
    """Train + evaluate one run and write its result; returns the result dict."""
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    if threads is not None:
        torch.set_num_threads(threads)
    # numpy's BLAS on one thread: its matrices here are small (GMM, Frechet), and a multi-threaded
    # OpenBLAS on a busy machine was measured 40x slower on the GMM fit (114 s vs 3 s, 2 cores).
    with threadpool_limits(limits=1, user_api="blas"):
        return _execute_run(out_dir, cfg, spec, classifier_path, progress)


def _execute_run(out_dir: str, cfg: StudyConfig, spec: RunSpec, classifier_path: str,
                 progress: bool) -> Dict[str, Any]:
    t0 = time.perf_counter()
    split = cached_split(cfg.dataset, cfg.split_seed)
    classifier = M.FeatureClassifier(split.pixels)
    classifier.load_state_dict(torch.load(classifier_path, weights_only=True))
    classifier.eval()
    net, history = train_model(spec, split, cfg, progress)
    t_train = time.perf_counter() - t0
    evaluations, arrays = evaluate_model(net, spec, split, classifier, cfg, progress)
    run_dir = os.path.join(out_dir, "runs", spec.run_id)
    os.makedirs(run_dir, exist_ok=True)
    np.savez_compressed(os.path.join(run_dir, "arrays.npz"), **arrays)
    result = {
        "run_id": spec.run_id, "model": spec.model, "dim": spec.dim, "weight_multiple": spec.weight_multiple,
        "weight": spec.weight, "seed": spec.seed, "history": history, "evaluations": evaluations,
        "seconds_train": t_train, "seconds_total": time.perf_counter() - t0, "config": cfg.training_key(),
    }
    write_json_atomic(os.path.join(run_dir, "result.json"), result)
    return result
