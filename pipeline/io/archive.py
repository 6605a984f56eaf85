"""Uploaded or named sources of a series: a ``.zip`` unpacked in memory, within caps."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from pipeline.errors import IngestError

MAX_ZIP_BYTES = 4 << 30  # decompressed
MAX_ZIP_FILES = 20_000


def read_source(source) -> object:
    """A ``.zip`` (path or bytes) becomes a list of (name, bytes); anything else is passed on."""
    if isinstance(source, (bytes, bytearray)):
        return _unzip(io.BytesIO(source), "upload")
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file() and zipfile.is_zipfile(source):
        with open(source, "rb") as handle:
            return _unzip(handle, Path(source).name)
    return source


def _unzip(handle, name: str) -> list[tuple[str, bytes]]:
    """Members of a zip, in memory, within caps; nothing touches the file system."""
    try:
        with zipfile.ZipFile(handle) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) > MAX_ZIP_FILES:
                raise IngestError(f"{name} holds {len(members)} files, more than the limit of {MAX_ZIP_FILES}.")
            if any(m.flag_bits & 0x1 for m in members):
                raise IngestError(f"{name} is encrypted; upload the files without a password.")
            if sum(m.file_size for m in members) > MAX_ZIP_BYTES:
                raise IngestError(f"{name} decompresses to more than {MAX_ZIP_BYTES >> 30} GiB.")
            files = []
            for member in members:
                if (member.external_attr >> 16) & 0o170000 == 0o120000:
                    continue  # a symbolic link: never followed
                files.append((member.filename, archive.read(member)))
            return files
    except zipfile.BadZipFile:
        raise IngestError(f"{name} is not a readable zip archive.") from None
    except (RuntimeError, NotImplementedError) as exc:  # unsupported compression or encryption
        raise IngestError(f"{name} cannot be unpacked: {exc}.") from None
