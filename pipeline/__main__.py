"""Command line: ``python -m pipeline COMMAND ...`` (``--help`` lists the commands)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter
from pathlib import Path

from pipeline.demo import DEMO_SERIES as DEMO_SERIES_DEFAULT
from pipeline.errors import IngestError, StorageError
from pipeline.external import EXTERNAL_SERIES as EXTERNAL_SERIES_DEFAULT
from pipeline.files import storage_error


def _scan(args: argparse.Namespace) -> int:
    from pipeline.io.dicom import scan

    result = scan(args.path)
    names = _rsna_modalities(args.path)
    if args.json:
        print(json.dumps({"series": [vars(s) | {"files": len(s.files), "rsna_modality": names.get(s.series_uid)}
                                     for s in result.series],
                          "skipped": result.skipped, "sidecars": result.sidecars}))
        return 0
    if not result.series:
        from pipeline.io.nifti import is_nifti

        hint = " (a NIfTI image: describe or score it with inspect or predict and --modality)" \
            if is_nifti(args.path) else ""
        return _error(f"No DICOM image series found{hint}.")
    for series in result.series:
        line = series.describe()
        if series.series_uid in names:  # train.csv names the RSNA modality (MRA, MRI T2...), the header only MR
            line = line.replace(f"({series.modality},", f"({names[series.series_uid]},", 1)
        print(line)
    kinds = Counter(names.get(s.series_uid, s.modality) for s in result.series)
    print(f"{len(result.series)} series ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}), "
          f"{sum(s.n_images for s in result.series):,} images in {sum(s.n_files for s in result.series):,} files"
          + (f"; {result.sidecars} other file(s) not read (tables, label maps, documents)" if result.sidecars else ""))
    if result.skipped:
        print(f"{len(result.skipped)} file(s) left aside, first: {result.skipped[0]}")
    return 0


def _rsna_modalities(path) -> dict[str, str]:
    """SeriesInstanceUID -> the RSNA modality train.csv gives it, for a data folder (else empty)."""
    from pipeline.io.rsna import read_train

    root = Path(path)
    if not (root / "train.csv").is_file():
        return {}
    try:
        table = read_train(root)
    except IngestError:
        return {}
    return dict(zip(table["SeriesInstanceUID"].astype(str), table["Modality"].astype(str)))


def _inspect(args: argparse.Namespace) -> int:
    from pipeline.io.image import read_image
    from pipeline.preprocess.transforms import preprocess

    start = time.perf_counter()
    volume = read_image(args.path, series_uid=args.series, modality=args.modality)
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


def demo_series(args: argparse.Namespace) -> int:
    """How many series ``demo-data`` writes: ``--series``, else the family's default size."""
    return args.series or (EXTERNAL_SERIES_DEFAULT if args.family == "external" else DEMO_SERIES_DEFAULT)


def _demo_data(args: argparse.Namespace) -> int:
    from pipeline.data import demo_root

    try:
        if args.family == "external":
            from pipeline.external.generate import generate_external_data

            if args.shift or args.randomise:
                raise ValueError("--shift and --randomise change the demo family; the external family has neither")
            if args.out is None:
                raise ValueError("--out is needed for the external family (the default folder holds the demo data)")
            summary = generate_external_data(args.out, n_series=demo_series(args), seed=args.seed,
                                             workers=args.workers, progress=_progress_bar, scheduler=args.scheduler)
        else:
            from pipeline.demo.generate import Shift, generate_demo_data

            shift = Shift.parse(args.shift or "")
            if (shift != Shift() or args.randomise) and args.out is None:
                raise ValueError("--out is needed with --shift or --randomise (the default folder holds the demo "
                                 "data itself)")
            summary = generate_demo_data(args.out or demo_root(), n_series=demo_series(args),
                                         seed=args.seed, workers=args.workers, progress=_progress_bar, shift=shift,
                                         randomised=args.randomise, scheduler=args.scheduler)
    except (FileExistsError, ValueError, OSError) as exc:
        return _error(storage_error(exc, "writing the phantoms") or exc)
    _end_progress_bar()
    mix = ", ".join(f"{name} {count}" for name, count in summary.per_modality.items())
    print(f"Wrote {summary.n_series} series ({summary.n_positive} positive; {mix}), {summary.n_files} files, "
          f"to {summary.root} in {summary.seconds:.1f} s.")
    return 0


