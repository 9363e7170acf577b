"""Opening a SQLite MLflow store: one process at a time, and a fresh one from a template.

MLflow creates a fresh store's tables by running its whole migration history (about 1 s on a
laptop, before a study trains anything), without a lock. Here:
- every open of a `sqlite:///` store holds an exclusive lock on `<database>.lock`: two
  commands started together on a fresh folder failed on each other's half-done migrations
  (duplicate column, circular dependency, alembic's version row);
- a store that does not exist yet is a copy of an empty store that MLflow itself migrated,
  kept once per machine and MLflow release in `$ALLSEARCH_SCHEMA_CACHE_DIR` (default
  `~/.cache/allsearch`). The template holds no experiment: MLflow creates the Default one,
  with this store's artifact root, when it opens the copy. Where the template cannot be made
  or read, MLflow migrates the store itself, as it always does.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["opening", "database_path", "schema_template", "schema_cache_dir"]

_log = logging.getLogger(__name__)


def schema_cache_dir() -> Path:
    """Where the migrated empty stores are kept (one per MLflow release)."""
    configured = os.environ.get("ALLSEARCH_SCHEMA_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "allsearch"


def database_path(uri: str) -> Path | None:
    """The file of a `sqlite:///` URI; None for any other store (or an in-memory/URI form)."""
    if not uri.startswith("sqlite:///") or uri.startswith("sqlite:///file:"):
        return None
    path = uri.removeprefix("sqlite:///").split("?")[0]
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def opening(uri: str) -> Iterator[None]:
    """Hold the store's lock while MLflow opens it (a SQLite file; any other store: nothing),
    and give a store that is not there yet its tables from the template."""
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
            if not path.exists() or path.stat().st_size == 0:
                _seed(path)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _seed(path: Path) -> None:
    template = schema_template()
    if template is None:
        return
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        shutil.copyfile(template, partial)
        os.replace(partial, path)  # never a half-copied store under the real name
    except OSError as exc:
        _log.debug("no store from the template (%s); MLflow creates the tables", exc)
        partial.unlink(missing_ok=True)


def schema_template() -> Path | None:
    """The migrated empty store of this MLflow release, made on first use (None when it
    cannot be made or read: the caller lets MLflow migrate)."""
    import mlflow

    target = schema_cache_dir() / f"mlflow-{mlflow.__version__}-{_migrations_key()}.db"
    if target.is_file() and _readable(target):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            made = Path(scratch) / "empty.db"
            _migrate(made)
            os.replace(made, target)  # two processes making it at once: either copy wins
    except Exception as exc:  # noqa: BLE001 - an optimisation; MLflow migrates the store itself
        _log.debug("no MLflow schema template in %s (%s)", target.parent, exc)
        return None
    return target if _readable(target) else None


def _migrations_key() -> str:
    """The names of MLflow's migration scripts: a release that adds one gets a new template."""
    import mlflow.store.db_migrations

    versions = Path(mlflow.store.db_migrations.__file__).parent / "versions"
    names = sorted(p.name for p in versions.glob("*.py"))
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]


def _migrate(path: Path) -> None:
    """An empty store made by MLflow (every table, every migration), without its Default
    experiment, which MLflow creates again, with the right artifact root, where it is copied."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(f"sqlite:///{path}", path.parent.as_uri())
    store.engine.dispose()  # its connections to the scratch file, before the file moves
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("DELETE FROM experiment_tags")
        db.execute("DELETE FROM experiments")


def _readable(path: Path) -> bool:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return db.execute("SELECT version_num FROM alembic_version").fetchone() is not None
    except sqlite3.Error:
        return False
