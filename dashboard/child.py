"""Long work in a child process of the CLI (``python -m pipeline ...``): its workers never
re-import a page, and it reports as JSON lines on standard output."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from pipeline.data import PROJECT_ROOT


def run_cli(arguments: list[str], on_record: Callable[[dict], None]) -> tuple[int, str]:
    """``python -m pipeline ARGUMENTS``, calling ``on_record`` with each JSON line it prints
    (other lines are skipped); returns (exit status, the last line of its standard error)."""
    with tempfile.TemporaryDirectory(prefix="pipeline-child-") as folder, \
            open(Path(folder) / "stderr.txt", "w+") as errors:  # a file: logs (Dask's) cannot fill a pipe
        process = subprocess.Popen([sys.executable, "-m", "pipeline", *arguments], cwd=PROJECT_ROOT,
                                   stdout=subprocess.PIPE, stderr=errors, text=True)
        for line in process.stdout:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                on_record(record)
        code = process.wait()
        errors.seek(0)
        lines = errors.read().strip().splitlines()
    return code, lines[-1] if lines else ""
