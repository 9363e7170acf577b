"""One exception hierarchy for mistakes a user can cause.

Every message states what was wrong, where, and how to fix it, on one line, so the
command-line modules can print it as is (see allsearch.cli).
"""

from __future__ import annotations

__all__ = ["AllsearchError", "DataError", "SpaceError", "ModelError", "ConfigError", "StoreError",
           "first_line", "redact", "redact_text", "store_errors", "lost_schema_race",
           "cannot_write"]


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
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc).lower()
        kind = type(exc).__name__
        if kind == "IntegrityError" or any(sign in text for sign in (
                "already exists", "deadlock detected", "duplicate column name")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def cannot_write(location: str, exc: BaseException) -> str:
    """The one line for a store that refuses a write, naming a read-only store as such."""
    text = first_line(exc)
    whole = str(exc).lower()
    if "readonly" in whole.replace("-", "") or "read-only file system" in whole:
        return (f"the {location} is read-only; make it writable, or pass another "
                f"--tracking-uri (or --record DIR)")
    return (f"cannot write the {location} ({text[:160]}); free disk space or fix its "
            f"permissions, then run the same command to resume")
