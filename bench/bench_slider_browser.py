"""Benchmark: a slice-slider move in a real browser (headless Chromium through Playwright),
from the key press to the viewer's new slice drawn, on the exploration and inference pages.

    python3 run.py app --server.port 8599 &      # the dashboard on the demo data
    .venv/bin/python bench/bench_slider_browser.py [--url http://127.0.0.1:8599/] [--moves 8]

The exploration viewer is measured once the page's header reading (its geometry tab) is done;
the inference viewer after scoring the demo series the page offers first. Prints each move's
milliseconds and their median (target: 150 ms). The viewers keep every slice of the plane in the
browser (`dashboard.viewer.slice_stack`): a move draws the next picture there, with no round trip
to the server; the time includes Playwright's own messaging to the browser.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboard.screenshot import CHROMIUM, FLAGS  # noqa: E402


TITLES = "[data-testid='slice-title']"


def drawn(page, text: str, timeout: int = 30_000) -> None:
    """Wait until a Plotly chart titled with ``text`` is drawn."""
    page.wait_for_function("t => [...document.querySelectorAll('.gtitle')].some(e => e.textContent.includes(t))",
                           arg=text, polling="raf", timeout=timeout)


def slice_shown(page, number: int, timeout: int = 30_000) -> None:
    """Wait until the viewer shows slice ``number`` (its title and its picture's source)."""
    page.locator(TITLES).first.filter(has_text=f" {number}/").wait_for(timeout=timeout)
    page.wait_for_function("() => { const image = document.querySelector('.slice-stack img') ?? "
                           "[...document.querySelectorAll('*')].map(e => e.shadowRoot).filter(Boolean)"
                           ".map(r => r.querySelector('img')).find(Boolean); return image && image.complete; }",
                           polling="raf", timeout=timeout)


def slider_moves(page, moves: int) -> list[float]:
    """Milliseconds of ``moves`` ArrowRight presses on the page's slice slider."""
    slider = page.locator("input[type=range][aria-label='Slice']").first
    value = int(slider.input_value())
    times = []
    for _ in range(moves):
        slider.focus()
        start = time.perf_counter()
        page.keyboard.press("ArrowRight")
        value += 1
        slice_shown(page, value)
        times.append((time.perf_counter() - start) * 1000)
        page.wait_for_timeout(500)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8599/")
    parser.add_argument("--moves", type=int, default=8)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        for path in ("explore", "infer"):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(args.url + path)
            page.wait_for_selector("[data-testid='stMain'] [data-testid='stElementContainer']", timeout=120_000)
            if path == "explore":
                page.get_by_role("tab", name="Series viewer").click(timeout=120_000)
                drawn(page, "Slice spacing (mm)", timeout=300_000)  # the geometry tab's chart: headers read
            else:
                page.get_by_role("button", name="Run the model on this series").first.click(timeout=120_000)
                page.get_by_text("Top candidates").first.wait_for(timeout=180_000)
            page.locator(TITLES).first.wait_for(timeout=120_000)
            page.wait_for_timeout(2000)
            times = slider_moves(page, args.moves)
            print(f"{path}: slider key -> new slice drawn, ms {[round(t) for t in times]}, "
                  f"median {statistics.median(times):.0f}")
            page.close()
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
