"""A quick CTA/MRA-like head for benchmarks: ellipsoids and tubes, with noise."""

from __future__ import annotations

import numpy as np


def head_volume(shape: tuple[int, int, int], spacing: tuple[float, float, float], modality: str, seed: int = 0) -> np.ndarray:
    """Stored int16 values (CT: HU + 1024 with intercept -1024; MR: arbitrary units)."""
    rng = np.random.default_rng(seed)
    z, y, x = (np.arange(n, dtype=np.float32) * s - n * s / 2 for n, s in zip(shape, spacing))
    zz, yy, xx = z[:, None, None], y[None, :, None], x[None, None, :]
    r = (xx / 75) ** 2 + (yy / 90) ** 2 + ((zz + 10) / 85) ** 2
    vessels = np.zeros(shape, dtype=bool)
    for angle in np.linspace(0, np.pi, 7):
        d = np.abs(np.cos(angle) * xx + np.sin(angle) * yy) + 0 * zz
        vessels |= (d < 2.0) & (np.abs(zz + 5 * np.sin(angle)) < 2.0) & (r < 0.7)
    if modality == "CT":
        values = np.where(r < 0.85, 40.0, np.where(r < 1.0, 1200.0, -1000.0)).astype(np.float32)
        values[vessels] = 380.0
        values += rng.normal(0, 8, shape).astype(np.float32)
        return np.clip(values + 1024, 0, 4095).astype(np.int16)
    values = np.where(r < 1.0, 300.0, 10.0).astype(np.float32)
    values[vessels] = 1400.0
    values += rng.normal(0, 15, shape).astype(np.float32)
    return np.clip(values, 0, 4095).astype(np.int16)
