"""The kernel registry (``latentdiv._registry.KERNELS``) is the one home of the Python facts about a
kernel; this file checks everything that restates them against it:

- the facts themselves hang together (ids, parameters and units, examples, mmd's kernels and defaults);
- the kernel tables of README.md and docs/ and the kernel lists of the public docstrings name every
  kernel, with the registry's formula; a missing row fails with the row to add.

A new ``KernelSpec`` is covered by every kernel test through tests/kernel_cases.py with no edit; the
failures here say which doc rows to write.
"""

from __future__ import annotations

import math
import pathlib
import re

import pytest
import torch

import latentdiv
import latentdiv.functional as F
import latentdiv.losses as L
from latentdiv import KERNELS, _ext
from latentdiv._registry import DISTANCE, MMD_KERNELS, SQUARED_DISTANCE, kernel_params

from kernel_cases import KERNEL_CASES

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------
# the registry's own facts
# ---------------------------------------------------------------------------------------------------
def test_ids_are_distinct_and_dense_and_match_the_build():
    ids = sorted(spec.kernel_id for spec in KERNELS.values())
    assert ids == list(range(len(KERNELS)))
    if _ext.compiled_available():
        # Both ways: a functor in LATENTDIV_FOR_EACH_KERNEL without a KernelSpec fails here (the import
        # checks that every KernelSpec's functor is in the build).
        built = dict(_ext._C.build_info()["kernels"])
        python = {spec.functor: spec.kernel_id for spec in KERNELS.values()}
        assert built == python, f"kernels.h and _registry.py differ: compiled {built}, registry {python}"


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_spec_parameters_units_and_examples(name):
    spec = KERNELS[name]
    names = [p.name for p in spec.parameters]
    assert len(set(names)) == len(names), "a parameter is listed twice"
    assert spec.options == tuple(n for n in names if n != "bandwidth")
    if "bandwidth" in names:
        assert spec.bandwidth_units in (DISTANCE, SQUARED_DISTANCE)
        assert spec.bandwidth_scale is spec.bandwidth_units.point_scale
    else:
        assert spec.bandwidth_units is None and spec.bandwidth_scale is None
    required = {p.name for p in spec.parameters if p.required and p.name != "bandwidth"}
    for bandwidth, options in spec.examples:
        assert required <= set(options), f"{name}: an example lacks a required option"
        params = kernel_params(spec, bandwidth, max(spec.min_dim, 3), dict(options))
        assert all(math.isfinite(v) for v in params)
    assert spec.formula_text and "|" not in spec.formula_text  # it goes into Markdown tables


@pytest.mark.parametrize("name", sorted(k for k, s in KERNELS.items() if s.bandwidth_units is not None))
def test_bandwidth_units_are_a_scale_of_the_points(name):
    """k_h(x, y) = k_1(x / s(h), y / s(h)): the rule the bandwidth gradient and the defaults rest on."""
    spec = KERNELS[name]
    r = torch.linspace(0.0, 5.0, 11, dtype=torch.float64)
    for h in (0.3, 1.7):
        s = float(spec.bandwidth_scale(torch.tensor(h, dtype=torch.float64)))
        torch.testing.assert_close(spec.formula(r, h, 3, {}), spec.formula(r / s, 1.0, 3, {}))
    # the default is the median heuristic of the prior in these units: the distance sqrt(2D)
    for dim in (1, 8, 64):
        assert spec.default_bandwidth(dim) == pytest.approx(spec.bandwidth_from_distance(math.sqrt(2 * dim)))


def test_mmd_kernels_and_defaults_come_from_the_registry():
    assert F._MMD_KERNELS == MMD_KERNELS == tuple(k for k, s in KERNELS.items() if s.mmd)
    for name in MMD_KERNELS:
        spec = KERNELS[name]
        x, y = torch.randn(9, 4, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64) + 0.5
        if spec.bandwidth_units is None:
            assert torch.isfinite(F.mmd(x, y, kernel=name))
            with pytest.raises(ValueError, match="bandwidth"):
                F.mmd(x, y, kernel=name, bandwidth=2.0)
        else:
            h = F.default_bandwidth(name, 4)
            assert h == spec.default_bandwidth(4)
            torch.testing.assert_close(F.mmd(x, y, kernel=name), F.mmd(x, y, kernel=name, bandwidth=h))
            assert torch.isfinite(L.MMDLoss(kernel=name)(x, y))
    for name in set(KERNELS) - set(MMD_KERNELS):
        with pytest.raises(ValueError, match="kernel must be one of"):
            F.mmd(torch.randn(5, 3), torch.randn(5, 3), kernel=name)


