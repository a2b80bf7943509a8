"""docs/losses.md and README.md: the training-loop example runs as written (a tiny autoencoder, 2
steps) against the latentdiv that the tests import (installed, or the source tree on PYTHONPATH)."""

from __future__ import annotations

import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "losses.md"
README = ROOT / "README.md"


def _training_example(path: pathlib.Path) -> str:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S) if "opt.step()" in b]
    assert len(blocks) == 1, f"{path.name} must hold exactly one training-loop example"
    return blocks[0]


@pytest.mark.parametrize("path", [DOC, README], ids=lambda p: p.name)
def test_training_example_runs_and_is_short(path):
    code = _training_example(path)
    assert len(code.strip().splitlines()) <= 12
    env = dict(os.environ, OMP_NUM_THREADS="2")
    if "latentdiv" in sys.modules:  # run the same latentdiv the tests import
        env["PYTHONPATH"] = os.pathsep.join([str(pathlib.Path(sys.modules["latentdiv"].__file__).parents[1]),
                                             env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    match = re.search(r"loss (\S+), d_cw\^2 (\S+)", out.stdout)
    assert match, out.stdout
    assert all(math.isfinite(float(v)) for v in match.groups())


def test_table_lists_every_exported_loss():
    import latentdiv.functional as F
    import latentdiv.losses as L

    text = DOC.read_text() + README.read_text()
    for name in ["kl_normal", "mmd", "mmd_to_normal", "cramer_wold", "cwae_loss", "energy_distance",
                 "sliced_wasserstein", "radii_cvm", "distances_cvm", "coordinates_cvm", *L.__all__]:
        assert f"`{name}" in text or f"/ `{name}`" in text, name
        assert hasattr(F, name) or hasattr(L, name)
