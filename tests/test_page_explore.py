"""The dataset exploration page: the numbers of train.csv, the geometry, the viewer with localizers."""

from __future__ import annotations

import pandas as pd
from streamlit.testing.v1 import AppTest


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
    box.set_value(next(o for o in box.options if str(positive.SeriesInstanceUID)[-10:] in o)).run()
    app.toggle(key="explore_mip").set_value(True).run()
    app.slider(key="explore_slab").set_value(60).run()
    assert not app.exception
    assert "localizers" in " ".join(c.value for c in app.caption)
    chart = app.get("plotly_chart")[-1].proto.spec
    assert '"mode":"markers"' in chart.replace(" ", "")  # the aneurysm circles are drawn
