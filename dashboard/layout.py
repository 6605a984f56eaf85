"""Page layout that holds from a wide monitor down to an 800 px window.

Streamlit keeps columns side by side down to 640 px and the sidebar at its full width: at
800 px charts were clipped, tables showed one column and captions broke letter by letter.
Below `NARROW_PX` the sidebar narrows and columns stack (metrics two or three to a row)."""

from __future__ import annotations

import streamlit as st

NARROW_PX = 1000

NARROW_SCREEN_CSS = f"""<style>
@media (max-width: {NARROW_PX}px) {{
  section[data-testid="stSidebar"] {{ width: 240px !important; min-width: 240px !important; }}
  [data-testid="stHorizontalBlock"] {{ flex-wrap: wrap !important; }}
  [data-testid="stHorizontalBlock"] > [data-testid="stColumn"] {{
    flex: 1 1 100% !important; min-width: 100% !important; }}
  [data-testid="stHorizontalBlock"] > [data-testid="stColumn"]:has([data-testid="stMetric"]) {{
    flex: 1 1 30% !important; min-width: 30% !important; }}
}}
</style>"""


def adapt_to_narrow_screens() -> None:
    """Put the narrow-screen rules on the page (once per run, before anything is drawn)."""
    st.html(NARROW_SCREEN_CSS)
