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
- MLflow's global tracking and registry URIs (unset again where they were unset), if MLflow
  was imported;
- the states of `random` and of NumPy's global generator, and Keras' global precision policy,
  for the modules imported on entry;
- objects frozen out of the garbage collector (`gc.freeze`), unfrozen if none were on entry.

What it leaves changed, knowingly:
- TensorFlow's global seed: each trial sets it (`keras.utils.set_random_seed`), and
  TensorFlow has no public way to read it back, nor its op-seed counter;
- Keras' session: cleared between trials (`keras.backend.clear_session`), so layer names
  restart and a graph the caller built before is not kept;
- loggers a library creates on its first import inside the scope (kept, as that library
  expects them), and modules imported inside the scope.

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

__all__ = ["SIGNALS", "left_as_found", "snapshot", "restore"]

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
        "frozen": gc.get_freeze_count(), "mlflow": (None, None)}
    if "numpy" in sys.modules:
        saved["numpy"] = sys.modules["numpy"].random.get_state()
    if "keras" in sys.modules:
        saved["keras"] = sys.modules["keras"].mixed_precision.global_policy().name
    if "mlflow" in sys.modules:
        mlflow = sys.modules["mlflow"]
        tracking = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
        registry = mlflow.get_registry_uri()
        # A registry URI that is the tracking URI follows it (MLflow's default): left unset.
        saved["mlflow"] = (tracking, None if registry == mlflow.get_tracking_uri() else registry)
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
        tracking, registry = saved["mlflow"]
        sys.modules["mlflow"].set_tracking_uri(tracking)  # None: unset again
        sys.modules["mlflow"].set_registry_uri(registry)
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
