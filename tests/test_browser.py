"""The dashboard in a real browser: ``streamlit run app.py`` driven by Playwright in Debian's
Chromium (installed by ``.ci/run``), cut off from every address but this machine's. Visits the
home page and the four others through the navigation, uploads a demo series' files on the
inference page, sees the 14 probabilities and the 3D view. Screenshots go to
``ANEURYSM_SCREENSHOTS`` (default: the test's temporary folder)."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from pipeline.labels import LABEL_COLUMNS

from dashboard.layout import NARROW_PX
from dashboard.screenshot import CHROMIUM, FLAGS  # the same browser settings as the screenshot tool

ROOT = Path(__file__).resolve().parents[1]

PAGES = {"Dataset exploration": "Dataset exploration", "Dataset building": "Dataset building",
         "Training": "Training", "Inference": "Inference"}  # navigation link -> page title

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed (.ci/run installs it)")]


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


@contextlib.contextmanager
def dashboard(demo, trained, scratch: Path, **environment):
    """The dashboard on the small demo data with the one-epoch model; yields its address."""
    port = _free_port()
    environment = {**os.environ, "ANEURYSM_DATA": str(demo[0]), "ANEURYSM_MODEL": str(trained / "best.pt"),
                   "ANEURYSM_RUNS_DIR": str(scratch / "runs"), "ANEURYSM_DATASETS_DIR": str(scratch / "datasets"),
                   **environment}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(demo, trained, tmp_path_factory):
    with dashboard(demo, trained, tmp_path_factory.mktemp("browser")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("ANEURYSM_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def settle(page) -> None:
    """Wait until Streamlit has finished running the script and drawing."""
    page.wait_for_selector("[data-testid='stMain'] [data-testid='stElementContainer']", timeout=120_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000)
    page.wait_for_timeout(500)


def open_dashboard(browser, url: str, height: int = 900, width: int = 1400):
    """A new page on the dashboard at ``url``, cut off from everything but this machine: a
    request that would leave 127.0.0.1 is refused and recorded in the list returned with it."""
    page = browser.new_page(viewport={"width": width, "height": height})
    outside = []

    def this_machine_only(route):
        if route.request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", this_machine_only)
    page.sent_to_server = []  # every websocket message the page sends (widget changes, reruns)
    page.on("websocket", lambda socket: socket.on("framesent", lambda frame: page.sent_to_server.append(frame)))
    page.goto(url)
    settle(page)
    return page, outside


def upload_on_the_inference_page(browser, url: str, files: list[str], height: int):
    """A new page (`open_dashboard`), through the navigation to the Inference page's Upload
    tab, with ``files`` given to its uploader; returns the page and its outside requests."""
    page, outside = open_dashboard(browser, url, height)
    page.get_by_role("link", name="Inference").first.click()
    page.get_by_role("heading", name="Inference").first.wait_for(timeout=60_000)
    settle(page)
    page.get_by_role("tab", name="Upload").click()
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(files)
    return page, outside


def assert_no_error_shown(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, "a traceback is shown"


@pytest.mark.parametrize("width", [1400, 800])
def test_every_page_opens_from_the_navigation_without_leaving_this_machine(server, browser, shots, width):
    page, outside = open_dashboard(browser, server, width=width)
    assert page.get_by_role("heading", name="Intracranial aneurysm detection").is_visible()
    page.screenshot(path=str(shots / f"home-{width}.png"))
    for link, title in PAGES.items():
        page.get_by_role("link", name=link).first.click()
        page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
        settle(page)
        assert_no_error_shown(page)
        fits_the_window(page, width)
        page.screenshot(path=str(shots / f"{link.lower().replace(' ', '-')}-{width}.png"))
    assert outside == []  # fonts, icons and scripts are the dashboard's own
    page.close()


def fits_the_window(page, width: int) -> None:
    """Nothing wider than the window, and the page's own area keeps most of it (at 800 px the
    sidebar narrows and columns stack, so tables and charts keep their width)."""
    main = page.locator("[data-testid='stMain']").bounding_box()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width
    assert main["width"] >= 0.6 * width
    if width <= NARROW_PX:  # every column but a metric's takes the whole width
        for column in page.locator("[data-testid='stColumn']:not(:has([data-testid='stMetric']))").all()[:20]:
            box = column.bounding_box()
            assert box is None or box["width"] == 0 or box["width"] >= 0.8 * main["width"]  # less its padding


def test_an_uploaded_series_gets_the_14_probabilities(server, browser, shots, demo, tmp_path):
    from playwright.sync_api import expect

    root = demo[0]
    table = pd.read_csv(root / "train.csv", dtype={"SeriesInstanceUID": str})
    uid = table.loc[table["Aneurysm Present"] == 1, "SeriesInstanceUID"].iloc[0]
    files = sorted(str(p) for p in (root / "series" / uid).iterdir())
    page, outside = upload_on_the_inference_page(browser, server, files, height=2300)
    run = page.get_by_role("button", name="Run the model on this series").locator("visible=true")
    run.wait_for(timeout=120_000)
    run.click()
    page.get_by_text("Top candidates").wait_for(timeout=180_000)
    settle(page)
    assert_no_error_shown(page)
    main = page.locator("[data-testid='stMain']")
    expect(main).to_contain_text(uid)  # the series that was uploaded is the one scored
    for name in LABEL_COLUMNS:  # the bar chart (drawn by plotly after the script ends) names every column
        expect(main).to_contain_text(name, timeout=60_000)
    present = page.locator("[data-testid='stMetric']", has_text="Aneurysm Present")
    value = float(present.locator("[data-testid='stMetricValue']").text_content())
    assert 0.0 <= value <= 1.0
    assert "ZZFAKE" not in page.content()  # the demo's fake patient fields never reach the page
    page.screenshot(path=str(shots / "inference-upload.png"), full_page=True)
    slices_move_in_the_browser(page)
    for label, modality in (("DICOM SR", "SR"), ("DICOM SEG", "SEG")):  # made when clicked, then downloaded
        with page.expect_download(timeout=120_000) as download:
            page.get_by_role("button", name=label).click()
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)
        written = pydicom.dcmread(saved)
        assert (written.Modality, written.SeriesDescription.endswith("unverified)")) == (modality, True)
        references = written.ReferencedSeriesSequence if modality == "SEG" else \
            written.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        assert references[0].SeriesInstanceUID == uid  # of the uploaded series
    the_3d_view_draws(page, shots)
    assert outside == []  # NiiVue's bundle too
    page.close()


def slices_move_in_the_browser(page) -> None:
    """Arrow keys and the mouse wheel on the slice viewer show the next slices (titles,
    pictures) without a message to the server: no round trip for a slider move."""
    titles = page.locator("[data-testid='slice-title']")
    slider = page.locator("input[type=range][aria-label='Slice']").first
    number, count = (int(n) for n in titles.first.text_content().split()[-1].split("/"))
    pictures = page.locator(".slice-stack img")
    before = pictures.first.get_attribute("src")
    sent = len(page.sent_to_server)
    slider.focus()
    page.keyboard.press("ArrowRight" if number < count else "ArrowLeft")
    moved = number + 1 if number < count else number - 1
    assert [t.split()[-1] for t in titles.all_text_contents()] == [f"{moved}/{count}"] * 2  # slice and MIP alike
    assert pictures.first.get_attribute("src") != before
    page.locator(".slice-stack .frame").first.hover()
    page.mouse.wheel(0, -120)
    assert titles.first.text_content().endswith(f" {moved - 1}/{count}")
    page.wait_for_timeout(500)
    assert len(page.sent_to_server) == sent


def the_3d_view_draws(page, shots) -> None:
    """The NiiVue view of a scored series, once asked for, draws something (not a blank canvas)."""
    page.get_by_text("Interactive 3D view (NiiVue)").click()
    canvas = page.frame_locator("iframe[title*='niivue']").locator("canvas").first
    canvas.wait_for(timeout=60_000)
    page.wait_for_timeout(4000)  # the volume and its two overlays are decoded and drawn
    canvas.scroll_into_view_if_needed()
    picture = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("L"), float)
    assert_no_error_shown(page)
    page.screenshot(path=str(shots / "inference-3d.png"), full_page=True)
    assert picture.shape[1] > 600 and picture.std() > 10, "the 3D view drew nothing"


def listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as in /proc/net/tcp*) a socket listens on at ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the listening sockets from /proc (Linux)")
def test_the_dashboard_listens_on_this_machine_only(server):
    addresses = listening_addresses(int(server.rsplit(":", 1)[1]))
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
    assert addresses and addresses <= loopback, addresses


def uploads_held(url: str) -> int:
    """Bytes of uploaded files the server holds, from its own metrics."""
    text = urllib.request.urlopen(f"{url}/_stcore/metrics", timeout=5).read().decode()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if "UploadedFileManager" in line and not line.startswith("#"))


def test_upload_files_beyond_the_cap_are_refused_as_they_arrive_and_a_refused_upload_is_let_go(
        demo, trained, tmp_path, browser, shots):
    files = []
    for index in range(3):  # 3 x 5 MB against a cap of 8 MB
        path = tmp_path / f"part{index}.bin"
        path.write_bytes(os.urandom(5 << 20))
        files.append(str(path))
    with dashboard(demo, trained, tmp_path, ANEURYSM_MAX_UPLOAD_MB="8") as url:
        page, _ = upload_on_the_inference_page(browser, url, files, height=1400)
        held = []
        deadline = time.monotonic() + 120
        refusal = page.get_by_text("The upload was let go")
        while not refusal.count():
            held.append(uploads_held(url))
            assert time.monotonic() < deadline, "no refusal shown"
            time.sleep(0.1)
        settle(page)
        page.screenshot(path=str(shots / "inference-upload-refused.png"), full_page=True)
        message = page.locator("[data-testid='stAlertContentError']").first.text_content()
        assert "is not a DICOM file" in message and "more than the limit" not in message  # the page got 1 file
        assert max(held) <= 8 << 20  # never more than the cap in the server's memory
        assert uploads_held(url) == 0  # and nothing after the refusal
        assert_no_error_shown(page)
        page.close()

