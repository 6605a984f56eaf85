"""Benchmark: end-to-end inference on the 250-slice 512 x 512 CTA series, per stage.

    .venv/bin/python bench/bench_inference.py --model RUN/best.pt [--repeats 5]

Runs `pipeline.inference.predictor.Predictor.predict` in child processes of this command, once with
glibc's default allocator settings and once with settings that keep freed memory in the
process (``MALLOC_MMAP_MAX_=0``, ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_`` large),
and prints the median seconds of read, preprocess, network and total (first call apart).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

KEEP_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 36), "MALLOC_TOP_PAD_": str(1 << 28)}


def child(model: str, folder: str, repeats: int) -> None:
    from pipeline.inference.predictor import Predictor

    predictor = Predictor(model)
    runs = [predictor.predict(folder).timings for _ in range(repeats + 1)]
    warm = runs[1:]
    print(json.dumps({"first": runs[0], **{k: statistics.median(r[k] for r in warm) for k in warm[0]}}))


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
    for label, extra in (("glibc defaults", {}), ("glibc, freed memory kept", KEEP_MEMORY)):
        output = subprocess.run(
            [sys.executable, __file__, "--model", args.model, "--repeats", str(args.repeats), "--child", args.model,
             str(folder)], capture_output=True, text=True, check=True, env={**os.environ, **extra},
        ).stdout
        r = json.loads(output.strip().splitlines()[-1])
        print(f"| {label} | {r['read']:.2f} | {r['preprocess']:.2f} | {r['network']:.2f} | {r['total']:.2f} | "
              f"{r['first']['total']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