def test_kernel_cases_are_the_registry_examples():
    assert [(c[0], c[1], c[2]) for c in KERNEL_CASES] == [
        (name, bw, dict(opts)) for name, spec in KERNELS.items() for bw, opts in spec.examples]


# ---------------------------------------------------------------------------------------------------
# docs and docstrings against the registry
# ---------------------------------------------------------------------------------------------------
def _table_rows(path: str, header_start: str):
    """The rows (lists of cells) of the first Markdown table in ``path`` whose header starts so."""
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.startswith(header_start):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]])
            return rows
    raise AssertionError(f"{path}: no table whose header starts with {header_start!r}")


def _kernel_of(cell: str):
    m = re.match(r"`?([a-z_0-9]+)`?", cell)
    return m.group(1) if m else None


def _readme_row(spec) -> str:
    params = ", ".join(p.doc for p in spec.parameters) or "none"
    return f"| `{spec.name}` | {spec.formula_text} | {params} |"


def test_readme_kernel_table_matches_the_registry():
    rows = _table_rows("README.md", "| kernel | f(r)")
    by_name = {_kernel_of(r[0]): r for r in rows}
    missing = [_readme_row(KERNELS[k]) for k in KERNELS if k not in by_name]
    assert not missing, "README.md's kernel table lacks rows; add:\n" + "\n".join(missing)
    extra = set(by_name) - set(KERNELS)
    assert not extra, f"README.md's kernel table names kernels the registry does not have: {sorted(extra)}"
    for name, row in by_name.items():
        spec = KERNELS[name]
        assert row[1].replace("\\|", "|") == spec.formula_text, (
            f"README.md kernel table, {name}: f(r) is {row[1]!r}, the registry's formula_text is {spec.formula_text!r}")
        for p in spec.parameters:
            assert f"`{p.name}" in row[2], f"README.md kernel table, {name}: the parameters column does not name `{p.name}`"
        if not spec.parameters:
            assert row[2].startswith("none"), f"README.md kernel table, {name}: no parameters, the column says {row[2]!r}"


def test_second_order_table_has_every_kernel():
    rows = _table_rows("docs/second_order.md", "| kernel | f | f' | f'' |")
    named = {_kernel_of(r[0]) for r in rows}
    missing = [k for k in KERNELS if k not in named]
    assert not missing, ("docs/second_order.md's table of kernel derivatives lacks rows; add, for each, "
                         "| name, its constants | f | f' = df/dr2 | f'' |: " + ", ".join(missing))


def test_default_bandwidth_table_has_every_mmd_kernel_with_a_bandwidth():
    rows = _table_rows("docs/losses.md", "| kernel | default |")
    by_name = {_kernel_of(r[0]): r for r in rows}
    want = [k for k in MMD_KERNELS if KERNELS[k].bandwidth_units is not None]
    missing = []
    for k in want:
        units = KERNELS[k].bandwidth_units
        default = "sqrt(2D)" if units is DISTANCE else "2D"
        if k not in by_name:
            missing.append(f"| `{k}` | {'h' if units is DISTANCE else 'C'} = {default} | k as a function of s = r^2 / (2D) |")
        else:
            assert f"= {default}" in by_name[k][1], f"docs/losses.md default-bandwidth table, {k}: expected '= {default}'"
    assert not missing, "docs/losses.md's default-bandwidth table lacks rows; add:\n" + "\n".join(missing)
    assert set(by_name) <= set(want), f"docs/losses.md's default-bandwidth table: {sorted(set(by_name) - set(want))}"


def test_docstrings_and_readme_name_every_kernel():
    for name in KERNELS:
        assert f'``"{name}"``' in latentdiv.pairwise_sum.__doc__, f'pairwise_sum\'s docstring lacks ``"{name}"``'
    readme_mmd = next(r for r in _table_rows("README.md", "| function / module |") if r[0].startswith("`mmd(x,"))
    for name in MMD_KERNELS:
        assert f'``"{name}"``' in F.mmd.__doc__, f'mmd\'s docstring lacks kernel ``"{name}"``'
        assert name in readme_mmd[1], f"README.md's losses table, mmd row, lacks kernel {name}"
