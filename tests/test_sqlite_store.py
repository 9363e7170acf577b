"""A SQLite MLflow store is opened by one process at a time (allsearch.sqlite_store): MLflow
migrates a fresh store's tables without a lock of its own. Real files and processes."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from allsearch import sqlite_store

OPEN = ("import sys; from allsearch.tracking import Tracker; "
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
