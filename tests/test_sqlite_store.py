"""A fresh SQLite MLflow store is a copy of a migrated empty store (allsearch.sqlite_store):
the same tables MLflow makes, its own Default experiment, and MLflow's own migrations
whenever the template cannot be made or read. Real files and processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from allsearch import sqlite_store
from allsearch.tracking import Tracker

OPEN = ("import sys; from allsearch.tracking import Tracker; "
        "Tracker('x', tracking_uri=f'sqlite:///{sys.argv[1]}')")


def schema(path: Path) -> list[tuple]:
    """Every table, index and column with its constraints (in any order: MLflow's own
    migrations list a table's constraints in an order that differs from run to run)."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    return sorted((kind, name, table, sorted(line.strip().rstrip(",") for line in
                                             (sql or "").splitlines()))
                  for kind, name, table, sql in rows)


def test_a_store_from_the_template_is_the_store_mlflow_makes(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLSEARCH_SCHEMA_CACHE_DIR", str(tmp_path / "schema"))
    copied = Tracker("x", tracking_uri=f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}")
    assert len(list((tmp_path / "schema").glob("mlflow-*.db"))) == 1
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("ALLSEARCH_SCHEMA_CACHE_DIR", str(blocked / "schema"))
    migrated = Tracker("x", tracking_uri=f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}")

    assert schema(tmp_path / "a" / "mlflow.db") == schema(tmp_path / "b" / "mlflow.db")
    # The Default experiment is made where the store is opened, as MLflow makes it.
    default = copied.client.get_experiment("0")
    assert default.name == "Default" and "schema" not in default.artifact_location
    assert default.artifact_location == migrated.client.get_experiment("0").artifact_location
    run = copied.client.create_run(copied.experiment_id)
    copied.client.log_metric(run.info.run_id, "m", 1.0)
    assert copied.client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    assert migrated.client.get_experiment_by_name("x") is not None


def test_a_damaged_template_is_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLSEARCH_SCHEMA_CACHE_DIR", str(tmp_path / "schema"))
    template = sqlite_store.schema_template()
    assert template is not None
    template.write_bytes(b"not a database" * 100)
    tracker = Tracker("x", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert tracker.client.get_experiment_by_name("x") is not None
    with sqlite3.connect(template) as db:
        assert db.execute("SELECT count(*) FROM experiments").fetchone() == (0,)


def test_processes_making_the_template_together_all_get_a_store(tmp_path: Path) -> None:
    env = {"ALLSEARCH_SCHEMA_CACHE_DIR": str(tmp_path / "schema"), "PATH": "/usr/bin:/bin"}
    processes = [subprocess.Popen([sys.executable, "-c", OPEN, str(tmp_path / f"{i}.db")],
                                  env=env, stderr=subprocess.PIPE, text=True) for i in range(3)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in processes]
    assert [code for code, _ in results] == [0, 0, 0], [err[-800:] for _, err in results]
    assert [p.name for p in (tmp_path / "schema").iterdir()] == [
        sqlite_store.schema_template().name]  # no scratch left behind
    assert all(schema(tmp_path / f"{i}.db") == schema(tmp_path / "0.db") for i in (1, 2))
