"""NIfTI datasets in the public layouts (pipeline.io.nifti_datasets): ADAM-style case folders and
BIDS-style sub-*/ses-*/anat angiograms with derivatives, made here from demo series converted to
NIfTI; their aneurysms land where the phantom put them, and `evaluate --test-set` scores them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline.__main__ import main
from pipeline.errors import IngestError
from pipeline.io.dicom import load_series
from pipeline.io.nifti import save_nifti
from pipeline.io.nifti_datasets import find_cases, is_nifti_dataset


def _ball(volume, centre_mm, radius_mm) -> np.ndarray:
    """Voxels of ``volume``'s grid within ``radius_mm`` of ``centre_mm``."""
    z, y, x = np.indices(volume.shape)
    points = volume.voxel_to_patient(np.stack([z, y, x], -1).reshape(-1, 3)).reshape(*volume.shape, 3)
    return np.linalg.norm(points - centre_mm, axis=-1) <= radius_mm


@pytest.fixture(scope="module")
def sources(demo):
    """Every demo series read as it is stored (its own grid), with its aneurysms (LPS mm, radius)."""
    root, _, manifest = demo
    found = {}
    for uid, entry in sorted(manifest["series"].items()):
        volume = load_series(root / "series" / uid)
        found[uid] = (volume, [(np.array(a["centre_mm"]), a["diameter_mm"] / 2) for a in entry["aneurysms"]])
    return found


@pytest.fixture(scope="module")
def adam(sources, tmp_path_factory):
    """ADAM-style: case folders with orig/TOF.nii.gz; the first positive case gives its
    aneurysms as location.txt, the others as aneurysms.nii.gz with a treated (label 2) blob."""
    root = tmp_path_factory.mktemp("adam")
    positives = [uid for uid, (_, aneurysms) in sources.items() if aneurysms]
    for number, (uid, (volume, aneurysms)) in enumerate(sources.items()):
        case = root / f"{10001 + number}"
        save_nifti(case / "orig" / "TOF.nii.gz", volume.array, volume.affine)
        if not aneurysms:
            continue
        if uid == positives[0]:
            lines = []
            for centre, radius in aneurysms:
                z, y, x = volume.patient_to_voxel(centre)
                lines.append(f"{x:.2f}, {y:.2f}, {z:.2f}, {radius / np.mean(volume.spacing):.2f}")
            (case / "location.txt").write_text("\n".join(lines) + "\n")
            continue
        labels = np.zeros(volume.shape, np.uint8)
        for centre, radius in aneurysms:
            labels[_ball(volume, centre, radius)] = 1
        labels[:3, :3, :3] = 2  # treated: ignored
        save_nifti(case / "aneurysms.nii.gz", labels, volume.affine, np.uint8)
    return root


@pytest.fixture(scope="module")
def bids(sources, tmp_path_factory):
    """BIDS-style: sub-NN/ses-1/anat/*_angio.nii.gz, aneurysm masks (one file each) under
    derivatives/manual_masks, and for the last positive subject a coordinates table instead."""
    root = tmp_path_factory.mktemp("bids")
    positives = [uid for uid, (_, aneurysms) in sources.items() if aneurysms]
    for number, (uid, (volume, aneurysms)) in enumerate(sources.items(), start=1):
        stem = f"sub-{number:02d}_ses-1"
        save_nifti(root / f"sub-{number:02d}" / "ses-1" / "anat" / f"{stem}_angio.nii.gz", volume.array, volume.affine)
        derived = root / "derivatives" / "manual_masks" / f"sub-{number:02d}" / "ses-1" / "anat"
        if uid == positives[-1]:
            rows = ["x\ty\tz\tradius"] + [
                "\t".join(f"{v:.2f}" for v in (*volume.patient_to_voxel(centre)[::-1], radius / np.mean(volume.spacing)))
                for centre, radius in aneurysms]
            derived.mkdir(parents=True)
            (derived / f"{stem}_aneurysms.tsv").write_text("\n".join(rows) + "\n")
            continue
        for index, (centre, radius) in enumerate(aneurysms, start=1):
            save_nifti(derived / f"{stem}_desc-Lesion{index}_mask.nii.gz", _ball(volume, centre, radius), volume.affine,
                       np.uint8)
    return root


@pytest.mark.parametrize("layout", ["adam", "bids"])
def test_every_case_and_aneurysm_is_found_where_the_phantom_put_it(layout, adam, bids, sources):
    root = {"adam": adam, "bids": bids}[layout]
    assert is_nifti_dataset(root)
    cases = find_cases(root)  # the layout told apart by the folder
    assert len(cases) == len(sources) and all(case.modality == "MRA" for case in cases)
    for case, (volume, aneurysms) in zip(cases, sources.values()):
        assert len(case.aneurysms) == len(aneurysms), case.case_id  # ADAM's treated label 2 is not one
        for (found, reach), (centre, radius) in zip(sorted(case.aneurysms, key=lambda a: tuple(a[0])),
                                                    sorted(aneurysms, key=lambda a: tuple(a[0]))):
            assert np.linalg.norm(found - centre) <= max(volume.spacing) / 2, case.case_id  # within half a voxel
            assert reach == pytest.approx(radius, abs=max(volume.spacing))
    if layout == "bids":
        assert cases[0].case_id == "sub-01_ses-1"


def test_a_folder_of_no_known_layout_is_one_clear_error(tmp_path, capsys, trained):
    (tmp_path / "case").mkdir()
    with pytest.raises(IngestError, match="holds no ADAM-style case"):
        find_cases(tmp_path)
    (tmp_path / "sub-01" / "anat").mkdir(parents=True)
    with pytest.raises(IngestError, match="holds no BIDS-style case"):
        find_cases(tmp_path)
    assert main(["evaluate", "--run", str(trained), "--test-set", str(tmp_path), "--layout", "adam"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_evaluate_scores_a_nifti_dataset_with_the_froc_and_its_aneurysm_present_auc(adam, sources, trained, capsys,
                                                                                   tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")  # the session's run stays as other tests expect it
    assert main(["evaluate", "--run", str(run), "--test-set", str(adam)]) == 0
    out = capsys.readouterr().out
    assert f"{len(sources)} cases" in out and "final score undefined" in out
    result = json.loads(next((run / "test_sets").glob("adam*nifti*.json")).read_text())
    positives = sum(bool(aneurysms) for _, aneurysms in sources.values())
    assert (result["series"], result["positives"]) == (len(sources), positives)
    assert result["froc"]["aneurysms"] == sum(len(aneurysms) for _, aneurysms in sources.values())
    assert result["aneurysm_present_auc"] is not None and result["final_score"] is None  # no location labels
    cases = find_cases(adam)
    assert all(result["references"][case.case_id] for case in cases if case.aneurysms)  # what the truth came from
