"""Reading a data folder in the RSNA layout: ``train.csv``, ``train_localizers.csv``, ``series/``."""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.errors import IngestError
from pipeline.labels import LABEL_COLUMNS, LOCATIONS

# A DICOM UID: digits in dot-separated components without leading zeros, at most 64
# characters. Series UIDs become folder and file names: anything else (``../``, ``/``) is refused.
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
UID_LENGTH = 64


def is_uid(text) -> bool:
    """Whether ``text`` is a valid DICOM UID (and so a safe file name)."""
    return isinstance(text, str) and len(text) <= UID_LENGTH and _UID.fullmatch(text) is not None


def _read_csv(path: Path, dtype) -> pd.DataFrame:
    """A CSV file (``dtype``: pandas' column types), or one sentence saying why it cannot be read."""
    try:
        return pd.read_csv(path, dtype=dtype)
    except pd.errors.EmptyDataError:
        raise IngestError(f"{path.name} is empty.") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise IngestError(f"{path.name} cannot be read as CSV ({first[:160]}).") from None


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
    """``train.csv``, checked: the columns, every SeriesInstanceUID a DICOM UID (it names a
    folder), no series twice, and every label 0 or 1 (as integers).

    Raises:
        IngestError: one sentence naming the first problem (file, row, column).
    """
    path = Path(root) / "train.csv"
    if not path.is_file():
        raise IngestError(f"{root} has no train.csv: it is not a data folder in the RSNA layout.")
    table = _read_csv(path, {name: str for name in ("SeriesInstanceUID", "Modality", *LABEL_COLUMNS)})
    missing = [c for c in ("SeriesInstanceUID", "Modality", *LABEL_COLUMNS) if c not in table.columns]
    if missing:
        raise IngestError(f"train.csv lacks the column(s): {', '.join(missing)}.")
    for column in ("SeriesInstanceUID", "Modality", *LABEL_COLUMNS):
        table[column] = table[column].fillna("").str.strip()
    for index, uid in table["SeriesInstanceUID"].items():
        if not is_uid(uid):
            raise IngestError(f"train.csv row {index + 2}: {uid[:80]!r} is not a DICOM SeriesInstanceUID "
                              f"(digits and dots, at most {UID_LENGTH} characters).")
    repeated = table["SeriesInstanceUID"][table["SeriesInstanceUID"].duplicated()]
    if len(repeated):
        raise IngestError(f"train.csv lists series {repeated.iloc[0]} more than once "
                          f"({int(table['SeriesInstanceUID'].duplicated(keep=False).sum())} rows).")
    for column in LABEL_COLUMNS:
        values = table[column]
        wrong = ~values.isin(["0", "1"])
        if wrong.any():
            index = int(wrong.idxmax())
            raise IngestError(f"train.csv row {index + 2}, column {column!r}: {values[index][:40]!r} is not 0 or 1.")
        table[column] = values.astype(int)
    return table


def parse_coordinates(text: str) -> tuple[float, float, int]:
    """``"{'x': 258.36, 'y': 261.36}"`` (and ``'f'`` for multi-frame) -> (x, y, frame), safely."""
    value = ast.literal_eval(text)
    if not isinstance(value, dict) or "x" not in value or "y" not in value:
        raise ValueError(f"not a coordinate dict: {text[:80]!r}")
    x, y, frame = float(value["x"]), float(value["y"]), float(value.get("f", 0))
    if not all(math.isfinite(v) for v in (x, y, frame)) or frame < 0 or frame != int(frame):
        raise ValueError(f"coordinates out of range: {text[:80]!r}")
    return x, y, int(frame)


def read_localizers(root: Path) -> tuple[dict[str, list[Localizer]], list[str]]:
    """Localizers by series, and one sentence per row that could not be used (an empty or
    missing file: no localizer, and a sentence saying so).

    Raises:
        IngestError: the file is not readable as CSV.
    """
    path = Path(root) / "train_localizers.csv"
    if not path.is_file():
        return {}, [f"{root} has no train_localizers.csv: no aneurysm position is known."]
    if path.stat().st_size == 0:
        return {}, ["train_localizers.csv is empty: no aneurysm position is known."]
    table = _read_csv(path, str).fillna("")
    by_series: dict[str, list[Localizer]] = {}
    problems = []
    for index, row in table.iterrows():
        try:
            x, y, frame = parse_coordinates(row["coordinates"])
            if row["location"] not in LOCATIONS:
                raise ValueError(f"unknown location {row['location'][:80]!r}")
            for column in ("SeriesInstanceUID", "SOPInstanceUID"):
                if not is_uid(row[column].strip()):
                    raise ValueError(f"{column} {row[column][:80]!r} is not a DICOM UID")
        except (ValueError, SyntaxError, TypeError, KeyError, OverflowError, MemoryError, RecursionError) as exc:
            problems.append(f"train_localizers.csv row {index + 2} was skipped: {exc}")
            continue
        localizer = Localizer(row["SeriesInstanceUID"].strip(), row["SOPInstanceUID"].strip(), x, y, frame,
                              row["location"])
        by_series.setdefault(localizer.series_uid, []).append(localizer)
    return by_series, problems
