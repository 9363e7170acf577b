"""Where a study's Optuna state lives: the storage URL, its heartbeats, its connection pool,
its schema race, and the gRPC storage proxy in front of it.

The Optuna storage is the source of truth of a study: its trials, their states, and the id of
the study's MLflow parent run (a study user attribute), so every worker on any machine finds
the same study and nests its runs under the same parent (docs/design.md, "Storage"). Hundreds
of workers reach the database through one or a few proxies (`--storage grpc://HOST:PORT`,
`python -m allsearch.proxy`): Optuna's proxy, with heartbeats added (docs/scale-out.md).
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna

from allsearch.core import compat
from allsearch.core.config import DEFAULT_STORAGE, absolute_sqlite
from allsearch.core.errors import ConfigError, StoreError, first_line, lost_schema_race, redact, redact_text
from allsearch.tracking.sqlite_store import immediate_transactions

__all__ = ["open_storage", "open_proxied_storage", "serve_proxy", "storage_url",
           "heartbeat_settings", "pool_settings", "HeartbeatProxyClient", "ProxiedRDBStorage",
           "trial_heartbeats", "fail_stale_trials", "retry_stale_trial", "MAX_RETRIES",
           "SCHEMA_RACE_ATTEMPTS", "POOL_SIZE", "HEARTBEAT_ATTR", "FAIL_STALE_ATTR"]

SCHEMA_RACE_ATTEMPTS = 5
GRPC_SCHEME = "grpc://"
# How long a worker waits for a proxy to answer before saying it is not there (a worker may
# start a little before its proxy); $ALLSEARCH_PROXY_WAIT_S overrides it.
PROXY_WAIT_S = 10.0
# Database connections of one process: its trial loop and its heartbeat thread each hold one
# at a time (and opening the storage takes two at once, for its schema check), so two bound a
# worker without ever making it wait (docs/scale-out.md has the arithmetic: workers x pool +
# proxies x their threads + MLflow <= max_connections).
POOL_SIZE = 2
POOL_RECYCLE_S = 1800  # below the idle timeouts of firewalls, NATs and connection poolers
POOL_TIMEOUT_S = 60  # a thread waits this long for a free connection before failing
# A trial whose worker died is retried up to twice with the same parameters: a retry can land
# on a worker that dies too (seen with 16 of 64 workers killed), but a configuration that
# takes its worker down every time (say, out of memory) must not be retried for ever.
MAX_RETRIES = 2
# What a retry keeps of the failed trial's user attributes: what the configuration is, not
# what its attempt did (its MLflow run, its worker, its error); the retry records its own.
RETRY_KEEPS = ("baseline",)
# The two calls allsearch's proxy turns into heartbeats, since Optuna's proxy has none:
HEARTBEAT_ATTR = "allsearch:heartbeat"  # a trial system attr: record the trial's heartbeat
FAIL_STALE_ATTR = "allsearch:fail_stale_trials"  # a study system attr: fail its stale trials


class HeartbeatProxyClient(optuna.storages.GrpcStorageProxy):
    """Optuna's gRPC storage client, and the two calls that carry heartbeats through
    `python -m allsearch.proxy`: Optuna's own proxy has no heartbeats, so a worker that died
    behind it would leave its trial RUNNING forever.

    `record_heartbeat` writes the HEARTBEAT_ATTR trial system attr, which allsearch's proxy
    stores as the database's heartbeat (with the database's clock); `fail_stale_trials` writes
    the FAIL_STALE_ATTR study system attr, and the proxy runs Optuna's fail_stale_trials on the
    database, with its grace period and its retry callback, as a worker does on PostgreSQL.
    Optuna's optimize loop runs no heartbeat thread for this client: `trial_heartbeats` does.
    Needs `python -m allsearch.proxy`; Optuna's own proxy server would store the two attrs.
    """

    def __init__(self, *, host: str, port: int, heartbeat_interval: int) -> None:
        self.heartbeat_interval = heartbeat_interval
        super().__init__(host=host, port=port)

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, True)

    def fail_stale_trials(self, study_name: str) -> None:
        """The proxy fails the study's stale trials (and enqueues their retries) itself."""
        self.set_study_system_attr(self.get_study_id_from_name(study_name), FAIL_STALE_ATTR, True)


class ProxiedRDBStorage(optuna.storages.RDBStorage):
    """The database storage behind `python -m allsearch.proxy`: an RDBStorage (heartbeats,
    grace period, retries) that takes the heartbeat calls of HeartbeatProxyClient."""

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if key == HEARTBEAT_ATTR:
            self.record_heartbeat(trial_id)
        else:
            super().set_trial_system_attr(trial_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        if key != FAIL_STALE_ATTR:
            super().set_study_system_attr(study_id, key, value)
            return
        # Optuna's own fail_stale_trials, on the database: every proxy thread and every other
        # proxy may do it at once; a trial is failed (and retried) by exactly one of them.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.load_study(study_name=self.get_study_name_from_id(study_id),
                                      storage=self)
            optuna.storages.fail_stale_trials(study)


def fail_stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    """Fail (and retry) the study's trials whose worker died: Optuna's fail_stale_trials on a
    database, the proxy's behind `grpc://` (`storage` is the one the study was opened with)."""
    if isinstance(storage, HeartbeatProxyClient):
        storage.fail_stale_trials(study.study_name)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@contextlib.contextmanager
