"""Loading the compiled engine ``latentdiv._C`` and choosing between it and the pure-torch fallback.

The backend is chosen once at import from ``LATENTDIV_BACKEND`` (``auto`` | ``compiled`` |
``reference``) and can be changed with :func:`set_backend` (tests do, to cover both paths). It is a
module global rather than an environment read per call so that ``torch.compile`` sees a constant.
The CPU instruction-set variant is read from ``LATENTDIV_ISA`` (``auto`` | ``baseline`` | ``avx2`` |
``avx512``) at every call, inside the opaque custom ops, so benchmarks and tests can switch it.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

import torch

try:  # the compiled module; absent in a source checkout that was not built
    from . import _C  # type: ignore[attr-defined]

    _IMPORT_ERROR: Optional[BaseException] = None
except ImportError as exc:  # pragma: no cover - exercised by the fallback tests via set_backend
    _C = None
    _IMPORT_ERROR = exc


def _interface_from_headers() -> Dict[str, Any]:
    """Without the compiled module (a source checkout that was not built): the limits the pure-torch
    path needs (the kernel parameter layout), read from the engine's C++ headers next to this package.
    The codes (modes, devices, ...) stay unset: nothing can be launched without the engine."""
    include = Path(__file__).resolve().parents[2] / "csrc" / "include" / "latentdiv"
    consts: Dict[str, int] = {}
    for header in ("common.h", "cw_phi.h"):
        try:
            text = (include / header).read_text()
        except OSError as exc:
            raise ImportError(f"latentdiv._C could not be imported ({_IMPORT_ERROR}) and the engine's headers "
                              f"are not there to read its limits from ({exc})") from exc
        consts.update({k: int(v) for k, v in re.findall(r"constexpr int (k\w+) = (-?\d+);", text)})
    header = consts["kCwPhiHeader"]
    return {
        "modes": {}, "dtypes": {}, "devices": {}, "isas": {}, "status": {}, "status_messages": {}, "kernels": {},
        "limits": {"max_kernel_params": consts["kMaxKernelParams"], "cw_phi_header": header,
                   "cw_phi_max_coeffs": consts["kMaxKernelParams"] - header},
        "cw_phi_kinds": {"exp": consts["kCwPhiKindExp"], "cheb": consts["kCwPhiKindCheb"]},
    }


# The engine's codes and limits, as the build exports them (_C.engine_interface(), csrc/bindings.cpp):
# no Python file restates one (tests/test_engine_interface.py checks).
INTERFACE: Dict[str, Any] = (
    {k: dict(v) for k, v in _C.engine_interface().items()} if _C is not None else _interface_from_headers()
)
_MODES, _DEVICES, _DTYPES = INTERFACE["modes"], INTERFACE["devices"], INTERFACE["dtypes"]
DEVICE_CPU = _DEVICES.get("cpu")
DEVICE_CUDA = _DEVICES.get("cuda")
MODE_VALUE = _MODES.get("value")
MODE_GRAD = _MODES.get("grad")
MODE_VALUE_GRAD = _MODES.get("value_grad")  # VALUE and GRAD in one pass (the CUDA entry runs two)
MODE_TOTAL = _MODES.get("total")  # the total of VALUE only (self pairs: j >= i on the CPU)
MODE_HESS_VEC = _MODES.get("hess_vec")  # second-order gradients (common.h)
MODE_VALUE_GRAD_TRIANGLE = _MODES.get("value_grad_triangle")  # VALUE_GRAD of self pairs over j >= i
MAX_KERNEL_PARAMS: int = INTERFACE["limits"]["max_kernel_params"]  # KernelParams (common.h)
CW_PHI_HEADER: int = INTERFACE["limits"]["cw_phi_header"]  # the exact Cramer-Wold layout (cw_phi.h)
CW_PHI_MAX_COEFFS: int = INTERFACE["limits"]["cw_phi_max_coeffs"]
CW_PHI_KIND_EXP: int = INTERFACE["cw_phi_kinds"]["exp"]
CW_PHI_KIND_CHEB: int = INTERFACE["cw_phi_kinds"]["cheb"]
STATUS_OK = INTERFACE["status"].get("ok")
_ISA_CODES: Dict[str, int] = INTERFACE["isas"]
_BACKENDS = ("auto", "compiled", "reference")

_warned: set = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _initial_backend() -> str:
    value = os.environ.get("LATENTDIV_BACKEND", "auto").strip().lower() or "auto"
    if value not in _BACKENDS:
        raise ValueError(f"LATENTDIV_BACKEND must be one of {_BACKENDS}, got {value!r}")
    if value == "compiled" and _C is None:
        raise ImportError(f"LATENTDIV_BACKEND=compiled but latentdiv._C could not be imported: {_IMPORT_ERROR}")
    return value


_backend = _initial_backend()


def set_backend(name: str) -> str:
    """Force ``"reference"`` (pure torch), ``"compiled"`` or ``"auto"``; returns the previous setting."""
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {name!r}")
    if name == "compiled" and _C is None:
        raise ImportError(f"latentdiv._C could not be imported: {_IMPORT_ERROR}")
    previous, _backend = _backend, name
    return previous


def get_backend() -> str:
    return _backend


def compiled_available() -> bool:
    return _C is not None


def cuda_compiled() -> bool:
    return _C is not None and bool(_C.build_info()["cuda"])


def plain_eager(*args: Any) -> bool:
    """Whether a call may skip the torch dispatcher and run an op's body (or a host-side shortcut)
    itself: eager mode with no compiler, torch.func transform or dispatch mode (fake tensors, make_fx,
    FlopCounterMode) watching, and every tensor among ``args`` a plain tensor or Parameter (no
    subclass). Under any of those the op itself must be called, so that they see it."""
    if (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()
            or torch._C._len_torch_dispatch_stack() != 0):
        return False
    return all(type(a) in (torch.Tensor, torch.nn.Parameter) for a in args if isinstance(a, torch.Tensor))


def use_compiled(device: torch.device) -> bool:
    """Whether the public functions route this device through the compiled custom ops."""
    if _backend == "reference":
        return False
    if _C is None:
        _warn_once(
            "no_C",
            f"latentdiv: the compiled engine could not be imported ({_IMPORT_ERROR}); "
            "using the pure-torch reference implementation (slower, more memory).",
        )
        return False
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        if cuda_compiled():
            return True
        _warn_once(
            "no_cuda",
            "latentdiv: this build has no CUDA kernels (built without a CUDA compiler); "
            "CUDA tensors use the pure-torch reference implementation.",
        )
        return False
    _warn_once(
        f"device_{device.type}",
        f"latentdiv: no compiled kernels for device type {device.type!r}; using the pure-torch reference implementation.",
    )
    return False


def isa_code() -> int:
    name = os.environ.get("LATENTDIV_ISA", "auto").strip().lower() or "auto"
    if name not in _ISA_CODES:
        raise ValueError(f"LATENTDIV_ISA must be one of {tuple(_ISA_CODES)}, got {name!r}")
    return _ISA_CODES[name]


def device_code(t: torch.Tensor) -> int:
    return DEVICE_CUDA if t.device.type == "cuda" else DEVICE_CPU


def stream_handle(t: torch.Tensor) -> int:
    """torch's current stream on t's device (0 on CPU). Kernels never go to the NULL stream."""
    if t.device.type == "cuda":
        return int(torch.cuda.current_stream(t.device).cuda_stream)
    return 0


def device_guard(t: torch.Tensor):
    """Make t's GPU the current CUDA device for a launch (a no-op context on CPU). The kernels run on
    the calling thread's current device and on t's device's stream: for a tensor on cuda:1 while
    cuda:0 is current, the launch would otherwise fail or touch the wrong device."""
    if t.device.type == "cuda":
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def dtype_code(t: torch.Tensor) -> int:
    if t.dtype == torch.float32:
        return _DTYPES["float32"]
    if t.dtype == torch.float64:
        return _DTYPES["float64"]
    raise TypeError(f"the engine takes float32 or float64, got {t.dtype}")


def check_status(status: int, what: str) -> None:
    if status == STATUS_OK:
        return
    message = INTERFACE["status_messages"].get(status, f"status {status}")
    detail = ""
    is_cuda_error = status == INTERFACE["status"].get("cuda_error")
    if is_cuda_error and _C is not None and hasattr(_C, "cuda_last_error"):
        detail = f" ({_C.cuda_last_error()})"
    raise RuntimeError(f"latentdiv engine: {what} failed: {message}{detail}")


def backend_info() -> Dict[str, Any]:
    """What was built and what will run: compiled or fallback, threads, CPU ISA, CUDA.

    Example: ``{'backend': 'compiled', 'threads': 2, 'openmp': True, 'cpu_isa_best': 'avx512', ...}``.
    """
    info: Dict[str, Any] = {
        "backend": "reference" if (_backend == "reference" or _C is None) else "compiled",
        "backend_setting": _backend,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda_device_available": torch.cuda.is_available(),
    }
    if _C is None:
        info.update(compiled=False, import_error=str(_IMPORT_ERROR), cuda=False)
        return info
    build = dict(_C.build_info())
    isa_env = os.environ.get("LATENTDIV_ISA", "auto")
    info.update(
        compiled=True,
        openmp=build["openmp"],
        cpu_isa_compiled=list(build["cpu_isa_compiled"]),
        cpu_isa_usable=list(build["cpu_isa_usable"]),
        cpu_isa_best=build["cpu_isa_best"],
        cpu_isa_selected=build["cpu_isa_best"] if isa_env == "auto" else isa_env,
        cuda=build["cuda"],
        cuda_archs=build["cuda_archs"],
        compiler=build["compiler"],
        kernels=dict(build["kernels"]),
    )
    return info
