"""Screenshot dashboard pages in headless Chromium (Debian's ``chromium``) with Playwright.

    .venv/bin/python -m dashboard.screenshot URL OUT.png [--width 1400 --height 900] [--click BUTTON --wait-for TEXT]

The app must already be running (``python3 run.py app``). Waits until Streamlit
has finished rendering before taking the picture. With ``--click``, presses the first
button of that name first and waits for ``--wait-for`` to appear, e.g. the inference page:
``--click "Run the model on this series" --wait-for "Top candidates" --height 2300``.
"""

from __future__ import annotations

import argparse
import sys

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def screenshot(url: str, out: str, width: int = 1400, height: int = 900, click: str | None = None,
               wait_for: str | None = None) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(url)
        page.wait_for_selector("[data-testid='stMain'] [data-testid='stElementContainer']", timeout=120_000)
        if click:
            page.get_by_role("button", name=click).first.click(timeout=120_000)
        if wait_for:
            page.get_by_text(wait_for).first.wait_for(timeout=180_000)
        page.wait_for_function(
            "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000
        )
        # plotly draws after the script ends: wait until no chart is a placeholder any more
        # and every chart has its SVG
        page.wait_for_function(
            "() => !document.querySelector('[data-testid=\"stSkeleton\"]') && "
            "[...document.querySelectorAll('[data-testid=\"stPlotlyChart\"]')]"
            ".every(chart => chart.querySelector('.main-svg'))", timeout=60_000
        )
        page.wait_for_timeout(1000)
        page.screenshot(path=out, full_page=True)
        browser.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--click", help="the name of a button to press first")
    parser.add_argument("--wait-for", help="text to wait for after the click")
    args = parser.parse_args()
    screenshot(args.url, args.out, args.width, args.height, args.click, args.wait_for)
    sys.exit(0)
