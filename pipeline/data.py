"""Where the data are: a real RSNA folder if one is configured, else the built-in demo data.

``ANEURYSM_DATA`` names a data folder in the RSNA layout (``train.csv``,
``train_localizers.csv``, ``series/``). Without it the demo data are used, kept in
``ANEURYSM_DEMO_DIR`` (default: ``data/demo`` in the project folder) and generated on
first use (``ANEURYSM_DEMO_SERIES`` series, default `DEMO_SERIES`). Built cube datasets go to
``ANEURYSM_DATASETS_DIR`` (default: ``data/datasets``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

from pipeline.demo import DEMO_SERIES
from pipeline.phantoms import MANIFEST

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_ENV = "ANEURYSM_DATA"
DEMO_DIR_ENV = "ANEURYSM_DEMO_DIR"
DEMO_SERIES_ENV = "ANEURYSM_DEMO_SERIES"


DATASETS_ENV = "ANEURYSM_DATASETS_DIR"


def datasets_root() -> Path:
    """Where the built cube datasets go by default (``ANEURYSM_DATASETS_DIR`` or data/datasets)."""
    return Path(os.environ.get(DATASETS_ENV) or PROJECT_ROOT / "data" / "datasets")


RUNS_ENV = "ANEURYSM_RUNS_DIR"


def runs_root() -> Path:
    """Where training runs go by default (``ANEURYSM_RUNS_DIR`` or runs/)."""
    return Path(os.environ.get(RUNS_ENV) or PROJECT_ROOT / "runs")


PREDICTIONS_ENV = "ANEURYSM_PREDICTIONS_DIR"


def predictions_root() -> Path:
    """Where the dashboard writes submission tables (``ANEURYSM_PREDICTIONS_DIR`` or
    data/predictions)."""
    return Path(os.environ.get(PREDICTIONS_ENV) or PROJECT_ROOT / "data" / "predictions")


VALIDATION_ENV = "ANEURYSM_VALIDATION_DIR"


def validation_root() -> Path:
    """Where the validation sets go (``ANEURYSM_VALIDATION_DIR`` or data/validation):
    `pipeline.validation.validation_sets`."""
    return Path(os.environ.get(VALIDATION_ENV) or PROJECT_ROOT / "data" / "validation")


def demo_root() -> Path:
    return Path(os.environ.get(DEMO_DIR_ENV) or PROJECT_ROOT / "data" / "demo")


def configured_root() -> Path | None:
    """The real data folder named by ``ANEURYSM_DATA``, if any."""
    value = os.environ.get(DATA_ENV)
    return Path(value) if value else None


def data_root() -> Path:
    """The folder every command uses by default."""
    return configured_root() or demo_root()


def is_demo(root: Path) -> bool:
    return (root / MANIFEST).is_file()


def is_ready(root: Path) -> bool:
    return (root / "train.csv").is_file() and (root / "series").is_dir()


def ensure_demo_data(progress: Callable[[int, int], None] | None = None) -> Path:
    """The demo folder, generated first if it is not there yet.

    The generator runs as ``python -m pipeline demo-data`` in a child process, so that
    its worker processes never re-import the caller (a Streamlit script, a notebook).
    """
    root = demo_root()
    if is_ready(root):
        return root
    command = [sys.executable, "-m", "pipeline", "demo-data", "--out", str(root),
               "--series", str(int(os.environ.get(DEMO_SERIES_ENV, DEMO_SERIES)))]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = ""
    for line in process.stderr:  # universal newlines: each "\r" progress update is a line
        last = line.strip() or last
        match = re.search(r"(\d+)/(\d+) series", line)
        if match and progress:
            progress(int(match.group(1)), int(match.group(2)))
    if process.wait() != 0 and not is_ready(root):  # a concurrent run may have won the race
        raise RuntimeError(f"The demo data could not be generated: {last}")
    return root
