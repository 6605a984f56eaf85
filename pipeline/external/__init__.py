"""The external phantom family: head phantoms written independently of `pipeline.demo`, for
validation only (`pipeline.phantoms`; the builder refuses it, so no model trains on it).

Nothing of the demo family's image model is reused. Arteries are graphs of smoothed,
tortuous centre lines with exponentially tapering radii, rasterised by supersampling
(`render`), with a laminar flow profile in time-of-flight MRA and slow flow in aneurysm
domes; domes are ellipsoids with a neck and blebs; the head is a superellipsoid with a
skull of varying thickness, a skull base with fossae, petrous ridges, sinuses and
orbits, grey and white matter and sulci; the scanner blurs with a point-spread function,
adds correlated CT noise or multi-coil MR noise, a smooth bias field, oblique slices and
its own fields of view, resolutions and head positions (`generate`).

    python -m pipeline demo-data --family external --out data/external [--series N] [--seed S]
"""

FAMILY = "external"
EXTERNAL_SERIES = 48  # series in the default external set
