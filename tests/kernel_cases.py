"""Kernel argument sets the tests iterate over: every registry kernel, single- and multi-scale."""

from latentdiv import KERNELS

# (kernel, bandwidth, extra keyword options, minimum D)
KERNEL_CASES = [
    ("gaussian", 1.3, {}, 1),
    ("gaussian", [0.5, 2.0, 7.0], {}, 1),
    ("laplacian", 1.1, {}, 1),
    ("laplacian", [0.4, 3.0], {}, 1),
    ("imq", 2.0, {}, 1),
    ("imq", [0.2, 0.4, 1.0, 2.0, 4.0, 10.0, 20.0], {}, 1),  # WAE's seven scales
    ("energy", 1.0, {}, 1),
    ("cramer_wold_approx", 1.0, {"gamma": 0.3}, 2),
    ("cramer_wold", 1.0, {"gamma": 0.3}, 1),
]

assert {case[0] for case in KERNEL_CASES} == set(KERNELS), "every registry kernel must have a test case"


def case_id(case):
    kernel, bandwidth, options, _ = case
    scales = len(bandwidth) if isinstance(bandwidth, list) else 1
    return f"{kernel}-{scales}scale" if scales > 1 else kernel
