"""The dashboard's entry point: home page, data source, first-launch demo generation."""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

from pipeline.labels import LOCATIONS


def run_app(monkeypatch, tmp_path, series=2):
    monkeypatch.delenv("ANEURYSM_DATA", raising=False)
    monkeypatch.setenv("ANEURYSM_DEMO_DIR", str(tmp_path / "demo"))
    monkeypatch.setenv("ANEURYSM_DEMO_SERIES", str(series))
    return AppTest.from_file("../app.py", default_timeout=120).run()


def wait_for_the_demo(root, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not (root / "train.csv").is_file():
        assert time.monotonic() < deadline, "the demo was not generated"
        time.sleep(0.5)


@pytest.mark.slow  # generates a demo in a child process (~10 s)
def test_first_launch_generates_the_demo_data_while_the_home_page_works(monkeypatch, tmp_path):
    app = run_app(monkeypatch, tmp_path)
    assert not app.exception
    assert app.title[0].value == "Intracranial aneurysm detection"  # at once, not after the generation
    assert any("First launch" in p.proto.text for p in app.sidebar.get("progress"))
    app.switch_page("pages/explore.py").run()
    assert any("being generated" in info.value for info in app.info) and not app.error
    wait_for_the_demo(tmp_path / "demo")
    app.switch_page("app.py").run()
    sidebar = " ".join(m.value for m in app.sidebar.markdown) + " ".join(c.value for c in app.sidebar.caption)
    assert "Built-in demo (synthetic phantoms)" in sidebar and "2 series" in sidebar
    again = AppTest.from_file("../app.py", default_timeout=60).run()  # second launch: no regeneration
    assert not again.exception and not again.sidebar.get("progress")


def test_home_page_says_the_data_are_synthetic_and_lists_the_outputs(monkeypatch, tmp_path):
    app = run_app(monkeypatch, tmp_path, series=1)
    wait_for_the_demo(tmp_path / "demo")
    assert app.title[0].value == "Intracranial aneurysm detection"
    assert any("synthetic phantoms" in info.value for info in app.info)
    text = " ".join(m.value for m in app.markdown)
    assert "Aneurysm Present" in text
    assert all(f"{i}. {name}" in text for i, name in enumerate(LOCATIONS, start=1))


def test_a_configured_folder_that_is_not_rsna_data_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("ANEURYSM_DATA", str(tmp_path))
    app = AppTest.from_file("../app.py", default_timeout=60).run()
    assert not app.exception
    assert "without train.csv" in app.sidebar.error[0].value


def test_the_sidebar_names_the_model_in_use(monkeypatch, tmp_path):
    monkeypatch.setenv("ANEURYSM_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ANEURYSM_MODEL", str(tmp_path / "none.pt"))
    app = run_app(monkeypatch, tmp_path, series=1)
    wait_for_the_demo(tmp_path / "demo")
    assert "No trained model yet" in " ".join(c.value for c in app.sidebar.caption)
    monkeypatch.delenv("ANEURYSM_MODEL")
    app = AppTest.from_file("../app.py", default_timeout=60).run()
    assert any("Shipped model" in t.value for t in app.sidebar.text)  # models/demo/best.pt


def test_the_page_script_does_not_stay_the_main_module_after_a_page_test():
    """Runs after the AppTests above: a spawned worker re-imports ``__main__``, and the
    dashboard script there would regenerate the full demo in every demo or build worker."""
    import sys

    assert not str(getattr(sys.modules["__main__"], "__file__", "")).endswith("app.py")


def test_the_sidebar_names_the_phantom_family_of_the_data_folder(tmp_path):
    import json

    from dashboard.data import data_kind

    for name, record, expected in (
        ("demo", {"generator": "pipeline.demo"}, "Built-in demo (synthetic phantoms)"),
        ("shifted", {"family": "demo", "shift": {"noise": 2.5}}, "Phantoms: demo, noise x2.5"),
        ("external", {"family": "external", "validation_only": True},
         "Phantoms, external family (validation only: no model trains on it)"),
        ("rsna", None, "RSNA data folder"),
    ):
        folder = tmp_path / name
        folder.mkdir()
        if record is not None:
            (folder / "demo_manifest.json").write_text(json.dumps({**record, "series": {}}))
        assert data_kind(folder) == expected
