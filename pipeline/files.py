"""Writing files safely: atomic writes (a temporary file beside the target, then a rename, so
readers never see half a file), the leftovers of killed writers, and telling a failing disk
from a bad input."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np

from pipeline.errors import StorageError

#: What the machine, not the data, is to blame for: the command stops rather than skipping on.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG})

# ".<target name>.<pid of the writer>.tmp[.<suffix>]", see `temporary_beside`
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.tmp(\.[A-Za-z0-9]+)?$")


def temporary_beside(path: Path, suffix: str = "") -> Path:
    """Where a writer puts ``path`` while writing it: hidden, beside it (same file system, so
    the rename is atomic) and named with the writer's process, so that `remove_leftovers`
    can tell the leftover of a killed writer from a file being written now."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")


def remove_leftovers(folder: Path, targets: set[str] | None = None) -> list[Path]:
    """Remove what writers killed before their rename left in ``folder`` (files or folders
    named by `temporary_beside` whose process is gone); only those of ``targets`` (names of
    the final files) when given. Returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if not match or (targets is not None and match["target"] not in targets) or alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def alive(pid) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    try:
        os.kill(int(pid), 0)
        return True
    except PermissionError:  # it exists, under another user
        return True
    except (OSError, TypeError, ValueError, OverflowError):
        return False


def storage_error(exc: BaseException, doing: str) -> StorageError | None:
    """The `StorageError` that ``exc`` amounts to (a full disk, a quota, a read-only or failing
    file system), saying what was being done; None for any other error."""
    if isinstance(exc, StorageError):
        return exc
    if not isinstance(exc, OSError) or exc.errno not in STORAGE_ERRNOS:
        return None
    where = f" ({exc.filename})" if exc.filename else ""
    return StorageError(f"{exc.strerror or os.strerror(exc.errno)}{where} while {doing}")


def write_text(path: Path, text: str) -> None:
    path = Path(path)
    temporary = temporary_beside(path)
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: Path, value) -> None:
    write_text(path, json.dumps(value, indent=1))


def npz_member_header(path: Path, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of array ``name`` of an ``.npz`` file, read from its header alone.

    Raises:
        KeyError: the file has no such array.
        OSError, ValueError, zipfile.BadZipFile: the file is not a readable ``.npz``.
    """
    with zipfile.ZipFile(path) as archive, archive.open(f"{name}.npy") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
    return tuple(shape), dtype
