"""Benchmark: page render and slider response, in server time (Streamlit's AppTest).

    .venv/bin/python bench/bench_pages.py [--model CHECKPOINT] [--repeats 5]

On the data the dashboard uses (the demo by default; ``ANEURYSM_DATA`` for another folder)
and a model (``--model``, else ``ANEURYSM_MODEL``, else the shipped one). For each page: the
first run (caches cold) and the median of later runs (data cached: the "interactive" time;
for the exploration page once the headers read beside it, for the geometry tab, are shown);
then a slice-slider move on the exploration page and on the inference page's viewer after a
demo series has been scored. Targets (issue): a page within 2 s once the data is cached, a
slider move within 150 ms. The home page's run is printed as the reference of the same
process (what any rerun costs at least). AppTest reruns the whole script on a widget change,
where the browser reruns only the fragment that holds the slider: an upper bound.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

PAGES = ("pages/explore.py", "pages/build.py", "pages/train.py", "pages/infer.py")


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def fragment_work(app, repeats: int = 5) -> float:
    """Median time of what the exploration viewer's fragment does on a slider move, minus
    Streamlit's own messaging: the cached volume, the slice, the figure and its JSON."""
    from dashboard import figures
    from dashboard.volumes import default_spacing, display_volume

    root = str(app.session_state["data_root"])
    uid = str(app.selectbox(key="explore_series").value["SeriesInstanceUID"])
    times = []
    for index in range(40, 40 + repeats):
        start = time.perf_counter()
        shown = display_volume(root, uid, default_spacing())
        image = figures.plane_image(shown["array"], 0, index, index + 1)
        window = tuple(float(v) for v in np.percentile(image, [1.0, 99.8]))
        figures.slice_image(image, window, [], f"slice {index}").to_json()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    slider = app.slider(key="explore_slice_0")
    moves = [timed(lambda v=v: slider.set_value(v).run()) for v in range(int(slider.min) + 10, int(slider.min) + 10 + args.repeats)]
    print(f"explore slice slider: {statistics.median(moves) * 1000:.0f} ms (median of {len(moves)})")

    print(f"explore viewer fragment's own work (what a slider move reruns in the browser): "
          f"{fragment_work(app) * 1000:.0f} ms (median of {args.repeats})")

    app.switch_page("pages/infer.py").run()
    scored = timed(lambda: app.button(key="infer_run_demo").click().run())
    assert not app.exception, app.exception
    slider = app.slider(key="infer_slice_0")
    moves = [timed(lambda v=v: slider.set_value(v).run()) for v in range(int(slider.min) + 10, int(slider.min) + 10 + args.repeats)]
    print(f"inference: scoring a demo series {scored:.2f} s; slice slider {statistics.median(moves) * 1000:.0f} ms "
          f"(median of {len(moves)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