def trial_heartbeats(storage: optuna.storages.BaseStorage, trial: optuna.Trial) -> Iterator[None]:
    """What Optuna's optimize loop does around each trial on a database with heartbeats, for a
    worker behind the proxy: fail the study's stale trials, then record the trial's heartbeat
    every interval while it runs. Nothing on a database: Optuna does it there."""
    if not isinstance(storage, HeartbeatProxyClient):
        yield
        return
    study_name = trial.study.study_name
    storage.fail_stale_trials(study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study_name), trial.number)
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # noqa: BLE001  (a proxy gone: the trial's own next call says so)
                pass
            if stop.wait(storage.heartbeat_interval):
                return

    thread = threading.Thread(target=beat, name="allsearch-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


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
    interval, _ = heartbeat_settings()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna calls its proxy experimental
        client = HeartbeatProxyClient(host=host, port=port, heartbeat_interval=interval)
    wait_s = float(os.environ.get("ALLSEARCH_PROXY_WAIT_S", PROXY_WAIT_S))
    try:
        # gRPC connects lazily and would fail at the first call with a multi-line repr.
        client.wait_server_ready(timeout=wait_s)
    except Exception:  # noqa: BLE001  (ConnectionError, or grpc's own types)
        client.close()
        raise StoreError(f"no Optuna storage proxy answers at '{redact(url)}' (waited "
                         f"{wait_s:g} s); start one there (python -m allsearch.proxy "
                         f"--storage postgresql://... --port {port}) or fix the URL") from None
    return client


def pool_settings(pool_size: int | None = None) -> dict[str, Any]:
    """SQLAlchemy's connection pool for a database server: at most `pool_size` connections
    (default POOL_SIZE, or $ALLSEARCH_DB_POOL), checked before use, renewed every 30 min."""
    size = pool_size or int(os.environ.get("ALLSEARCH_DB_POOL", str(POOL_SIZE)))
    if size < 1:
        raise ConfigError(f"ALLSEARCH_DB_POOL must be >= 1, got {size}")
    return {"pool_size": size, "max_overflow": 0, "pool_pre_ping": True,
            "pool_recycle": POOL_RECYCLE_S, "pool_timeout": POOL_TIMEOUT_S}


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
    """Optuna's RDB storage with heartbeats (a trial whose worker died is failed and retried)
    and a bounded connection pool, or `grpc://HOST:PORT`: a storage proxy in front of one
    (python -m allsearch.proxy), with heartbeats through it."""
    url = storage_url(url, record=record)
    if url.startswith(GRPC_SCHEME):
        return _grpc_storage(url)
    return _open_rdb(url, optuna.storages.RDBStorage)


def open_proxied_storage(url: str, *, connections: int) -> optuna.storages.BaseStorage:
    """What `python -m allsearch.proxy` serves: the database at `url` with at most
    `connections` connections (one per serving thread), taking its clients' heartbeats."""
    if url.startswith(GRPC_SCHEME):
        raise ConfigError(f"--storage '{redact(url)}' is a proxy itself; a proxy serves a "
                          f"database: postgresql://user@host/db (or any SQLAlchemy URL)")
    # Optuna's in-process cache in front of the database, as Optuna advises for its proxy.
    # Opening the storage takes two connections at once (its schema check), serving one each.
    return compat.cached_storage(_open_rdb(url, ProxiedRDBStorage,
                                           pool_size=max(2, connections)))


def serve_proxy(storage: optuna.storages.BaseStorage, *, host: str, port: int, threads: int,
                on_ready: Callable[[], None] | None = None) -> None:
    """Serve `storage` over gRPC on host:port with `threads` threads, until interrupted
    (KeyboardInterrupt: Ctrl-C, or SIGTERM in a command); `on_ready` is called once the port
    is known to be free."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    # gRPC would share a busy port (SO_REUSEPORT) with another server and split the traffic.
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass "
                          f"another --port, or --host with an address of this machine") from None
    if on_ready is not None:
        on_ready()
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="proxy")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna calls its proxy experimental
            optuna.storages.run_grpc_proxy_server(storage, host=host, port=port,
                                                  thread_pool=pool)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def retry_stale_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Optuna's retry of a trial whose heartbeat stopped (`MAX_RETRIES` at most), without the
    attempt's own user attributes: a retry that inherited the dead trial's MLflow run id would
    point at that run until it starts its own, and share it if its worker died first."""
    attempt = copy.copy(trial)
    attempt.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in RETRY_KEEPS}
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, attempt)


def _open_rdb(url: str, kind: type[optuna.storages.RDBStorage], *,
              pool_size: int | None = None) -> optuna.storages.RDBStorage:
    if "://" not in url:
        raise ConfigError(f"--storage '{redact(url)}' is not a database URL; use e.g. "
                          f"sqlite:///mlruns/optuna.db or postgresql://user@host/db")
    engine_kwargs: dict[str, Any]
    if url.startswith("sqlite:///"):
        url = absolute_sqlite(url)
        # Several local workers share one file: wait for the lock instead of failing.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = pool_settings(pool_size)
    try:
        interval, grace = heartbeat_settings()
        attempt = 1
        while True:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    storage = kind(
                        url, engine_kwargs=engine_kwargs, heartbeat_interval=interval,
                        grace_period=grace,
                        heartbeat_stale_trial_callback=retry_stale_trial)
                if url.startswith("sqlite:"):
                    # Else two processes both take one WAITING trial (sqlite_store).
                    immediate_transactions(storage.engine)
                return storage
            except Exception as exc:
                if attempt == SCHEMA_RACE_ATTEMPTS or not lost_schema_race(exc):
                    raise
                # Workers started together on an empty database all create Optuna's tables;
                # the losers fail on the winner's rows. Once the winner commits, they exist.
                time.sleep(0.5 + random.random() * attempt)
                attempt += 1
    except Exception as exc:  # SQLAlchemy raises many types for a bad URL or a down server
        reason = redact_text(first_line(exc)[:200], url)
        raise StoreError(f"--storage '{redact(url)}' cannot be opened ({reason}); check the "
                         f"URL, that the server is up, and the credentials") from None
