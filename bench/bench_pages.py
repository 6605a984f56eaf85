"""Benchmark: page render and slider response, in server time (Streamlit's AppTest).

    .venv/bin/python bench/bench_pages.py [--model CHECKPOINT] [--repeats 5]

On the data the dashboard uses (the demo by default; ``ANEURYSM_DATA`` for another folder)
and a model (``--model``, else ``ANEURYSM_MODEL``, else the shipped one). For each page: the
first run (caches cold) and the median of later runs (data cached: the "interactive" time;
for the exploration page once the headers read beside it, for the geometry tab, are shown);
then what a slice viewer costs the server when a plane is shown (its slice stack: every slice
as a picture, sent once; the browser then moves through them, see
`bench/bench_slider_browser.py` for a slider move). Target (issue): a page within 2 s once the
data is cached. The home page's run is printed as the reference of the same process (what any
rerun costs at least). AppTest reruns the whole script on a widget change, where the browser
reruns only the fragment that holds the viewer: an upper bound.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PAGES = ("pages/explore.py", "pages/build.py", "pages/train.py", "pages/infer.py")


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def stack_work(app, repeats: int = 3) -> tuple[float, int, float]:
    """Median time to make the exploration viewer's axial stack (the cached volume, every
    slice's picture, the markers), its number of pictures and its size (MB) as sent."""
    from dashboard import viewer
    from dashboard.volumes import default_spacing, display_volume

    root = str(app.session_state["data_root"])
    uid = str(app.selectbox(key="explore_series").value["SeriesInstanceUID"])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        shown = display_volume(root, uid, default_spacing())
        pictures = viewer.stack_pictures(shown["array"], 0, (float(shown["array"].min()), float(shown["array"].max())))
        viewer.stack_markers([{**p, "text": ""} for p in shown["localizers"]], 0, shown["array"].shape, 0, 5.0)
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(pictures), sum(map(len, pictures)) / 1e6


def geometry_shown(app) -> None:
    """Rerun the exploration page until the header reading is done and its table shows."""
    while not any("Median images" in frame.value.columns for frame in app.dataframe):
        time.sleep(0.2)
        app.run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint for the inference page")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.model:
        os.environ["ANEURYSM_MODEL"] = str(Path(args.model).resolve())
    os.chdir(ROOT)
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    first = timed(app.run)
    home = statistics.median(timed(app.run) for _ in range(args.repeats))
    print(f"{'page':<20}{'first run (s)':>15}{'cached (s)':>12}")
    print(f"{'home (reference)':<20}{first:>15.3f}{home:>12.3f}")
    for page in PAGES:
        first = timed(lambda: app.switch_page(page).run())
        if page == "pages/explore.py":
            headers = first + timed(lambda: geometry_shown(app))
        cached = statistics.median(timed(app.run) for _ in range(args.repeats))
        assert not app.exception, app.exception
        print(f"{Path(page).stem:<20}{first:>15.3f}{cached:>12.3f}")

    print(f"explore: the acquisition geometry's headers read beside the page, shown after {headers:.1f} s")
    app.switch_page("pages/explore.py").run()
    made, count, size = stack_work(app, args.repeats)
    print(f"explore viewer: a plane's stack, {count} pictures ({size:.1f} MB) made in {made * 1000:.0f} ms "
          f"(median of {args.repeats}); slider moves then stay in the browser")
    plane = timed(lambda: app.radio(key="explore_plane").set_value("Coronal").run())
    print(f"explore: switching to the coronal plane (page rerun with its new stack) {plane:.2f} s")

    app.switch_page("pages/infer.py").run()
    scored = timed(lambda: app.button(key="infer_run_demo").click().run())
    assert not app.exception, app.exception
    plane = timed(lambda: app.radio(key="infer_plane").set_value("Coronal").run())
    print(f"inference: scoring a demo series {scored:.2f} s; switching the viewer to the coronal plane "
          f"(two stacks: slice and MIP, heat painted) {plane:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
