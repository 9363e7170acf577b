"""Put back what a study changes in its process, so `run_study` can be called again (a notebook).

`left_as_found()` is a scope: `snapshot()` on entry, `restore()` on exit (and the warning
filters, through `warnings.catch_warnings`). What it puts back, exactly:

- the level, handlers, `propagate` and `disabled` of every logger that existed on entry (the
  root one too); a handler added inside the scope is removed and, unless some logger still
  holds it or held it on entry, closed (its file or stream let go);
- the handlers of SIGINT, SIGTERM and SIGHUP (from the main thread only, as Python allows);
- `sys.excepthook`, `sys.unraisablehook`, `threading.excepthook`, `warnings.formatwarning`,
  and the warning filters;
- the environment (`os.environ`: variables added are removed, changed ones set back);
- MLflow's global tracking and registry URIs (unset again where they were unset), the
  `MLFLOW_*` variables MLflow sets beside them, and the fluent run stack (a run started
  inside and left active is ended), if MLflow was imported;
- the states of `random` and of NumPy's global generator, and Keras' global precision policy,
  for the modules imported on entry;
- objects frozen out of the garbage collector (`gc.freeze`, only in a command's or worker's
  process: `hardware.own_process`), unfrozen if none were on entry.

What it leaves changed, knowingly:
- TensorFlow's global seed: each trial sets it (`keras.utils.set_random_seed`), and
  TensorFlow has no public way to read it back, nor its op-seed counter;
- Keras' session: cleared between trials (`keras.backend.clear_session`), so layer names
  restart and a graph the caller built before is not kept;
- loggers a library creates on its first import inside the scope (kept, as that library
  expects them), and modules imported inside the scope.

`mlflow_fluent(uri)` is the same scope for MLflow's part alone: allsearch's few calls of
MLflow's fluent API (logging or registering a model, the runs as a pandas frame, loading a
model), which read the global URIs and the active run, run inside it; everything else goes
through an `MlflowClient` given its URIs (docs/design.md, "MLflow's URIs").

Imports nothing heavy: it looks at numpy, keras and mlflow only if they are loaded already.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["SIGNALS", "left_as_found", "mlflow_fluent", "snapshot", "restore"]

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                if hasattr(signal, name))


@contextlib.contextmanager
def left_as_found() -> Iterator[None]:
    """Inside, change what you like of the above; on exit it is put back (module docstring)."""
    saved = snapshot()
    try:
        with warnings.catch_warnings():
            yield
    finally:
        restore(saved)


@contextlib.contextmanager
def mlflow_fluent(tracking_uri: str, registry_uri: str | None = None) -> Iterator[None]:
    """MLflow's fluent API pointed at `tracking_uri` (and the registry at `registry_uri`, by
    default the same store) inside; on exit MLflow's URIs, its `MLFLOW_*` variables and the
    caller's active run are as they were (a run started inside and left active is ended).
    For callers that imported mlflow (this module imports no library)."""
    mlflow = sys.modules["mlflow"]
    saved = _mlflow_snapshot()
    try:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(registry_uri or tracking_uri)
        yield
    finally:
        _mlflow_restore(saved)


def _mlflow_snapshot() -> tuple[Any, ...]:
    """MLflow's URIs (None where unset or following the environment or the tracking URI),
    its variables, and the active run (this thread's: MLflow keeps one stack per thread)."""
    mlflow = sys.modules["mlflow"]
    variables = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    tracking = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    registry = mlflow.get_registry_uri()
    # A registry URI that is the tracking URI follows it (MLflow's default): left unset. A
    # URI that is its variable's is left to the variable (put back with the environment).
    if registry in (mlflow.get_tracking_uri(), variables.get("MLFLOW_REGISTRY_URI")):
        registry = None
    if tracking == variables.get("MLFLOW_TRACKING_URI"):
        tracking = None
    return tracking, registry, variables, mlflow.active_run()


def _mlflow_restore(saved: tuple[Any, ...]) -> None:
    mlflow = sys.modules["mlflow"]
    tracking, registry, variables, active = saved
    # A fluent run started inside is ended where it lives, before the URIs change back;
    # MLflow takes it off the stack before it writes, so a store gone does not stop this.
    while (run := mlflow.active_run()) is not None and run is not active:
        with contextlib.suppress(Exception):
            mlflow.end_run("KILLED")
        if mlflow.active_run() is run:
            break  # not taken off the stack: nothing more to do here
    mlflow.set_tracking_uri(tracking)  # None: unset again (its variable too)
    mlflow.set_registry_uri(registry)
    for name in {k for k in os.environ if k.startswith("MLFLOW_")} - set(variables):
        del os.environ[name]
    os.environ.update(variables)


def _loggers() -> dict[str, logging.Logger]:
    return {"": logging.getLogger(), **{
        name: logger for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)}}


def snapshot() -> dict[str, Any]:
    """What `restore` puts back, as it is now."""
    saved: dict[str, Any] = {
        "loggers": {name: (logger, logger.level, list(logger.handlers), logger.propagate,
                           logger.disabled) for name, logger in _loggers().items()},
        "signals": {sig: signal.getsignal(sig) for sig in SIGNALS},
        "hooks": (sys.excepthook, sys.unraisablehook, threading.excepthook,
                  warnings.formatwarning),
        "environ": dict(os.environ), "random": random.getstate(),
        "frozen": gc.get_freeze_count()}
    if "numpy" in sys.modules:
        saved["numpy"] = sys.modules["numpy"].random.get_state()
    if "keras" in sys.modules:
        saved["keras"] = sys.modules["keras"].mixed_precision.global_policy().name
    if "mlflow" in sys.modules:
        saved["mlflow"] = _mlflow_snapshot()
    return saved


def _restore_loggers(saved: dict[str, Any]) -> None:
    removed: list[logging.Handler] = []
    for logger, level, handlers, propagate, disabled in saved.values():
        logger.setLevel(level)
        for handler in [h for h in logger.handlers if h not in handlers]:
            logger.removeHandler(handler)
            removed.append(handler)
        for handler in handlers:
            logger.addHandler(handler)  # a no-op for one it still has
        logger.propagate, logger.disabled = propagate, disabled
    kept = {id(h) for *_, handlers, _, _ in saved.values() for h in handlers}
    kept |= {id(h) for logger in _loggers().values() for h in logger.handlers}
    for handler in {id(h): h for h in removed if id(h) not in kept}.values():
        handler.close()


def restore(saved: dict[str, Any]) -> None:
    """Put back what `snapshot` saw (see the module docstring for what that is)."""
    _restore_loggers(saved["loggers"])
    if threading.current_thread() is threading.main_thread():
        for sig, handler in saved["signals"].items():
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)
    (sys.excepthook, sys.unraisablehook, threading.excepthook,
     warnings.formatwarning) = saved["hooks"]
    if "mlflow" in sys.modules:  # before the environment: setting a URI sets its variable
        # MLflow first imported inside: its URIs unset, its variables as they were.
        _mlflow_restore(saved.get("mlflow") or (None, None, {
            k: v for k, v in saved["environ"].items() if k.startswith("MLFLOW_")}, None))
    for name in set(os.environ) - set(saved["environ"]):
        del os.environ[name]
    os.environ.update({k: v for k, v in saved["environ"].items() if os.environ.get(k) != v})
    random.setstate(saved["random"])
    if "numpy" in saved:
        sys.modules["numpy"].random.set_state(saved["numpy"])
    if "keras" in saved:
        sys.modules["keras"].mixed_precision.set_global_policy(saved["keras"])
    if saved["frozen"] == 0 and gc.get_freeze_count():
        gc.unfreeze()
