"""A pool of gloo worker processes (torch.multiprocessing spawn, file:// init) that the distributed
tests reuse: one process group per world size per test module, jobs sent through queues, every
wait bounded by a timeout (a hung collective fails the test instead of hanging the suite)."""

from __future__ import annotations

import os
import queue
import tempfile
import traceback
from typing import Any, Callable, List

import torch
import torch.multiprocessing as mp

JOB_TIMEOUT_S = 120.0


def _worker(rank: int, world: int, init_file: str, jobs, results) -> None:
    import datetime

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        while True:
            job = jobs.get()
            if job is None:
                break
            fn, kwargs = job
            try:
                results.put((rank, True, fn(rank, world, **kwargs)))
            except BaseException as exc:  # reported to the test, which decides
                results.put((rank, False, (type(exc).__name__, str(exc), traceback.format_exc())))
    finally:
        dist.destroy_process_group()


class Pool:
    """``world`` gloo ranks; ``run(fn, **kwargs)`` calls ``fn(rank, world, **kwargs)`` on every rank
    (fn must be importable: a module-level function) and returns the ranks' results in rank order,
    each (ok, payload): payload is fn's return value, or (exception type, message, traceback)."""

    def __init__(self, world: int) -> None:
        self.world = world
        ctx = mp.get_context("spawn")
        fd, self.init_file = tempfile.mkstemp(prefix="latentdiv-dist-")
        os.close(fd)
        os.unlink(self.init_file)  # the file store creates it
        self.jobs = [ctx.Queue() for _ in range(world)]
        self.results = ctx.Queue()
        self.procs = [ctx.Process(target=_worker, args=(r, world, self.init_file, self.jobs[r], self.results),
                                  daemon=True) for r in range(world)]
        for p in self.procs:
            p.start()

    def run(self, fn: Callable[..., Any], timeout: float = JOB_TIMEOUT_S, **kwargs: Any) -> List[tuple]:
        for q in self.jobs:
            q.put((fn, kwargs))
        out: List[Any] = [None] * self.world
        for _ in range(self.world):
            try:
                rank, ok, payload = self.results.get(timeout=timeout)
            except queue.Empty:
                self.close(force=True)
                raise TimeoutError(f"a distributed job ({fn.__name__}) did not finish within {timeout} s "
                                   "(a rank is stuck in a collective?); the pool was terminated")
            out[rank] = (ok, payload)
        return out

    def values(self, fn: Callable[..., Any], **kwargs: Any) -> List[Any]:
        """run(), raising if any rank failed."""
        res = self.run(fn, **kwargs)
        for rank, (ok, payload) in enumerate(res):
            if not ok:
                raise AssertionError(f"rank {rank} failed: {payload[0]}: {payload[1]}\n{payload[2]}")
        return [payload for _, payload in res]

    def close(self, force: bool = False) -> None:
        if not force:
            for q in self.jobs:
                q.put(None)
            for p in self.procs:
                p.join(timeout=20)
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        if os.path.exists(self.init_file):
            os.unlink(self.init_file)
