"""SQLite stores shared by processes (allsearch.tracking.sqlite_store): an MLflow store is opened by one
process at a time (MLflow migrates a fresh store's tables without a lock of its own), and an
Optuna trial that two processes ask for at the same moment goes to one of them. Real files and
processes."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from allsearch.tracking import sqlite_store

OPEN = ("import sys; from allsearch.tracking.tracking import Tracker; "
        "Tracker('x', tracking_uri=f'sqlite:///{sys.argv[1]}')")


def blocked_on_flock(pid: int, lock: Path) -> bool:
    """Is process `pid` waiting for a flock on `lock` (Linux /proc/locks: "-> FLOCK ...")?"""
    inode = os.stat(lock).st_ino
    return any(line.split()[1:3] == ["->", "FLOCK"] and int(line.split()[5]) == pid
               and int(line.split()[6].rsplit(":", 1)[1]) == inode
               for line in Path("/proc/locks").read_text().splitlines())


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
def test_a_store_is_not_opened_while_another_process_holds_its_lock(tmp_path: Path) -> None:
    database = tmp_path / "mlflow.db"
    lock = tmp_path / "mlflow.db.lock"
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another command, in the middle of its migrations
        process = subprocess.Popen([sys.executable, "-c", OPEN, str(database)],
                                   stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while not blocked_on_flock(process.pid, lock):
            assert process.poll() is None, process.stderr.read()[-2000:]
            assert time.time() < deadline, "the process never waited for the lock"
            time.sleep(0.05)
        # Waiting for the lock, it has not touched the database.
        assert not database.exists() or database.stat().st_size == 0
    assert process.wait(timeout=120) == 0, process.stderr.read()[-2000:]
    assert MlflowClient(f"sqlite:///{database}").get_experiment_by_name("x") is not None


def test_processes_opening_one_fresh_store_together_all_get_it(tmp_path: Path) -> None:
    database = tmp_path / "mlflow.db"
    processes = [subprocess.Popen([sys.executable, "-c", OPEN, str(database)],
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(p.wait(timeout=180), p.stderr.read()) for p in processes]
    assert [code for code, _ in results] == [0, 0, 0], [err[-800:] for _, err in results]
    client = MlflowClient(f"sqlite:///{database}")
    assert [e.name for e in client.search_experiments()].count("x") == 1


@pytest.mark.parametrize("uri, path", [
    ("sqlite:////tmp/a/mlflow.db", Path("/tmp/a/mlflow.db")),
    ("sqlite:///mlflow.db?timeout=5", Path("mlflow.db")),
    ("sqlite:///:memory:", None), ("sqlite:///file:x.db?mode=ro&uri=true", None),
    ("http://127.0.0.1:5000", None), ("postgresql://u@h/db", None)])
def test_only_a_sqlite_file_is_locked(uri: str, path: Path | None, tmp_path: Path) -> None:
    assert sqlite_store.database_path(uri) == path
    if path is None:
        with sqlite_store.opening(uri):  # nothing to lock: no file is made
            pass
    assert not list(tmp_path.glob("*.lock"))


ASK = """
import os, sys, time, warnings
from pathlib import Path
import optuna
from allsearch.engines.storage import open_storage
warnings.simplefilter("ignore")
storage, barrier = open_storage(sys.argv[1]), Path(sys.argv[2])
for round in range(int(sys.argv[3])):
    study = optuna.load_study(study_name=f"s{round}", storage=storage)
    (barrier / f"{round}-{os.getpid()}").touch()
    while len(list(barrier.glob(f"{round}-*"))) < 2:  # both processes ask at once
        time.sleep(0.001)
    print(study.ask().number, flush=True)
"""


def test_two_processes_never_take_the_same_waiting_trial(tmp_path: Path) -> None:
    """Optuna pops a WAITING trial (the enqueued baseline, a dead trial's retry) by reading
    its state, then writing RUNNING: on SQLite both processes took it in 6 of 20 rounds,
    and the one that finished second failed ("Cannot tell a COMPLETE trial")."""
    url, rounds = f"sqlite:///{tmp_path / 'optuna.db'}", 10
    for round in range(rounds):
        study = optuna.create_study(study_name=f"s{round}", storage=url)
        study.enqueue_trial({"x": 1})
    (tmp_path / "barrier").mkdir()
    processes = [subprocess.Popen([sys.executable, "-c", ASK, url, str(tmp_path / "barrier"),
                                   str(rounds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-1500:] for _, err in outputs]
    taken = list(zip(*(out.split() for out, _ in outputs), strict=True))
    assert all(sorted(pair) == ["0", "1"] for pair in taken), taken  # one got the waiting trial
