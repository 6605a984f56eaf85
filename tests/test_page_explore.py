"""The dataset exploration page: the numbers of train.csv, the geometry, the viewer with localizers."""

from __future__ import annotations

import pandas as pd
from streamlit.testing.v1 import AppTest

from helpers import slice_stack_shown


def open_page(monkeypatch, demo):
    root, _, _ = demo
    monkeypatch.setenv("ANEURYSM_DATA", str(root))
    app = AppTest.from_file("../app.py", default_timeout=120).run()
    app.switch_page("pages/explore.py").run()
    assert not app.exception
    return app, root




def test_overview_shows_the_counts_of_train_csv(monkeypatch, demo):
    app, root = open_page(monkeypatch, demo)
    table = pd.read_csv(root / "train.csv")
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Series"] == str(len(table))
    assert metrics["With an aneurysm"] == str(int(table["Aneurysm Present"].sum()))
    assert metrics["Modalities"] == str(table["Modality"].nunique())
    shares = app.dataframe[0].value
    assert shares["Series"].sum() == len(table)


def test_viewer_marks_the_localizers_of_a_positive_series(monkeypatch, demo):
    app, root = open_page(monkeypatch, demo)
    table = pd.read_csv(root / "train.csv")
    positive = table[table["Aneurysm Present"] == 1].iloc[0]
    box = app.selectbox(key="explore_series")
    box.select_index(next(i for i, o in enumerate(box.options) if str(positive.SeriesInstanceUID)[-10:] in o)).run()
    app.toggle(key="explore_mip").set_value(True).run()
    app.slider(key="explore_slab").set_value(60).run()
    assert not app.exception
    assert "localizers" in " ".join(c.value for c in app.caption)
    shown = slice_stack_shown(app)
    assert shown["panels"][0]["title"].endswith("MIP 60 mm")
    assert shown["panels"][0]["markers"]  # the aneurysm circles are drawn


def test_viewer_opens_on_an_aneurysm_of_a_thin_slice_series_with_one_numbering(monkeypatch, demo):
    app, root = open_page(monkeypatch, demo)
    table = pd.read_csv(root / "train.csv")
    chosen = app.selectbox(key="explore_series").value
    assert chosen["Aneurysm Present"] == 1 and chosen["Modality"] in ("MRA", "CTA")  # not a 5 mm T2
    volume = app.session_state["explore_shown"]
    first = volume["localizers"][0]["voxel"]
    shown = slice_stack_shown(app)
    assert shown["start"] == round(first[0])  # on the aneurysm's slice (numbered from 1 by the viewer)
    assert shown["count"] == len(shown["panels"][0]["pictures"]) == volume["array"].shape[0]  # every slice sent
    assert shown["panels"][0]["title"] == "Axial slice"  # the viewer adds " 43/95": one numbering
    circle = shown["panels"][0]["markers"][0]
    assert circle["first"] <= shown["start"] <= circle["last"]  # its localizer circled there
    assert set(shown["edges"].values()) == {"A", "P", "R", "L"}  # the patient's directions on the axial view
    app.radio(key="explore_plane").set_value("Sagittal").run()
    shown = slice_stack_shown(app)
    assert shown["start"] == round(first[2]) and set(shown["edges"].values()) == {"S", "I", "A", "P"}
    jumps = shown["jump"]
    app.selectbox(key="explore_jump").set_value(0).run()  # back to the aneurysm, wherever the slider went
    shown = slice_stack_shown(app)
    assert shown["jump"] == jumps + 1 and shown["start"] == round(first[2])
    assert not app.exception
    assert len(table) == len(app.selectbox(key="explore_series").options)


def test_mr_series_have_window_presets_and_a_custom_window(monkeypatch, demo):
    app, root = open_page(monkeypatch, demo)
    box = app.selectbox(key="explore_series")
    box.select_index(next(i for i, o in enumerate(box.options) if o.startswith("MRI T2"))).run()
    window = app.selectbox(key="explore_window")
    assert "Bright vessels" in window.options and "Custom window / level" in window.options
    before = slice_stack_shown(app)
    window.set_value("Soft tissue").run()
    after = slice_stack_shown(app)
    assert after["panels"][0]["pictures"][after["start"]] != before["panels"][0]["pictures"][before["start"]]
    assert after["memory"] == before["memory"]  # another grey scale, the same slice kept in the browser
    app.selectbox(key="explore_window").set_value("Custom window / level").run()
    app.slider(key="explore_width").set_value(app.slider(key="explore_width").min).run()
    assert not app.exception


def test_the_acquisition_geometry_comes_from_the_headers_read_beside_the_page(monkeypatch, demo):
    import time

    app, root = open_page(monkeypatch, demo)
    deadline = time.monotonic() + 120
    while not any("Median images" in d.value.columns for d in app.dataframe) and time.monotonic() < deadline:
        assert not app.exception  # the page works meanwhile, with the reading's progress
        time.sleep(0.5)
        app.run()
    summary = next(d.value for d in app.dataframe if "Median images" in d.value.columns)
    table = pd.read_csv(root / "train.csv")
    assert summary["Series"].sum() == len(table)  # 8 series: at most 12 of each modality, so all of them
    assert set(summary.index.get_level_values("Modality")) == set(table["Modality"])


def test_the_geometry_reads_the_first_series_of_each_modality():
    from dashboard.volumes import first_of_each_modality

    series = tuple((f"s{i}", "CTA" if i % 3 else "MRA") for i in range(10))
    assert first_of_each_modality(series, 2) == (("s0", "MRA"), ("s1", "CTA"), ("s2", "CTA"), ("s3", "MRA"))
