"""The training-batch timers (training_lib.time_calls: interleaved blocks, wall or thread clock) and the
two-tree comparison script (compare_trees.py), on tiny sizes.

    PYTHONPATH=python python -m pytest benchmarks/test_training_timing.py
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import training_lib as tl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_time_calls_interleaves_blocks_and_picks_by_clock():
    order = []

    def make(name, work):
        def fn(z, prior):
            order.append(name)
            return (z * work).sum() if work else z.sum()
        return fn

    z, prior = torch.randn(16, 3), torch.randn(16, 3)
    for clock in ("wall", "thread"):
        order.clear()
        t = tl.time_calls({"a": make("a", 0), "b": make("b", 2.0)}, z, prior, inner=3, blocks=4, warmup=1,
                          clock=clock)
        assert set(t) == {"a", "b"} and all(v > 0 for v in t.values())
        timed = order[2:]  # after one warm-up call each
        assert timed == (["a"] * 3 + ["b"] * 3) * 4  # block b of every candidate before block b + 1
    with pytest.raises(ValueError, match="clock"):
        tl.time_calls({"a": make("a", 0)}, z, prior, clock="cpu")


def test_compare_trees_runs_both_trees():
    """The same checkout as both trees: two timings per round, one line per loss, ratios near 1."""
    script = os.path.join(ROOT, "benchmarks", "compare_trees.py")
    out = subprocess.run([sys.executable, script, ROOT, ROOT, "--n", "16", "--d", "3", "--rounds", "1",
                          "--inner", "2", "--blocks", "2", "--losses", "mmd_to_normal", "pairwise_sum"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == ["mmd_to_normal", "pairwise_sum"]
    ratios = [float(r[-1]) for r in rows]
    assert all(0.1 < r < 10.0 for r in ratios), out.stdout
