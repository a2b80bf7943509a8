"""The engine's interface is described once, in C++ (csrc/bindings.cpp, engine_interface()): the codes
of the modes, dtypes, devices, ISA variants and statuses and the parameter limits. Python reads them
(latentdiv/_ext.py) and restates none: these tests compare what Python uses with what the build
exports, and grep the package for literals that would restate one. Also the launch decisions: the CUDA
entry (checked through its host emulation) lowers the CPU schedule's single-pass modes, VALUE_GRAD,
TOTAL and VALUE_GRAD_TRIANGLE, to VALUE / GRAD launches, so Python never chooses a mode by device."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import latentdiv
from latentdiv import _ext, _registry, special

PACKAGE = Path(latentdiv.__file__).resolve().parent
CSRC = PACKAGE.parents[1] / "csrc"
requires_compiled = pytest.mark.skipif(not _ext.compiled_available(), reason="needs the compiled engine")


@requires_compiled
def test_python_codes_are_the_builds():
    exported = _ext._C.engine_interface()
    assert {k: dict(v) for k, v in exported.items()} == _ext.INTERFACE
    modes = exported["modes"]
    assert (_ext.MODE_VALUE, _ext.MODE_GRAD, _ext.MODE_VALUE_GRAD, _ext.MODE_TOTAL, _ext.MODE_HESS_VEC,
            _ext.MODE_VALUE_GRAD_TRIANGLE) == (modes["value"], modes["grad"], modes["value_grad"], modes["total"],
                                               modes["hess_vec"], modes["value_grad_triangle"])
    assert len(set(modes.values())) == len(modes)
    assert (_ext.DEVICE_CPU, _ext.DEVICE_CUDA) == (exported["devices"]["cpu"], exported["devices"]["cuda"])
    assert _ext.dtype_code(torch.zeros(1)) == exported["dtypes"]["float32"]
    assert _ext.dtype_code(torch.zeros(1, dtype=torch.float64)) == exported["dtypes"]["float64"]
    assert dict(_ext._ISA_CODES) == dict(exported["isas"])
    assert list(exported["isas"]) == ["auto", "baseline", "avx2", "avx512"]  # LATENTDIV_ISA's values
    for name, code in exported["status"].items():
        assert getattr(_ext._C, f"STATUS_{name.upper()}") == code
    assert set(exported["status_messages"]) == set(exported["status"].values())
    # the limits, wherever Python uses them
    limits = exported["limits"]
    assert _registry.MAX_PARAMS == _ext.MAX_KERNEL_PARAMS == limits["max_kernel_params"]
    assert _ext._C.build_info()["max_kernel_params"] == limits["max_kernel_params"]
    assert special.CW_PHI_HEADER == limits["cw_phi_header"]
    assert special.CW_PHI_MAX_COEFFS == limits["cw_phi_max_coeffs"]
    assert limits["cw_phi_max_coeffs"] == limits["max_kernel_params"] - limits["cw_phi_header"]
    kinds = exported["cw_phi_kinds"]
    assert (special._KIND_EXP, special._KIND_CHEB) == (kinds["exp"], kinds["cheb"])
    assert dict(exported["kernels"]) == dict(_ext._C.build_info()["kernels"])


@requires_compiled
@pytest.mark.skipif(not (CSRC / "include" / "latentdiv" / "common.h").is_file(), reason="needs the csrc/ tree")
def test_the_fallback_without_the_module_reads_the_same_limits_from_the_headers():
    exported = _ext._C.engine_interface()
    fallback = _ext._interface_from_headers()
    assert fallback["limits"] == dict(exported["limits"])
    assert fallback["cw_phi_kinds"] == dict(exported["cw_phi_kinds"])


# Literals that would restate an engine code or limit in Python.
_RESTATEMENTS = [
    (re.compile(r"^\s*(MODE|DEVICE|STATUS|DTYPE|ISA)_\w+\s*(:\s*\w+\s*)?=\s*-?\d"), "a code assigned a number"),
    (re.compile(r"\b(MAX_PARAMS|MAX_KERNEL_PARAMS|CW_PHI_\w+|_KIND_\w+)\s*(:\s*\w+\s*)?=\s*[-\d(]"),
     "a limit or layout code"),
    (re.compile(r"\b(device|isa|mode|dtype)\s*=\s*-?\d"), "an engine argument given as a number"),
    (re.compile(r"\bstatus\s*[!=]=\s*-?\d"), "a status compared with a number"),
    (re.compile(r"[\"']auto[\"']\s*:\s*-1"), "the ISA codes"),
    (re.compile(r"\b(kMaxKernelParams|kCwPhiHeader)\b.*=\s*\d"), "a C++ limit restated"),
]


# Files allowed to restate a code, with the names they may assign (none: special.py reads cw_phi.h's
# layout from _ext like everything else).
_STANDALONE: dict = {}


def test_no_python_file_restates_an_engine_code_or_limit():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        allowed = _STANDALONE.get(str(path.relative_to(PACKAGE)), ())
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if code.strip().startswith(allowed) if allowed else False:
                continue
            for pattern, what in _RESTATEMENTS:
                if pattern.search(code):
                    found.append(f"{path.relative_to(PACKAGE)}:{lineno}: {what}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_grep_would_catch_a_restatement():
    bad = ["MODE_VALUE = 0", "MAX_PARAMS = 64", "CW_PHI_HEADER = 6", "_C.pair_reduce(device=0, mode=2)",
           "if status == 4:", '_ISA_CODES = {"auto": -1}']
    for line in bad:
        assert any(p.search(line) for p, _ in _RESTATEMENTS), line


def test_ops_choose_no_mode_by_device():
    """Launch decisions are the engine's: the custom ops call the same modes on every device."""
    source = (PACKAGE / "ops.py").read_text()
    assert "device.type" not in source and '"cuda"' not in source and '"cpu"' not in source


