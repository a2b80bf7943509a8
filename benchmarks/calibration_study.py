import sys, numpy as np, time
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "..", "tests"))
from test_stats import _rejection_rates
for n, d in [(256, 64), (50, 5)]:
    for target in ("standard", "estimated"):
        t = time.perf_counter()
        r = _rejection_rates(n, d, target, 100, 199, 7)
        print(f"| {n} | {d} | {target} | " + " | ".join(f"{v:.2f}" for v in r.values()) + f" | {time.perf_counter()-t:.0f} s", flush=True)
print("| n | D | target | " + " | ".join(r.keys()))
