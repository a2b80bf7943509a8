"""docs/losses.md: its training-loop example runs as written (a tiny autoencoder, 2 steps)."""

from __future__ import annotations

import math
import pathlib
import re
import subprocess
import sys

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "losses.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_training_example_runs_and_is_short():
    blocks = _python_blocks()
    assert len(blocks) == 1
    code = blocks[0]
    assert len(code.strip().splitlines()) <= 12
    env_path = str(pathlib.Path(__file__).resolve().parents[1] / "python")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr
    match = re.search(r"loss (\S+), d_cw\^2 (\S+)", out.stdout)
    assert match, out.stdout
    assert all(math.isfinite(float(v)) for v in match.groups())


def test_table_lists_every_exported_loss():
    import latentdiv.functional as F
    import latentdiv.losses as L

    text = DOC.read_text()
    for name in ["kl_normal", "mmd", "mmd_to_normal", "cramer_wold", "cwae_loss", "energy_distance",
                 "sliced_wasserstein", "radii_cvm", "distances_cvm", "coordinates_cvm", *L.__all__]:
        assert f"`{name}" in text or f"/ `{name}`" in text, name
        assert hasattr(F, name) or hasattr(L, name)
