"""The study's driver: plan the runs, train the feature classifier once, execute the runs that have
no result yet (in worker processes with one thread each), then tabulate, plot and write the report.

Results directory::

    config.json           the configuration the runs were trained under (a mismatch is refused)
    classifier.pt/.json   the feature classifier, its test accuracy and the real-vs-real noise floor
    runs/<run_id>/        result.json (all metrics of one run) and arrays.npz (sample grids, radii)
    results.csv           one row per (run, codes, sampler), flat
    figures/*.png         the figures of the report
    report.md             hypotheses, tables, correlations with bootstrap intervals, the answer
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import multiprocessing as mp
import os
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from . import metrics as M
from ._deps import check_all
from .config import StudyConfig
from .models import MODELS
from .run import RunSpec, cached_split, execute_run, image_quality, write_json_atomic


def plan_runs(cfg: StudyConfig) -> List[RunSpec]:
    """Every weight of the grid at the sweep sizes; elsewhere the grid's middle weight."""
    grid = sorted(cfg.weight_grid)
    middle = 1.0 if 1.0 in grid else grid[len(grid) // 2]
    specs = []
    for dim in cfg.latent_dims:
        for seed in cfg.seeds:
            for name in cfg.models:
                if not MODELS[name].sweep:
                    specs.append(RunSpec(name, dim, 1.0, seed))
                elif dim in cfg.sweep_dims:
                    specs.extend(RunSpec(name, dim, float(w), seed) for w in grid)
                else:
                    specs.append(RunSpec(name, dim, float(middle), seed))
    return specs


def check_out_dir(out: str) -> str:
    if not isinstance(out, (str, os.PathLike)) or not str(out):
        raise TypeError(f"out must be a path, got {out!r}")
    out = os.path.abspath(os.fspath(out))
    try:
        os.makedirs(os.path.join(out, "runs"), exist_ok=True)
        probe = os.path.join(out, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise ValueError(f"out directory {out!r} is not writable: {exc}") from exc
    return out


def _check_config(out: str, cfg: StudyConfig) -> None:
    path = os.path.join(out, "config.json")
    key = cfg.training_key()
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if previous.get("training_key") != key:
            diff = sorted(k for k in set(key) | set(previous.get("training_key", {}))
                          if key.get(k) != previous.get("training_key", {}).get(k))
            raise ValueError(f"out directory {out!r} holds runs of another configuration (differs in: "
                             f"{', '.join(diff)}); use a new --out")
    write_json_atomic(path, {"training_key": key, "config": cfg.to_dict()})


def prepare_classifier(out: str, cfg: StudyConfig) -> Dict[str, Any]:
    """Train (once; reused on restart) the feature classifier and measure the noise floor: a real
    sample of the training images against the test images."""
    split = cached_split(cfg.dataset, cfg.split_seed)
    pt, js = os.path.join(out, "classifier.pt"), os.path.join(out, "classifier.json")
    if os.path.exists(pt) and os.path.exists(js):
        with open(js) as f:
            return json.load(f)
    net = M.train_classifier(split.x_train, split.y_train, cfg.classifier_epochs, seed=cfg.split_seed)
    accuracy = float((net.predict(split.x_test) == split.y_test).float().mean())
    m = min(cfg.n_generated, split.x_test.shape[0])
    idx = torch.randperm(split.x_train.shape[0], generator=torch.Generator().manual_seed(cfg.split_seed))[:m]
    floor = image_quality(split.x_train[idx], net, net.features(split.x_test), cfg, cfg.split_seed)
    info = {"test_accuracy": accuracy, "feature_layer": M.FeatureClassifier.FEATURE_LAYER,
            "real_vs_real": floor, "n_train": int(split.x_train.shape[0]), "n_val": int(split.x_val.shape[0]),
            "n_test": int(split.x_test.shape[0]), "side": split.side}
    torch.save(net.state_dict(), pt + ".tmp")
    os.replace(pt + ".tmp", pt)
    write_json_atomic(js, info)
    return info


def _worker_init() -> None:
    torch.set_num_threads(1)


def _finished(out: str, spec: RunSpec) -> bool:
    return os.path.exists(os.path.join(out, "runs", spec.run_id, "result.json"))


def load_results(out: str, specs: List[RunSpec]) -> List[Dict[str, Any]]:
    results = []
    for spec in specs:
        path = os.path.join(out, "runs", spec.run_id, "result.json")
        if os.path.exists(path):
            with open(path) as f:
                results.append(json.load(f))
    return results


def run_study(cfg: StudyConfig, out: str, jobs: int = 1, progress: bool = True,
              log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run (or resume) the study described by ``cfg`` in directory ``out``. Returns a summary with
    the number of runs computed now and reused, and the path of the report."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    check_all()
    out = check_out_dir(out)
    _check_config(out, cfg)
    t0 = time.perf_counter()
    info = prepare_classifier(out, cfg)
    specs = plan_runs(cfg)
    todo = [s for s in specs if not _finished(out, s)]
    log(f"latentdiv study ({cfg.mode}): {len(specs)} runs, {len(specs) - len(todo)} already done, "
        f"{len(todo)} to compute with {jobs} worker(s); results in {out}")
    clf_path = os.path.join(out, "classifier.pt")
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="runs (train + evaluate)", disable=not progress or not todo, dynamic_ncols=True)
    if jobs == 1 or len(todo) <= 1:
        for spec in todo:
            bar.set_postfix_str(spec.run_id)
            execute_run(out, cfg, spec, clf_path, progress=progress)
            bar.update(1)
    else:
        # One thread per worker: on 2 cores two single-thread processes beat one with two threads
        # (small matrices, Python overhead). The variables are read when each child starts.
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        try:
            with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                        initializer=_worker_init) as pool:
                futures = {pool.submit(execute_run, out, cfg, spec, clf_path, False, 1): spec for spec in todo}
                for fut in cf.as_completed(futures):
                    fut.result()  # re-raises a worker's error here
                    bar.set_postfix_str(futures[fut].run_id)
                    bar.update(1)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    bar.close()
    results = load_results(out, specs)
    from .report import write_outputs

    report_path, answer = write_outputs(out, cfg, results, info, progress=progress)
    seconds = time.perf_counter() - t0
    return {"out": out, "report": report_path, "computed": len(todo), "reused": len(specs) - len(todo),
            "runs": len(specs), "seconds": seconds, "answer": answer}
