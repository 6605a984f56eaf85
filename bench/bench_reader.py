"""Benchmark: our reader + default preprocessing against SimpleITK, on large series.

    .venv/bin/python bench/bench_reader.py [--repeats 3] [--out bench/out]

Writes (once, cached in --out) a 250-slice 512 x 512 CTA-like series and a 180-slice
MRA-like one, then, for each, times in fresh child processes of this same command:

* ours: ``pipeline.io.dicom.load_series`` + ``pipeline.preprocess.transforms.preprocess``
  (reorient, crop to the head, resample to 0.8 mm, normalise);
* SimpleITK: ``ImageSeriesReader`` + ``Resample`` to the same 0.8 mm spacing.

Each child times its first call (a fresh process: page faults, lazy imports) and the
median of ``--repeats`` later calls. It prints seconds per stage, the ratios ours /
SimpleITK, and each child's peak resident memory (and what it held after imports).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SERIES = {
    # name: (slices, rows/columns, in-plane mm, slice mm, modality)
    "cta_250": (250, 512, 0.45, 0.6, "CT"),
    "mra_180": (180, 512, 0.4, 0.8, "MR"),
}
TARGET_MM = 0.8


def write_benchmark_series(out: Path) -> dict[str, Path]:
    from phantom import head_volume

    from pipeline.io.dicomwriter import SeriesGeometry, SeriesHeader, write_series

    folders = {}
    for name, (n, size, pixel, step, modality) in SERIES.items():
        folder = out / name
        done = folder / ".complete"
        if not done.exists():
            print(f"writing {name} ({n} x {size} x {size}) ...", flush=True)
            pixels = head_volume((n, size, size), (step, pixel, pixel), modality)
            half = size * pixel / 2
            geometry = SeriesGeometry.regular(
                n, pixel_spacing=(pixel, pixel), slice_spacing=step, origin=(-half, -half, -n * step / 2)
            )
            write_series(
                folder, pixels, geometry, SeriesHeader(modality=modality),
                rescale_intercept=-1024.0 if modality == "CT" else 0.0, seed=name,
            )
            done.touch()
        folders[name] = folder
    return folders


def _peak_mb() -> float:
    """Peak resident memory of this process (VmHWM), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ours(folder: str) -> tuple[float, float, list[int]]:
    from pipeline.io.dicom import load_series
    from pipeline.preprocess.transforms import preprocess

    start = time.perf_counter()
    volume = load_series(folder)
    read = time.perf_counter()
    result = preprocess(volume)
    return read - start, time.perf_counter() - read, list(result.shape)


def simpleitk(folder: str) -> tuple[float, float, list[int]]:
    import SimpleITK as sitk

    start = time.perf_counter()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    image = reader.Execute()
    read = time.perf_counter()
    size = [int(n * s / TARGET_MM) for n, s in zip(image.GetSize(), image.GetSpacing())]
    resampled = sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), (TARGET_MM,) * 3,
        image.GetDirection(), 0.0, sitk.sitkFloat32,
    )
    return read - start, time.perf_counter() - read, list(resampled.GetSize())[::-1]


def child(kind: str, folder: str, repeats: int) -> dict:
    """First call (cold: a fresh process) and the median of ``repeats`` later calls (warm)."""
    function = ours if kind == "ours" else simpleitk
    if kind == "ours":
        import pipeline.io.dicom  # noqa: F401  (imports are not part of the timing)
        import pipeline.preprocess.transforms  # noqa: F401
    else:
        import SimpleITK  # noqa: F401
    imports_mb = _peak_mb()
    runs = [function(folder) for _ in range(repeats + 1)]
    warm = runs[1:]
    return {
        "cold_total": sum(runs[0][:2]),
        "read": statistics.median(r[0] for r in warm),
        "process": statistics.median(r[1] for r in warm),
        "total": statistics.median(r[0] + r[1] for r in warm),
        "shape": runs[0][2],
        "imports_mb": imports_mb,
        "peak_mb": _peak_mb(),
    }


def run_child(kind: str, folder: Path, repeats: int) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(folder), "--repeats", str(repeats)],
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, folder = args.child
        print(json.dumps(child(kind, folder, args.repeats)))
        return 0

    folders = write_benchmark_series(args.out)
    results = {(name, kind): run_child(kind, folder, args.repeats) for name, folder in folders.items()
               for kind in ("sitk", "ours")}
    print()
    print("| series | reader | read s | resample / preprocess s | total s | first call s | output (z, y, x) "
          "| peak RSS MB (after imports) |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, kind), r in results.items():
        label = "SimpleITK read + Resample" if kind == "sitk" else "ours: load_series + preprocess"
        print(f"| {name} | {label} | {r['read']:.2f} | {r['process']:.2f} | {r['total']:.2f} | {r['cold_total']:.2f} "
              f"| {tuple(r['shape'])} | {r['peak_mb']:.0f} ({r['imports_mb']:.0f}) |")
    print()
    for name in folders:
        ours_, theirs = results[(name, "ours")], results[(name, "sitk")]
        print(f"{name}: ours / SimpleITK = {ours_['total'] / theirs['total']:.2f} warm, "
              f"{ours_['cold_total'] / theirs['cold_total']:.2f} first call (target on cta_250: at most 0.5)")
    summary = {f"{n}/{k}": v for (n, k), v in results.items()}
    (args.out / "reader.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
