"""Dashboard entry point: page setup and navigation (``streamlit run app.py``)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard.data import data_source, sidebar
from dashboard.inference import cap_server_uploads, model_sidebar
from dashboard.layout import adapt_to_narrow_screens
from pipeline import __version__
from pipeline.labels import ANEURYSM_PRESENT, LOCATIONS, MODALITIES

# A local icon: a Material icon as favicon is fetched from fonts.gstatic.com (the dashboard works offline).
st.set_page_config(page_title="Aneurysm Detection", page_icon=str(Path(__file__).parent / "dashboard" / "icon.png"),
                   layout="wide")
adapt_to_narrow_screens()
cap_server_uploads()  # once per server; later runs find it in place


def home() -> None:
    st.title("Intracranial aneurysm detection")
    st.markdown(
        "A 3D convolutional network that looks for brain aneurysms in angiography and MRI "
        "series (CTA, MRA, MRI T2, MRI T1 post-contrast), from the raw DICOM files to the "
        "14 probabilities of the RSNA Intracranial Aneurysm Detection challenge."
    )
    st.info(
        "The built-in demo data are **synthetic phantoms**: computer-generated heads written as "
        "real DICOM files. They are not patients, and results on them say nothing about "
        "clinical performance.",
        icon=":material/info:",
    )
    left, right = st.columns(2)
    with left:
        st.subheader("What it does")
        st.markdown(
            "- **Reads DICOM series** of any plane (axial, coronal, sagittal, oblique), "
            "single- or multi-frame, compressed or not, with exact patient geometry.\n"
            "- **Preprocesses** every series the same way: canonical orientation, "
            "0.8 mm isotropic voxels, cropped to the head, intensities normalised per modality.\n"
            "- **Builds** 48-voxel training cubes, **trains** a 3D residual network and "
            "**predicts** aneurysm presence and location, from this dashboard or the command line."
        )
        st.caption(
            "Pages: explore the data folder and view any series, build the training cubes, train and "
            "evaluate models, and run a model on a demo series or an uploaded one. The same steps run "
            "from the command line (`python -m pipeline scan` / `build` / `train` / `predict`)."
        )
    with right:
        st.subheader("What it predicts")
        st.markdown(f"For each series, the probability of an aneurysm (**{ANEURYSM_PRESENT}**) and of one at each of "
                    "the 13 RSNA locations:")
        st.markdown("\n".join(f"{i}. {name}" for i, name in enumerate(LOCATIONS, start=1)))
        st.caption(f"Modalities: {', '.join(MODALITIES)}")
    st.caption(f"Version {__version__}")


navigation = st.navigation([
    st.Page(home, title="Home", icon=":material/home:", default=True),
    st.Page("pages/explore.py", title="Dataset exploration", icon=":material/database:"),
    st.Page("pages/build.py", title="Dataset building", icon=":material/deployed_code:"),
    st.Page("pages/train.py", title="Training", icon=":material/monitoring:"),
    st.Page("pages/infer.py", title="Inference", icon=":material/radiology:"),
])
st.session_state["data_root"] = data_source()  # found once per run, read by the pages
sidebar(st.session_state["data_root"])
model_sidebar()
navigation.run()
