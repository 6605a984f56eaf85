"""Running the dataset builder from a page: a child process, with live per-series status."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import streamlit as st

from dashboard.child import run_cli
from pipeline.dataset.config import BuildConfig
from pipeline.dataset.store import check_dataset, read_arrays, read_manifest
from pipeline.files import write_json


def run_build(data_root: Path, out: Path, config: BuildConfig, on_series: Callable[[dict], None],
              scheduler: str | None = None, on_where: Callable[[str], None] = lambda text: None) -> tuple[int, str]:
    """``python -m pipeline build --config FILE`` in a child process (`dashboard.child`): the
    whole configuration crosses the process boundary as JSON. Calls ``on_series`` with each
    series' JSON line, and ``on_where`` with where a Dask build runs (``scheduler``:
    ``local:N`` or an address; None: this machine); returns (exit status, last error line)."""
    with tempfile.TemporaryDirectory(prefix="build-config-") as folder:
        request = Path(folder) / "build_config.json"
        write_json(request, config.to_dict())
        arguments = ["build", "--data", str(data_root), "--out", str(out), "--progress-json", "--config",
                     str(request), *(["--scheduler", scheduler] if scheduler else [])]
        return run_cli(arguments, lambda record: on_where(record["where"]) if "where" in record else on_series(record))


@st.cache_data(show_spinner=False)
def load_manifest(out: str, modified: float) -> dict:
    return read_manifest(out)


@st.cache_data(show_spinner=False, max_entries=8)
def sample_cubes(path: str, modified: float, per_kind: int = 4) -> dict[str, list[np.ndarray]]:
    """Axial MIPs through the middle of a few cubes of each kind (positive, hard negative, negative).

    Raises:
        ValueError: the file is not a dataset a build writes (the message says why).
    """
    check_dataset(path)
    kinds, cubes = read_arrays(path, ("kinds", "cubes"))
    sample = {}
    for kind in ("positive", "hard negative", "negative"):
        chosen = np.flatnonzero(kinds == kind)[:per_kind]
        middle = cubes.shape[1] // 2
        sample[kind] = [cubes[i, middle - 6:middle + 6].astype(np.float32).max(axis=0) for i in chosen]
    return sample
