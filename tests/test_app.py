"""The dashboard's entry point renders without exception."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def test_home_page_renders_and_says_the_data_are_synthetic():
    app = AppTest.from_file("../app.py", default_timeout=60).run()
    assert not app.exception
    assert app.title[0].value == "Intracranial aneurysm detection"
    assert any("synthetic phantoms" in info.value for info in app.info)
    table = app.dataframe[0].value
    assert len(table) == 14 and table.iloc[-1, 0] == "Aneurysm Present"
