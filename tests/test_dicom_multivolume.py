"""Series that are not one 3-D volume: several volumes at the same positions (diffusion,
multi-echo, dynamic, repeated acquisitions), Siemens mosaics, and modalities the model cannot read."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pipeline.__main__ import main
from pipeline.errors import IngestError
from pipeline.io.dicom import load_series
from pipeline.io.dicomwriter import SeriesHeader
from pipeline.preprocess.transforms import preprocess

SERIES_UID = "1.2.826.0.1.3680043.10.999.1"


def four_d(write, tmp_path, values: list[dict], n=6):
    """One series folder holding one volume per entry of ``values`` (header fields of that
    volume), all at the same positions; volume k has pixel values shifted by 1000 k."""
    series = tmp_path / "four_d"
    series.mkdir()
    first = None
    for k, extra in enumerate(values):
        folder, pixels, _ = write(n=n, modality="MR", header=SeriesHeader(modality="MR", series_uid=SERIES_UID,
                                                                          extra=extra),
                                  pixels=None)
        first = pixels if first is None else first
        for path in folder.iterdir():
            ds = pydicom.dcmread(path)
            ds.PixelData = (ds.pixel_array.astype(np.int16) + 1000 * k).astype(np.int16).tobytes()
            ds.InstanceNumber = int(ds.InstanceNumber) + n * (len(values) - k)  # volumes interleaved by number
            ds.save_as(series / f"{k}_{path.name}")
    return series, first


@pytest.mark.parametrize("kind, attribute, values, kept", [
    ("multi-echo", "echo time", [{"EchoTime": "9.8"}, {"EchoTime": "4.2"}], 1),
    ("diffusion-weighted", "b-value", [{"DiffusionBValue": 1000}, {"DiffusionBValue": 0}], 1),
    ("a time series", "temporal position", [{"TemporalPositionIdentifier": 2}, {"TemporalPositionIdentifier": 1},
                                            {"TemporalPositionIdentifier": 3}], 1),
    ("several acquisitions", "acquisition number", [{"AcquisitionNumber": 1}, {"AcquisitionNumber": 2}], 0),
])
def test_one_volume_of_a_four_d_series_is_read_and_the_warning_says_which(write, tmp_path, kind, attribute,
                                                                           values, kept):
    series, pixels = four_d(write, tmp_path, values)
    volume = load_series(series)
    assert volume.shape[0] == 6  # one volume, not 6 x len(values) slices
    offsets = {round(float(np.median(volume.array[k] - np.sort(volume.array[k])[0]))) for k in range(6)}
    assert offsets  # pixels read
    assert np.all(np.round(volume.array.mean(axis=(1, 2)) / 1000) == kept)  # every slice from the same volume
    warning = next(w for w in volume.warnings if "volumes at the same positions" in w)
    assert f"holds {len(values)} volumes" in warning and kind in warning and f"only the first, {attribute}" in warning


def test_images_at_the_same_positions_that_no_header_tells_apart_are_named(write, tmp_path):
    series, _ = four_d(write, tmp_path, [{}, {}])
    volume = load_series(series)
    assert volume.shape[0] == 6
    assert any("no header" in w and "several volumes" in w for w in volume.warnings)


def test_an_enhanced_multi_echo_file_keeps_the_first_echo(write, tmp_path):
    positions = [(10.0, -20.0, 30.0 + 1.5 * (k % 5)) for k in range(10)]  # 5 positions, two echoes
    folder, pixels, _ = write(n=10, modality="MR", positions=positions, multiframe=True)
    path = next(folder.iterdir())
    ds = pydicom.dcmread(path)
    for k, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        echo = Dataset()
        echo.EffectiveEchoTime = 4.5 if k < 5 else 12.0
        group.MREchoSequence = Sequence([echo])
    ds.save_as(path)
    volume = load_series(folder)
    assert volume.shape[0] == 5
    assert any("multi-echo" in w and "echo time 4.5" in w for w in volume.warnings)


def test_a_siemens_mosaic_is_named(write, tmp_path):
    folder, _, _ = write(n=3, modality="MR")
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
        ds.save_as(path)
    with pytest.raises(IngestError, match="Siemens mosaic"):
        load_series(folder)


def with_modality(write, modality: str):
    folder, _, _ = write(n=8, rows=40, columns=40, pixel_spacing=(1.0, 1.0), slice_spacing=1.0)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.Modality = modality
        ds.save_as(path)
    return folder


def test_a_pet_series_is_refused_not_scored_as_mr(write, capsys):
    folder = with_modality(write, "PT")
    with pytest.raises(IngestError, match="positron emission tomography .*CT and MR series only"):
        preprocess(load_series(folder))
    assert main(["predict", str(folder)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "positron emission tomography" in error


def test_a_series_of_no_known_modality_goes_on_as_mr_with_a_warning(write):
    processed = preprocess(load_series(with_modality(write, "OT")))
    assert any("'OT', not CT or MR" in w for w in processed.warnings)


def test_an_ordinary_series_gets_no_volume_warning(write):
    folder, _, _ = write(n=6, modality="MR", header=SeriesHeader(modality="MR", extra={"EchoTime": "4.2"}))
    assert not any("volume" in w for w in load_series(folder).warnings)
    shutil.rmtree(folder)
