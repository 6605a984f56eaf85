"""Command line: ``python -m pipeline COMMAND ...`` (``--help`` lists the commands)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipeline.errors import IngestError


def _scan(args: argparse.Namespace) -> int:
    from pipeline.dicom import scan

    result = scan(args.path)
    if args.json:
        print(json.dumps({"series": [vars(s) | {"files": len(s.files)} for s in result.series],
                          "skipped": result.skipped}))
        return 0
    if not result.series:
        print("No DICOM image series found.", file=sys.stderr)
        return 2
    for series in result.series:
        print(series.describe())
    if result.skipped:
        print(f"({len(result.skipped)} file(s) left aside, first: {result.skipped[0]})")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from pipeline.dicom import load_series
    from pipeline.preprocess import preprocess

    start = time.perf_counter()
    volume = load_series(args.path, series_uid=args.series)
    read = time.perf_counter()
    processed = preprocess(volume)
    done = time.perf_counter()
    report = {
        "series_uid": volume.series_uid,
        "modality": volume.modality,
        "plane": volume.info["plane"],
        "source_shape": list(volume.shape),
        "source_spacing_mm": [round(s, 4) for s in volume.spacing],
        "source_orientation": volume.orientation,
        "processed_shape": list(processed.shape),
        "processed_spacing_mm": [round(s, 4) for s in processed.spacing],
        "processed_orientation": processed.orientation,
        "seconds": {"read": round(read - start, 3), "preprocess": round(done - read, 3)},
        "warnings": processed.warnings,
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>22}: {value}")
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    from pipeline.demo import generate_demo_data

    from pipeline.data import demo_root

    try:
        summary = generate_demo_data(args.out or demo_root(), n_series=args.series, seed=args.seed,
                                     workers=args.workers, progress=_progress_bar)
    except (FileExistsError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    mix = ", ".join(f"{name} {count}" for name, count in summary.per_modality.items())
    print(f"Wrote {summary.n_series} series ({summary.n_positive} positive; {mix}), {summary.n_files} files, "
          f"to {summary.root} in {summary.seconds:.1f} s.")
    return 0


def _progress_bar(done: int, total: int, label: str = "series") -> None:
    width = 30
    filled = int(width * done / total) if total else width
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label}", end="", file=sys.stderr, flush=True)


def _data_root(value: str | None):
    from pipeline.data import configured_root, ensure_demo_data

    if value:
        return value
    if configured_root() is not None:
        return configured_root()
    return ensure_demo_data(lambda done, total: _progress_bar(done, total, "demo series generated"))


def _build(args: argparse.Namespace) -> int:
    from pipeline.data import datasets_root
    from pipeline.dataset import BuildConfig, balance_table, build_datasets
    from pipeline.preprocess import PreprocessConfig

    try:
        config = BuildConfig(
            cube=args.cube, negatives=args.negatives, hard_share=args.hard_share,
            min_distance_mm=args.min_distance, jitter=args.jitter, seed=args.seed,
            modalities=tuple(m.strip() for m in args.modalities.split(",")) if args.modalities else BuildConfig().modalities,
            preprocess=PreprocessConfig(target_spacing=(args.spacing,) * 3),
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = _data_root(args.data)
    out = args.out or datasets_root()

    def progress(done: int, total: int, result) -> None:
        if args.progress_json:  # one JSON line per series, for the dashboard
            print(json.dumps({"done": done, "total": total, "series_uid": result.series_uid,
                              "modality": result.modality, "status": result.status, "reason": result.reason,
                              "cubes": 0 if result.labels is None else len(result.labels)}), flush=True)
        else:
            _progress_bar(done, total)

    manifest = build_datasets(data, out, config, workers=args.workers, use_cache=not args.no_cache,
                              progress=progress)
    if args.progress_json:
        return 0
    print(file=sys.stderr)
    skipped = {uid: o for uid, o in manifest["series"].items() if o["status"] != "ok"}
    for uid, outcome in skipped.items():
        print(f"skipped {uid}: {outcome['reason']}", file=sys.stderr)
    for problem in manifest["problems"]:
        print(f"note: {problem}", file=sys.stderr)
    print(balance_table(manifest).to_string(index=False))
    print(f"{len(manifest['series']) - len(skipped)} series built, {len(skipped)} skipped, in {manifest['seconds']:.1f} s; "
          f"datasets and {out}/build_manifest.json written.")
    return 0


def _train(args: argparse.Namespace) -> int:
    from pipeline.data import datasets_root, runs_root
    from pipeline.dataset import DATASET_FILES
    from pipeline.model import ModelConfig
    from pipeline.train import TrainConfig, resolve_datasets, train

    run = Path(args.run) if args.run else runs_root() / time.strftime("run-%Y%m%d-%H%M%S")
    config = None
    if not args.resume:
        folders = args.datasets or [str(datasets_root())]
        try:
            files = resolve_datasets(folders)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.modalities:
            wanted = {DATASET_FILES[m.strip()] for m in args.modalities.split(",") if m.strip() in DATASET_FILES}
            files = tuple(f for f in files if Path(f).name in wanted)
        config = TrainConfig(datasets=files, epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch,
                             crop=args.crop, learning_rate=args.lr, seed=args.seed, precision=args.precision,
                             model=ModelConfig(width=args.width, blocks=args.blocks, first_stage=args.first_stage))

    def progress(record: dict) -> None:
        if record["kind"] == "epoch":
            auc, score = record["validation_auc"], record.get("series_score")
            print(f"epoch {record['epoch']:3d}  loss {record['train_loss']:.3f}  cube AUC "
                  f"{'n/a' if auc is None else f'{auc:.3f}'}"
                  f"{'' if score is None else f'  held-out series score {score:.3f}'}"
                  f"  {record['cubes_per_second']:.0f} cubes/s", flush=True)

    try:
        train(config, run, resume=args.resume, progress=progress)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"run folder: {run}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pipeline.inference import Predictor

    try:
        predictor = Predictor(args.model, flip=args.flip)
    except (FileNotFoundError, RuntimeError, KeyError, ValueError) as exc:
        print(f"error: the model could not be loaded: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    prediction = predictor.predict(args.path, series_uid=args.series)
    if args.json:
        print(json.dumps(prediction.to_json()))
        return 0
    print(f"series {prediction.series_uid} ({prediction.modality})")
    for name, value in prediction.probabilities.items():
        print(f"{value:8.3f}  {name}")
    for rank, candidate in enumerate(prediction.candidates, start=1):
        print(f"candidate {rank}: p={candidate['probability']:.3f} {candidate['location']} at "
              f"{candidate['position_mm']} mm, image {candidate['SOPInstanceUID']} {candidate['coordinates']}")
    print("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in prediction.timings.items()))
    for warning in prediction.warnings:
        print(f"warning: {warning}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pipeline.evaluate import evaluate_run

    what = "test-set series" if args.test_set else "held-out series"
    try:
        result = evaluate_run(args.run, args.test_set or _data_root(args.data), flip=args.flip, test_set=bool(args.test_set),
                              progress=lambda done, total: _progress_bar(done, total, what))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    score = result["final_score"]
    print(f"{what}: {result['series']}; final score {'undefined' if score is None else f'{score:.4f}'}; "
          f"Aneurysm Present AUC {result['aneurysm_present_auc']}; mean location AUC {result['location_auc_mean']} "
          f"({result['locations_defined']} of 13 locations defined)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    scan = commands.add_parser("scan", help="list the DICOM series in a folder or file (headers only)")
    scan.add_argument("path")
    scan.add_argument("--json", action="store_true", help="one JSON object on standard output")
    scan.set_defaults(handler=_scan)

    inspect = commands.add_parser("inspect", help="read one series, preprocess it and describe the result")
    inspect.add_argument("path")
    inspect.add_argument("--series", help="SeriesInstanceUID, when the path holds several series")
    inspect.add_argument("--json", action="store_true", help="one JSON object on standard output")
    inspect.set_defaults(handler=_inspect)

    demo = commands.add_parser("demo-data", help="write the synthetic demo dataset (RSNA layout)")
    demo.add_argument("--out", help="destination folder, must not exist or be empty (default: data/demo)")
    demo.add_argument("--series", type=int, default=200, help="number of series (default 200)")
    demo.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    demo.add_argument("--workers", type=int, default=None, help="processes (default: cores, at most 4)")
    demo.set_defaults(handler=_demo_data)

    build = commands.add_parser("build", help="cut 48-voxel training cubes into one .npz per modality")
    build.add_argument("--data", help="data folder in the RSNA layout (default: ANEURYSM_DATA, else the demo data)")
    build.add_argument("--out", help="output folder (default: data/datasets)")
    build.add_argument("--workers", type=int, default=None, help="processes (default: cores, at most 4)")
    build.add_argument("--cube", type=int, default=48, help="cube side in voxels (default 48)")
    build.add_argument("--negatives", type=int, default=24, help="negative cubes per series (default 24)")
    build.add_argument("--hard-share", type=float, default=0.5, help="share of negatives on vessels (default 0.5)")
    build.add_argument("--min-distance", type=float, default=20.0, help="mm from any aneurysm to a negative (default 20)")
    build.add_argument("--jitter", type=int, default=4, help="jittered copies per positive cube (default 4)")
    build.add_argument("--spacing", type=float, default=0.8, help="isotropic target spacing, mm (default 0.8)")
    build.add_argument("--modalities", help="comma-separated subset, e.g. 'CTA,MRA' (default: all four)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--no-cache", action="store_true", help="do not reuse or keep preprocessed volumes")
    build.add_argument("--progress-json", action="store_true", help="one JSON line per series on standard output")
    build.set_defaults(handler=_build)

    train = commands.add_parser("train", help="train the cube model on built datasets (resumable)")
    train.add_argument("--datasets", nargs="*", help="dataset folders or .npz files (default: data/datasets)")
    train.add_argument("--modalities", help="comma-separated subset of the datasets, e.g. 'CTA,MRA'")
    train.add_argument("--run", help="run folder (default: runs/run-<time>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --run from its last checkpoint")
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--steps", type=int, default=86, help="steps per epoch (default 86)")
    train.add_argument("--batch", type=int, default=14, help="crops per step (default 14)")
    train.add_argument("--crop", type=int, default=48, help="voxels per side of a training crop, a multiple of 16 "
                                                            "(default 48)")
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--width", type=int, default=16, help="channels of the first stage (default 16)")
    train.add_argument("--blocks", type=int, default=1, help="residual blocks per stage (default 1)")
    train.add_argument("--no-first-stage", dest="first_stage", action="store_false",
                       help="without the first stage (at the stem's resolution): half the multiply-adds")
    train.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(handler=_train)

    predict = commands.add_parser("predict", help="the 14 RSNA probabilities of one series (folder, files or .zip)")
    predict.add_argument("path")
    predict.add_argument("--model", help="checkpoint (default: the shipped demo model)")
    predict.add_argument("--series", help="SeriesInstanceUID, when the path holds several series")
    predict.add_argument("--no-flip", dest="flip", action="store_false",
                         help="score the volume once, without averaging with its left-right mirror (twice as fast)")
    predict.add_argument("--json", action="store_true", help="one JSON object on standard output")
    predict.set_defaults(handler=_predict)

    evaluate = commands.add_parser("evaluate", help="score a run's held-out series with the RSNA metric")
    evaluate.add_argument("--run", required=True)
    evaluate.add_argument("--data", help="data folder (default: ANEURYSM_DATA, else the demo data)")
    evaluate.add_argument("--no-flip", dest="flip", action="store_false",
                          help="score each series once, without the left-right mirrored pass")
    evaluate.add_argument("--test-set", metavar="DIR",
                          help="score every series of another dataset the run never saw (writes test_evaluation.json)")
    evaluate.set_defaults(handler=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except IngestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
