"""Benchmark: the dataset builder.

    .venv/bin/python bench/bench_build.py [--repeats 3]

1. The default demo set (``data/demo``, generated if missing): a full build from the
   DICOM files (no cache) with 1 worker and with 2, in series per second, and a rebuild
   from the cache of preprocessed volumes.
2. The 250-slice 512 x 512 CTA series of ``bench_reader.py`` (written if missing): the
   builder's work on it (read + preprocess + cubes) against read + preprocess alone, in
   the same process; the target ratio is at most 1.3.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from pipeline.data import ensure_demo_data
from pipeline.dataset.build import SeriesTask, build_datasets, process_series
from pipeline.dataset.config import BuildConfig
from pipeline.io.dicom import load_series
from pipeline.preprocess.transforms import preprocess
from pipeline.io.rsna import Localizer


def demo_builds(workdir: Path) -> None:
    root = ensure_demo_data()
    print(f"| demo build ({sum(1 for _ in (root / 'series').iterdir())} series) | seconds | series / s |")
    print("|---|---|---|")
    for workers in (1, 2):
        out = workdir / f"w{workers}"
        manifest = build_datasets(root, out, workers=workers, use_cache=workers == 2)
        n = len(manifest["series"])
        print(f"| from DICOM, {workers} worker{'s' if workers > 1 else ''} | {manifest['seconds']:.1f} | "
              f"{n / manifest['seconds']:.2f} |")
    manifest = build_datasets(root, workdir / "w2", workers=2)  # the cache filled by the 2-worker build
    print(f"| rebuild from the cache, 2 workers | {manifest['seconds']:.1f} | "
          f"{len(manifest['series']) / manifest['seconds']:.2f} |")


def cta_overhead(repeats: int) -> None:
    from bench_reader import write_benchmark_series

    folder = write_benchmark_series(ROOT / "bench" / "out")["cta_250"]
    volume = load_series(folder)
    sop, source = next(iter(volume.sources.items()))
    task = SeriesTask("bench", "CTA", True, [Localizer("bench", sop[0], 256.0, 256.0, 0, "Basilar Tip")],
                      str(folder), None, BuildConfig())
    del volume
    process_series(task)  # warm up both paths
    alone, builder = [], []
    for _ in range(repeats):  # alternated, so that both see the same machine
        start = time.perf_counter()
        processed = preprocess(load_series(folder))
        alone.append(time.perf_counter() - start)
        del processed
        result = process_series(task)
        builder.append(result.seconds)
        assert result.status == "ok", result.reason
    a, b = statistics.median(alone), statistics.median(builder)
    print()
    print("| 250-slice CTA | seconds (median) |")
    print("|---|---|")
    print(f"| read + preprocess alone | {a:.3f} |")
    print(f"| builder: read + preprocess + {len(result.labels)} cubes | {b:.3f} |")
    print(f"\nbuilder / (read + preprocess) = {b / a:.2f} (target: at most 1.3)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-build-"))
    try:
        demo_builds(workdir)
        cta_overhead(args.repeats)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
