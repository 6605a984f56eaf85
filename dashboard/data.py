"""The data source shown in the sidebar: a configured RSNA folder or the built-in demo."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard.text import plain, progress_text
from pipeline.data import DATA_ENV, configured_root, demo_root, ensure_demo_data, is_ready
from pipeline.phantoms import VALIDATION_ONLY, family_label, read_family
from pipeline.errors import IngestError
from pipeline.io.rsna import Finding, check_data_folder, read_train

PROBLEM = "data_problem"  # session key: why the data folder cannot be used (sidebar and pages)
FOLDER = "data_folder"  # session key: the data folder found, usable or not (its check is shown)
GENERATING = "demo_generating"  # session key: the demo data are being generated (the app reruns when done)


class DemoGeneration:
    """The first launch's demo generation, in a thread of the server: pages that need no
    data (the home page) work meanwhile, and every session sees its progress."""

    def __init__(self, root: Path):
        self.root, self.done, self.total, self.error = root, 0, 0, None
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start generating unless it already started (once per server, whoever asks)."""
        with self._lock:
            if self._thread is None:
                self.started = time.monotonic()
                self._thread = threading.Thread(target=self._run, name="demo-generation", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            ensure_demo_data(self._progress)
        except Exception as exc:  # the sidebar says it
            self.error = f"{exc} (restart the dashboard to try again)"

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def describe(self) -> str:
        if not self.total:
            return "First launch: starting the demo phantoms' generator..."
        return "First launch: generating the demo phantoms, " + progress_text(self.done, self.total,
                                                                              time.monotonic() - self.started)


@st.cache_resource(show_spinner=False)
def demo_generation(root: str) -> DemoGeneration:
    """The one generation of the demo folder ``root`` of this server."""
    return DemoGeneration(Path(root))


@st.cache_data(show_spinner=False)
def load_train(root: str, modified: float) -> pd.DataFrame:
    """``train.csv`` of a data folder, checked (`pipeline.io.rsna.read_train`; keyed by path
    and modification time)."""
    return read_train(Path(root))


def train_table(root: Path) -> pd.DataFrame:
    path = root / "train.csv"
    return load_train(str(root), path.stat().st_mtime)


@st.cache_data(show_spinner=False, ttl=60)
def folder_findings(root: str, stamp: tuple) -> list[Finding]:
    """`check_data_folder` of ``root``, kept while its tables and its series/ folder are
    unchanged (``stamp``) and for a minute at most (a series folder emptied changes neither)."""
    return check_data_folder(root)


def data_folder_check(root: Path) -> list[Finding]:
    """What is wrong in the data folder ``root`` (cached, see `folder_findings`)."""
    stamp = tuple(path.stat().st_mtime if path.exists() else None
                  for path in (root / "train.csv", root / "train_localizers.csv", root / "series"))
    return folder_findings(str(root), stamp)


# Modalities in the order a visitor is first shown a series (exploration viewer, inference):
# thin slices show an aneurysm best.
THIN_SLICES_FIRST = ("MRA", "CTA", "MRI T1post", "MRI T2")


def series_label(row: dict, role: str | None = None) -> str:
    """A train.csv row as a short choice: modality, label, what a model did with it (``role``:
    training, held-out...) and the end of its UID."""
    flag = "aneurysm" if row["Aneurysm Present"] == 1 else "no aneurysm"
    return " · ".join([row["Modality"], flag, *([role] if role else []), f"…{str(row['SeriesInstanceUID'])[-10:]}"])


def data_source() -> Path | None:
    """The data folder in use, generating the demo data on first launch; None if unusable
    (the sidebar says why)."""
    st.session_state.pop(PROBLEM, None)
    st.session_state.pop(FOLDER, None)
    configured = configured_root()
    if configured is not None:
        if not is_ready(configured):
            st.session_state[PROBLEM] = f"{DATA_ENV} names a folder without train.csv and series/: {configured}"
            return None
        return _checked(configured)
    root = demo_root()
    if not is_ready(root):
        generation = demo_generation(str(root))
        generation.start()
        if not is_ready(root):
            st.session_state[GENERATING] = True
            st.session_state[PROBLEM] = generation.error or generation.describe()
            return None
    st.session_state.pop(GENERATING, None)
    return _checked(root)


def _checked(root: Path) -> Path | None:
    """``root`` if its train.csv passes `read_train`'s checks, else None and the reason."""
    st.session_state[FOLDER] = root
    try:
        train_table(root)
    except IngestError as exc:
        st.session_state[PROBLEM] = plain(f"The data folder {root} cannot be used: {exc}")
        return None
    return root


@st.fragment(run_every=2)
def generation_progress() -> None:
    """The demo generation's progress, redrawn every 2 s; the whole app reruns once the data
    are there (or the generation failed)."""
    generation = demo_generation(str(demo_root()))
    if is_ready(demo_root()) or (generation.error and not generation.running):
        st.rerun()
    share = generation.done / generation.total if generation.total else 0.0
    st.progress(share, text=generation.describe())
    st.caption("The other pages open when the data are ready; the home page works meanwhile.")


def data_kind(root: Path) -> str:
    """What a data folder is, in a few words: a phantom family (which one, and whether models may
    train on it) or a real RSNA folder."""
    family = read_family(root)
    if family is None:
        return "RSNA data folder"
    if family.get(VALIDATION_ONLY):
        return f"Phantoms, {family_label(family, root)} family (validation only: no model trains on it)"
    label = family_label(family, root)
    return "Built-in demo (synthetic phantoms)" if label == "demo" else f"Phantoms: {label}"


def sidebar(root: Path | None) -> None:
    with st.sidebar:
        st.subheader("Data")
        if st.session_state.get(GENERATING) and not demo_generation(str(demo_root())).error:
            generation_progress()
            return
        if root is None:
            st.error(st.session_state.get(PROBLEM, "No data folder."), icon=":material/error:")
            return
        table = train_table(root)
        kind = data_kind(root)
        st.markdown(f"**{kind}**")
        st.caption(f"{len(table)} series, {int(table['Aneurysm Present'].sum())} with an aneurysm")
        st.text(str(root))


def require_navigation() -> None:
    """Send a visitor who reached a page before the app's navigation ran to the home page.

    On a fresh server, a direct link to a page runs that file alone (Streamlit's older
    pages/ mechanism), without the sidebar or the data source: start from app.py instead.
    """
    if "data_root" not in st.session_state:
        st.switch_page("app.py")


def page_start(title: str) -> Path | None:
    """What every page does first: be inside the app's navigation, show its title, find the data."""
    require_navigation()
    st.title(title)
    root = st.session_state["data_root"]
    if root is None and st.session_state.get(GENERATING) and not demo_generation(str(demo_root())).error:
        st.info("The demo phantoms are being generated (progress in the sidebar): this page opens by itself when "
                "they are ready.", icon=":material/hourglass_top:")
    elif root is None:
        st.error(st.session_state.get(PROBLEM, "No data folder is available: see the sidebar."),
                 icon=":material/error:")
    return root
