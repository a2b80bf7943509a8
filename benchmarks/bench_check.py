"""`latentdiv check` end to end, as a user runs it: wall-clock and CPU seconds of the whole command
(interpreter start-up, imports, the time estimate, the Monte Carlo nulls, the report), from a cold
null cache (a fresh directory) and then warm (the same directory again), each in a fresh process.

    PYTHONPATH=python python benchmarks/bench_check.py                       # the built-in 256 x 64 example
    PYTHONPATH=python python benchmarks/bench_check.py --file z.npy --runs 1  # a file of yours
    PYTHONPATH=python python benchmarks/bench_check.py --python-path OTHER/python   # another checkout

``--python-path`` runs the command against another source tree (before/after comparisons); the
default is this process's ``sys.path``. Prints one markdown row per run and the load average before
and after (the figures are only comparable on a quiet machine: a busy one stretches wall time).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time


def run_once(cmd, env) -> tuple:  # -> (wall s, user + sys CPU s of the child, exit status)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--file", default=None, help="the FILE argument of latentdiv check (default: the built-in example)")
    parser.add_argument("--runs", type=int, default=3, help="cold + warm pairs (default 3)")
    parser.add_argument("--warm", type=int, default=2, help="warm runs after each cold one (default 2)")
    parser.add_argument("--python-path", default=None, help="PYTHONPATH of the command (another checkout's python/)")
    parser.add_argument("--label", default="", help="a label for the rows")
    args = parser.parse_args()
    env = dict(os.environ)
    env["PYTHONPATH"] = args.python_path or os.pathsep.join(p for p in sys.path if p)
    cmd = [sys.executable, "-m", "latentdiv", "check"] + ([args.file] if args.file else [])
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load before "
          f"{os.getloadavg()[0]:.2f}; command: {' '.join(cmd[1:])}")
    print("| run | cache | wall s | CPU s (user + sys) | exit |")
    print("|---|---|---|---|---|")
    for r in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="latentdiv-bench-check-") as cache:
            env["LATENTDIV_NULL_CACHE"] = cache
            for kind in ["cold"] + ["warm"] * args.warm:
                wall, cpu, status = run_once(cmd, env)
                print(f"| {args.label}{r + 1} | {kind} | {wall:.2f} | {cpu:.2f} | {status} |", flush=True)
    print(f"load after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
