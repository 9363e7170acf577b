"""SQLite stores shared by processes: one opening of an MLflow store at a time, and Optuna's
transactions that read then write done whole.

- MLflow creates a fresh store's tables by running its whole migration history, without a
  lock: two commands started together on a fresh folder failed on each other's half-done
  migrations (duplicate column, circular dependency, alembic's version row). Every open of a
  `sqlite:///` store here holds an exclusive lock on `<database>.lock` while MLflow opens it;
  MLflow's own migrations then run in one process, and the next one finds the tables made.
- Python's sqlite3 starts a transaction only at its first write, so a read that decides the
  write (Optuna's "is this trial still WAITING? then it is mine, RUNNING") runs outside it,
  and two processes both took the same trial: two commands started together both ran the
  enqueued baseline as trial 0, and the one that finished second failed with "Cannot tell a
  COMPLETE trial" (exit 1). `immediate_transactions` makes each transaction of an engine
  begin with BEGIN IMMEDIATE: it holds the database's write lock from its first read, and
  the other process waits (its busy timeout) and then reads the trial as taken.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["opening", "database_path", "immediate_transactions"]


def database_path(uri: str) -> Path | None:
    """The file of a `sqlite:///` URI; None for any other store (or an in-memory/URI form)."""
    if not uri.startswith("sqlite:///") or uri.startswith("sqlite:///file:"):
        return None
    path = uri.removeprefix("sqlite:///").split("?")[0]
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def opening(uri: str) -> Iterator[None]:
    """Hold the store's lock while the block opens it through MLflow (a SQLite file; any
    other store: nothing)."""
    path = database_path(uri)
    if path is None:
        yield
        return
    import fcntl

    try:
        handle = open(f"{path}.lock", "a")  # noqa: SIM115
    except OSError:
        yield  # an unwritable folder: opening the store says so
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def immediate_transactions(engine: Any) -> None:
    """Every transaction of this SQLAlchemy engine on a SQLite file begins with BEGIN
    IMMEDIATE (SQLAlchemy's recipe for pysqlite's late BEGIN), so what it reads cannot change
    before it writes. Connections the engine opened before are closed: each new one gets it."""
    from sqlalchemy import event

    def no_implicit_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # the BEGIN below instead of pysqlite's own

    def begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", no_implicit_begin)
    event.listen(engine, "begin", begin_immediate)
    engine.dispose()
