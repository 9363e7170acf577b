"""Importing allsearch changes nothing in the caller's process (docs/design.md, the import rule).

A fresh interpreter imports the libraries allsearch builds on, takes a snapshot of the
process-wide state a library could change (logging levels and handlers, signal handlers, fd 2,
the unraisable hook, matplotlib's backend, MLflow's URIs, the garbage collector, the
environment), imports every allsearch module, and compares.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SNAPSHOT = textwrap.dedent("""
    import gc, json, logging, os, signal, sys

    def snapshot():
        import matplotlib
        import mlflow
        loggers = {"": logging.getLogger()}
        loggers.update((name, logger) for name, logger in logging.root.manager.loggerDict.items()
                       if isinstance(logger, logging.Logger))
        return {
            "logging": {name: [logger.level, [repr(h) for h in logger.handlers],
                               logger.propagate, logger.disabled]
                        for name, logger in loggers.items()},
            "signals": {s.name: repr(signal.getsignal(s))
                        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)},
            "fd2": [os.fstat(2).st_dev, os.fstat(2).st_ino],
            "unraisablehook": repr(sys.unraisablehook),
            "excepthook": repr(sys.excepthook),
            # A copy does not resolve the backend (reading the global rcParams would pick one).
            "backend": repr(matplotlib.rcParams.copy()["backend"]),
            "mlflow": [os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_registry_uri()
                       if mlflow.is_tracking_uri_set() else None, mlflow.is_tracking_uri_set()],
            "gc": [gc.isenabled(), gc.get_freeze_count(), gc.get_threshold()],
            "environ": {k: v for k, v in os.environ.items() if "TELEMETRY" not in k},
        }
""")

PROBE = SNAPSHOT + textwrap.dedent("""
    import importlib, pkgutil
    # What allsearch builds on, imported first: their own import-time changes are theirs.
    import keras, keras_tuner, matplotlib.pyplot, mlflow, optuna, sklearn, skimage, tensorflow
    before = snapshot()
    import allsearch
    names = sorted(m.name for m in pkgutil.walk_packages(allsearch.__path__, "allsearch."))
    for name in names:
        importlib.import_module(name)
    after = snapshot()
    print(json.dumps({"modules": names, "before": before, "after": after}))
""")


def _differences(before: dict, after: dict) -> list[str]:
    found = []
    for key in before:
        old, new = before[key], after[key]
        if isinstance(old, dict):
            for name in sorted(set(old) | set(new)):
                if name in old and old.get(name) != new.get(name):
                    found.append(f"{key}[{name!r}]: {old.get(name)!r} -> {new.get(name)!r}")
                elif name not in old and key == "environ":
                    found.append(f"environ[{name!r}] set to {new[name]!r}")
        elif old != new:
            found.append(f"{key}: {old!r} -> {new!r}")
    return found


def test_importing_every_module_changes_nothing_in_the_process():
    # The libraries' own start-up messages go to stderr; the snapshot is the last stdout line.
    # The suite's own settings (conftest.py) are left out, so the probe sees a user's process.
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_TRACKING_URI")}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(probe["modules"]) > 20, probe["modules"]
    assert _differences(probe["before"], probe["after"]) == []
