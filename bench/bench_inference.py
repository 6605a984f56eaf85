"""Benchmark: end-to-end inference on the 250-slice 512 x 512 CTA series, per stage.

    .venv/bin/python bench/bench_inference.py --model RUN/best.pt [--repeats 5]

Runs `pipeline.inference.predictor.Predictor.predict` in child processes of this command, once with
glibc's default allocator settings and once with settings that keep freed memory in the
process (``MALLOC_MMAP_MAX_=0``, ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_`` large),
and prints the median seconds of read, preprocess, network and total (first call apart).

Then the cold start: ``python -m pipeline predict SERIES --json`` in fresh processes (as a
single ``predict`` and each worker's first task run), its wall time against the warm total,
split into the imports (``-X importtime``), torch's import among them, and the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

KEEP_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 36), "MALLOC_TOP_PAD_": str(1 << 28)}


def child(model: str, folder: str, repeats: int) -> None:
    from pipeline.inference.predictor import Predictor

    predictor = Predictor(model)
    runs = [predictor.predict(folder).timings for _ in range(repeats + 1)]
    warm = runs[1:]
    print(json.dumps({"first": runs[0], **{k: statistics.median(r[k] for r in warm) for k in warm[0]}}))


def import_seconds(importtime: str) -> tuple[float, float]:
    """(all imports, torch's import) in seconds, from ``-X importtime``'s report."""
    total = torch = 0.0
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if not name.startswith("  "):  # a top-level import
            total += int(cumulative) / 1e6
        if name.strip() == "torch":
            torch = int(cumulative) / 1e6
    return total, torch


def cold_start(model: str, folder: Path, repeats: int) -> dict[str, float]:
    """Median wall time, imports and torch's import of ``predict`` in a fresh process."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline", "predict", str(folder), "--json",
                               "--model", model], capture_output=True, text=True, check=True, cwd=ROOT)
        runs.append((time.perf_counter() - start, *import_seconds(done.stderr)))
    return {key: statistics.median(run[k] for run in runs) for k, key in enumerate(("wall", "imports", "torch"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.repeats)
        return 0
    from bench_reader import write_benchmark_series

    folder = write_benchmark_series(ROOT / "bench" / "out")["cta_250"]
    print("| allocator | read s | preprocess s | network s | total s | first call total s |")
    print("|---|---|---|---|---|---|")
    warm = {}
    for label, extra in (("glibc defaults", {}), ("glibc, freed memory kept", KEEP_MEMORY)):
        output = subprocess.run(
            [sys.executable, __file__, "--model", args.model, "--repeats", str(args.repeats), "--child", args.model,
             str(folder)], capture_output=True, text=True, check=True, env={**os.environ, **extra},
        ).stdout
        r = json.loads(output.strip().splitlines()[-1])
        print(f"| {label} | {r['read']:.2f} | {r['preprocess']:.2f} | {r['network']:.2f} | {r['total']:.2f} | "
              f"{r['first']['total']:.2f} |")
        warm.setdefault("total", r["total"])  # glibc defaults, as a plain `predict` runs
    cold = cold_start(args.model, folder, max(3, args.repeats // 2))
    print("\n| `predict` in a fresh process | wall s | imports s | of which torch s | the rest s | warm total s |")
    print("|---|---|---|---|---|---|")
    print(f"| glibc defaults | {cold['wall']:.2f} | {cold['imports']:.2f} | {cold['torch']:.2f} | "
          f"{cold['wall'] - cold['imports']:.2f} | {warm['total']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
