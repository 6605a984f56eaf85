"""Training runs seen from the dashboard: start, follow, stop and evaluate them (child processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.data import PROJECT_ROOT
from pipeline.train import STATUS, STOP_FILE


def list_runs(root: Path) -> list[Path]:
    """Run folders (those with a config.json), newest first."""
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if (p / "config.json").is_file()]
    return sorted(runs, key=lambda p: (p / "config.json").stat().st_mtime, reverse=True)


def status(run: Path) -> dict:
    try:
        value = json.loads((run / STATUS).read_text())
    except (OSError, json.JSONDecodeError):
        return {"state": "starting"}
    if value.get("state") == "running" and not _alive(value.get("pid")):
        value["state"] = "interrupted"  # killed without a word: resume it
    return value


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, TypeError, ValueError):
        return False


def start(run: Path, arguments: list[str]) -> None:
    """``python -m pipeline train`` detached from the page: it goes on if the page closes."""
    run.mkdir(parents=True, exist_ok=True)
    log = open(run / "train.log", "ab")
    subprocess.Popen([sys.executable, "-m", "pipeline", "train", "--run", str(run), *arguments], cwd=PROJECT_ROOT,
                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(run: Path) -> None:
    (run / STOP_FILE).touch()


def evaluate(run: Path, data_root: Path) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", "pipeline", "evaluate", "--run", str(run), "--data", str(data_root)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True)
    lines = (result.stdout or result.stderr).strip().splitlines()
    return result.returncode, lines[-1] if lines else ""
