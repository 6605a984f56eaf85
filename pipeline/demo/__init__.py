"""The demo data: synthetic head phantoms written as DICOM series in the RSNA layout
(`pipeline.demo.generate`), their vessel anatomy (`anatomy`) and rendering (`render`).

The names below are what other modules need to know of a demo folder without loading the
generator (which imports torch).
"""

MANIFEST = "demo_manifest.json"  # in a demo folder's root: what the generator wrote, and its ground truth
DEMO_SERIES = 200  # series in the default demo dataset
