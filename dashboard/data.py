"""The data source shown in the sidebar: a configured RSNA folder or the built-in demo."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard.text import plain
from pipeline.data import DATA_ENV, configured_root, demo_root, ensure_demo_data, is_ready
from pipeline.phantoms import VALIDATION_ONLY, family_label, read_family
from pipeline.errors import IngestError
from pipeline.io.rsna import Finding, check_data_folder, read_train

PROBLEM = "data_problem"  # session key: why the data folder cannot be used (sidebar and pages)
FOLDER = "data_folder"  # session key: the data folder found, usable or not (its check is shown)
_GENERATION = threading.Lock()  # one demo generation per server, however many sessions ask


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
        with _GENERATION:
            if not is_ready(root):
                _generate_demo()
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


def _generate_demo() -> None:
    bar = st.progress(0.0, text="First launch: generating the demo phantoms...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"First launch: generating the demo phantoms ({done}/{total} series)")

    ensure_demo_data(progress)
    bar.empty()


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
    if root is None:
        st.error(st.session_state.get(PROBLEM, "No data folder is available: see the sidebar."),
                 icon=":material/error:")
    return root
