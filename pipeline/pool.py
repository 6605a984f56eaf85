"""The one way the pipeline works in parallel: a pool of spawned, single-threaded processes."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context


def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)  # the pool's processes share the cores; torch would oversubscribe them


def process_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes for per-series work (demo generation, dataset building).

    Spawned rather than forked, because torch's thread pools do not survive a fork. A spawned
    process re-imports the caller's ``__main__`` module, so only a command or a guarded script
    may open one: a Streamlit page script (which Streamlit installs as ``__main__``) would be
    run again in every worker, which is why the dashboard runs these jobs as ``python -m
    pipeline`` child processes.
    """
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_one_torch_thread)