_BAR = {"open": False}  # whether a progress bar's line awaits its end


def _progress_bar(done: int, total: int, label: str = "series") -> None:
    width = 30
    filled = int(width * done / total) if total else width
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label}", end="", file=sys.stderr, flush=True)
    _BAR["open"] = True


def _error(exc: BaseException | str) -> int:
    """Say what went wrong in one line on standard error; the exit status of bad input."""
    _end_progress_bar()
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _end_progress_bar() -> None:
    """End the progress bar's line, so that what follows starts on its own."""
    if _BAR["open"]:
        print(file=sys.stderr)
        _BAR["open"] = False


def _data_root(value: str | None):
    from pipeline.data import configured_root, ensure_demo_data

    if value:
        return value
    if configured_root() is not None:
        return configured_root()
    return ensure_demo_data(lambda done, total: _progress_bar(done, total, "demo series generated"))


# Flags that set a configuration field: flag destination -> field. Their argparse default is
# None ("not given"): the defaults are the dataclasses' own, or those of a --config file.
BUILD_FLAGS = {"cube": "cube", "negatives": "negatives", "hard_share": "hard_share", "min_distance": "min_distance_mm",
               "jitter": "jitter", "jitter_mm": "jitter_mm", "seed": "seed"}
TRAIN_FLAGS = {"epochs": "epochs", "steps": "steps_per_epoch", "batch": "batch_size", "crop": "crop",
               "lr": "learning_rate", "seed": "seed", "precision": "precision"}
SCHEDULER_HELP = ("run on Dask: local:N (a cluster of N worker processes for this command) or a scheduler "
                  "address (tcp://host:8786; the data at the same paths on every worker); default "
                  "ANEURYSM_DASK_SCHEDULER, else this machine's processes")
MODEL_FLAGS = {"width": "width", "blocks": "blocks", "first_stage": "first_stage", "vessel_head": "vessel_head"}


def _given(args: argparse.Namespace, flags: dict[str, str]) -> dict:
    """The configuration fields set by flags present on the command line."""
    return {field: getattr(args, flag) for flag, field in flags.items() if getattr(args, flag) is not None}


def build_config(args: argparse.Namespace):
    """The build's configuration: `BuildConfig`'s defaults, or the ``--config`` file, with the
    flags given on top."""
    from pipeline.dataset.config import BuildConfig

    config = BuildConfig.from_file(args.config) if args.config else BuildConfig()
    changes = _given(args, BUILD_FLAGS)
    if args.modalities:
        changes["modalities"] = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    preprocess = {}
    if args.spacing is not None:
        preprocess["target_spacing"] = (args.spacing,) * 3
    if args.mr_tissue_level is not None:
        preprocess["mr_tissue_level"] = args.mr_tissue_level
    if preprocess:
        changes["preprocess"] = dataclasses.replace(config.preprocess, **preprocess)
    return dataclasses.replace(config, **changes)


def _build(args: argparse.Namespace) -> int:
    from pipeline.data import datasets_root
    from pipeline.dataset.build import balance_table, build_datasets
    from pipeline.executor import say

    try:
        config = build_config(args)
    except ValueError as exc:
        return _error(exc)
    data = _data_root(args.data)
    out = args.out or datasets_root()

    def progress(done: int, total: int, result) -> None:
        if args.progress_json:  # one JSON line per series, for the dashboard
            print(json.dumps({"done": done, "total": total, "series_uid": result.series_uid,
                              "modality": result.modality, "status": result.status, "reason": result.reason,
                              "cubes": 0 if result.labels is None else len(result.labels)}), flush=True)
        else:
            _progress_bar(done, total)

    try:
        manifest = build_datasets(data, out, config, workers=args.workers, use_cache=not args.no_cache,
                                  progress=progress, scheduler=args.scheduler,
                                  announce=(lambda text: print(json.dumps({"where": text}), flush=True))
                                  if args.progress_json else say)
    except ValueError as exc:
        return _error(exc)
    if args.progress_json:
        return 0
    _end_progress_bar()
    skipped = {uid: o for uid, o in manifest["series"].items() if o["status"] != "ok"}
    for uid, outcome in skipped.items():
        print(f"skipped {uid}: {outcome['reason']}", file=sys.stderr)
    for problem in manifest["problems"]:
        print(f"note: {problem}", file=sys.stderr)
    print(balance_table(manifest).to_string(index=False))
    print(f"{len(manifest['series']) - len(skipped)} series built, {len(skipped)} skipped, in {manifest['seconds']:.1f} s; "
          f"datasets and {out}/build_manifest.json written.")
    return 0


