"""Plotly figures shared by the pages."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from PIL import Image

from pipeline.labels import LABEL_COLUMNS, LOCATIONS, MODALITIES

ACCENT = "#e4572e"
MUTED = "#5b8db8"
TRUTH = "#3ddc97"  # ground truth, beside the prediction's accent


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


def cubes_per_modality(balance: pd.DataFrame) -> go.Figure:
    """Positive and negative cubes of each modality, from a build's balance table."""
    counts = balance[balance.Modality != "All"].melt(id_vars="Modality", var_name="Kind", value_name="Cubes",
                                                     value_vars=["Positive cubes", "Negative cubes"])
    figure = px.bar(counts, x="Modality", y="Cubes", color="Kind", barmode="group", title="Cubes per modality",
                    color_discrete_map={"Positive cubes": ACCENT, "Negative cubes": MUTED})
    return style(figure)


def locations(table: pd.DataFrame) -> go.Figure:
    """How many series have an aneurysm at each location (train.csv counts series, not aneurysms)."""
    counts = pd.DataFrame({"Location": list(LOCATIONS), "Series": [int(table[name].sum()) for name in LOCATIONS]})
    figure = px.bar(counts, x="Series", y="Location", orientation="h", title="Series with an aneurysm, per location",
                    color_discrete_sequence=[ACCENT])
    figure.update_yaxes(categoryorder="array", categoryarray=list(LOCATIONS)[::-1], title="")
    figure.update_xaxes(title="series with an aneurysm there (train.csv)")
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


PLANES = {"Axial": 0, "Coronal": 1, "Sagittal": 2}  # array axis (z, y, x) of each viewing plane
# The patient direction at each edge of a `plane_image` of the canonical (z: S, y: P, x: L) volume,
# as radiologists view them: the patient's right on the viewer's left.
ORIENTATION = {0: {"top": "A", "bottom": "P", "left": "R", "right": "L"},
               1: {"top": "S", "bottom": "I", "left": "R", "right": "L"},
               2: {"top": "S", "bottom": "I", "left": "A", "right": "P"}}
HEAT_LOW, HEAT_HIGH = np.array([228, 87, 46], float), np.array([255, 209, 102], float)  # accent -> yellow


def plane_image(array: np.ndarray, axis: int, low: int, high: int) -> np.ndarray:
    """Slices [low, high) along ``axis`` of a canonical (z: superior) volume, max-projected
    when more than one, with superior up in coronal and sagittal views."""
    image = np.take(array, range(low, high), axis=axis).max(axis=axis)
    return image[::-1] if axis > 0 else image


def markers_in_view(points: list[dict], axis: int, low: int, high: int, depth: int, margin: float) -> list[dict]:
    """The points ({"voxel": (z, y, x), ...}) within ``margin`` voxels of the slices [low, high)
    shown by `plane_image`, with their picture position added (x: column, y: row);
    ``depth`` is the volume's number of axial slices (rows are flipped in side views)."""
    shown = []
    for point in points:
        z, y, x = point["voxel"]
        if low - margin <= (z, y, x)[axis] <= high - 1 + margin:
            column, row = {0: (x, y), 1: (x, depth - 1 - z), 2: (y, depth - 1 - z)}[axis]
            shown.append({**point, "x": column, "y": row})
    return shown


