"""What a run learns from: the series split, the validation cubes, every series' aneurysms and
processed volume, and the location prior fitted on the training series."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.dataset.store import DATASET_FILES, check_dataset, dataset_source, read_arrays, series_labels
from pipeline.model.locate import LocationPrior, head_centre
from pipeline.preprocess.cache import load_processed
from pipeline.preprocess.config import PreprocessConfig
from pipeline.preprocess.head import head_interior

CUBE_COLUMNS = ("labels", "positions", "patient_ids", "centres_voxel", "kinds")
MODALITY_OF_FILE = {name: modality for modality, name in DATASET_FILES.items()}


@dataclass
class CubeData:
    """The validation cubes of the chosen datasets in memory (float16), and where every
    series' aneurysms and processed volume are."""

    cubes: torch.Tensor  # (N, 1, s, s, s) float16
    labels: torch.Tensor  # (N,) float32
    locations: torch.Tensor  # (N,) int64, -1 for negatives
    series: np.ndarray  # (N,) SeriesInstanceUID
    preprocess: PreprocessConfig
    manifest_sha256: str
    aneurysms: dict[str, np.ndarray] = field(default_factory=dict)  # series -> (k, 3) localizer voxels
    aneurysm_locations: dict[str, np.ndarray] = field(default_factory=dict)  # series -> (k,) location indices
    volumes: dict[str, Path] = field(default_factory=dict)  # series -> cached processed volume
    location_prior: LocationPrior | None = None  # fitted on the training series by `load_training_data`
    modalities: dict[str, str] = field(default_factory=dict)  # series -> modality (its dataset file's)


def split_series(series: np.ndarray, labels: np.ndarray, share: float, seed: int) -> dict[str, list[str]]:
    """Hold out about ``share`` of the series, positive and negative series alike."""
    rng = np.random.default_rng(seed)
    positive = {s for s, label in zip(series, labels) if label > 0}
    validation = []
    for group in (sorted(positive), sorted(set(series) - positive)):
        group = list(group)
        rng.shuffle(group)
        validation += group[: max(1, int(round(share * len(group))))] if len(group) > 1 else []
    return {"train": sorted(set(series) - set(validation)), "validation": sorted(validation)}


def split_datasets(files: tuple[str, ...], share: float, seed: int) -> dict[str, list[str]]:
    """`split_series` over every series of the dataset ``files``."""
    return split_series(*series_labels(files), share, seed)


def load_cubes(files: tuple[str, ...], keep: set[str] | None = None) -> CubeData:
    """The cubes of the series in ``keep`` (all when None) with their labels, and for every
    series of the datasets its aneurysm positions and cached processed volume. Training
    draws from the volumes, so only the validation series' cubes need memory.

    Raises:
        FileNotFoundError, ValueError: see `pipeline.dataset.store.dataset_source`, and
            `check_dataset` for a file that is not a dataset a build writes.
    """
    source = dataset_source(files)
    parts: dict[str, list] = {key: [] for key in CUBE_COLUMNS}
    cube_parts, modalities = [], {}
    for file in files:
        check_dataset(file)
        for key, values in zip(parts, read_arrays(file, parts)):
            parts[key].append(values)
        modality = MODALITY_OF_FILE.get(Path(file).name, Path(file).name)
        modalities.update(dict.fromkeys(np.unique(parts["patient_ids"][-1]).tolist(), modality))
        wanted = slice(None) if keep is None else np.isin(parts["patient_ids"][-1], sorted(keep))
        cube_parts.append(read_arrays(file, ("cubes",))[0][wanted])
    labels = np.concatenate(parts["labels"]).astype(np.float32)
    positions = np.concatenate(parts["positions"])
    locations = np.where(labels > 0, positions.argmax(axis=1), -1)
    series, kinds, centres = (np.concatenate(parts[k]) for k in ("patient_ids", "kinds", "centres_voxel"))
    first = {uid: (series == uid) & (kinds == "positive") for uid in np.unique(series[kinds == "positive"])}
    kept = np.ones(len(series), bool) if keep is None else np.isin(series, sorted(keep))
    cubes = torch.from_numpy(np.concatenate(cube_parts))[:, None]
    return CubeData(cubes, torch.from_numpy(labels[kept]), torch.from_numpy(locations[kept].astype(np.int64)),
                    series[kept], source.preprocess, source.manifest_sha256,
                    {uid: centres[m] for uid, m in first.items()}, {uid: locations[m] for uid, m in first.items()},
                    source.volumes, modalities=modalities)


def fit_location_prior(data: CubeData, series: list[str]) -> LocationPrior | None:
    """The location prior (`pipeline.model.locate`) from the aneurysms of ``series``."""
    locations, offsets = [], []
    for uid in series:
        if uid not in data.volumes or uid not in data.aneurysms:
            continue
        volume = load_processed(data.volumes[uid])
        centre = head_centre(*head_interior(volume, data.preprocess))
        offsets.append((data.aneurysms[uid] - centre) * np.asarray(volume.spacing))
        locations.append(data.aneurysm_locations[uid])
    if not locations:
        return None
    return LocationPrior.fit(np.concatenate(locations), np.concatenate(offsets))


def load_training_data(files: tuple[str, ...], split: dict[str, list[str]]) -> CubeData:
    """The validation cubes, every series' volume and aneurysms, and the prior fitted on the
    training series.

    Raises:
        FileNotFoundError: a training series has no processed volume in the build's cache.
    """
    data = load_cubes(files, keep=set(split["validation"]))
    missing = [uid for uid in split["train"] if uid not in data.volumes]
    if missing:
        raise FileNotFoundError(f"{len(missing)} training series have no processed volume in the build's cache "
                                f"(e.g. {missing[0]}): rebuild the dataset with `python -m pipeline build`.")
    data.location_prior = fit_location_prior(data, split["train"])
    return data
