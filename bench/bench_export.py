"""Benchmark: seconds to make and write the DICOM SR and the DICOM Segmentation of a prediction
(`pipeline.inference.export`), per series, beside the prediction itself.

    .venv/bin/python bench/bench_export.py [--model models/demo/best.pt] [--repeats 3]

On the 250-slice 512 x 512 CTA series of `bench_reader` (single-frame CT files) and on 8 demo
series (seed 2: CTA, MRA, T2 and T1post, single-frame and Enhanced multi-frame), in this one
process: each series is predicted once, then the SR and the SEG are each made and written
``--repeats`` times (the first export of the process apart: it loads highdicom's tables).
Prints the median seconds of each (target: at most 0.5 s per series on 2 cores) and their
ratio to the series' own prediction time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline.demo.generate import generate_demo_data  # noqa: E402
from pipeline.inference import export  # noqa: E402
from pipeline.inference.predictor import Predictor  # noqa: E402


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from bench_reader import write_benchmark_series

    predictor = Predictor(args.model)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        folders = [write_benchmark_series(ROOT / "bench" / "out")["cta_250"]]
        generate_demo_data(out / "demo", n_series=8, seed=2, workers=2)
        folders += sorted((out / "demo" / "series").iterdir())
        first = None
        print("| series | grid | predict s | SR s | SEG s | SR+SEG / predict |")
        print("|---|---|---|---|---|---|")
        for folder in folders:
            prediction = predictor.predict(folder)
            if first is None:
                first = (timed(lambda: export.save(export.structured_report(prediction), out / "sr.dcm")),
                         timed(lambda: export.save(export.segmentation(prediction), out / "seg.dcm")))
            sr = statistics.median(timed(lambda: export.save(export.structured_report(prediction), out / "sr.dcm"))
                                   for _ in range(args.repeats))
            seg = statistics.median(timed(lambda: export.save(export.segmentation(prediction), out / "seg.dcm"))
                                    for _ in range(args.repeats))
            header = prediction.volume.source_headers[0]
            kind = f"{prediction.modality} {'multi-frame' if int(header.get('NumberOfFrames', 1) or 1) > 1 else ''}"
            shape = " x ".join(map(str, prediction.volume.source_grid[0]))
            total = prediction.timings["total"]
            name = folder.name if len(folder.name) < 12 else "..." + folder.name[-6:]
            print(f"| {kind.strip()} {name} | {shape} | {total:.2f} | {sr:.3f} | {seg:.3f} | "
                  f"{(sr + seg) / total:.2f} |", flush=True)
        print(f"first export of the process (highdicom's tables loaded): SR {first[0]:.2f} s, SEG {first[1]:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
