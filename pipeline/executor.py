"""Where per-series work runs: this machine's process pool (the default) or a Dask cluster.

Every command that maps over series (``build``, ``demo-data``, ``predict-all``) takes
``--scheduler``: none (or ``ANEURYSM_DASK_SCHEDULER`` unset) runs on this machine's pool of
``--workers`` processes (`pipeline.pool`); ``local:N`` starts a Dask ``LocalCluster`` of N
single-threaded worker processes for the command; any other value is the address of a
running Dask scheduler (``tcp://host:8786``). With Dask, tasks are submitted a few per
worker ahead, results stream back as they finish (the client's memory stays bounded), a task
that fails on a worker is retried elsewhere (`RETRIES`), a task whose worker dies is
rescheduled by Dask, and only the client writes outputs, atomically, as with the local pool.
Workers read the data at the same paths as the client: on a cluster the data folder must be
on a shared file system.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import as_completed
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from pipeline.pool import process_pool, queue_cancelled_on_error

SCHEDULER_ENV = "ANEURYSM_DASK_SCHEDULER"
RETRIES = 2  # further tries of a task that raised on a worker (a lost worker's tasks are rescheduled anyway)
AHEAD = 4  # tasks in flight per Dask worker


def chosen_scheduler(scheduler: str | None) -> str | None:
    """The ``--scheduler`` given, else ``ANEURYSM_DASK_SCHEDULER``, else None (this machine's pool)."""
    return scheduler or os.environ.get(SCHEDULER_ENV) or None


def local_workers(scheduler: str) -> int:
    """N of ``local:N``.

    Raises:
        ValueError: not ``local:`` and a whole number of at least 1.
    """
    count = scheduler.removeprefix("local:")
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"--scheduler {scheduler!r}: write local:N with N the number of worker processes, "
                         "or a scheduler address such as tcp://host:8786.")
    return int(count)


@contextmanager
def executor(scheduler: str | None = None, workers: int | None = None,
             announce: Callable[[str], None] | None = None) -> Iterator[Callable]:
    """A function ``run(fn, tasks)`` that yields ``(index, fn(tasks[index]))`` as tasks finish.

    Args:
        scheduler: see the module's docstring (after `chosen_scheduler`).
        workers: this machine's pool size (default: cores, at most 4; 1 runs in this process).
        announce: told, once, where the work runs (with the Dask dashboard's address).

    Raises:
        ValueError: a ``local:N`` that is no number; OSError: no scheduler at the address.
    """
    scheduler = chosen_scheduler(scheduler)
    if scheduler is None:
        yield lambda fn, tasks: _on_pool(fn, tasks, workers)
        return
    from distributed import Client, LocalCluster

    if scheduler.startswith("local:"):
        cluster = LocalCluster(n_workers=local_workers(scheduler), threads_per_worker=1, processes=True,
                               dashboard_address=":0")
    else:
        cluster = None
    try:
        with Client(cluster if cluster is not None else scheduler, timeout="20s") as client:
            if announce:
                count = len(client.scheduler_info()["workers"])
                where = f"{count} Dask worker{'s' * (count != 1)} at {client.scheduler.address}"
                announce(f"{where} (dashboard: {client.dashboard_link})")
            yield lambda fn, tasks: _on_dask(client, fn, tasks)
    finally:
        if cluster is not None:
            cluster.close()


def _on_pool(fn: Callable, tasks: Sequence, workers: int | None):
    workers = max(1, min(workers or min(os.cpu_count() or 1, 4), len(tasks) or 1))
    if workers == 1:
        for index, task in enumerate(tasks):
            yield index, fn(task)
        return
    with process_pool(workers) as pool:
        futures = {pool.submit(fn, task): index for index, task in enumerate(tasks)}
        with queue_cancelled_on_error(futures):
            for future in as_completed(futures):
                yield futures[future], future.result()


def _on_dask(client, fn: Callable, tasks: Sequence):
    from distributed import as_completed as dask_completed

    pending = iter(enumerate(tasks))
    outstanding: dict = {}  # future -> task index

    def submit_next() -> bool:
        for index, task in pending:
            outstanding[client.submit(fn, task, retries=RETRIES, pure=False)] = index
            return True
        return False

    for _ in range(AHEAD * max(1, len(client.scheduler_info()["workers"]))):
        if not submit_next():
            break
    stream = dask_completed(list(outstanding))
    try:
        for future in stream:
            result = future.result()
            index = outstanding.pop(future)
            future.release()
            if submit_next():
                stream.add(next(reversed(outstanding)))
            yield index, result
    finally:
        if outstanding:  # the consumer stopped or failed: nothing more is computed for it
            client.cancel(list(outstanding))


def in_order(results: Iterator[tuple[int, object]]) -> Iterator:
    """``results`` as (index, value) in any order -> the values in index order, as soon as
    each is next."""
    pending, next_index = {}, 0
    for index, value in results:
        pending[index] = value
        while next_index in pending:
            yield pending.pop(next_index)
            next_index += 1


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