def train_config(args: argparse.Namespace):
    """The run's configuration: `TrainConfig`'s defaults, or the ``--config`` file, with the
    flags given on top; datasets from ``--datasets`` (else the file's, else data/datasets),
    narrowed to ``--modalities``.

    Raises:
        FileNotFoundError: no dataset where the datasets should be.
        ValueError: the configuration file or a flag cannot be used.
    """
    from pipeline.data import datasets_root
    from pipeline.dataset.store import dataset_files
    from pipeline.training.config import AugmentConfig, TrainConfig

    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    modalities = [m.strip() for m in args.modalities.split(",")] if args.modalities else None
    files = dataset_files(args.datasets or config.datasets or [str(datasets_root())], modalities)
    model = dataclasses.replace(config.model, **_given(args, MODEL_FLAGS))
    augment = AugmentConfig.preset(args.augment) if args.augment else config.augment
    return dataclasses.replace(config, datasets=files, model=model, augment=augment, **_given(args, TRAIN_FLAGS))


def _train(args: argparse.Namespace) -> int:
    from pipeline.data import runs_root
    from pipeline.runs import RunFolder
    from pipeline.training.distributed import World, current_world, launch
    from pipeline.training.trainer import check_world, train

    try:
        world = current_world()
    except ValueError as exc:
        return _error(exc)
    if world.distributed and not args.run:
        return _error("under torchrun every process must write to one run folder: name it with --run.")
    run = Path(args.run) if args.run else runs_root() / time.strftime("run-%Y%m%d-%H%M%S")
    processes = 1 if world.distributed or args.nproc_per_node is None else args.nproc_per_node
    config = None
    try:
        if processes < 1:
            raise ValueError(f"--nproc-per-node must be at least 1, not {processes}.")
        if not args.resume:
            config = train_config(args)
            check_world(config, None, World(0, processes))
    except (FileNotFoundError, ValueError) as exc:
        return _error(exc)
    if processes > 1:  # the same command in N processes, each told its rank by the launcher
        return launch([*args.argv[args.argv.index("train") + 1:], *([] if args.run else ["--run", str(run)])],
                      processes)
    from pipeline.model.precision import configure_training_process

    configure_training_process(world.local_size)

    def progress(record: dict) -> None:
        if record["kind"] == "epoch":
            auc, score = record["validation_auc"], record.get("series_score")
            print(f"epoch {record['epoch']:3d}  loss {record['train_loss']:.3f}  cube AUC "
                  f"{'n/a' if auc is None else f'{auc:.3f}'}"
                  f"{'' if score is None else f'  held-out series score {score:.3f}'}"
                  f"  {record['cubes_per_second']:.0f} cubes/s", flush=True)

    try:
        train(config, run, resume=args.resume, progress=progress, world=world)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        return _error(exc) if world.is_main else 2  # every rank has it; one says it
    if not world.is_main:
        return 0
    labelled = RunFolder(run).read_status().get("vessel_labelled_series")
    if labelled == 0:
        print("note: no training series has a vessel label map (segmentations/): the vessel head learnt nothing; "
              "--no-vessel-head trains without it.", file=sys.stderr)
    elif labelled is not None:
        print(f"vessel head: trained on the vessel labels of {labelled} training series")
    print(f"run folder: {run}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pipeline.inference.predictor import Predictor
    from pipeline.io.nifti import is_nifti

    if (args.sr or args.seg) and is_nifti(args.path):
        return _error("--sr and --seg write DICOM objects that refer to a DICOM source; for a NIfTI image write the "
                      "heatmap as NIfTI with --heatmap OUT.nii.gz")
    try:
        predictor = Predictor(args.model, flip=args.flip)
    except (FileNotFoundError, RuntimeError, KeyError, ValueError) as exc:
        return _error(f"the model could not be loaded: {str(exc).splitlines()[0]}")
    prediction = predictor.predict(args.path, series_uid=args.series, modality=args.modality)
    written = _write_outputs(args, predictor, prediction)
    if written is None:
        return 2
    if args.json:
        print(json.dumps(prediction.to_json()))
        return 0
    print(f"series {prediction.series_uid} ({prediction.modality})")
    for name, value in prediction.probabilities.items():
        print(f"{value:8.3f}  {name}")
    _print_candidates(prediction.candidates)
    print("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in prediction.timings.items()))
    for warning in prediction.warnings:
        print(f"warning: {warning}")
    for what, path in written:
        print(f"wrote {what}: {path}")
    return 0


def _print_candidates(candidates: list[dict]) -> None:
    """One row per candidate: probability, location, patient mm (LPS) and where it is in the
    source (a localizer's image, frame and pixel; or the NIfTI voxel)."""
    if not candidates:
        print("no candidate (no window reached 0.05)")
        return
    nifti = candidates[0]["SOPInstanceUID"] is None
    width = max(len(c["location"]) for c in candidates)
    where = "voxel i, j, k of the NIfTI file" if nifti else "  x px    y px  frame  SOPInstanceUID"
    print(f"{'#':>2}  {'p':>5}  {'location':<{width}}  {'L mm':>7} {'P mm':>7} {'S mm':>7}  {where}")
    for rank, candidate in enumerate(candidates, start=1):
        x, y, z = candidate["position_mm"]
        if nifti:
            source = ", ".join(f"{v:.1f}" for v in candidate["nifti_voxel"])
        else:
            pixel = candidate["coordinates"]
            source = f"{pixel['x']:6.1f}  {pixel['y']:6.1f}  {candidate['frame']:>5}  {candidate['SOPInstanceUID']}"
        print(f"{rank:>2}  {candidate['probability']:5.3f}  {candidate['location']:<{width}}  "
              f"{x:7.1f} {y:7.1f} {z:7.1f}  {source}")


def _write_outputs(args: argparse.Namespace, predictor, prediction) -> list[tuple[str, Path]] | None:
    """The files ``predict`` was asked for (--heatmap, --sr, --seg); None after saying why one
    could not be made."""
    from pipeline.io.nifti import save_nifti

    written = []
    if args.heatmap:
        heatmap, affine = prediction.heatmap_on_source()
        written.append(("heatmap (NIfTI, on the source grid)", save_nifti(args.heatmap, heatmap, affine)))
    if not (args.sr or args.seg):
        return written
    from pipeline.inference import export  # highdicom: imported only for the DICOM outputs (~0.3 s)

    algorithm = predictor.algorithm()
    makers = [(args.sr, "DICOM SR measurement report", export.structured_report),
              (args.seg, "DICOM Segmentation of the heatmap", export.segmentation)]
    for path, what, make in makers:
        if not path:
            continue
        try:
            written.append((what, export.save(make(prediction, algorithm), path)))
        except export.ExportError as exc:
            _error(exc)
            return None
    return written


def _predict_all(args: argparse.Namespace) -> int:
    from pipeline.inference.batch import failures_path, predict_all
    from pipeline.model.checkpoint import CheckpointError

    def progress(done: int, total: int, uid: str) -> None:
        if args.progress_json:
            print(json.dumps({"done": done, "total": total, "series_uid": uid}), flush=True)
        else:
            _progress_bar(done, total)

    try:
        summary = predict_all(args.data, args.out, args.model, workers=args.workers, progress=progress,
                              scheduler=args.scheduler)
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        return _error(exc)
    if args.progress_json:
        print(json.dumps({"summary": summary}), flush=True)
        return 0
    _end_progress_bar()
    out = Path(args.out)
    print(f"{summary['series']} series in {out}: {summary['scored']} scored now, {summary['already_done']} already "
          f"there, {summary['fell_back']} given the fallback (reasons in {failures_path(out)}), "
          f"in {summary['seconds']:.1f} s")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pipeline.inference.evaluate import evaluate_run
    from pipeline.io.nifti_datasets import is_nifti_dataset

    if args.families:
        return _evaluate_families(args)
    if args.test_set and is_nifti_dataset(args.test_set):
        return _evaluate_nifti(args)
    what = "test-set series" if args.test_set else "held-out series"
    try:
        result = evaluate_run(args.run, args.test_set or _data_root(args.data), flip=args.flip, test_set=bool(args.test_set),
                              progress=lambda done, total: _progress_bar(done, total, what),
                              scheduler=args.scheduler, workers=args.workers)
    except (ValueError, FileNotFoundError) as exc:
        return _error(exc)
    _end_progress_bar()
    name = f"test set '{result['test_set']}'" if args.test_set else "held-out series"
    print(f"{name}: {result['series']} series; {_figures(result)}; mean location AUC "
          f"{_number(result['location_auc_mean'])} ({result['locations_defined']} of 13 locations defined)")
    for modality, part in result["per_modality"].items():
        print(f"  {modality}: {part['series']} series; {_figures(part)}")
    fit = result.get("calibration_fit")
    if fit and fit["fitted"]:
        print(f"calibrated on these series (stored in {Path(args.run) / 'best.pt'}): log-loss "
              f"{fit['log_loss_before']:.3f} -> {fit['log_loss_after']:.3f}, mean Aneurysm Present of the negatives "
              f"{fit['negatives_mean_before']:.3f} -> {fit['negatives_mean_after']:.3f}")
    elif fit:
        print(f"not calibrated: {fit['reason']}")
    elif args.test_set:
        print("scored " + ("with" if result.get("calibrated") else "without") + " a calibration")
    return 0


def _evaluate_nifti(args: argparse.Namespace) -> int:
    from pipeline.inference.evaluate import evaluate_nifti_set

    try:
        result = evaluate_nifti_set(args.run, args.test_set, args.layout, args.modality, flip=args.flip,
                                    progress=lambda done, total: _progress_bar(done, total, "cases"))
    except (IngestError, ValueError, FileNotFoundError) as exc:
        return _error(exc)
    _end_progress_bar()
    print(f"test set '{result['test_set']}': {result['series']} cases ({result['positives']} with an aneurysm, "
          f"{result['froc']['aneurysms']} aneurysms); {_figures(result)} (no location labels in this layout: "
          "the location AUCs and the final score are undefined)")
    for case, reason in result["skipped"].items():
        print(f"  skipped {case}: {reason}")
    return 0


def _evaluate_families(args: argparse.Namespace) -> int:
    from pipeline.data import validation_root
    from pipeline.validation import evaluate_families

    if args.test_set:
        return _error("--families scores every validation set; --test-set scores one: give one of them")
    state = {"name": None}

    def report(name: str, what: str, done: int, total: int) -> None:
        if state["name"] != (name, what):
            _end_progress_bar()
            state["name"] = (name, what)
        _progress_bar(done, total, f"{name}: {what}")

    try:
        results = evaluate_families(args.run, args.validation_dir or validation_root(), flip=args.flip, report=report,
                                    scheduler=args.scheduler, workers=args.workers)
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as exc:
        return _error(exc)
    _end_progress_bar()
    for name, result in results.items():
        print(f"{name}: {result['series']} series; {_figures(result)}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from pipeline.io.rsna import ERROR, FINDING_COLUMNS, check_data_folder, findings_table

    findings = check_data_folder(args.data)
    errors = sum(f.severity == ERROR for f in findings)
    if args.json:
        print(json.dumps([dataclasses.asdict(f) for f in findings]))
    elif findings:
        rows = [FINDING_COLUMNS, *findings_table(findings).itertuples(index=False)]
        widths = [max(len(row[k]) for row in rows) for k in range(3)]
        for row in rows:  # left-aligned columns; the sentence last, whole
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    print(f"{args.data}: {errors} error(s), {len(findings) - errors} warning(s)"
          + ("; a build can use it." if not errors else "; fix the errors before a build."), file=sys.stderr)
    return 2 if errors else 0


def _number(value) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _figures(result: dict) -> str:
    sensitivity = result.get("froc", {}).get("sensitivity") or result.get("froc_sensitivity") or {}
    froc = ", ".join(f"{_number(value)} at {rate}" for rate, value in sensitivity.items())
    return (f"final score {_number(result['final_score'])}, Aneurysm Present AUC {_number(result['aneurysm_present_auc'])}, "
            f"mean Aneurysm Present of negatives {_number(result['negative_mean_present'])} "
            f"/ of positives {_number(result['positive_mean_present'])}"
            + (f"; FROC sensitivity {froc} false positives per case" if froc else ""))


MODALITY_HELP = "CT or MR (or CTA, MRA, MRI T2, MRI T1post): needed for a NIfTI image, whose header does not say"


def build_parser() -> argparse.ArgumentParser:
    from pipeline.dataset.config import BuildConfig
    from pipeline.model.config import PRECISIONS
    from pipeline.training.config import AUGMENTATIONS, TrainConfig

    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    scan = commands.add_parser("scan", help="list the DICOM series in a folder or file (headers only)")
    scan.add_argument("path")
    scan.add_argument("--json", action="store_true", help="one JSON object on standard output")
    scan.set_defaults(handler=_scan)

    inspect = commands.add_parser("inspect", help="read one series, preprocess it and describe the result")
    inspect.add_argument("path", help="a DICOM folder, file or .zip, or a NIfTI image (.nii, .nii.gz)")
    inspect.add_argument("--series", help="SeriesInstanceUID, when the path holds several series")
    inspect.add_argument("--modality", help=MODALITY_HELP)
    inspect.add_argument("--json", action="store_true", help="one JSON object on standard output")
    inspect.set_defaults(handler=_inspect)

    demo = commands.add_parser("demo-data", help="write synthetic phantoms (RSNA layout): the demo family, a "
                                                 "shifted copy of it, or the external validation family")
    demo.add_argument("--out", help="destination folder, must not exist or be empty (default: data/demo)")
    demo.add_argument("--family", choices=("demo", "external"), default="demo",
                      help="demo: the training family (default); external: written independently, validation only")
    demo.add_argument("--shift", help="a controlled change of the demo family, e.g. 'calibre=0.7' or 'noise=2,slice=2' "
                                      "(calibre, contrast, noise, slice, pixel, head: factors; rotation: degrees)")
    demo.add_argument("--randomise", action="store_true",
                      help="domain randomisation: draw anatomy, contrast and scanner from wide ranges "
                           "(measured: it did not help the default model yet; see the README)")
    demo.add_argument("--series", type=int, default=None,
                      help=f"number of series (default {DEMO_SERIES_DEFAULT}; external {EXTERNAL_SERIES_DEFAULT})")
    demo.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    demo.add_argument("--workers", type=int, default=None, help="processes (default: cores, at most 4)")
    demo.add_argument("--scheduler", help=SCHEDULER_HELP)
    demo.set_defaults(handler=_demo_data)

    build = commands.add_parser("build", help="cut 48-voxel training cubes into one .npz per modality")
    build.add_argument("--data", help="data folder in the RSNA layout (default: ANEURYSM_DATA, else the demo data)")
    build.add_argument("--out", help="output folder (default: data/datasets)")
    build.add_argument("--workers", type=int, default=None, help="processes (default: cores, at most 4)")
    build.add_argument("--scheduler", help=SCHEDULER_HELP)
    build.add_argument("--config", metavar="FILE", help="a BuildConfig as JSON (what the dashboard passes); "
                                                        "the flags below override its values")
    build_defaults = BuildConfig()
    build.add_argument("--cube", type=int, help=f"cube side in voxels (default {build_defaults.cube})")
    build.add_argument("--negatives", type=int, help=f"negative cubes per series (default {build_defaults.negatives})")
    build.add_argument("--hard-share", type=float,
                       help=f"share of negatives on vessels (default {build_defaults.hard_share})")
    build.add_argument("--min-distance", type=float,
                       help=f"mm from any aneurysm to a negative (default {build_defaults.min_distance_mm})")
    build.add_argument("--jitter", type=int, help=f"jittered copies per positive cube (default {build_defaults.jitter})")
    build.add_argument("--jitter-mm", type=float,
                       help=f"largest shift of a jittered copy per axis, mm (default {build_defaults.jitter_mm})")
    build.add_argument("--spacing", type=float,
                       help=f"isotropic target spacing, mm (default {build_defaults.preprocess.target_spacing[0]})")
    build.add_argument("--mr-tissue-level", type=float,
                       help="anchor MR intensities on the head's tissue: its median goes to this level, e.g. 0.25 "
                            "(default: the percentiles alone)")
    build.add_argument("--modalities", help="comma-separated subset, e.g. 'CTA,MRA' (default: all four)")
    build.add_argument("--seed", type=int, help=f"sampling seed (default {build_defaults.seed})")
    build.add_argument("--no-cache", action="store_true", help="do not reuse or keep preprocessed volumes")
    build.add_argument("--progress-json", action="store_true", help="one JSON line per series on standard output")
    build.set_defaults(handler=_build)

    train = commands.add_parser("train", help="train the cube model on built datasets (resumable)")
    train.add_argument("--datasets", nargs="*", help="dataset folders or .npz files (default: data/datasets)")
    train.add_argument("--modalities", help="comma-separated subset of the datasets, e.g. 'CTA,MRA'")
    train.add_argument("--run", "--run-folder", dest="run",
                       help="run folder (default: runs/run-<time>); under torchrun write --run-folder (torchrun's own "
                            "parser takes --run for its --run-path)")
    train.add_argument("--resume", action="store_true", help="continue the run in --run from its last checkpoint")
    train.add_argument("--config", metavar="FILE", help="a TrainConfig as JSON (what the dashboard passes); "
                                                        "the flags below override its values")
    train_defaults = TrainConfig()
    train.add_argument("--epochs", type=int, help=f"epochs (default {train_defaults.epochs})")
    train.add_argument("--steps", type=int, help=f"steps per epoch (default {train_defaults.steps_per_epoch})")
    train.add_argument("--batch", type=int, help=f"crops per step (default {train_defaults.batch_size})")
    train.add_argument("--crop", type=int, help="voxels per side of a training crop, a multiple of 16 "
                                                f"(default {train_defaults.crop})")
    train.add_argument("--lr", type=float, help=f"peak learning rate (default {train_defaults.learning_rate})")
    train.add_argument("--width", type=int, help=f"channels of the first stage (default {train_defaults.model.width})")
    train.add_argument("--blocks", type=int, help=f"residual blocks per stage (default {train_defaults.model.blocks})")
    train.add_argument("--no-first-stage", dest="first_stage", action="store_const", const=False, default=None,
                       help="without the first stage (at the stem's resolution): half the multiply-adds")
    train.add_argument("--vessel-head", dest="vessel_head", action=argparse.BooleanOptionalAction, default=None,
                       help="vessel-aware training: a vessel segmentation head trained on the series that have "
                            "vessel label maps (segmentations/) (default "
                            f"{'on' if train_defaults.model.vessel_head else 'off'})")
    train.add_argument("--precision", choices=PRECISIONS, help=f"(default {train_defaults.precision})")
    train.add_argument("--augment", choices=AUGMENTATIONS,
                       help="intensity and resolution augmentation: mild (default) or strong (nnU-Net strength)")
    train.add_argument("--seed", type=int, help=f"split, initialisation and batches (default {train_defaults.seed})")
    train.add_argument("--nproc-per-node", type=int, metavar="N",
                       help="train data-parallel in N processes on this machine (torch DDP: gloo on the CPU, one GPU "
                            "each with CUDA); the batch is shared between them. Several machines: torchrun, see "
                            "the README")
    train.set_defaults(handler=_train)

    predict = commands.add_parser("predict", help="the 14 RSNA probabilities of one series (folder, files or .zip) "
                                                  "or NIfTI image")
    predict.add_argument("path", help="a DICOM folder, file or .zip, or a NIfTI image (.nii, .nii.gz)")
    predict.add_argument("--modality", help=MODALITY_HELP)
    predict.add_argument("--heatmap", metavar="OUT.nii.gz", help="also write the heatmap on the image's own grid as "
                                                                  "NIfTI (it overlays the image in 3D Slicer or ITK)")
    predict.add_argument("--sr", metavar="OUT.dcm", help="also write a DICOM SR measurement report (TID 1500): the "
                                                          "probabilities and a 3D point per candidate (DICOM input)")
    predict.add_argument("--seg", metavar="OUT.dcm", help="also write the heatmap as a DICOM Segmentation (fractional, "
                                                           "probability) on the series' grid (DICOM input)")
    predict.add_argument("--model", help="checkpoint (default: the shipped demo model)")
    predict.add_argument("--series", help="SeriesInstanceUID, when the path holds several series")
    predict.add_argument("--no-flip", dest="flip", action="store_false",
                         help="score the volume once, without averaging with its left-right mirror (twice as fast)")
    predict.add_argument("--json", action="store_true", help="one JSON object on standard output")
    predict.set_defaults(handler=_predict)

    predict_all = commands.add_parser("predict-all", help="score every series of a data folder into the challenge's "
                                                         "submission table (resumable)")
    predict_all.add_argument("data", help="a data folder (series/<SeriesInstanceUID>/...), or a folder of series folders")
    predict_all.add_argument("--out", required=True, help="the CSV table (SeriesInstanceUID and the 14 columns); an "
                                                          "existing one is continued")
    predict_all.add_argument("--model", help="checkpoint (default: the shipped demo model)")
    predict_all.add_argument("--workers", type=int, default=1,
                             help="processes, each with its own copy of the model (default 1)")
    predict_all.add_argument("--scheduler", help=SCHEDULER_HELP)
    predict_all.add_argument("--progress-json", action="store_true",
                             help="one JSON line per series on stdout ({done, total, series_uid}) and the summary "
                                  "as a last JSON line, for the dashboard")
    predict_all.set_defaults(handler=_predict_all)

    evaluate = commands.add_parser("evaluate", help="score a run's held-out series with the RSNA metric")
    evaluate.add_argument("--run", required=True)
    evaluate.add_argument("--data", help="data folder (default: ANEURYSM_DATA, else the demo data)")
    evaluate.add_argument("--no-flip", dest="flip", action="store_false",
                          help="score each series once, without the left-right mirrored pass")
    evaluate.add_argument("--test-set", metavar="DIR",
                          help="score every series of another dataset the run never saw, e.g. the external family or a "
                               "shifted demo (writes test_sets/<family>.json)")
    evaluate.add_argument("--families", action="store_true",
                          help="score every validation set (the demo test seed, each controlled shift, the external "
                               "family), generating the missing ones first")
    evaluate.add_argument("--validation-dir", metavar="DIR",
                          help="where the validation sets are kept (default: ANEURYSM_VALIDATION_DIR, else data/validation)")
    evaluate.add_argument("--workers", type=int, default=1,
                          help="processes scoring the series on this machine, each with its own copy of the model "
                               "(default 1: this process, torch on every core)")
    evaluate.add_argument("--scheduler", help=SCHEDULER_HELP)
    evaluate.add_argument("--layout", choices=("auto", "adam", "bids"), default="auto",
                          help="a --test-set of NIfTI images: ADAM-style case folders or BIDS-style sub-*/ses-*/anat "
                               "(default: told apart by the folder)")
    evaluate.add_argument("--modality", default="MRA",
                          help="the modality of a NIfTI --test-set's images (default MRA: the public sets are TOF-MRA)")
    evaluate.set_defaults(handler=_evaluate)

    validate = commands.add_parser("validate", help="check a data folder before a build (tables, identifiers, "
                                                    "localizers, series folders); exit 2 when it has errors")
    validate.add_argument("data", help="a data folder in the RSNA layout")
    validate.add_argument("--json", action="store_true", help="the findings as one JSON list")
    validate.set_defaults(handler=_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # train --nproc-per-node starts the same command in each process
    try:
        return args.handler(args)
    except (IngestError, StorageError) as exc:
        return _error(exc)
    except OSError as exc:  # a full or failing disk wherever it strikes: one line, not a traceback
        if (error := storage_error(exc, f"running {args.command}")) is None:
            raise
        return _error(error)


if __name__ == "__main__":
    sys.exit(main())