@requires_compiled
def test_check_status_messages_come_from_the_build():
    bad_argument = r"pair_reduce failed: bad argument \(inconsistent sizes, pointers or flags\)"
    with pytest.raises(RuntimeError, match=bad_argument):
        _ext.check_status(_ext._C.STATUS_BAD_ARGUMENT, "pair_reduce")
    with pytest.raises(RuntimeError, match="unknown kernel id"):
        _ext.check_status(_ext._C.STATUS_UNKNOWN_KERNEL, "pair_reduce")
    _ext.check_status(_ext._C.STATUS_OK, "pair_reduce")


@requires_compiled
def test_workspace_bytes_come_from_the_engine():
    C = _ext._C
    for mode in _ext.INTERFACE["modes"].values():
        assert C.pair_reduce_workspace_bytes(device=_ext.DEVICE_CPU, n=300, m=200, d=3, mode=mode) == 0
    # the CUDA schedule's sizes (emulated): every mode with a VALUE launch needs the partial totals
    value = C.emulate_cuda_workspace_bytes(300, _ext.MODE_VALUE)
    assert value > 0
    for mode in (_ext.MODE_TOTAL, _ext.MODE_VALUE_GRAD, _ext.MODE_VALUE_GRAD_TRIANGLE):
        assert C.emulate_cuda_workspace_bytes(300, mode) == value
    for mode in (_ext.MODE_GRAD, _ext.MODE_HESS_VEC):
        assert C.emulate_cuda_workspace_bytes(300, mode) == 0


