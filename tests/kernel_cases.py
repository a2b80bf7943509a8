"""Kernel argument sets the tests iterate over, derived from the registry: every kernel's
``KernelSpec.examples`` (single- and multi-scale bandwidths, its options), so a kernel added to
``latentdiv._registry.KERNELS`` is covered by every test that uses these cases with no edit here."""

from latentdiv import KERNELS

# (kernel, bandwidth, extra keyword options, minimum D)
KERNEL_CASES = [
    (name, bandwidth, dict(options), spec.min_dim)
    for name, spec in KERNELS.items()
    for bandwidth, options in spec.examples
]

# The kernels pairwise_sum can differentiate with respect to a bandwidth tensor (a scale of the points).
BANDWIDTH_KERNELS = [name for name, spec in KERNELS.items() if spec.bandwidth_scale is not None]

# The cases mmd accepts, as mmd's arguments: (kernel, bandwidth), bandwidth None for a kernel without one.
MMD_CASES = [
    (name, None if KERNELS[name].bandwidth_units is None else bandwidth)
    for name, bandwidth, options, _ in KERNEL_CASES
    if KERNELS[name].mmd and not options
]

assert {case[0] for case in KERNEL_CASES} == set(KERNELS), "every registry kernel must have a test case"


def case_id(case):
    kernel, bandwidth, options, _ = case
    scales = len(bandwidth) if isinstance(bandwidth, list) else 1
    return f"{kernel}-{scales}scale" if scales > 1 else kernel
