"""Opening a SQLite MLflow store: one process at a time.

MLflow creates a fresh store's tables by running its whole migration history, without a lock:
two commands started together on a fresh folder failed on each other's half-done migrations
(duplicate column, circular dependency, alembic's version row). Every open of a `sqlite:///`
store here holds an exclusive lock on `<database>.lock` while MLflow opens it; MLflow's own
migrations then run in one process, and the next one finds the tables made.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

__all__ = ["opening", "database_path"]


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
