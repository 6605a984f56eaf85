"""A full or failing disk stops a command with one sentence and destroys nothing; what killed
writers leave behind is removed by the next run."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.__main__ import main
from pipeline.dataset.build import build_datasets
from pipeline.dataset.store import DATASET_FILES, MANIFEST_NAME
from pipeline.errors import StorageError
from pipeline.files import remove_leftovers, storage_error, temporary_beside
from pipeline.runs import FAILED, RunFolder

from tests.conftest import BUILD_CONFIG

DISK_FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def small_disk(tmp_path):
    """Mount a real tmpfs of a given size (root only; skipped elsewhere)."""
    mounted = []

    def mount(size: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"a real full disk needs a tmpfs mount (root): {result.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def hidden(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def previous_build(built, folder: Path) -> dict[str, str]:
    """Copy the session's datasets and manifest (not the cache) into ``folder``."""
    _, out, _, _ = built
    folder.mkdir(exist_ok=True)
    for name in [*DATASET_FILES.values(), MANIFEST_NAME]:
        shutil.copyfile(out / name, folder / name)
    return digests(folder)


def one_line(text: str) -> str:
    lines = [line for line in text.split("\n") if line.strip() and "\r" not in line]  # not the progress bar
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no cache"])
def test_a_disk_that_fills_during_a_build_stops_it_and_keeps_the_previous_datasets(built, small_disk, capsys, cache):
    root, out, _, _ = built
    datasets = sum((out / name).stat().st_size for name in DATASET_FILES.values())
    disk = small_disk(datasets + (6 << 20))  # the old datasets fit; the new cache or datasets do not
    before = previous_build(built, disk / "out")
    code = main(["build", "--data", str(root), "--out", str(disk / "out"), "--workers", "2",
                 "--negatives", str(BUILD_CONFIG.negatives), "--jitter", str(BUILD_CONFIG.jitter),
                 *([] if cache else ["--no-cache"])])
    message = one_line(capsys.readouterr().err)
    assert code == 2
    assert "No space left on device" in message and "the build stopped after" in message
    assert "are as they were" in message
    assert digests(disk / "out") == before  # the previous datasets and manifest, byte for byte
    assert hidden(disk / "out") == []  # no half-written dataset, manifest or cache entry


def test_an_io_error_on_one_series_stops_the_build_instead_of_skipping_it(built, tmp_path, monkeypatch):
    root, _, _, _ = built
    before = previous_build(built, tmp_path / "out")

    def full(path, volume, source="", vessels=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("pipeline.dataset.build.save_processed", full)
    with pytest.raises(StorageError, match=r"No space left on device \(.*\.npz\) while processing series .* "
                                           r"the build stopped after 0 of 8 series"):
        build_datasets(root, tmp_path / "out", BUILD_CONFIG, workers=1)
    assert digests(tmp_path / "out") == before
    assert hidden(tmp_path / "out") == []


def test_a_full_disk_at_the_first_checkpoint_fails_the_run_in_one_line(built, small_disk, capsys):
    _, out, _, _ = built
    run = small_disk(512 << 10) / "run"  # room for the configuration and split, not for a checkpoint
    code = main(["train", "--datasets", str(out), "--run", str(run), "--epochs", "1", "--steps", "2",
                 "--crop", "64", "--batch", "2"])
    message = one_line(capsys.readouterr().err)
    assert code == 2
    assert "No space left on device" in message and "--resume" in message
    assert RunFolder(run).read_status()["state"] in (FAILED, "interrupted")  # never "running"
    assert hidden(run) == []  # no half-written checkpoint


def test_only_storage_errors_stop_a_command():
    assert "No space left on device" in str(storage_error(DISK_FULL, "writing x"))
    assert storage_error(OSError(errno.EROFS, "Read-only file system", "/data"), "writing").args[0] == \
        "Read-only file system (/data) while writing"
    assert storage_error(FileNotFoundError(errno.ENOENT, "No such file"), "reading") is None
    assert storage_error(ValueError("bad"), "reading") is None


def test_leftovers_of_dead_writers_go_and_those_of_live_ones_stay(tmp_path):
    target = tmp_path / "cta_dataset.npz"
    mine = temporary_beside(target, ".raw")
    mine.write_bytes(b"being written")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / f".cta_dataset.npz.{dead.pid}.tmp.raw"
    orphan.write_bytes(b"left by a killed build")
    folder = tmp_path / f".demo.{dead.pid}.tmp"
    (folder / "series").mkdir(parents=True)
    unrelated = tmp_path / ".cta_dataset.npz.notes"
    unrelated.write_text("not a temporary file")

    assert sorted(p.name for p in remove_leftovers(tmp_path, {"cta_dataset.npz"})) == [orphan.name]
    assert sorted(p.name for p in remove_leftovers(tmp_path)) == [folder.name]
    assert mine.exists() and unrelated.exists()


def _kill_when(command: list[str], ready, timeout: float = 120) -> None:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, "the command ended before it could be killed"
            assert time.monotonic() < deadline, "nothing to kill the command on"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_killed_build_leaves_nothing_after_the_next_one(built, tmp_path):
    root, _, _, _ = built
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline", "build", "--data", str(root), "--out", str(out), "--workers", "1"]
    _kill_when(command, lambda: out.is_dir() and any(p.stat().st_size for p in out.glob(".*.raw")))
    assert hidden(out), "the kill left nothing to clean: the test proves nothing"
    assert subprocess.run(command, capture_output=True, timeout=600).returncode == 0
    assert hidden(out) == []


def test_a_killed_demo_generation_leaves_nothing_after_the_next_one(tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "pipeline", "demo-data", "--out", str(out), "--series", "2", "--workers", "1"]
    _kill_when(command, lambda: any(p.name.endswith(".tmp") and any(p.rglob("*.dcm")) for p in tmp_path.iterdir()))
    assert hidden(tmp_path), "the kill left nothing to clean: the test proves nothing"
    assert subprocess.run(command, capture_output=True, timeout=600).returncode == 0
    assert hidden(tmp_path) == [] and (out / "train.csv").is_file()
    assert json.loads((out / "demo_manifest.json").read_text())["series"]
