"""The demo data: synthetic head phantoms written as DICOM series in the RSNA layout
(`pipeline.demo.generate`), their vessel anatomy (`anatomy`) and rendering (`render`).

The name below is what other modules need to know of the demo without loading the generator
(which imports torch); the folder's manifest is `pipeline.phantoms.MANIFEST`.
"""

DEMO_SERIES = 200  # series in the default demo dataset
