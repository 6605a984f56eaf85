"""Shared fixtures: the session's small demo dataset, its build and a trained run, and a
writer of synthetic series (plain helpers are in tests/helpers.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from pipeline.demo.generate import PLANES  # direction cosines (row, column) of each plane, LPS
from pipeline.io.dicomwriter import SeriesGeometry, SeriesHeader, write_series
from tests.helpers import ramp_pixels

DEMO_SEED = 2  # 8 series: every modality, a positive multi-frame MR, RLE, a coronal series


def _build_config():
    from pipeline.dataset.config import BuildConfig

    return BuildConfig(negatives=4, jitter=1, min_distance_mm=20.0)


BUILD_CONFIG = _build_config()


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Undo AppTest's ``sys.modules["__main__"] = <page script>`` after every test.

    Left in place, every process the demo generator or the builder spawns later in the
    session would run the dashboard script again (and generate the full demo in the
    project folder) before doing its work.
    """
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """A small demo dataset, generated once per test session: (root, summary, manifest)."""
    import json

    from pipeline.demo.generate import generate_demo_data
    from pipeline.phantoms import MANIFEST

    root = tmp_path_factory.mktemp("demo") / "data"
    summary = generate_demo_data(root, n_series=8, seed=DEMO_SEED, workers=2)
    return root, summary, json.loads((root / MANIFEST).read_text())


@pytest.fixture(scope="session")
def built(demo, tmp_path_factory):
    """The small demo dataset built into cubes once per session: (data root, out, manifest, truth)."""
    from pipeline.dataset.build import build_datasets

    root, _, truth = demo
    out = tmp_path_factory.mktemp("datasets")
    manifest = build_datasets(root, out, BUILD_CONFIG, workers=2)
    return root, out, manifest, truth

@pytest.fixture
def write(tmp_path):
    """Write a synthetic series into a fresh folder; returns (folder, pixels, geometry)."""
    counter = iter(range(10_000))

    def _write(
        plane="axial",
        n=6,
        rows=24,
        columns=20,
        pixel_spacing=(0.5, 0.7),
        slice_spacing=1.5,
        origin=(10.0, -20.0, 30.0),
        modality="CT",
        pixels=None,
        positions=None,
        **kwargs,
    ):
        row, column = PLANES[plane] if isinstance(plane, str) else plane
        geometry = SeriesGeometry.regular(n, row, column, pixel_spacing, slice_spacing, origin)
        if positions is not None:
            geometry.positions = np.asarray(positions, dtype=float)
        pixels = ramp_pixels(len(geometry.positions), rows, columns) if pixels is None else pixels
        index = next(counter)
        folder = tmp_path / f"series{index}"
        header = kwargs.pop("header", None) or SeriesHeader(modality=modality)
        write_series(folder, pixels, geometry, header, seed=(plane, index), **kwargs)
        return folder, pixels, geometry

    return _write


@pytest.fixture(scope="session")
def trained(built, tmp_path_factory):
    """A one-epoch run on the small built dataset (a model to exercise inference, not a good one)."""
    from pipeline.dataset.store import resolve_datasets
    from pipeline.training.config import TrainConfig
    from pipeline.training.trainer import train

    _, out, _, _ = built
    run = tmp_path_factory.mktemp("run") / "run"
    train(TrainConfig(datasets=resolve_datasets([out]), epochs=1, steps_per_epoch=4, crop=64, batch_size=2), run)
    return run
