#!/usr/bin/env python3
"""Set up and run the project with nothing but Python 3.11+.

    python3 run.py app     # start the dashboard on the built-in demo data
    python3 run.py test    # run the whole test suite

Each command creates the virtual environment ``.venv`` on first use, installs the
pinned requirements and the project itself (``pip install -e .``, so that ``pipeline``
and ``dashboard`` import from anywhere), again only when one of those files changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("ANEURYSM_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_environment(requirements: str) -> None:
    """Create the venv and install ``requirements`` unless already done for these files."""
    files = [ROOT / requirements] + ([ROOT / "requirements.txt"] if requirements != "requirements.txt" else [])
    files.append(ROOT / "pyproject.toml")
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]
    stamp = VENV / f".installed-{requirements}-{digest}"
    if stamp.exists():
        return
    if not PYTHON.exists():
        print(f"Creating the virtual environment in {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print(f"Installing {requirements} ...", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["-r", str(ROOT / requirements)], check=True)
    # the project itself, editable; its dependencies are the pinned ones just installed
    subprocess.run(pip + ["--no-deps", "--no-build-isolation", "-e", str(ROOT)], check=True)
    for old in VENV.glob(f".installed-{requirements}-*"):
        old.unlink()
    stamp.touch()


# glibc returns every large freed buffer to the OS and faults it back in on the next
# series: keeping freed memory in the process made inference 25 % faster here
# (bench/bench_inference.py). Applied to the processes this script starts.
KEEP_FREED_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 36), "MALLOC_TOP_PAD_": str(1 << 28)}


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    extra = argv[1:]
    os.chdir(ROOT)
    if command == "app":
        ensure_environment("requirements.txt")
        args = ["-m", "streamlit", "run", "app.py", "--server.headless", "true", *extra]
    elif command == "test":
        ensure_environment("requirements-dev.txt")
        args = ["-m", "pytest", *extra]
    else:
        print(__doc__)
        return 2
    environment = {**os.environ, **KEEP_FREED_MEMORY} if command == "app" else None
    return subprocess.call([str(PYTHON), *args], env=environment)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
