"""Training crops, drawn a batch at a time on the training device.

The training series' processed volumes (the build's cache) sit in one flat float16 tensor
on the device (`VolumeBank`: GPU memory when training on CUDA). A batch of crops is one
gather from it: each crop's position, left-right flip, rotation/reflection and zero padding
are folded into the gather's indices (`CropPlan`, drawn on the host), so a step moves a
few kilobytes of crop geometry to the device and nothing else; the heatmap targets and the
intensity augmentation are computed there too. A GPU stays fed that way, and the CPU runs
the same code (it replaced per-crop slicing, flips and copies, per-crop numpy targets and
host-side noise). Intensity and resolution augmentation: `pipeline.training.augment`.

Series whose cache entry has vessel labels (`pipeline.preprocess.vessels`) have them in a
second flat uint8 tensor at the same offsets; a crop's labels are cut by the very same
gather, and give the vessel head's targets (`vessel_targets`).

Spatial augmentation moves the crop and its aneurysm points together, so the targets stay
exact: a left-right flip half the time (x, array axis 2 of the canonical SPL orientation,
is the patient's left-right axis: the Left and Right location labels swap with it), and for
``symmetry_share`` of the crops a random rotation/reflection (a dome is a dome whichever way
it points), after which the location labels are unknown (-1). For ``scale_share`` of the
crops, a zoom: the crop samples a region ``zoom`` times its size, trilinearly (labels: the
nearest voxel), and its voxels count as ``zoom`` times the volume's spacing in the targets, so
that vessels and aneurysms of other calibres are seen with their labels scaled alike.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.labels import MIRROR_PERMUTATION, MIRRORED_VESSEL_LABELS
from pipeline.model.config import CENTRE_REACH, OUTPUT_STRIDE
from pipeline.preprocess.cache import has_vessels, load_processed, load_vessels, processed_nbytes
from pipeline.training.augment import augment
from pipeline.training.config import TrainConfig

MIRROR = np.asarray(MIRROR_PERMUTATION)
LOAD_THREADS = 8
VESSEL_POINTS = 2048  # vessel voxels kept per labelled series, evenly through its label map, to centre crops on


class VolumeBank:
    """Processed volumes in one flat float16 tensor on ``device``, at most ``budget_bytes``."""

    def __init__(self, device: torch.device | str = "cpu", budget_bytes: int = 4 << 30):
        self.device, self.budget = torch.device(device), budget_bytes
        self.uids: list[str] = []
        self.offsets = np.zeros(0, np.int64)
        self.shapes = np.zeros((0, 3), np.int64)
        self.spacings = np.zeros((0, 3), float)
        self.data = torch.zeros(0, dtype=torch.float16, device=self.device)
        self.vessels = torch.zeros(0, dtype=torch.uint8, device=self.device)  # empty when no series has labels
        self.labelled = np.zeros(0, bool)  # (n,) the series has vessel labels
        self.vessel_points = np.zeros((0, 1, 3), np.int64)  # (n, k, 3) voxels on an artery, padded
        self.vessel_counts = np.zeros(0, np.int64)  # (n,) rows of vessel_points that are real (0: no labels)
        self._nbytes: dict[str, int] = {}

    def nbytes(self, uid: str, path: Path) -> int:
        """Bytes a series takes in the bank, its vessel labels included (read once from its
        file's header)."""
        if uid not in self._nbytes:
            volume = processed_nbytes(path)
            self._nbytes[uid] = volume + volume // 2 * has_vessels(path)
        return self._nbytes[uid]

    def working_set(self, paths: dict[str, Path], rng: np.random.Generator) -> list[str]:
        """All the series when they fit in the budget; else a random subset that does (the
        series of one epoch, when the training set is larger than the device's memory)."""
        sizes = {uid: self.nbytes(uid, path) for uid, path in paths.items()}
        if sum(sizes.values()) <= self.budget:
            return sorted(paths)
        chosen, total = [], 0
        for uid in rng.permutation(sorted(paths)):
            if total + sizes[uid] <= self.budget or not chosen:
                chosen.append(str(uid))
                total += sizes[uid]
        return sorted(chosen)

    def hold(self, paths: dict[str, Path]) -> None:
        """Hold exactly these series (path by SeriesInstanceUID), read in parallel; nothing
        is read again when they are already held."""
        if sorted(paths) == self.uids:
            return
        self.data = torch.zeros(0, dtype=torch.float16, device=self.device)  # free the old set first
        self.vessels = torch.zeros(0, dtype=torch.uint8, device=self.device)
        with ThreadPoolExecutor(LOAD_THREADS) as pool:
            self.fill(pool.map(lambda uid: (uid, *_read_volume(paths[uid])), sorted(paths)),
                      sum(processed_nbytes(path) for path in paths.values()) // 2)

    def fill(self, volumes, voxels: int | None = None) -> None:
        """Hold ``volumes``, an iterable of (uid, float16 array, spacing mm[, uint8 vessel
        labels or None]); ``voxels``, their total when known, lets the tensors be allocated
        once and filled as they arrive."""
        volumes = iter(volumes) if voxels is not None else list(volumes)
        if voxels is None:
            voxels = sum(entry[1].size for entry in volumes)
        self.data = torch.empty(voxels, dtype=torch.float16, device=self.device)
        self.vessels = torch.zeros(0, dtype=torch.uint8, device=self.device)
        uids, offsets, shapes, spacings, labelled, points, offset = [], [], [], [], [], [], 0
        for uid, array, spacing, *rest in volumes:
            vessels = rest[0] if rest else None
            points.append(_vessel_points(vessels))
            self.data[offset:offset + array.size].copy_(torch.from_numpy(array.reshape(-1)))
            if vessels is not None:
                if not len(self.vessels):  # allocated with the first series that has labels
                    self.vessels = torch.zeros(voxels, dtype=torch.uint8, device=self.device)
                self.vessels[offset:offset + array.size].copy_(torch.from_numpy(vessels.reshape(-1)))
            uids.append(uid), offsets.append(offset), shapes.append(array.shape), spacings.append(spacing)
            labelled.append(vessels is not None)
            offset += array.size
        self.uids, self.labelled = uids, np.asarray(labelled, bool)
        self.vessel_counts = np.array([len(p) for p in points], np.int64)
        self.vessel_points = np.zeros((len(points), max(1, self.vessel_counts.max(initial=0)), 3), np.int64)
        for row, found in enumerate(points):
            self.vessel_points[row, :len(found)] = found
        self.offsets, self.shapes = np.asarray(offsets, np.int64), np.asarray(shapes, np.int64).reshape(-1, 3)
        self.spacings = np.asarray(spacings, float).reshape(-1, 3)


def _vessel_points(vessels: np.ndarray | None) -> np.ndarray:
    """Up to `VESSEL_POINTS` artery voxels (k, 3), evenly spaced through the label map."""
    if vessels is None:
        return np.zeros((0, 3), np.int64)
    flat = np.flatnonzero(vessels.reshape(-1))
    flat = flat[np.linspace(0, len(flat) - 1, min(len(flat), VESSEL_POINTS)).astype(np.int64)] if len(flat) else flat
    return np.stack(np.unravel_index(flat, vessels.shape), axis=1).astype(np.int64)


def _read_volume(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    volume = load_processed(path)
    return (np.ascontiguousarray(volume.array, dtype=np.float16), np.asarray(volume.spacing, float),
            load_vessels(path))


@dataclass(frozen=True)
class Aneurysms:
    """The aneurysms of the series a bank holds, padded to the most in one series."""

    points: np.ndarray  # (n, k, 3) volume voxels
    locations: np.ndarray  # (n, k) location indices, -1 past a series' own
    counts: np.ndarray  # (n,)

    @classmethod
    def of(cls, uids: list[str], points: dict[str, np.ndarray], locations: dict[str, np.ndarray]) -> "Aneurysms":
        """From per-series (k, 3) points and (k,) locations (series without any may be absent)."""
        counts = np.array([len(points.get(uid, ())) for uid in uids], np.int64)
        padded = np.zeros((len(uids), max(1, counts.max(initial=0)), 3))
        labels = np.full(padded.shape[:2], -1, np.int64)
        for i, uid in enumerate(uids):
            if counts[i]:
                padded[i, :counts[i]], labels[i, :counts[i]] = points[uid], locations[uid]
        return cls(padded, labels, counts)


@dataclass(frozen=True)
class CropPlans:
    """Where a batch of training crops come from and what each holds, in the crop's own axes."""

    volumes: np.ndarray  # (B,) index in the bank
    starts: np.ndarray  # (B, 3) the volume voxel at the crop's corner, in the volume's axes
    axes: np.ndarray  # (B, 3) crop axis o shows volume axis axes[o]
    flips: np.ndarray  # (B, 3) bool: crop axis o runs backwards
    points: np.ndarray  # (B, k, 3) aneurysms, crop voxels
    locations: np.ndarray  # (B, k) location indices; Left/Right swapped when mirrored, -1 once rotated
    present: np.ndarray  # (B, k) bool: a real aneurysm (rows are padded)
    spacings: np.ndarray  # (B, 3) mm per voxel along the crop's axes
    zooms: np.ndarray | None = None  # (B,) volume voxels per crop voxel; None: 1 for every crop


def crop_starts(shapes: np.ndarray, size: int | np.ndarray, targets: np.ndarray, rng: np.random.Generator,
                reach: float | np.ndarray = CENTRE_REACH) -> np.ndarray:
    """Where ``size``-voxel crops (one size, or one per crop) start in volumes of ``shapes``
    (B, 3; padded with 0 up to ``size`` where smaller): anywhere, or, for the rows of
    ``targets`` (B, 3) that are not NaN, so that the target lies at least ``reach`` voxels
    (one, or one per crop) inside."""
    size, reach = np.reshape(size, (-1, 1)), np.reshape(reach, (-1, 1))
    room = np.maximum(np.asarray(shapes) - size, 0)
    aimed = ~np.isnan(targets)
    targets = np.where(aimed, targets, 0.0)
    low = np.where(aimed, np.clip(np.ceil(targets - size + reach), 0, room), 0).astype(np.int64)
    high = np.where(aimed, np.clip(np.floor(targets - reach), 0, room), room).astype(np.int64)
    high = np.maximum(low, high)
    return low + np.floor(rng.random(low.shape) * (high - low + 1)).astype(np.int64)


def plan_crops(bank: VolumeBank, aneurysms: Aneurysms, volumes: np.ndarray, around: np.ndarray, size: int,
               rng: np.random.Generator, symmetry_share: float = 0.0, centres: np.ndarray | None = None,
               scale_share: float = 0.0, scale_range: tuple[float, float] = (0.7, 1.4)) -> CropPlans:
    """Crops of the bank's ``volumes`` (B,): around aneurysm ``around`` of their series, else
    around the voxel of ``centres`` (B, 3; NaN: none), else anywhere; a left-right flip half
    the time and, for ``symmetry_share`` of the crops, a random rotation/reflection (uniform
    over the 48 of the cube), which drops the location labels; for ``scale_share`` of them a
    zoom drawn log-uniformly in ``scale_range`` (volume voxels per crop voxel)."""
    n = len(volumes)
    points = aneurysms.points[volumes]
    targets = np.where(around[:, None] >= 0, points[np.arange(n), np.maximum(around, 0)],
                       np.nan if centres is None else centres)
    zooms = None
    if scale_share > 0:  # drawn only then: the batches of runs without zoom stay what they were
        low, high = np.log(scale_range)
        zooms = np.where(rng.random(n) < scale_share, np.exp(low + rng.random(n) * (high - low)), 1.0)
        # the region a crop samples, and the reach that keeps a target CENTRE_REACH crop voxels inside
        starts = crop_starts(bank.shapes[volumes], (size + 1) * zooms - 1, targets, rng,
                             (CENTRE_REACH + 0.5) * zooms - 0.5)
    else:
        starts = crop_starts(bank.shapes[volumes], size, targets, rng)
    mirrored, turned = rng.random(n) < 0.5, rng.random(n) < symmetry_share
    axes = np.where(turned[:, None], rng.permuted(np.tile(np.arange(3), (n, 1)), axis=1), np.arange(3))
    flips = np.where(turned[:, None], rng.random((n, 3)) < 0.5, np.array([False, False, True]) & mirrored[:, None])
    locations = aneurysms.locations[volumes]
    known = locations >= 0
    locations = np.where(known & (mirrored & ~turned)[:, None], MIRROR[np.maximum(locations, 0)], locations)
    locations = np.where(turned[:, None], -1, locations)
    points = points - starts[:, None]
    spacings = bank.spacings[volumes]
    if zooms is not None:
        points = (points + 0.5) / zooms[:, None, None] - 0.5
        spacings = spacings * zooms[:, None]
    points = np.take_along_axis(points, axes[:, None], axis=2)
    points = np.where(flips[:, None], size - 1 - points, points)
    present = np.arange(points.shape[1]) < aneurysms.counts[volumes][:, None]
    return CropPlans(volumes, starts, axes, flips, points, locations, present,
                     np.take_along_axis(spacings, axes, axis=1), zooms)


def cut_crops(bank: VolumeBank, plans: CropPlans, size: int) -> torch.Tensor:
    """The planned crops (B, s, s, s) as float32 on the bank's device, 0 (the builder's fill)
    past a volume's edge: one gather, the orientation folded into its indices."""
    if plans.zooms is not None:
        return _interpolated(bank, plans, size)
    index, inside = _gather_index(bank, _voxels(plans, size), plans)
    crops = bank.data[index].float()
    return crops if inside is None else crops * inside


def cut_vessels(bank: VolumeBank, plans: CropPlans, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The vessel labels of the planned crops (B, s, s, s) uint8, cut like `cut_crops` (0 past
    a volume's edge and for series without labels), and which crops have labels (B,) bool."""
    labelled = _to_device(np.ascontiguousarray(bank.labelled[plans.volumes]), bank.device)
    if not len(bank.vessels):
        return torch.zeros((len(plans.volumes),) + (size,) * 3, dtype=torch.uint8, device=bank.device), labelled
    voxels = _voxels(plans, size)
    index, inside = _gather_index(bank, voxels if plans.zooms is None else np.rint(voxels).astype(np.int64), plans)
    labels = bank.vessels[index]
    return (labels if inside is None else labels * inside), labelled


def _voxels(plans: CropPlans, size: int) -> np.ndarray:
    """(B, 3, s): the volume coordinate, along volume axis ``axes[o]``, of step t along crop
    axis o of each planned crop; whole voxels when no crop is zoomed."""
    steps = np.arange(size)
    along = np.where(plans.flips[..., None], size - 1 - steps, steps)
    starts = np.take_along_axis(plans.starts, plans.axes, axis=1)[..., None]
    if plans.zooms is None:
        return starts + along
    return starts + (along + 0.5) * plans.zooms[:, None, None] - 0.5


def _interpolated(bank: VolumeBank, plans: CropPlans, size: int) -> torch.Tensor:
    """Zoomed crops (B, s, s, s): the trilinear interpolation of the bank at `_voxels`, 0 (the
    builder's fill) past a volume's edge; one gather per corner of the voxels' cells."""
    voxels = _voxels(plans, size)
    lower = np.floor(voxels).astype(np.int64)
    upper_weight = _to_device(np.ascontiguousarray(voxels - lower, np.float32), bank.device)
    crops = None
    for corner in itertools.product((0, 1), repeat=3):
        index, inside = _gather_index(bank, lower + np.reshape(corner, (1, 3, 1)), plans)
        along = [upper_weight[:, o] if corner[o] else 1 - upper_weight[:, o] for o in range(3)]
        weight = along[0][:, :, None, None] * along[1][:, None, :, None] * along[2][:, None, None, :]
        values = bank.data[index].float() * (weight if inside is None else weight * inside)
        crops = values if crops is None else crops + values
    return crops


def _gather_index(bank: VolumeBank, voxels: np.ndarray, plans: CropPlans) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flat bank indices of the planned crops' voxels (B, s, s, s), given ``voxels`` (B, 3, s)
    whole volume coordinates (see `_voxels`), and the mask of those inside their volume (None
    when all are)."""
    shapes = bank.shapes[plans.volumes]
    strides = np.stack([shapes[:, 1] * shapes[:, 2], shapes[:, 2], np.ones(len(shapes), np.int64)], axis=1)
    inside = (voxels >= 0) & (voxels < np.take_along_axis(shapes, plans.axes, axis=1)[..., None])
    offsets = np.where(inside, voxels, 0) * np.take_along_axis(strides, plans.axes, axis=1)[..., None]
    offsets[:, 0] += bank.offsets[plans.volumes][:, None]
    offsets = _to_device(offsets, bank.device)
    index = offsets[:, 0, :, None, None] + offsets[:, 1, None, :, None] + offsets[:, 2, None, None, :]
    if inside.all():
        return index, None
    mask = _to_device(inside, bank.device)
    return index, mask[:, 0, :, None, None] & mask[:, 1, None, :, None] & mask[:, 2, None, None, :]


def vessel_targets(labels: torch.Tensor, labelled: torch.Tensor, plans: CropPlans
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The vessel head's targets for crops' vessel labels (B, s, s, s) from `cut_vessels`:
    the share of each output cell's 4x4x4 block (centred on its voxel) that is vessel
    (B, c, c, c), the artery at the cell's voxel as an index of `VESSEL_LABELS` (-1: no vessel
    there, or a rotated crop, whose left and right are unknown; Left and Right swapped in a
    mirrored one), and each crop's weight (B,): 1 where its series has labels."""
    cells = labels.shape[-1] // OUTPUT_STRIDE
    vessel = (labels > 0).float()[:, None]
    share = F.avg_pool3d(vessel, OUTPUT_STRIDE, OUTPUT_STRIDE, padding=OUTPUT_STRIDE // 2)[:, 0, :cells, :cells, :cells]
    identity = (plans.axes == np.arange(3)).all(axis=1) & ~plans.flips[:, :2].any(axis=1)
    mirrored = _to_device(np.ascontiguousarray(identity & plans.flips[:, 2]), labels.device)
    table = torch.tensor(MIRRORED_VESSEL_LABELS, device=labels.device)
    centre = labels[:, ::OUTPUT_STRIDE, ::OUTPUT_STRIDE, ::OUTPUT_STRIDE].long()
    centre = torch.where(mirrored[:, None, None, None], table[centre], centre)
    known = _to_device(np.ascontiguousarray(identity), labels.device)[:, None, None, None] & (centre > 0)
    return share, torch.where(known, centre - 1, -1), labelled.float()
def heatmap_targets(plans: CropPlans, size: int, positive_mm: float, ignore_mm: float,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Presence target, location label and weight of every output cell of the planned crops
    (each (B, c, c, c)): 1 within ``positive_mm`` of an aneurysm (labelled with the nearest
    one's location), weight 0 (ignored) from there up to ``ignore_mm``, 0 elsewhere."""
    points, spacing, locations, present = (
        _to_device(np.ascontiguousarray(a), device) for a in (plans.points.astype(np.float32),
                                                             plans.spacings.astype(np.float32), plans.locations,
                                                             plans.present))
    cells = size // OUTPUT_STRIDE
    axis = torch.arange(cells, device=device, dtype=torch.float32) * OUTPUT_STRIDE
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(1, -1, 1, 3)
    distance = (((grid - points[:, None]) * spacing[:, None, None]) ** 2).sum(-1).sqrt()  # (B, cells^3, k)
    nearest, which = distance.masked_fill(~present[:, None], float("inf")).min(-1)
    label = nearest <= positive_mm
    weight = label | (nearest > ignore_mm)
    location = torch.where(label, locations.gather(1, which), -1)
    shape = (len(plans.volumes), cells, cells, cells)
    return label.float().reshape(shape), location.reshape(shape), weight.float().reshape(shape)


def _weighted(choices: np.ndarray, weights: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` draws from ``choices`` in proportion to ``weights`` (one uniform number each)."""
    cumulative = np.cumsum(weights)
    return choices[np.minimum(np.searchsorted(cumulative, rng.random(size) * cumulative[-1], side="right"),
                              len(choices) - 1)]


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on ``device``; to a GPU through pinned memory, so the copy does not wait
    for the work already queued there."""
    tensor = torch.from_numpy(array)
    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


@dataclass(frozen=True)
class Batch:
    """A batch of augmented training crops and their targets, on the bank's device."""

    crops: torch.Tensor  # (B, 1, s, s, s)
    label: torch.Tensor  # (B, c, c, c) presence target
    location: torch.Tensor  # (B, c, c, c) location index, -1: none
    weight: torch.Tensor  # (B, c, c, c) 0: ignored
    vessel: torch.Tensor  # (B, c, c, c) share of the cell that is vessel
    artery: torch.Tensor  # (B, c, c, c) `VESSEL_LABELS` index, -1: unknown
    vessel_weight: torch.Tensor  # (B,) 1: the crop's series has vessel labels


def draw_batch(bank: VolumeBank, aneurysms: Aneurysms, config: TrainConfig, rng: np.random.Generator,
               weights: np.ndarray | None = None) -> Batch:
    """``batch_size`` augmented crops from the series the bank holds (whose ``aneurysms`` are
    given), with their heatmap and vessel targets, all on the bank's device. Series are drawn
    in proportion to ``weights`` (default: alike); half the crops come from series with an
    aneurysm, and of those ``positive_crop_share`` are drawn around one of their aneurysms.
    Of the other crops of series with vessel labels, ``vessel_crop_share`` are centred on one
    of their artery voxels: the normal vessels (siphons, junctions, loops) are where a
    series' maximum over windows finds its false positives."""
    size = config.batch_size
    weights = np.ones(len(bank.uids)) if weights is None else np.asarray(weights, float)
    volumes = _weighted(np.arange(len(bank.uids)), weights, size, rng)
    positive = np.flatnonzero(aneurysms.counts > 0)
    if len(positive):
        volumes = np.where(rng.random(size) < 0.5, _weighted(positive, weights[positive], size, rng), volumes)
    counts = aneurysms.counts[volumes]
    around = np.where((counts > 0) & (rng.random(size) < config.positive_crop_share),
                      np.floor(rng.random(size) * counts).astype(np.int64), -1)
    on_vessel = (around < 0) & (bank.vessel_counts[volumes] > 0) & (rng.random(size) < config.vessel_crop_share)
    which = np.floor(rng.random(size) * np.maximum(bank.vessel_counts[volumes], 1)).astype(np.int64)
    centres = np.where(on_vessel[:, None], bank.vessel_points[volumes, which], np.nan)
    plans = plan_crops(bank, aneurysms, volumes, around, config.crop, rng, config.symmetry_share, centres,
                       config.scale_share, config.scale_range)
    crops = augment(cut_crops(bank, plans, config.crop)[:, None], rng, config.augment)
    targets = heatmap_targets(plans, config.crop, config.positive_radius_mm, config.ignore_radius_mm, bank.device)
    return Batch(crops, *targets, *vessel_targets(*cut_vessels(bank, plans, config.crop), plans))