def grey_levels(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    return (np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)


HEAT_FLOOR = 0.1  # window probabilities below it are not painted


def heat_overlay(grey: np.ndarray, heat: np.ndarray, floor: float = HEAT_FLOOR) -> np.ndarray:
    """RGB picture: ``heat`` (0-1) painted over the grey levels, transparent below ``floor``,
    from the accent colour to yellow and more opaque as it rises (the anatomy stays visible
    under middling values)."""
    level = np.clip(heat, 0, 1)[..., None].astype(np.float32)
    colour = HEAT_LOW + (HEAT_HIGH - HEAT_LOW) * level
    alpha = np.where(level >= floor, 0.7 * level ** 1.5, 0.0)
    blended = grey[..., None].astype(float) * (1 - alpha) + colour * alpha
    return blended.astype(np.uint8)


def png_data_uri(picture: np.ndarray) -> str:
    """A grey (rows, columns) or RGB (rows, columns, 3) uint8 picture as a PNG data URI
    (fast compression: it travels to a browser on this machine or nearby)."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def probabilities(values: dict[str, float], threshold: float, truth: dict[str, int] | None = None,
                  height: int = 460) -> go.Figure:
    """The 14 probabilities as horizontal bars (challenge order, top down), those at or above
    ``threshold`` in the accent colour, with the ground truth's positive labels dotted."""
    names = list(LABEL_COLUMNS)
    colours = [ACCENT if values[n] >= threshold else MUTED for n in names]
    figure = go.Figure(go.Bar(x=[values[n] for n in names], y=names, orientation="h", marker_color=colours,
                              hovertemplate="%{y}: %{x:.3f}<extra></extra>", showlegend=False))
    if truth is not None:
        positives = [n for n in names if truth.get(n) == 1]
        figure.add_trace(go.Scatter(x=[1.04] * len(positives), y=positives, mode="markers", name="Ground truth",
                                    marker=dict(color=TRUTH, size=11, symbol="circle"), hoverinfo="skip"))
    figure.add_vline(x=threshold, line_dash="dash", line_color="#cccccc")
    figure.update_xaxes(range=[0, 1.08], title="Probability")
    figure.update_yaxes(categoryorder="array", categoryarray=names[::-1], title="")
    figure.update_layout(title="Probabilities", legend=dict(orientation="h", y=-0.15))
    return style(figure, height=height)


# --------------------------------------------------------------------------------------
# Training runs

VALIDATION_MEASURES = {"validation_auc": "Cube AUC", "series_score": "Held-out series score"}


def training_loss(records: list[dict]) -> go.Figure | None:
    """The loss of a run's step records, or None before the first."""
    steps = pd.DataFrame([r for r in records if r["kind"] == "step"])
    if not len(steps):
        return None
    return style(px.line(steps, x="step", y="loss", title="Training loss", color_discrete_sequence=[MUTED]))


def validation(records: list[dict]) -> go.Figure | None:
    """Cube AUC and held-out series score per epoch, or None before either was measured."""
    epochs = pd.DataFrame([r for r in records if r["kind"] == "epoch"])
    measured = [c for c in VALIDATION_MEASURES if c in epochs and epochs[c].notna().any()]
    if not len(epochs) or not measured:
        return None
    long = epochs.melt(id_vars="epoch", value_vars=measured, var_name="measure", value_name="value").dropna()
    long["measure"] = long["measure"].map(VALIDATION_MEASURES)
    figure = px.line(long, x="epoch", y="value", color="measure", markers=True, title="Validation",
                     color_discrete_sequence=[MUTED, ACCENT], range_y=[0, 1], labels={"value": "", "measure": ""})
    figure.update_xaxes(tickformat="d", dtick=max(1, round(int(long["epoch"].max()) / 10)))  # whole epochs only
    return style(figure)


def location_aucs(evaluation: dict) -> go.Figure:
    """AUC per location of an evaluation (undefined ones left out)."""
    aucs = pd.DataFrame({"Location": list(LOCATIONS), "AUC": [evaluation["aucs"][n] for n in LOCATIONS]})
    figure = px.bar(aucs.dropna(), x="AUC", y="Location", orientation="h", range_x=[0, 1], title="AUC per location",
                    color_discrete_sequence=[ACCENT])
    return style(figure, 420)


def roc(evaluation: dict) -> go.Figure:
    """The Aneurysm Present ROC curve of an evaluation."""
    figure = px.line(pd.DataFrame(evaluation["roc"]), x="fpr", y="tpr", title="ROC, Aneurysm Present",
                     range_x=[0, 1], range_y=[0, 1], color_discrete_sequence=[ACCENT],
                     labels={"fpr": "False-positive rate", "tpr": "True-positive rate"})
    return style(figure, 420)
