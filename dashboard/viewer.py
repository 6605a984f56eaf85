"""What the two slice viewers (exploration, inference) share: the slice stack drawn in the
browser (one slice numbering, 1 to N, in the slider and the title alike), the jump to a point,
and the windows of CT and MR."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
from scipy.ndimage import maximum_filter1d

from dashboard import figures


CT_WINDOWS = {"Angiography (W 600, L 200)": (-100.0, 500.0), "Brain (W 80, L 40)": (0.0, 80.0),
              "Bone (W 2000, L 500)": (-500.0, 1500.0)}
# MR has no absolute scale: its windows are percentiles of the whole volume (every slice alike).
MR_WINDOWS = {"Full range": (1.0, 99.8), "Bright vessels": (50.0, 99.95), "Soft tissue": (5.0, 95.0)}
PERCENTILES = sorted({p for window in MR_WINDOWS.values() for p in window})
CUSTOM = "Custom window / level"


_HERE = Path(__file__).parent
# Every slice of a plane goes to the browser once: a slider move, an arrow key or the mouse wheel
# shows another slice there, without a round trip to the server (150 ms target for a move).
_STACK = st.components.v2.component("slice_stack", html='<div class="slice-stack"></div>',
                                    css=(_HERE / "slice_stack.css").read_text(),
                                    js=(_HERE / "slice_stack.js").read_text())


def slice_key(prefix: str, axis: int) -> str:
    return f"{prefix}_slice_{axis}"


def start_slice(prefix: str, axis: int, count: int) -> int:
    """The array index a viewer of ``axis`` opens on (the last jump's; else the middle)."""
    number = st.session_state.setdefault(slice_key(prefix, axis), count // 2 + 1)
    return min(max(int(number), 1), count) - 1  # another series may be shorter


def jump(prefix: str, voxel, shape) -> None:
    """Point the viewers of every plane at ``voxel`` (z, y, x), within ``shape``."""
    for axis in range(3):
        st.session_state[slice_key(prefix, axis)] = int(min(max(round(voxel[axis]), 0), shape[axis] - 1)) + 1
    st.session_state[f"{prefix}_jumps"] = st.session_state.get(f"{prefix}_jumps", 0) + 1


_BLOCK = 32


@dataclass(frozen=True)
class Panel:
    """One picture of a slice stack: the slice itself (``half`` 0) or the maximum over the
    slices within ``half`` of it (a MIP slab), titled ``title`` followed by the slice number."""

    title: str
    half: int = 0


def stack_pictures(array: np.ndarray, axis: int, window: tuple[float, float], half: int = 0,
                   heat: np.ndarray | None = None) -> list[str]:
    """Each slice of ``array`` along ``axis`` (or its MIP slab of ``half`` slices either side)
    as a PNG data URI, grey levels through ``window``, ``heat`` (0-1) painted over when given,
    oriented as `figures.plane_image` shows it."""
    grey = figures.grey_levels(array, window)  # monotone: the MIP of the grey levels is that of the values
    if half:
        grey = maximum_filter1d(grey, 2 * half + 1, axis=axis, mode="nearest")  # the slab, clipped at the ends
        heat = None if heat is None else maximum_filter1d(heat.astype(np.float32), 2 * half + 1, axis=axis,
                                                          mode="nearest")
    pictures = []
    for first in range(0, array.shape[axis], _BLOCK):  # painted a block of slices at a time: vectorised, bounded
        block = np.arange(first, min(first + _BLOCK, array.shape[axis]))
        picture = np.take(grey, block, axis=axis)
        if heat is not None:
            picture = figures.heat_overlay(picture, np.take(heat, block, axis=axis))
        pictures += [figures.png_data_uri(figures.plane_image(picture, axis, index, index + 1))
                     for index in range(len(block))]
    return pictures


def stack_markers(points: list[dict], axis: int, shape: tuple[int, ...], half: int, margin: float) -> list[dict]:
    """The points (`figures.markers_in_view`'s) with the first and last slice index where the
    panel shows them, for those it shows at all."""
    count, shown = shape[axis], []
    for point in points:
        seen = [index for index in range(count)
                if figures.markers_in_view([point], axis, max(index - half, 0), min(index + half + 1, count),
                                           shape[0], margin)]
        if seen:
            where = figures.markers_in_view([point], axis, 0, count, shape[0], margin)[0]
            shown.append({"first": seen[0], "last": seen[-1], "x": where["x"], "y": where["y"], "text": point["text"],
                          "label": point.get("label", ""), "color": point.get("color", figures.ACCENT),
                          "symbol": point.get("symbol", "circle")})
    return shown


def slice_stack(prefix: str, series: str, array: np.ndarray, axis: int, window: tuple[float, float],
                panels: list[Panel], points: list[dict], margin: float, heat: np.ndarray | None = None,
                max_height: int = 560) -> dict:
    """Show the slices of ``array`` along ``axis`` side by side in ``panels``, one slider for all,
    opening on `start_slice` (and again after each `jump`); ``points`` ({"voxel", "text"} and
    optional label, color, symbol) are marked on the slices within ``margin`` voxels.

    The pictures are made once per series, plane, window and slab (kept in the session) and
    sent once: the browser moves through them. Returns the data sent (for tests)."""
    made = (series, axis, window, tuple(panels), heat is not None, repr(points), margin)
    memo_key = f"{prefix}_stack"
    memo = st.session_state.get(memo_key)
    if memo is None or memo[0] != made:
        stacks = [{"title": panel.title, "pictures": stack_pictures(array, axis, window, panel.half, heat),
                   "markers": stack_markers(points, axis, array.shape, panel.half, margin)} for panel in panels]
        build = hashlib.sha1(repr(made).encode()).hexdigest()[:16]
        memo = (made, build, stacks)
        st.session_state[memo_key] = memo
    _, build, stacks = memo
    rows, columns = (n for i, n in enumerate(array.shape) if i != axis)  # a plane's picture, as plane_image makes it
    data = {"build": build, "memory": f"{prefix}:{series}:{axis}", "jump": st.session_state.get(f"{prefix}_jumps", 0),
            "start": start_slice(prefix, axis, array.shape[axis]), "count": int(array.shape[axis]),
            "width": int(columns), "height": int(rows), "maxHeight": max_height,
            "edges": figures.ORIENTATION[axis], "panels": stacks}
    _STACK(data=data, key=f"{prefix}_stack_view")
    return data


def volume_percentiles(array: np.ndarray) -> dict[float, float]:
    """The MR windows' percentiles of a volume (from every 2nd voxel: the same to the grey level)."""
    values = np.percentile(array[::2, ::2, ::2], PERCENTILES)
    return dict(zip(PERCENTILES, (float(v) for v in values)))


def window_control(prefix: str, ct: bool, percentiles: dict[float, float]) -> tuple[float, float]:
    """The grey-level window (low, high) chosen for a CT (Hounsfield) or MR volume: a preset,
    or a custom window width and level."""
    presets = CT_WINDOWS if ct else MR_WINDOWS
    explained = "; ".join(f"{name}: {low:g}th to {high:g}th percentile" for name, (low, high) in MR_WINDOWS.items())
    choice = st.selectbox("Window", [*presets, CUSTOM], key=f"{prefix}_window",
                          help=None if ct else f"MR has no absolute scale: percentiles of the whole volume ({explained}).")
    if choice != CUSTOM:
        low, high = presets[choice]
        return (low, high) if ct else (percentiles[low], percentiles[high])
    span = (-1000.0, 3000.0) if ct else (percentiles[1.0], percentiles[99.95] * 1.2 or 1.0)
    width_max = float(span[1] - span[0])
    level = st.slider("Level", float(span[0]), float(span[1]), float(np.mean(span)), key=f"{prefix}_level")
    width = st.slider("Width", width_max / 200, width_max, width_max / 2, key=f"{prefix}_width")
    return level - width / 2, level + width / 2

