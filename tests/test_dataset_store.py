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
