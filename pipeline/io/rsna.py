"""Reading a data folder in the RSNA layout: ``train.csv``, ``train_localizers.csv``, ``series/``,
and the optional vessel label maps ``segmentations/<uid>/<uid>_cowseg.nii[.gz]``."""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.errors import IngestError
from pipeline.labels import ANEURYSM_PRESENT, LABEL_COLUMNS, LOCATIONS, MODALITIES

# A DICOM UID: digits in dot-separated components without leading zeros, at most 64
# characters. Series UIDs become folder and file names: anything else (``../``, ``/``) is refused.
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
UID_LENGTH = 64


SEGMENTATIONS = "segmentations"
VESSEL_LABEL_SUFFIX = "_cowseg"


def vessel_labels_path(root: str | Path, series_uid: str, gzipped: bool = True) -> Path:
    """Where the vessel label map of a series goes in a data folder (the demo gzips it: a
    label map is mostly zeros)."""
    return Path(root) / SEGMENTATIONS / series_uid / f"{series_uid}{VESSEL_LABEL_SUFFIX}.nii{'.gz' * gzipped}"


def find_vessel_labels(root: str | Path, series_uid: str) -> Path | None:
    """The vessel label map of a series (``.nii`` as in the RSNA data, or ``.nii.gz``), if any."""
    for gzipped in (False, True):
        path = vessel_labels_path(root, series_uid, gzipped)
        if path.is_file():
            return path
    return None


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


@dataclass(frozen=True)
class Finding:
    """One thing wrong in a data folder.

    ``severity``: `ERROR` (the folder cannot be built from as it is) or `WARNING` (a row or a
    series is left out, or something looks inconsistent); ``file``: the file or folder;
    ``row``: its line in a CSV file (the header is line 1); ``message``: one sentence.
    """

    severity: str
    file: str
    row: int | None
    message: str


ERROR, WARNING = "error", "warning"
FINDING_COLUMNS = ("Severity", "File", "Row", "Problem")
TRAIN_COLUMNS = ("SeriesInstanceUID", "Modality", *LABEL_COLUMNS)


def read_train(root: Path) -> pd.DataFrame:
    """``train.csv``, checked: the columns, every SeriesInstanceUID a DICOM UID (it names a
    folder), no series twice, and every label 0 or 1 (as integers).

    Raises:
        IngestError: one sentence naming the first problem (file, row, column).
    """
    table = _train_table(root)
    errors = [f for f in train_findings(table) if f.severity == ERROR]
    if errors:
        raise IngestError(errors[0].message)
    for column in LABEL_COLUMNS:
        table[column] = table[column].astype(int)
    return table


def _train_table(root: Path) -> pd.DataFrame:
    """``train.csv`` as text, its columns present and cells stripped."""
    path = Path(root) / "train.csv"
    if not path.is_file():
        raise IngestError(f"{root} has no train.csv: it is not a data folder in the RSNA layout.")
    table = _read_csv(path, {name: str for name in TRAIN_COLUMNS})
    missing = [c for c in TRAIN_COLUMNS if c not in table.columns]
    if missing:
        raise IngestError(f"train.csv lacks the column(s): {', '.join(missing)}.")
    for column in TRAIN_COLUMNS:
        table[column] = table[column].fillna("").str.strip()
    return table


def train_findings(table: pd.DataFrame) -> list[Finding]:
    """Everything wrong in ``train.csv`` read as text (`_train_table`): identifiers that are not
    DICOM UIDs, series listed twice, labels other than 0 or 1 (errors), unknown modalities and
    labels that contradict each other (warnings)."""
    findings = []
    for index, uid in table["SeriesInstanceUID"].items():
        if not is_uid(uid):
            findings.append(Finding(ERROR, "train.csv", index + 2, f"train.csv row {index + 2}: {uid[:80]!r} is not a "
                                    f"DICOM SeriesInstanceUID (digits and dots, at most {UID_LENGTH} characters)."))
    uids = table["SeriesInstanceUID"]
    for uid in uids[uids.duplicated()].unique():
        rows = [int(i) + 2 for i in uids.index[uids == uid]]
        findings.append(Finding(ERROR, "train.csv", rows[1], f"train.csv lists series {uid[:80]} more than once "
                                f"({len(rows)} rows: {', '.join(map(str, rows[:5]))})."))
    for column in LABEL_COLUMNS:
        values = table[column]
        for index in values.index[~values.isin(["0", "1"])]:
            findings.append(Finding(ERROR, "train.csv", int(index) + 2, f"train.csv row {int(index) + 2}, column "
                                    f"{column!r}: {values[index][:40]!r} is not 0 or 1."))
    for index, modality in table["Modality"].items():
        if modality not in MODALITIES:
            findings.append(Finding(WARNING, "train.csv", int(index) + 2,
                                    unknown_modality(table["SeriesInstanceUID"][index], modality)))
    labels = table[list(LABEL_COLUMNS)]
    if labels.isin(["0", "1"]).all(axis=None):
        present, located = labels[ANEURYSM_PRESENT] == "1", (labels[list(LOCATIONS)] == "1").any(axis=1)
        for index in table.index[present != located]:
            what = "no location is marked" if present[index] else "a location is marked"
            findings.append(Finding(WARNING, "train.csv", int(index) + 2, f"train.csv row {int(index) + 2}: "
                                    f"Aneurysm Present is {labels[ANEURYSM_PRESENT][index]} but {what}."))
    return findings


