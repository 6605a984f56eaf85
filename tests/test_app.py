"""The dashboard's entry point renders without exception."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from pipeline.labels import LOCATIONS


def test_home_page_renders_and_says_the_data_are_synthetic():
    app = AppTest.from_file("../app.py", default_timeout=60).run()
    assert not app.exception
    assert app.title[0].value == "Intracranial aneurysm detection"
    assert any("synthetic phantoms" in info.value for info in app.info)
    text = " ".join(m.value for m in app.markdown)
    assert "Aneurysm Present" in text
    assert all(f"{i}. {name}" in text for i, name in enumerate(LOCATIONS, start=1))
