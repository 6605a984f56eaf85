"""The aneurysm-detection library: DICOM reading, preprocessing, datasets, model, inference.

No Streamlit here: the dashboard and the CLI (``python -m pipeline``) both call this.
"""

__version__ = "0.1.0"