def unknown_modality(uid: str, modality: str) -> str:
    """What a build says of a series whose modality the model does not know."""
    return (f"Series {uid[:80]} has the modality {modality[:40]!r}, which the model does not know "
            f"({', '.join(MODALITIES)}): a build leaves it out.")


def check_data_folder(root: str | Path) -> list[Finding]:
    """Check a data folder before a build: ``train.csv`` (columns, types, identifiers,
    duplicates, modalities, labels), ``train_localizers.csv`` (every row usable, its series
    listed, positive series located, negative ones not) and ``series/`` (a folder with files
    for every series listed, none unlisted). Reads no image: fast on a million files.

    Returns every finding, errors first; an empty list: the folder is fit to build from.
    """
    root = Path(root)
    try:
        table = _train_table(root)
    except IngestError as exc:
        return [Finding(ERROR, "train.csv", None, str(exc))]
    findings = train_findings(table)
    listed = {uid for uid in table["SeriesInstanceUID"] if is_uid(uid)}  # the others are errors already
    positive = listed & set(table["SeriesInstanceUID"][table[ANEURYSM_PRESENT] == "1"])
    try:
        localizers, problems = read_localizers(root)
    except IngestError as exc:
        localizers, problems = {}, [str(exc)]
    findings += [Finding(WARNING, "train_localizers.csv", _row_of(p), p) for p in problems]
    for uid in sorted(set(localizers) - listed):
        findings.append(Finding(WARNING, "train_localizers.csv", None, f"Series {uid} has localizers but is not "
                                "listed in train.csv: they are not used."))
    for uid in sorted(positive - set(localizers)):
        findings.append(Finding(WARNING, "train_localizers.csv", None, f"Series {uid} is positive but has no "
                                "localizer: a build cannot place its aneurysms and leaves it out."))
    for uid in sorted((set(localizers) & listed) - positive):
        findings.append(Finding(WARNING, "train_localizers.csv", None, f"Series {uid} has localizers but "
                                "Aneurysm Present is not 1 in train.csv."))
    findings += _series_findings(root, listed)
    return sorted(findings, key=lambda f: f.severity != ERROR)


def _series_findings(root: Path, listed: set[str]) -> list[Finding]:
    folder = root / "series"
    if not folder.is_dir():
        return [Finding(ERROR, "series/", None, f"{root} has no series/ folder: no image can be read.")]
    present = {entry.name for entry in folder.iterdir() if entry.is_dir()}
    findings = [Finding(WARNING, "series/", None, f"Series {uid} is listed in train.csv but has no folder under "
                        "series/: a build leaves it out.") for uid in sorted(listed - present)]
    findings += [Finding(WARNING, "series/", None, f"The folder series/{name[:80]} is not listed in train.csv: "
                         "it is not used.") for name in sorted(present - listed)]
    for uid in sorted(listed & present):
        if not any(path.is_file() for path in (folder / uid).rglob("*")):
            findings.append(Finding(WARNING, "series/", None, f"The folder series/{uid} holds no file: a build "
                                    "leaves the series out."))
    return findings


def _row_of(problem: str) -> int | None:
    match = re.search(r"row (\d+)", problem)
    return int(match[1]) if match else None


def findings_table(findings: list[Finding]) -> pd.DataFrame:
    """The findings as the table the CLI prints and the Exploration page shows."""
    return pd.DataFrame([(f.severity, f.file, "" if f.row is None else str(f.row), f.message) for f in findings],
                        columns=list(FINDING_COLUMNS))


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