def _emulate(mode, x, y, w, kernel, params, exclude_diagonal, with_rows=True):
    n, d = x.shape
    other = x if y is None else y
    rows = torch.full((n,), float("nan"), dtype=torch.float64)
    total = torch.full((), float("nan"), dtype=torch.float64)
    grad = torch.full_like(x, float("nan"))
    nbytes = _ext._C.emulate_cuda_workspace_bytes(n, mode)
    workspace = torch.full((max(nbytes // 8, 1),), float("nan"), dtype=torch.float64)
    status = _ext._C.emulate_cuda_pair_reduce(
        mode=mode, dtype=_ext.dtype_code(x), x=x.data_ptr(), y=other.data_ptr(), wx=w.data_ptr(), wy=w.data_ptr(),
        out_rows=rows.data_ptr() if with_rows else 0, out_total=total.data_ptr(), out_grad=grad.data_ptr(),
        workspace=workspace.data_ptr(), workspace_bytes=nbytes, n=n, m=other.shape[0], d=d, self_pairs=y is None,
        exclude_diagonal=exclude_diagonal, kernel=kernel, params=list(params))
    assert status == _ext._C.STATUS_OK
    return rows, total, grad


@requires_compiled
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("self_pairs", [True, False], ids=["self", "cross"])
def test_cuda_entry_lowers_the_single_pass_modes(dtype, self_pairs):
    """VALUE_GRAD (and the triangle mode, self pairs) = VALUE then GRAD; TOTAL = VALUE's total, also
    with no rows buffer: bit for bit, through the emulation of the CUDA entry (no GPU here)."""
    g = torch.Generator().manual_seed(13)
    x = torch.randn(150, 5, generator=g, dtype=dtype)
    y = None if self_pairs else torch.randn(150, 5, generator=g, dtype=dtype)
    w = torch.rand(150, generator=g, dtype=dtype)
    kernel, params = 0, [0.3, 1.2]  # gaussian, two scales
    excl = self_pairs
    rows, total, _ = _emulate(_ext.MODE_VALUE, x, y, w, kernel, params, excl)
    _, _, grad = _emulate(_ext.MODE_GRAD, x, y, w, kernel, params, excl)
    fused_modes = [_ext.MODE_VALUE_GRAD] + ([_ext.MODE_VALUE_GRAD_TRIANGLE] if self_pairs else [])
    for mode in fused_modes:
        r, t, gr = _emulate(mode, x, y, w, kernel, params, excl)
        assert torch.equal(r, rows) and torch.equal(t, total) and torch.equal(gr, grad)
    for with_rows in (True, False):
        r, t, _ = _emulate(_ext.MODE_TOTAL, x, y, w, kernel, params, excl, with_rows=with_rows)
        assert torch.equal(t, total)
        if not with_rows:
            assert torch.isnan(r).all()  # the buffer we did not pass was not written


@requires_compiled
def test_cpu_and_emulated_cuda_modes_agree():
    """The lowered modes give what the CPU's single passes give (to rounding: other summation orders)."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(70, 4, generator=g, dtype=torch.float64)
    w = torch.rand(70, generator=g, dtype=torch.float64)
    rows, total, grad = _emulate(_ext.MODE_VALUE_GRAD, x, None, w, 2, [1.0], True)
    cpu_rows = torch.empty(70, dtype=torch.float64)
    cpu_total = torch.empty((), dtype=torch.float64)
    cpu_grad = torch.empty_like(x)
    status = _ext._C.pair_reduce(
        device=_ext.DEVICE_CPU, isa=_ext.isa_code(), mode=_ext.MODE_VALUE_GRAD, dtype=_ext.dtype_code(x),
        x=x.data_ptr(), y=x.data_ptr(), wx=w.data_ptr(), wy=w.data_ptr(), out_rows=cpu_rows.data_ptr(),
        out_total=cpu_total.data_ptr(), out_grad=cpu_grad.data_ptr(), workspace=0, n=70, m=70, d=4,
        self_pairs=True, exclude_diagonal=True, num_threads=1, kernel=2, params=[1.0], stream=0)
    assert status == _ext._C.STATUS_OK
    torch.testing.assert_close(cpu_rows, rows, rtol=1e-12, atol=0)
    torch.testing.assert_close(cpu_total, total, rtol=1e-12, atol=0)
    torch.testing.assert_close(cpu_grad, grad, rtol=1e-12, atol=1e-14)
