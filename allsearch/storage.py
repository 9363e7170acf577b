"""Where a study's Optuna state lives: the storage URL, its heartbeats and its schema race.

The Optuna storage is the source of truth of a study: its trials, their states, and the id of
the study's MLflow parent run (a study user attribute), so every worker on any machine finds
the same study and nests its runs under the same parent (docs/design.md, "Storage").
"""

from __future__ import annotations

import itertools
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from allsearch.config import DEFAULT_STORAGE, absolute_sqlite
from allsearch.errors import ConfigError, StoreError, first_line, lost_schema_race, redact, redact_text

__all__ = ["open_storage", "storage_url", "heartbeat_settings", "SCHEMA_RACE_ATTEMPTS"]

SCHEMA_RACE_ATTEMPTS = 5
GRPC_SCHEME = "grpc://"


def _grpc_storage(url: str) -> optuna.storages.BaseStorage:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise ConfigError(f"--storage '{redact(url)}': a proxy is grpc://HOST:PORT, e.g. "
                          f"grpc://localhost:13000 (python -m allsearch.proxy serves one)")
    try:
        return optuna.storages.GrpcStorageProxy(host=host, port=port)
    except Exception as exc:  # grpc raises its own types for a proxy that is not there
        raise StoreError(f"--storage '{redact(url)}' cannot be reached ({first_line(exc)[:160]}); "
                         f"start the proxy (python -m allsearch.proxy) or fix the URL") from None


def storage_url(url: str | None, *, record: str | None = None) -> str:
    """The storage to use: the flag, then $ALLSEARCH_STORAGE, then the default (inside the
    record folder when recording, so the folder holds the whole study)."""
    if url:
        return url
    if record is not None:
        return f"sqlite:///{(Path(record) / 'optuna.db').resolve()}"
    return os.environ.get("ALLSEARCH_STORAGE") or DEFAULT_STORAGE


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds; the environment may shorten them (tests)."""
    interval = int(os.environ.get("ALLSEARCH_HEARTBEAT_S", "30"))
    grace = int(os.environ.get("ALLSEARCH_GRACE_S", str(max(120, 4 * interval))))
    return interval, grace


def open_storage(url: str | None, *, record: str | None = None) -> optuna.storages.BaseStorage:
    """Optuna's RDB storage with heartbeats (a trial whose worker died is failed and retried),
    or `grpc://HOST:PORT`, Optuna's storage proxy (python -m allsearch.proxy) in front of one."""
    url = storage_url(url, record=record)
    if url.startswith(GRPC_SCHEME):
        return _grpc_storage(url)
    if "://" not in url:
        raise ConfigError(f"--storage '{redact(url)}' is not a database URL; use e.g. "
                          f"sqlite:///mlruns/optuna.db or postgresql://user@host/db")
    engine_kwargs: dict[str, Any] = {}
    try:
        if url.startswith("sqlite:///"):
            url = absolute_sqlite(url)
            # Several local workers share one file: wait for the lock instead of failing.
            engine_kwargs["connect_args"] = {"timeout": 60}
        else:
            engine_kwargs["pool_pre_ping"] = True
        interval, grace = heartbeat_settings()
        for attempt in itertools.count(1):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return optuna.storages.RDBStorage(
                        url, engine_kwargs=engine_kwargs, heartbeat_interval=interval,
                        grace_period=grace,
                        heartbeat_stale_trial_callback=(
                            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)))
            except Exception as exc:
                if attempt == SCHEMA_RACE_ATTEMPTS or not lost_schema_race(exc):
                    raise
                # Workers started together on an empty database all create Optuna's tables;
                # the losers fail on the winner's rows. Once the winner commits, they exist.
                time.sleep(0.5 + random.random() * attempt)
    except Exception as exc:  # SQLAlchemy raises many types for a bad URL or a down server
        reason = redact_text(first_line(exc)[:200], url)
        raise StoreError(f"--storage '{redact(url)}' cannot be opened ({reason}); check the "
                         f"URL, that the server is up, and the credentials") from None
