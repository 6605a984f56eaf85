"""Benchmark: series per second of ``build`` and ``predict-all`` on this machine's pool and on a
Dask LocalCluster, at 1 and 2 workers; crops per second of data-parallel training at 1 and 2
processes.

    .venv/bin/python bench/bench_scale.py [--series 40] [--model models/demo/best.pt] [--parts series,ddp]

Writes a demo data folder of ``--series`` series (seed 5) into a temporary folder, then, in
this one command so that every figure shares the machine's state: ``build --no-cache`` and
``predict-all`` in this process (one worker: torch uses every core), on the local pool of 2
single-threaded processes, and on Dask LocalClusters of 1 and 2 single-threaded workers
(process and cluster start included; the cluster start is also timed apart). Prints series/s,
the ratio of Dask to the pool at equal workers (target: within 10 %) and of 2 Dask workers to 1
(target: at least 1.7x), and the per-series cost behind the README's estimate for the full RSNA
set. ``ddp``: ``train --nproc-per-node 1`` (one process on every core) and ``2`` (two
single-threaded gloo ranks) on the build made in this process, ``--ddp-steps`` steps of the
default batch, no series validation, on a build with its cache; prints crops/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.dataset.build import build_datasets  # noqa: E402
from pipeline.dataset.config import BuildConfig  # noqa: E402
from pipeline.demo.generate import generate_demo_data  # noqa: E402
from pipeline.inference.batch import predict_all  # noqa: E402
from pipeline.runs import RunFolder  # noqa: E402
from pipeline.training.config import TrainConfig  # noqa: E402


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def cluster_start() -> float:
    """Seconds to start and stop a 2-worker LocalCluster with its client, nothing run."""
    from pipeline.executor import executor

    def start_and_stop():
        with executor("local:2") as run:
            list(run(abs, [1]))

    return timed(start_and_stop)


def training_speed(datasets: Path, folder: Path, processes: int, steps: int) -> float:
    """Crops/s of one epoch of ``steps`` steps trained by ``train --nproc-per-node processes``."""
    import subprocess

    config = folder / "train.json"
    config.write_text(json.dumps({"epochs": 1, "steps_per_epoch": steps, "series_validation_epochs": 0}))
    run = folder / f"run-{processes}"
    done = subprocess.run([sys.executable, "-m", "pipeline", "train", "--datasets", str(datasets), "--config",
                           str(config), "--run", str(run), "--nproc-per-node", str(processes)],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"train --nproc-per-node {processes} failed: {done.stderr[-2000:]}")
    return next(r["crops_per_second"] for r in RunFolder(run).read_metrics() if r["kind"] == "epoch")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=40)
    parser.add_argument("--model", default=None)
    parser.add_argument("--parts", default="series,ddp", help="series (build, predict-all), ddp (training)")
    parser.add_argument("--ddp-steps", type=int, default=30)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        generate_demo_data(folder / "data", n_series=args.series, seed=5, workers=2)
        setups = {"this process (torch on every core)": dict(workers=1), "pool, 2 processes": dict(workers=2),
                  "Dask local:1": dict(scheduler="local:1"), "Dask local:2": dict(scheduler="local:2")}
        if "series" not in parts:
            setups = dict(list(setups.items())[:1])
        results = {"series": args.series}
        if "series" in parts:
            results["cluster_start_seconds"] = round(cluster_start(), 2)
        for index, (name, options) in enumerate(setups.items()):
            out = folder / f"build-{index}"
            build = timed(lambda: build_datasets(folder / "data", out, BuildConfig(), use_cache=False, **options))
            table = folder / f"predictions-{index}.csv"
            predict = timed(lambda: predict_all(folder / "data", table, args.model, **options))
            results[name] = {"build_series_per_second": round(args.series / build, 3),
                             "predict_all_series_per_second": round(args.series / predict, 3)}
        if "ddp" in parts:
            build_datasets(folder / "data", folder / "ddp-build", BuildConfig())  # training crops need its cache
            speeds = {n: training_speed(folder / "ddp-build", folder, n, args.ddp_steps) for n in (1, 2)}
            results["ddp_crops_per_second"] = {f"{n} process(es)": round(v, 2) for n, v in speeds.items()}
            results["ddp_2_over_1_process"] = round(speeds[2] / speeds[1], 3)
    for task in ("build", "predict_all") if "series" in parts else ():
        key = f"{task}_series_per_second"
        here, pool2, dask1, dask2 = (results[n][key] for n in setups)
        results[f"{task}_dask_over_pool_at_2_workers"] = round(dask2 / pool2, 3)
        results[f"{task}_dask_2_over_1_worker"] = round(dask2 / dask1, 3)  # single-threaded workers both
        results[f"{task}_seconds_per_series_in_this_process"] = round(1 / here, 2)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
