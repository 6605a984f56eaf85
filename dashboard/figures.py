"""Plotly figures shared by the pages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from pipeline.labels import LOCATIONS, MODALITIES

ACCENT = "#e4572e"
MUTED = "#5b8db8"


def style(figure: go.Figure, height: int = 320) -> go.Figure:
    figure.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), legend_title_text="",
                         template="plotly_dark", paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)")
    return figure


def balance_by_modality(table: pd.DataFrame) -> go.Figure:
    counts = (table.assign(Label=np.where(table["Aneurysm Present"] == 1, "with aneurysm", "without"))
              .groupby(["Modality", "Label"]).size().rename("Series").reset_index())
    figure = px.bar(counts, x="Modality", y="Series", color="Label", barmode="stack",
                    category_orders={"Modality": list(MODALITIES), "Label": ["with aneurysm", "without"]},
                    color_discrete_map={"with aneurysm": ACCENT, "without": MUTED}, title="Series per modality")
    return style(figure)


def locations(table: pd.DataFrame) -> go.Figure:
    counts = pd.DataFrame({"Location": list(LOCATIONS), "Series": [int(table[name].sum()) for name in LOCATIONS]})
    figure = px.bar(counts, x="Series", y="Location", orientation="h", title="Aneurysms per location",
                    color_discrete_sequence=[ACCENT])
    figure.update_yaxes(categoryorder="array", categoryarray=list(LOCATIONS)[::-1], title="")
    return style(figure, height=420)


def ages(table: pd.DataFrame) -> go.Figure:
    figure = px.histogram(table, x="PatientAge", color="PatientSex", nbins=15, barmode="overlay", opacity=0.75,
                          title="Age and sex", labels={"PatientAge": "Age (years)"},
                          color_discrete_sequence=[MUTED, ACCENT])
    return style(figure)


def spacing(geometry: pd.DataFrame, column: str) -> go.Figure:
    figure = px.box(geometry, x="Modality", y=column, points="all", title=column,
                    category_orders={"Modality": list(MODALITIES)}, color_discrete_sequence=[MUTED])
    return style(figure, height=300)


def slice_image(image: np.ndarray, window: tuple[float, float], markers: list[dict], title: str,
                aspect: float = 1.0) -> go.Figure:
    """A grey-level slice (rows down) with localizer markers (dicts with x, y, text)."""
    low, high = window
    grey = (np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)
    figure = px.imshow(grey, binary_string=True, aspect="equal")
    figure.update_traces(hoverinfo="skip", hovertemplate=None)
    if markers:
        figure.add_trace(go.Scatter(
            x=[m["x"] for m in markers], y=[m["y"] for m in markers], text=[m["text"] for m in markers],
            mode="markers", marker=dict(size=22, color="rgba(0,0,0,0)", line=dict(color=ACCENT, width=2.5)),
            hovertemplate="%{text}<extra></extra>", showlegend=False,
        ))
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False, scaleanchor="x", scaleratio=aspect)
    figure.update_layout(title=title, height=560, margin=dict(l=0, r=0, t=40, b=0), template="plotly_dark",
                         paper_bgcolor="rgba(0,0,0,0)", dragmode="pan")
    return figure
