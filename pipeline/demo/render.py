"""Rasterising a phantom on an acquisition grid, with partial-volume edges.

Large smooth compartments (scalp, skull, brain, CSF) are evaluated on a coarse copy of
the grid and interpolated up; vessels and aneurysms, which are thin, are evaluated on
the grid itself, only inside a small box around each piece of tube, with an occupancy
that ramps from 1 to 0 across one voxel at the wall (partial volume). Thick slices are
rendered as the mean of several thin sub-slices, like a real slice profile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.demo.anatomy import Ellipsoid


@dataclass(frozen=True)
class Grid:
    """An acquisition grid: ``shape`` (slices, rows, columns) and its index -> patient affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def points(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Patient mm of the grid points at 1D index arrays z, y, x: shape (nz, ny, nx, 3)."""
        a = self.affine
        return (
            a[:3, 3]
            + z[:, None, None, None] * a[:3, 0]
            + y[None, :, None, None] * a[:3, 1]
            + x[None, None, :, None] * a[:3, 2]
        ).astype(np.float32)

    def to_index(self, points: np.ndarray) -> np.ndarray:
        return np.linalg.solve(self.affine[:3, :3], (np.asarray(points) - self.affine[:3, 3]).T).T

    def thin(self, subdivisions: int) -> "Grid":
        """The same grid with every slice split into ``subdivisions`` thin sub-slices."""
        if subdivisions == 1:
            return self
        affine = self.affine.copy()
        affine[:3, 0] = self.affine[:3, 0] / subdivisions
        affine[:3, 3] = self.affine[:3, 3] - self.affine[:3, 0] * (subdivisions - 1) / (2 * subdivisions)
        return Grid((self.shape[0] * subdivisions, *self.shape[1:]), affine)


def soft_ellipsoid(head_points: np.ndarray, ellipsoid: Ellipsoid, edge_mm: float = 1.5) -> np.ndarray:
    """Membership in [0, 1] of head-frame points (..., 3), with an edge about ``edge_mm`` wide."""
    x = head_points[..., 0] - np.float32(ellipsoid.centre[0])
    y = head_points[..., 1] - np.float32(ellipsoid.centre[1])
    z = head_points[..., 2] - np.float32(ellipsoid.centre[2])
    if ellipsoid.yaw_deg:
        c, s = np.float32(np.cos(np.radians(ellipsoid.yaw_deg))), np.float32(np.sin(np.radians(ellipsoid.yaw_deg)))
        x, y = c * x + s * y, c * y - s * x
    ax, ay, az = (np.float32(a) for a in ellipsoid.axes)
    radius = np.sqrt((x / ax) ** 2 + (y / ay) ** 2 + (z / az) ** 2)
    mean_axis = np.float32((ax + ay + az) / 3)
    return np.clip(np.float32(0.5) + (np.float32(1.0) - radius) * (mean_axis / np.float32(edge_mm)), 0.0, 1.0)


def coarse_axes(shape: tuple[int, int, int], spacing: np.ndarray, target_mm: float = 2.0) -> list[np.ndarray]:
    """Index positions of a coarse copy of the grid (about ``target_mm`` apart, ends included)."""
    axes = []
    for n, step in zip(shape, spacing):
        count = max(2, int(np.ceil((n - 1) * step / target_mm)) + 1)
        axes.append(np.linspace(0.0, n - 1, min(n, count)))
    return axes


def upsample(coarse: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinear interpolation of a coarse field sampled at `coarse_axes` onto the full grid."""
    tensor = torch.from_numpy(np.ascontiguousarray(coarse, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=shape, mode="trilinear", align_corners=True)[0, 0].numpy()


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], cells: int = 5) -> np.ndarray:
    """A smooth random field in about [-1, 1] (brain texture, bias fields)."""
    return upsample(rng.uniform(-1, 1, size=(cells, cells, cells)).astype(np.float32), shape)


def render_tubes(grid: Grid, tubes: list[tuple[np.ndarray, np.ndarray]], chunk: int = 5,
                 labels: list[int] | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Occupancy in [0, 1] of tubes given as (points (n, 3) patient mm, radii (n,)); with
    ``labels`` (one positive integer per tube, at most 255) also the label map (uint8): each
    voxel at least half inside a tube takes the label of the tube that fills it most."""
    occupancy = np.zeros(grid.shape, dtype=np.float32)
    label_map = None if labels is None else np.zeros(grid.shape, dtype=np.uint8)
    edge = float(np.mean(grid.spacing[1:]))
    for number, (points, radii) in enumerate(tubes):
        label = None if labels is None else labels[number]
        for start in range(0, len(points) - 1, chunk):
            piece = slice(start, min(start + chunk + 1, len(points)))
            _render_segments(grid, occupancy, points[piece], radii[piece], edge, label_map, label)
    return occupancy if label_map is None else (occupancy, label_map)


def render_spheres(grid: Grid, spheres: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Occupancy in [0, 1] of spheres given as (centre, radius) in patient mm."""
    occupancy = np.zeros(grid.shape, dtype=np.float32)
    edge = float(np.mean(grid.spacing[1:]))
    for centre, radius in spheres:
        centre = np.asarray(centre, dtype=np.float64)
        _render_segments(grid, occupancy, np.vstack([centre, centre]), np.array([radius, radius]), edge)
    return occupancy


def _render_segments(grid: Grid, occupancy: np.ndarray, points: np.ndarray, radii: np.ndarray, edge: float,
                     label_map: np.ndarray | None = None, label: int | None = None) -> None:
    """Max-composite the occupancy of a short polyline (a capsule chain) into ``occupancy``
    (and ``label`` into ``label_map`` where it fills a voxel more than before, at least half)."""
    index = grid.to_index(points)
    pad = (radii.max() + 1.5 * edge) / grid.spacing
    low = np.maximum(np.floor(index.min(axis=0) - pad).astype(int), 0)
    high = np.minimum(np.ceil(index.max(axis=0) + pad).astype(int) + 1, grid.shape)
    if np.any(high <= low):
        return
    local = grid.points(*(np.arange(a, b, dtype=np.float32) for a, b in zip(low, high)))
    a = points[:-1].astype(np.float32)
    b = points[1:].astype(np.float32)
    ab = b - a
    length2 = np.maximum((ab**2).sum(axis=1), 1e-9)
    best = np.zeros(local.shape[:3], dtype=np.float32)
    for k in range(len(a)):
        ap = local - a[k]
        t = np.clip((ap @ ab[k]) / length2[k], 0.0, 1.0)
        distance = np.sqrt(((ap - t[..., None] * ab[k]) ** 2).sum(axis=-1))
        radius = radii[k] + t * (radii[k + 1] - radii[k])
        np.maximum(best, 0.5 + (radius - distance) / edge, out=best)
    box = tuple(slice(l, h) for l, h in zip(low, high))
    best = np.clip(best, 0.0, 1.0, out=best)
    if label_map is not None:
        np.copyto(label_map[box], np.uint8(label), where=(best >= 0.5) & (best > occupancy[box]))
    np.maximum(occupancy[box], best, out=occupancy[box])
