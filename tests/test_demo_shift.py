"""Controlled shifts of the demo family: each changes what it names and nothing else."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.__main__ import main
from pipeline.demo.generate import POSE_DEG, RANDOMISED_ACQUISITION, SHIFT_GRID, Shift, plan_dataset, render_series
from pipeline.phantoms import family_label


def _t1post(shift: Shift = Shift()):
    """The first MRI T1post series of a small demo plan (the smallest grid: 192 x 192)."""
    return next(p for p in plan_dataset(12, seed=4, shift=shift) if p.modality == "MRI T1post")


def test_the_identity_shift_is_the_demo_family_itself():
    assert plan_dataset(12, seed=4, shift=Shift()) == plan_dataset(12, seed=4)
    assert Shift.parse("") == Shift() and Shift().changes() == {}


def test_a_shift_changes_the_acquisition_it_names_keeps_the_field_of_view_and_takes_new_uids():
    plain, coarse = _t1post(), _t1post(Shift.parse("pixel=1.5,slice=2"))
    assert coarse.pixel_mm == pytest.approx(plain.pixel_mm * 1.5, abs=1e-3)
    assert coarse.slice_mm == pytest.approx(plain.slice_mm * 2, abs=1e-3)
    assert coarse.matrix * coarse.pixel_mm == pytest.approx(plain.matrix * plain.pixel_mm, rel=0.02)
    assert coarse.series_uid != plain.series_uid  # other pixels: never the same cache entry
    assert dataclasses.replace(coarse, pixel_mm=plain.pixel_mm, slice_mm=plain.slice_mm, matrix=plain.matrix,
                               series_uid=plain.series_uid, shift=Shift()) == plain


def test_thicker_vessels_and_lower_contrast_show_in_the_pixels():
    plain = render_series(_t1post())
    thick = render_series(_t1post(Shift(calibre=1.5)))
    faint = render_series(_t1post(Shift(contrast=0.6)))
    look, gain = plain[5], plain[6].gain  # MR: stored = the image times the receiver gain
    bright = gain * (look.brain + look.artery) / 2  # halfway between brain and artery
    assert (thick[0] > bright).sum() > 1.3 * (plain[0] > bright).sum()  # veins (as bright) keep their calibre
    vessels = plain[0] > bright  # the same noise draws: only the vessels' contrast differs
    brain = gain * look.brain
    excess = (faint[0][vessels] - brain).mean() / (plain[0][vessels] - brain).mean()
    assert excess == pytest.approx(0.6, abs=0.05)
    assert faint[5].artery == pytest.approx(look.brain + 0.6 * (look.artery - look.brain))


def test_the_head_size_and_rotation_shifts_move_the_anatomy():
    plain, big, turned = (render_series(_t1post(s)) for s in (Shift(), Shift(head=1.12), Shift(rotation=25)))
    assert big[4].scale == 1.12 and big[2][0].diameter * big[4].scale > plain[2][0].diameter
    angle = np.degrees(np.arccos((np.trace(turned[4].rotation) - 1) / 2))
    plain_angle = np.degrees(np.arccos((np.trace(plain[4].rotation) - 1) / 2))
    assert angle == pytest.approx(plain_angle * 25 / POSE_DEG[False].max(), rel=0.05)


def test_the_documented_grid_and_its_names():
    assert len(SHIFT_GRID) == 10 and all(len(s.changes()) == 1 for s in SHIFT_GRID)
    assert {name for s in SHIFT_GRID for name in s.changes()} == {f.name for f in dataclasses.fields(Shift)}
    assert family_label({"family": "demo", "shift": {"calibre": 0.7}}, "x") == "demo, calibre x0.7"
    assert family_label({"family": "demo", "shift": {"rotation": 25.0}}, "x") == "demo, rotation 25 deg"


@pytest.mark.parametrize("text, message", [("calibre", "needs a number"), ("size=2", "unknown shift 'size'"),
                                           ("noise=-1", "out of range"), ("rotation=90", "out of range"),
                                           ("noise=nan", "out of range")])
def test_a_bad_shift_is_refused_in_one_line(text, message, tmp_path, capsys):
    with pytest.raises(ValueError, match=message):
        Shift.parse(text)
    assert main(["demo-data", "--out", str(tmp_path / "d"), "--shift", text]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message.split("'")[0] in error[0]
    assert not (tmp_path / "d").exists()


def test_a_shift_needs_its_own_folder(capsys):
    assert main(["demo-data", "--shift", "noise=2"]) == 2
    assert "--out is needed" in capsys.readouterr().err


def test_domain_randomisation_is_its_own_family_variant_with_wider_draws():
    plain, wide = _t1post(), next(p for p in plan_dataset(12, seed=4, randomised=True) if p.modality == "MRI T1post")
    assert wide.randomised and not plain.randomised and wide.series_uid != plain.series_uid
    # the same subject and labels; the plane and slice thickness drawn again, wide
    assert dataclasses.replace(wide, randomised=False, series_uid=plain.series_uid, plane=plain.plane,
                               slice_mm=plain.slice_mm) == plain
    (planes, _), (thinnest, thickest) = RANDOMISED_ACQUISITION["MRI T1post"]
    assert wide.plane in planes and thinnest <= wide.slice_mm <= thickest
    t2 = [p for p in plan_dataset(60, seed=4, randomised=True) if p.modality == "MRI T2"]
    assert {p.plane for p in t2} == {"axial", "coronal", "sagittal"}  # the demo family has no sagittal T2
    looks = [render_series(dataclasses.replace(wide, index=i))[5:7] for i in range(4)]
    gains = {round(scanner.gain, 3) for _, scanner in looks}
    assert len(gains) == 4 and all(0.4 <= g <= 3.0 for g in gains)  # the receiver gain varies
    assert render_series(plain)[6].gain == 1.0  # the demo family's own scanner
    assert family_label({"family": "demo", "randomised": True, "shift": {}}, "x") == "demo randomised"


def test_a_randomised_subject_has_anatomy_the_demo_family_never_shows():
    """Domain randomisation draws what drew the model's false positives on foreign phantoms:
    deep veins, cerebellar arteries, a vertebrobasilar junction elsewhere, bone beside the
    siphon, calcifications; the demo family itself stays as it was."""
    from pipeline.demo.anatomy import CALCIFICATION_GAP_MM, build_head

    plain = build_head(np.random.default_rng(1))
    heads = [build_head(np.random.default_rng(seed), randomised=True) for seed in range(6)]
    assert not plain.calcifications and not plain.bones and "vein of Galen" not in {t.name for t in plain.tubes}
    for head in heads:
        names = {t.name for t in head.tubes}
        assert {"vein of Galen", "straight sinus", "internal cerebral vein 1"} <= names and len(head.bones) == 3
        arteries = [t for t in head.tubes if t.kind == "artery"]
        wall = np.vstack([t.points for t in arteries]), np.concatenate([t.radii for t in arteries])
        for centre, radius in head.calcifications:  # never on an artery: that would be an unlabelled dome
            assert np.min(np.linalg.norm(wall[0] - centre, axis=1) - wall[1]) > radius + CALCIFICATION_GAP_MM
    assert any(name.startswith(("PICA", "AICA")) for head in heads for name in {t.name for t in head.tubes})
    assert sum(len(head.calcifications) for head in heads) > 0
    junctions = np.array([next(t for t in head.tubes if t.name == "basilar").points[0] for head in heads])
    assert np.ptp(junctions[:, 1]) > 5  # the junction moves from subject to subject
    assert next(t for t in plain.tubes if t.name == "basilar").points[0] == pytest.approx([0, 20, -41])
