"""What each use of a vessel head's output adds (`pipeline.inference.predictor.VESSEL_EVIDENCE`).

    .venv/bin/python tools/vessel_evidence.py RUN [--data DIR] [--test-set DIR ...]

Scores the run's ``best.pt`` (a model trained with ``--vessel-head``) on its held-out series of
``--data`` (default: the data folder) and on every series of each ``--test-set``, once per
series through the network, with no vessel evidence, the gate, the artery locations, and
both; prints the final score, Aneurysm Present AUC, mean location AUC, the negatives' mean
Aneurysm Present and the FROC at 1 false positive per case of each, and writes them to
``RUN/vessel_evidence.json``. Uncalibrated: a calibration is fitted to one way of scoring.
Choose on the held-out rows; the test sets are reported, not tuned on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.data import data_root
from pipeline.errors import IngestError
from pipeline.files import write_json
from pipeline.inference.evaluate import prediction_row, scored_figures
from pipeline.inference.predictor import Predictor
from pipeline.io.image import read_image
from pipeline.io.rsna import read_localizers, read_train
from pipeline.phantoms import aneurysm_diameters, family_label, read_family
from pipeline.preprocess.transforms import preprocess
from pipeline.runs import RunFolder

VARIANTS = {"none": (), "gate": ("gate",), "artery": ("artery",), "gate + artery": ("gate", "artery")}


def score_set(predictor: Predictor, root: Path, series: list[str]) -> dict[str, dict]:
    """The evaluation figures of each variant on ``series`` of ``root``."""
    table = read_train(root).set_index("SeriesInstanceUID")
    localizers, _ = read_localizers(root)
    diameters = aneurysm_diameters(root)
    rows: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for done, uid in enumerate(series, start=1):
        try:
            processed = preprocess(read_image(root / "series" / uid), predictor.preprocess)
        except IngestError as exc:
            print(f"  skipped {uid}: {exc}", file=sys.stderr)
            continue
        scores = predictor.score(processed.array)
        for name, evidence in VARIANTS.items():
            predictor.vessel_evidence = evidence
            prediction = predictor.predict_processed(processed, scores=scores)
            rows[name].append(prediction_row(prediction, uid, str(table.loc[uid, "Modality"]), localizers.get(uid, []),
                                           diameters.get(uid, {})))
        print(f"\r  {done}/{len(series)} series", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {name: scored_figures(part, table) for name, part in rows.items()}


def summary(figures: dict) -> dict:
    return {"final_score": figures["final_score"], "aneurysm_present_auc": figures["aneurysm_present_auc"],
            "location_auc_mean": figures["location_auc_mean"],
            "negative_mean_present": figures["negative_mean_present"],
            "froc_at_1": figures["froc"]["sensitivity"].get("1"), "series": figures["series"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, help="the data folder of the run's held-out series")
    parser.add_argument("--test-set", type=Path, action="append", default=[], help="a dataset the run never saw")
    args = parser.parse_args(argv)
    folder = RunFolder(args.run)
    predictor = Predictor(folder.best, calibrated=False)
    if not predictor.meta.model.vessel_head:
        print(f"{folder.best} has no vessel head: train it with --vessel-head.", file=sys.stderr)
        return 2
    root = args.data or data_root()
    held_out = [uid for uid in folder.read_split()["validation"]
                if uid in set(read_train(root)["SeriesInstanceUID"])]
    sets = [("held-out", root, held_out)]
    sets += [(family_label(read_family(t), t), t, list(read_train(t)["SeriesInstanceUID"])) for t in args.test_set]
    report, start = {}, time.perf_counter()
    for name, set_root, series in sets:
        print(f"{name}: {len(series)} series", file=sys.stderr)
        report[name] = {variant: summary(f) for variant, f in score_set(predictor, set_root, series).items()}
    print(f"{'set':<12} {'evidence':<14} {'final':>6} {'AP AUC':>7} {'loc AUC':>8} {'neg mean':>9} {'FROC@1':>7}")
    for name, variants in report.items():
        for variant, row in variants.items():
            print(f"{name:<12} {variant:<14} {row['final_score']:>6.3f} {row['aneurysm_present_auc']:>7.3f} "
                  f"{row['location_auc_mean']:>8.3f} {row['negative_mean_present']:>9.3f} {row['froc_at_1']:>7.2f}")
    write_json(folder.path / "vessel_evidence.json", {"seconds": round(time.perf_counter() - start, 1), **report})
    return 0


if __name__ == "__main__":
    sys.exit(main())
