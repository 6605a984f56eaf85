"""Reading a data folder in the RSNA layout: ``train.csv``, ``train_localizers.csv``, ``series/``."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.errors import IngestError
from pipeline.labels import LABEL_COLUMNS, LOCATIONS


@dataclass(frozen=True)
class Localizer:
    """One row of ``train_localizers.csv``: a point of a source image and its location."""

    series_uid: str
    sop_uid: str
    x: float
    y: float
    frame: int
    location: str


def read_train(root: Path) -> pd.DataFrame:
    """``train.csv`` with its label columns checked."""
    path = Path(root) / "train.csv"
    if not path.is_file():
        raise IngestError(f"{root} has no train.csv: it is not a data folder in the RSNA layout.")
    table = pd.read_csv(path, dtype={"SeriesInstanceUID": str})
    missing = [c for c in ("SeriesInstanceUID", "Modality", *LABEL_COLUMNS) if c not in table.columns]
    if missing:
        raise IngestError(f"train.csv lacks the column(s): {', '.join(missing)}.")
    return table


def parse_coordinates(text: str) -> tuple[float, float, int]:
    """``"{'x': 258.36, 'y': 261.36}"`` (and ``'f'`` for multi-frame) -> (x, y, frame), safely."""
    value = ast.literal_eval(text)
    if not isinstance(value, dict) or "x" not in value or "y" not in value:
        raise ValueError(f"not a coordinate dict: {text!r}")
    return float(value["x"]), float(value["y"]), int(value.get("f", 0))


def read_localizers(root: Path) -> tuple[dict[str, list[Localizer]], list[str]]:
    """Localizers by series, and one sentence per row that could not be used."""
    path = Path(root) / "train_localizers.csv"
    if not path.is_file():
        return {}, [f"{root} has no train_localizers.csv: no aneurysm position is known."]
    table = pd.read_csv(path, dtype=str)
    by_series: dict[str, list[Localizer]] = {}
    problems = []
    for index, row in table.iterrows():
        try:
            x, y, frame = parse_coordinates(row["coordinates"])
            if row["location"] not in LOCATIONS:
                raise ValueError(f"unknown location {row['location']!r}")
        except (ValueError, SyntaxError, TypeError, KeyError) as exc:
            problems.append(f"train_localizers.csv row {index + 2} was skipped: {exc}")
            continue
        localizer = Localizer(row["SeriesInstanceUID"], row["SOPInstanceUID"], x, y, frame, row["location"])
        by_series.setdefault(localizer.series_uid, []).append(localizer)
    return by_series, problems
