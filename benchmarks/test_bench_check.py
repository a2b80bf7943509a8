"""bench_check.py end to end on a small file: one cold and one warm run, the rows and their exit status
(`python -m pytest benchmarks/test_bench_check.py`; not part of the default suite)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def test_bench_check_cold_then_warm(tmp_path):
    z = np.random.default_rng(0).standard_normal((40, 3))
    path = tmp_path / "z.npy"
    np.save(path, z)
    out = subprocess.run([sys.executable, os.path.join(HERE, "bench_check.py"), "--file", str(path), "--runs", "1",
                          "--warm", "1"], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)))
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| 1 ")]
    assert [r[1].strip() for r in rows] == ["cold", "warm"], out.stdout
    for r in rows:
        wall, cpu, status = float(r[2]), float(r[3]), r[4].strip()
        assert wall > 0 and cpu > 0 and status in ("0", "1"), r  # 0 pass / 1 reject: the command ran
