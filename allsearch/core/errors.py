"""One exception hierarchy for mistakes a user can cause.

Every message states what was wrong, where, and how to fix it, on one line, so the
command-line modules can print it as is (see allsearch.core.cli).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

__all__ = ["AllsearchError", "DataError", "SpaceError", "ModelError", "ConfigError", "StoreError",
           "first_line", "redact", "redact_text", "store_errors", "lost_schema_race",
           "cannot_write", "write_failure", "chain"]


class AllsearchError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class DataError(AllsearchError):
    """The dataset folder or its images cannot be used as given."""


class SpaceError(AllsearchError):
    """A search-space file or hyperparameter value is invalid."""


class ModelError(AllsearchError):
    """The requested network cannot be built for this input."""


class ConfigError(AllsearchError):
    """A flag or setting is invalid."""


class StoreError(AllsearchError):
    """A tracking or study store cannot be reached or written."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none); SQLAlchemy's
    note on where an error was raised, put before the driver's message, is skipped."""
    lines = [line for line in str(exc).strip().splitlines()
             if line.strip() and not line.startswith("(raised as a result of")]
    return lines[0] if lines else type(exc).__name__


def redact(uri: str) -> str:
    """A URI with any password replaced, safe to print."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        return "<unparseable URI>"
    if password:
        netloc = parts.netloc.replace(f":{password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def redact_text(text: str, uri: str) -> str:
    """`text` (e.g. a driver's error message) with the password of `uri` replaced."""
    from urllib.parse import urlsplit

    try:
        password = urlsplit(uri).password
    except ValueError:
        return text
    return text.replace(password, "***") if password else text


def store_errors() -> tuple[type[BaseException], ...]:
    """What a store that cannot be reached or written raises (OSError, and MLflow's,
    SQLAlchemy's and gRPC's errors where installed): these end a study, not a trial."""
    errors: list[type[BaseException]] = [OSError]
    try:
        from mlflow.exceptions import MlflowException

        errors.append(MlflowException)
    except ImportError:
        pass
    try:
        import sqlalchemy.exc

        errors.append(sqlalchemy.exc.SQLAlchemyError)
    except ImportError:
        pass
    try:
        import grpc  # the Optuna storage proxy's transport

        errors.append(grpc.RpcError)
    except ImportError:
        pass
    return tuple(errors)


def lost_schema_race(exc: BaseException) -> bool:
    """Did creating a store's tables fail because another process was creating them too?
    (Workers started together on an empty database all create the tables; the losers fail on
    the winner's rows or tables, which exist once the winner commits.)"""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).lower()
        kind = type(current).__name__
        if kind == "IntegrityError" or any(sign in text for sign in (
                "already exists", "deadlock detected", "duplicate column name")):
            return True
        current = current.__cause__ or current.__context__
    return False


def cannot_write(location: str, exc: BaseException, folders: Sequence[str] = ()) -> str:
    """The one line for a store that refuses a write, naming a full disk (and which of the
    store's `folders` is on it) and a read-only store as such: the driver's own text for them
    is a line of SQL or of SQLAlchemy's advice."""
    whole = " ".join(str(e) for e in chain(exc)).lower()
    if "readonly" in whole.replace("-", "") or "read-only file system" in whole:
        return (f"the {location} is read-only; make it writable, or pass another "
                f"--tracking-uri (or --record DIR)")
    full = [e for e in chain(exc) if isinstance(e, OSError) and e.errno == errno.ENOSPC]
    if full or "disk is full" in whole or "no space left" in whole:
        where = next((e.filename for e in full if e.filename), None) or _full_folder(folders)
        return (f"cannot write the {location} (disk full{f' at {where}' if where else ''}); "
                f"free space {'there' if where else 'on its disk'}, then run the same command "
                f"to resume (completed trials are kept)")
    return (f"cannot write the {location} ({first_line(exc)[:160]}); free disk space or fix its "
            f"permissions, then run the same command to resume")


def _full_folder(folders: Sequence[str]) -> str | None:
    """The first of `folders` on a disk with (almost) no space left."""
    import shutil
    from pathlib import Path

    for folder in folders:
        path = Path(folder)
        while not path.exists() and path != path.parent:
            path = path.parent  # a folder not made yet is on its parent's disk
        try:
            if shutil.disk_usage(path).free < FULL_BYTES:
                return str(folder)
        except OSError:
            continue
    return None


FULL_BYTES = 1 << 20  # a disk with less free is full for a store: its next file will not fit


def write_failure(location: str, exc: BaseException, folders: Sequence[str] = ()
                  ) -> StoreError | None:
    """The StoreError for `exc` where a store's write failed behind it (a library may raise an
    error of its own from that, e.g. Optuna's AssertionError when it cannot record a trial's
    end), else None."""
    errors = store_errors()
    failed = next((e for e in chain(exc) if isinstance(e, errors)), None)
    return None if failed is None else StoreError(cannot_write(location, failed, folders))


def chain(exc: BaseException | None) -> list[BaseException]:
    """`exc` and the exceptions it was raised from or while handling (as a traceback shows
    them: not past a `raise ... from None`)."""
    seen: list[BaseException] = []
    while exc is not None and all(exc is not e for e in seen):
        seen.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return seen
