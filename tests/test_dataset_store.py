"""The built datasets on disk (pipeline.dataset.store): one preprocessing per training set,
and a dataset without its manifest is refused rather than given default parameters."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from pipeline.dataset.store import MANIFEST_NAME, dataset_source, read_manifest, resolve_datasets
from pipeline.preprocess.cache import ProcessedCache
from pipeline.preprocess.config import PreprocessConfig


def test_the_source_holds_the_builds_preprocessing_and_volumes(built):
    _, out, manifest, _ = built
    source = dataset_source(resolve_datasets([out]))
    assert source.preprocess == PreprocessConfig.from_dict(manifest["config"]["preprocess"])
    ok = {uid for uid, outcome in manifest["series"].items() if outcome["status"] == "ok"}
    assert ok <= set(source.volumes)
    cache = ProcessedCache(out, source.preprocess)
    assert all(path == cache.path(uid) and path.is_file() for uid, path in source.volumes.items())
    assert len(source.manifest_sha256) == 64


def test_datasets_built_with_other_parameters_are_not_mixed(built, tmp_path):
    _, out, _, _ = built
    other = tmp_path / "other"
    shutil.copytree(out, other, ignore=shutil.ignore_patterns("cache"))
    manifest = json.loads((other / MANIFEST_NAME).read_text())
    manifest["config"]["preprocess"] = dataclasses.replace(PreprocessConfig(), ct_window=(0.0, 600.0)).to_dict()
    (other / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="different preprocessing parameters"):
        dataset_source(resolve_datasets([out, other]))


def test_a_dataset_without_its_manifest_is_refused(built, tmp_path):
    _, out, _, _ = built
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(next(out.glob("*_dataset.npz")), lonely)
    with pytest.raises(FileNotFoundError, match="build_manifest.json"):
        dataset_source(resolve_datasets([lonely]))
    (lonely / MANIFEST_NAME).write_text("{}")
    with pytest.raises(ValueError, match="not a build manifest"):
        read_manifest(lonely)


def _copy_with(out, folder, change):
    """The session's build in ``folder`` (manifest, cache link) with the MRA dataset's arrays
    changed by ``change(arrays)`` (arrays written back as given)."""
    import numpy as np

    from pipeline.dataset.store import DATASET_FILES

    shutil.copytree(out, folder, ignore=shutil.ignore_patterns("cache"))
    (folder / "cache").symlink_to(out / "cache")
    path = folder / DATASET_FILES["MRA"]
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    arrays = change(arrays)
    if arrays is not None:
        np.savez(path, **arrays)
    return path


def _truncate(path):
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


BROKEN_DATASETS = {
    "no kinds": (lambda a: {k: v for k, v in a.items() if k != "kinds"}, r"it has no kinds"),
    "three position columns": (lambda a: {**a, "positions": a["positions"][:, :3]},
                               r"its positions have the shape \(\d+, 3\) where \(\d+, 13\) was expected"),
    "labels of 2": (lambda a: {**a, "labels": a["labels"] * 2}, r"its labels are not all 0 or 1"),
    "a position on a negative": (lambda a: {**a, "positions": a["positions"] | 1},
                                 r"one location per positive cube"),
    "flat cubes": (lambda a: {**a, "cubes": a["cubes"][:, 0]}, r"its cubes have the shape"),
    "text cubes": (lambda a: {**a, "cubes": a["patient_ids"]}, r"its cubes"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_DATASETS))
def test_training_refuses_a_dataset_a_build_does_not_write_in_one_line(built, tmp_path, capsys, case):
    from pipeline.__main__ import main

    _, out, _, _ = built
    change, message = BROKEN_DATASETS[case]
    path = _copy_with(out, tmp_path / "datasets", change)
    code = main(["train", "--datasets", str(path), "--run", str(tmp_path / "run"), "--epochs", "1"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1, error
    assert error.startswith(f"error: {path} cannot be trained on: ")
    assert __import__("re").search(message, error), error
    assert not (tmp_path / "run").exists()  # refused before a run folder was made


def test_training_refuses_a_truncated_dataset_in_one_line(built, tmp_path, capsys):
    from pipeline.__main__ import main

    _, out, _, _ = built
    path = _copy_with(out, tmp_path / "datasets", lambda arrays: None)
    _truncate(path)
    code = main(["train", "--datasets", str(path), "--run", str(tmp_path / "run"), "--epochs", "1"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1, error
    assert error.startswith(f"error: {path} is damaged or truncated (")
