"""Past one machine (pipeline.executor): a build on a Dask LocalCluster gives the datasets of the
local pool, a worker killed mid-build changes nothing, predict-all and evaluate run there too,
and a bad scheduler is one line."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from pipeline.__main__ import main
from pipeline.dataset.build import build_datasets
from pipeline.dataset.store import DATASET_FILES
from pipeline.inference.batch import SUBMISSION_COLUMNS, predict_all, read_table
from pipeline.labels import LABEL_COLUMNS
from tests.conftest import BUILD_CONFIG

COMPARED = ("cubes", "labels", "positions", "patient_ids", "centres_voxel", "kinds")


def _same_datasets(first, second) -> None:
    for name in DATASET_FILES.values():
        with np.load(first / name, allow_pickle=False) as a, np.load(second / name, allow_pickle=False) as b:
            for key in COMPARED:
                assert np.array_equal(a[key], b[key]), (name, key)


def test_a_build_on_a_two_worker_local_cluster_gives_the_local_datasets(built, tmp_path, capsys):
    root, local, _, _ = built
    manifest = build_datasets(root, tmp_path / "dask", BUILD_CONFIG, scheduler="local:2", use_cache=False)
    assert all(outcome["status"] == "ok" for outcome in manifest["series"].values())
    _same_datasets(local, tmp_path / "dask")
    assert "2 Dask workers at tcp://" in capsys.readouterr().err  # where it ran, with the dashboard's link


def test_a_worker_killed_during_a_dask_build_changes_nothing(built, tmp_path):
    from distributed import Client, LocalCluster

    root, local, _, _ = built
    killed = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        def kill_one_while_busy():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                busy = [worker for worker, tasks in client.processing().items() if tasks]
                if busy:
                    pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_one_while_busy)
        killer.start()
        manifest = build_datasets(root, tmp_path / "dask", BUILD_CONFIG, scheduler=cluster.scheduler_address,
                                  use_cache=False)
        killer.join()
    assert killed, "no worker was busy to be killed"
    assert all(outcome["status"] == "ok" for outcome in manifest["series"].values())
    _same_datasets(local, tmp_path / "dask")  # every series once: nothing lost, nothing twice


def _some_series(demo, folder, count: int = 4):
    """A data folder of ``count`` of the demo's series (links), sub-folders named by UID."""
    folder.mkdir()
    for uid in sorted(demo[2]["series"])[:count]:
        (folder / uid).symlink_to(demo[0] / "series" / uid)
    return folder


def test_predict_all_on_a_local_cluster_writes_the_table_of_the_local_run(demo, trained, tmp_path):
    data = _some_series(demo, tmp_path / "data")
    predict_all(data, tmp_path / "local.csv", trained / "best.pt")
    summary = predict_all(data, tmp_path / "dask.csv", trained / "best.pt", scheduler="local:2")
    assert summary["scored"] == 4
    local = read_table(tmp_path / "local.csv", SUBMISSION_COLUMNS)
    dask = read_table(tmp_path / "dask.csv", SUBMISSION_COLUMNS)
    assert list(dask) == list(local)  # every series once, in the same order
    # Dask's workers run torch on one thread, this process on all cores: sums in another order
    # can move the last of the six decimals written.
    for uid, row in local.items():
        assert all(float(dask[uid][name]) == pytest.approx(float(row[name]), abs=1e-5) for name in LABEL_COLUMNS), uid


@pytest.mark.parametrize("scheduler, message", [("local:x", "write local:N"), ("local:0", "write local:N")])
def test_a_bad_scheduler_is_refused_in_one_line(built, tmp_path, capsys, scheduler, message):
    assert main(["build", "--data", str(built[0]), "--out", str(tmp_path / "o"), "--scheduler", scheduler]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0]


def test_the_scheduler_comes_from_the_environment_when_not_given(monkeypatch):
    from pipeline.executor import SCHEDULER_ENV, chosen_scheduler

    monkeypatch.setenv(SCHEDULER_ENV, "tcp://cluster:8786")
    assert chosen_scheduler(None) == "tcp://cluster:8786" and chosen_scheduler("local:2") == "local:2"
    monkeypatch.delenv(SCHEDULER_ENV)
    assert chosen_scheduler(None) is None


def test_evaluate_on_a_local_cluster_scores_the_series_as_this_process_does(demo, trained, tmp_path, capsys):
    import shutil

    from pipeline.inference.evaluate import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    local = evaluate_run(run, demo[0], test_set=False)
    dask = evaluate_run(run, demo[0], test_set=False, scheduler="local:2")
    assert "2 Dask workers at tcp://" in capsys.readouterr().err
    assert [p["series_uid"] for p in dask["predictions"]] == [p["series_uid"] for p in local["predictions"]]
    for ours, theirs in zip(local["predictions"], dask["predictions"]):
        assert all(theirs[name] == pytest.approx(ours[name], abs=1e-5) for name in LABEL_COLUMNS)
    assert dask["series"] == local["series"] > 0 and not dask["skipped"]
