"""``latentdiv study``: the command line of the study (see docs/study.md)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from .config import MODES, preset
from .models import MODELS


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "study", help="does agreement of latent codes with N(0, I) matter? train, evaluate, report",
        description="Train autoencoders with every latent regularizer of the library on real digits, "
                    "evaluate latent normality, holes and sample quality, and write a report with the "
                    "answer (resumable: finished runs in --out are reused).")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", const="quick", dest="mode",
                      help="load_digits (8 x 8), D = 8, 2 seeds: a few minutes on 2 cores")
    mode.add_argument("--full", action="store_const", const="full", dest="mode",
                      help="conv nets, D = 8 and 32 both swept, 3 seeds, longer training: hours")
    p.set_defaults(mode="default")
    p.add_argument("--out", default=None, help="results directory (default: ./latentdiv-study-<mode>)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default: the mode's)")
    p.add_argument("--jobs", type=int, default=None,
                   help="worker processes, one thread each (default: min(2, CPU count))")
    p.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                   help=f"models to train (default: all): {', '.join(MODELS)}")
    p.add_argument("--latent-dims", type=int, nargs="+", default=None, metavar="D",
                   help="latent sizes (default: the mode's; default mode 8 and 32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args) -> int:
    from ._deps import MissingDependencyError
    from .runner import run_study

    try:
        cfg = preset(args.mode)
        changes = {}
        if args.seeds is not None:
            changes["seeds"] = tuple(args.seeds)
        if args.models is not None:
            changes["models"] = tuple(args.models)
        if args.latent_dims is not None:
            changes["latent_dims"] = tuple(args.latent_dims)
        if changes:
            cfg = dataclasses.replace(cfg, **changes)
        jobs = args.jobs if args.jobs is not None else max(1, min(2, os.cpu_count() or 1))
        out = args.out or f"latentdiv-study-{args.mode}"
        summary = run_study(cfg, out, jobs=jobs, progress=not args.no_progress)
    except MissingDependencyError as exc:
        print(f"latentdiv study: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:
        print(f"latentdiv study: error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{summary['answer']}\n")
    print(f"{summary['computed']} runs computed, {summary['reused']} reused, {summary['seconds']:.0f} s; "
          f"report: {summary['report']}")
    return 0


assert set(MODES) == {"quick", "default", "full"}
