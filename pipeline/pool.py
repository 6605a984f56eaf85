"""The one way the pipeline works in parallel: a pool of spawned, single-threaded processes."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Iterable, Iterator
from multiprocessing import get_context


PARENT_CHECK_SECONDS = 1.0


def _start_worker(parent: int) -> None:
    import torch

    torch.set_num_threads(1)  # the pool's processes share the cores; torch would oversubscribe them
    threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="parent-watch").start()


def _exit_with(parent: int) -> None:
    """End this worker once its parent is gone (killed from outside, it cannot shut the pool
    down: the workers would go on burning the cores for work nobody will collect)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def process_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes for per-series work (demo generation, dataset building).

    Spawned rather than forked, because torch's thread pools do not survive a fork. A spawned
    process re-imports the caller's ``__main__`` module, so only a command or a guarded script
    may open one: a Streamlit page script (which Streamlit installs as ``__main__``) would be
    run again in every worker, which is why the dashboard runs these jobs as ``python -m
    pipeline`` child processes. A worker ends by itself within a second or so of its parent
    being killed.
    """
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start_worker,
                               initargs=(os.getpid(),))


@contextmanager
def queue_cancelled_on_error(futures: Iterable[Future]) -> Iterator[None]:
    """Cancel the futures not started yet when the block ends by an exception (a failing disk,
    an interrupt, a consumer that stopped): the pool's shutdown then waits only for the tasks
    already running, not for the whole queue."""
    try:
        yield
    except BaseException:
        for future in futures:
            future.cancel()
        raise
