"""Draw the README's pictures of the phantoms: axial slab MIPs through the circle of Willis.

    .venv/bin/python tools/demo_pictures.py [--out docs]

Generates the first positive CTA and MRA series of the default demo plan (seed 0), and of
the external family's (seed 0), as
DICOM in a temporary folder, reads them back with the product's reader and default
geometry chain, and saves a 24 mm axial maximum-intensity projection centred on the
circle of Willis with each aneurysm circled and named.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


from pipeline.demo.generate import generate_series, plan_dataset
from pipeline.external.generate import generate_external_series, plan_external
from pipeline.io.dicom import load_series
from pipeline.preprocess.transforms import CropForeground, Reorient, Resample

SLAB_MM = 24.0
SCALE = 3


def slab_mip(modality: str, out: Path, workdir: Path, family: str = "demo") -> Path:
    if family == "external":
        plan = next(p for p in plan_external(48, seed=0) if p.modality == modality and p.locations)
        entry = generate_external_series(plan, str(workdir))["manifest"]
        circle = entry["circle_of_willis_mm"]
    else:
        plan = next(p for p in plan_dataset(60, seed=0) if p.modality == modality and p.locations)
        entry = generate_series(plan, str(workdir))["manifest"]
        circle = entry["head_origin_mm"]
    volume = load_series(workdir / plan.series_uid)
    for step in (Reorient(), CropForeground(), Resample()):
        volume = step(volume)
    centre = volume.patient_to_voxel(circle)
    half = SLAB_MM / 2 / volume.spacing[0]
    low, high = int(max(0, centre[0] - half)), int(min(volume.shape[0], centre[0] + half + 1))
    mip = volume.array[low:high].max(axis=0)
    window = (0.0, 600.0) if modality == "CTA" else tuple(np.percentile(mip, [1, 99.7]))
    grey = (np.clip((mip - window[0]) / (window[1] - window[0]), 0, 1) * 255).astype(np.uint8)
    image = Image.fromarray(grey).resize((grey.shape[1] * SCALE, grey.shape[0] * SCALE), Image.BILINEAR).convert("RGB")
    draw = ImageDraw.Draw(image)
    for aneurysm in entry["aneurysms"]:
        z, y, x = volume.patient_to_voxel(aneurysm["centre_mm"]) * SCALE
        radius = (aneurysm["diameter_mm"] / volume.spacing[1] / 2 + 3) * SCALE
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=(228, 87, 46), width=3)
        label = f"{aneurysm['location']} ({aneurysm['diameter_mm']:.1f} mm)"
        left = x + radius + 4 if x + radius + 4 + draw.textlength(label) < image.width else x - radius - 4 - draw.textlength(label)
        draw.text((left, y - 6), label, fill=(255, 200, 80))
    draw.rectangle([0, 0, image.width, 26], fill=(0, 0, 0))
    draw.text((8, 8), f"{modality} {family} phantom, axial MIP {SLAB_MM:.0f} mm through the circle of Willis",
              fill=(255, 255, 255))
    draw.text((8, image.height - 20), "R", fill=(255, 255, 255))
    draw.text((image.width - 16, image.height - 20), "L", fill=(255, 255, 255))
    path = out / f"{family}_{modality.lower()}_mip.png"
    image.save(path)
    print(f"{path}: series {plan.series_uid}, {json.dumps(entry['aneurysms'])}")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        for family in ("demo", "external"):
            for modality in ("CTA", "MRA"):
                slab_mip(modality, args.out, Path(workdir), family)
    return 0


if __name__ == "__main__":
    sys.exit(main())
