"""What the two slice viewers (exploration, inference) share: one slice numbering (1 to N, in
the slider and the title alike), the jump to a point, and the windows of CT and MR."""

from __future__ import annotations

import numpy as np
import streamlit as st


CT_WINDOWS = {"Angiography (W 600, L 200)": (-100.0, 500.0), "Brain (W 80, L 40)": (0.0, 80.0),
              "Bone (W 2000, L 500)": (-500.0, 1500.0)}
# MR has no absolute scale: its windows are percentiles of the whole volume (every slice alike).
MR_WINDOWS = {"Full range": (1.0, 99.8), "Bright vessels": (50.0, 99.95), "Soft tissue": (5.0, 95.0)}
PERCENTILES = sorted({p for window in MR_WINDOWS.values() for p in window})
CUSTOM = "Custom window / level"


def slice_key(prefix: str, axis: int) -> str:
    return f"{prefix}_slice_{axis}"


def slice_slider(prefix: str, axis: int, count: int) -> int:
    """The slice slider of ``axis`` (numbered 1 to ``count``, as the title says); returns the
    array index it points at."""
    key = slice_key(prefix, axis)
    st.session_state.setdefault(key, count // 2 + 1)
    st.session_state[key] = min(max(int(st.session_state[key]), 1), count)  # another series may be shorter
    return st.slider("Slice", 1, count, key=key) - 1


def jump(prefix: str, voxel, shape) -> None:
    """Point the slice sliders of every plane at ``voxel`` (z, y, x), within ``shape``."""
    for axis in range(3):
        st.session_state[slice_key(prefix, axis)] = int(min(max(round(voxel[axis]), 0), shape[axis] - 1)) + 1


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

